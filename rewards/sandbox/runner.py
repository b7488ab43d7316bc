"""The sandbox's public API and parent side: start a program (through the fork server or a fresh
interpreter), feed it its boot code and configuration, collect its output, records and report
within their caps, and kill what is left at the deadline. :mod:`dllm_rl.rewards.sandbox` describes the
isolation layers each run gets.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import marshal
import os
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass

from . import cgroup, zygote
from .isolation import WORKDIR_PREFIX, kill_all_of_uid, lease_uid, owner_tag, sweep_stale
from .sources import BOOT_STUB, boot_code

logger = logging.getLogger(__name__)

_MAX_REPORT_BYTES = 4 * 2**20


@dataclass(frozen=True)
class SandboxResult:
    """What one sandboxed program did.

    Attributes:
        exit_code: the program's exit status; ``None`` when it was killed by a signal or never ran.
        killed_by_signal: the signal number that ended the program, if one did (``SIGKILL`` after a
            timeout, ``SIGXCPU`` past the CPU limit, ...).
        timed_out: the program ran past ``timeout_s`` and was killed with all its processes.
        stdout: the first ``max_output_bytes`` of standard output (decoded, invalid bytes replaced).
        stderr: likewise for standard error.
        stdout_truncated: more output came; the pipe was then closed (the program's further writes
            fail with ``BrokenPipeError``).
        stderr_truncated: likewise for standard error.
        wall_s: seconds from spawning to having collected everything.
        network_isolated: the program ran in its own network namespace (no network at all).
        isolation: the layers this run got, e.g. ``("net", "pid", "mount", "ipc", "private-tmp",
            "private-proc", "uid=1000123")``.
        report: the text of the program's last ``__sandbox_report__(text)`` call, ``None`` if it
            never reported.
        error: an infrastructure failure (could not spawn, could not set up the sandbox);
            ``None`` when the program ran. Graders turn it into a ``None`` reward, not a zero.
        report_overflow: the program wrote more than 4 MiB of reports; ``report`` is then
            ``None`` (its fault: the supervisor's records travel on a pipe it never holds).
    """

    exit_code: int | None
    killed_by_signal: int | None
    timed_out: bool
    stdout: str
    stderr: str
    stdout_truncated: bool
    stderr_truncated: bool
    wall_s: float
    network_isolated: bool
    isolation: tuple[str, ...]
    report: str | None
    error: str | None = None
    report_overflow: bool = False

    @property
    def outcome(self) -> str:
        """A short description: ``ok``, ``exit 1``, ``signal SIGKILL``, ``timeout``, ``error: ...``."""
        if self.error is not None:
            return f"error: {self.error}"
        if self.timed_out:
            return "timeout"
        if self.killed_by_signal is not None:
            try:
                return f"signal {signal.Signals(self.killed_by_signal).name}"
            except ValueError:
                return f"signal {self.killed_by_signal}"
        return "ok" if self.exit_code == 0 else f"exit {self.exit_code}"


def run_program(
    source: str,
    *,
    timeout_s: float = 10.0,
    memory_mb: int = 1024,
    max_processes: int = 16,
    max_open_files: int = 64,
    max_file_mb: int = 16,
    tmp_mb: int = 64,
    max_output_bytes: int = 64 * 1024,
    site_packages: bool = False,
    namespaces: bool | None = None,
    drop_uid: bool | None = None,
    seccomp: bool | None = None,
) -> SandboxResult:
    """Run ``source`` as ``__main__`` in a fresh sandboxed interpreter (its layers: :mod:`dllm_rl.rewards.sandbox`).

    Waits while :func:`max_concurrency_default` programs already run in this process.

    Args:
        source: Python source of the program.
        timeout_s: wall-clock budget of the program; it is killed, with every process it started,
            when the budget is spent. Each process also gets a CPU-time limit of the budget plus
            one to two seconds.
        memory_mb: address-space limit (``RLIMIT_AS``) of each of its processes.
        max_processes: ``RLIMIT_NPROC``: processes and threads it may have (enforced only for a
            non-root uid: when the parent runs as root the program gets its own uid).
        max_open_files: ``RLIMIT_NOFILE``.
        max_file_mb: ``RLIMIT_FSIZE``: the largest file it may write.
        tmp_mb: size of its private ``/tmp`` (and ``/var/tmp``, ``/dev/shm``) when it has one.
        max_output_bytes: cap on the captured stdout and on the captured stderr.
        site_packages: let it import installed packages (runs without ``-S``).
        namespaces: use Linux namespaces where allowed (``False``: only limits, the uid drop and
            seccomp; for debugging, or hosts where namespaces misbehave). Default:
            ``$DLLM_RL_SANDBOX_NAMESPACES`` (``0`` turns them off), else ``True``.
        drop_uid: as root, run the program as a leased unprivileged uid (``False``: keep the
            caller's uid, without capabilities: how a non-root caller runs). Default:
            ``$DLLM_RL_SANDBOX_DROP_UID``, else ``True``.
        seccomp: install the seccomp filter (no Unix-domain sockets). Default:
            ``$DLLM_RL_SANDBOX_SECCOMP``, else ``True``.

    Returns:
        A :class:`SandboxResult`; infrastructure failures are in ``error``, never raised.
    """
    with _slots():
        return _run(
            _config(
                source,
                timeout_s,
                memory_mb,
                max_processes,
                max_open_files,
                max_file_mb,
                tmp_mb,
                namespaces,
                drop_uid,
                seccomp,
            ),
            max_output_bytes=max_output_bytes,
            site_packages=site_packages,
        )


def _mode(value: bool | None, variable: str) -> bool:
    """An explicit argument, else the environment variable (``0``/``false``/``no``: off)."""
    if value is not None:
        return bool(value)
    return os.environ.get(variable, "1").strip().lower() not in ("0", "false", "no", "off")


def _config(
    source: str,
    timeout_s: float,
    memory_mb: int,
    max_processes: int,
    max_open_files: int,
    max_file_mb: int,
    tmp_mb: int,
    namespaces: bool | None,
    drop_uid: bool | None,
    seccomp: bool | None,
) -> dict:
    return {
        "source": source,
        "timeout_s": float(timeout_s),
        "memory_bytes": int(memory_mb) * 2**20,
        "max_processes": int(max_processes),
        "max_open_files": int(max_open_files),
        "max_file_bytes": int(max_file_mb) * 2**20,
        "tmp_mb": int(tmp_mb),
        "namespaces": _mode(namespaces, "DLLM_RL_SANDBOX_NAMESPACES"),
        "drop_uid": _mode(drop_uid, "DLLM_RL_SANDBOX_DROP_UID"),
        "seccomp": _mode(seccomp, "DLLM_RL_SANDBOX_SECCOMP"),
        "landlock": _mode(None, "DLLM_RL_SANDBOX_LANDLOCK"),
        "cgroup": _mode(None, "DLLM_RL_SANDBOX_CGROUP"),
        "parent_mount_ns": _mount_namespace(),
        "link_fds": (),
        "preamble": None,
        "reports": True,
    }


def run_linked(
    program: str,
    judge: str,
    *,
    timeout_s: float = 10.0,
    max_output_bytes: int = 64 * 1024,
    program_preamble: str = "",
    judge_preamble: str = "",
    **limits,
) -> tuple[SandboxResult, SandboxResult]:
    """Run two programs, each in a sandbox of its own, joined by a pair of pipes only.

    Each finds ``__sandbox_link__ = (read_fd, write_fd)`` in its globals: what ``judge`` writes
    ``program`` reads and the other way round. Both get their own uid where the caller is root
    (and, in any mode, neither may ptrace the other). When ``judge`` ends, ``program`` is
    stopped: the judge's result is the verdict (the code reward evaluates tests this way, outside
    the candidate's interpreter). The pair holds one concurrency slot.

    Args:
        program: the untrusted program's source.
        judge: the trusted program's source.
        timeout_s: the budget of each; the judge should end before it on its own.
        max_output_bytes: cap on each captured stream.
        program_preamble: source run before ``program`` in its namespace, compiled once in this
            process (a library the program calls: compiling it in every sandbox is slow).
        judge_preamble: likewise for ``judge``.
        **limits: other keyword arguments of :func:`run_program`, for both.

    Returns:
        ``(program_result, judge_result)``.
    """
    site_packages = limits.pop("site_packages", False)
    names = (
        "memory_mb",
        "max_processes",
        "max_open_files",
        "max_file_mb",
        "tmp_mb",
        "namespaces",
        "drop_uid",
        "seccomp",
    )
    defaults = (1024, 16, 64, 16, 64, None, None, None)
    unknown = set(limits) - set(names)
    if unknown:
        raise TypeError(f"unknown sandbox limits {sorted(unknown)}; expected some of {names}")
    values = [limits.get(n, d) for n, d in zip(names, defaults)]
    program_config = _config(program, timeout_s, *values)
    judge_config = _config(judge, timeout_s, *values)
    program_config["preamble"] = _compiled(program_preamble) if program_preamble else None
    judge_config["preamble"] = _compiled(judge_preamble) if judge_preamble else None
    to_program, from_judge = os.pipe()
    to_judge, from_program = os.pipe()
    program_config["link_fds"] = (to_program, from_program)
    program_config["reports"] = False  # the untrusted side has nothing to report, nor a channel
    judge_config["link_fds"] = (to_judge, from_judge)
    # The parent closes each side's ends as soon as that side is spawned, so that the other side
    # reads end-of-file when it dies.
    program_fds, judge_fds = [to_program, from_program], [to_judge, from_judge]
    judge_done = threading.Event()
    outcome: dict[str, SandboxResult] = {}

    def run_judge() -> None:
        try:
            outcome["judge"] = _run(
                judge_config,
                max_output_bytes=max_output_bytes,
                site_packages=False,
                owned_fds=judge_fds,
            )
        finally:
            judge_done.set()

    try:
        with _slots():
            thread = threading.Thread(target=run_judge, name="sandbox-judge", daemon=True)
            thread.start()
            try:
                outcome["program"] = _run(
                    program_config,
                    max_output_bytes=max_output_bytes,
                    site_packages=site_packages,
                    stop=judge_done,
                    owned_fds=program_fds,
                )
            finally:
                thread.join()
    finally:
        _close_all(program_fds)
        _close_all(judge_fds)
    return outcome["program"], outcome["judge"]


def run_programs(
    sources: Sequence[str], *, max_concurrency: int | None = None, **limits
) -> list[SandboxResult]:
    """Run several programs concurrently (each as :func:`run_program` with ``limits``).

    Args:
        sources: the programs.
        max_concurrency: at most this many at a time (the process-wide cap,
            :func:`max_concurrency_default`, also applies).
        **limits: keyword arguments of :func:`run_program`.

    Returns:
        One result per source, in order.
    """
    if not sources:
        return []
    workers = min(len(sources), max_concurrency or max_concurrency_default())
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="sandbox") as pool:
        return list(pool.map(lambda s: run_program(s, **limits), sources))


def max_wall_s(timeout_s: float) -> float:
    """The longest :func:`run_program` takes with ``timeout_s`` once it has a slot: the program's
    budget, start-up grace, and the forced kill of a supervisor that did not end in time."""
    return _collect_deadline_s(timeout_s) + 1.5


def _collect_deadline_s(timeout_s: float) -> float:
    return 1.2 * timeout_s + 3.0


def max_concurrency_default() -> int:
    """Programs run at once per process: ``$DLLM_RL_SANDBOX_CONCURRENCY``, else the CPUs this
    process may use (several trainer ranks on one machine: set the variable to share them)."""
    value = os.environ.get("DLLM_RL_SANDBOX_CONCURRENCY")
    if value:
        return max(1, int(value))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


_COMPILE_LOCK = threading.Lock()


@functools.lru_cache(maxsize=16)
def _compiled(source: str):
    # Callers run in worker threads; CPython 3.11's AST constructor is not thread-safe.
    with _COMPILE_LOCK:
        return compile(source, "<sandbox-preamble>", "exec")


def _mount_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/mnt")
    except OSError:
        return ""


@functools.lru_cache(maxsize=1)
def _slots() -> threading.BoundedSemaphore:
    return threading.BoundedSemaphore(max_concurrency_default())


@functools.lru_cache(maxsize=1)
def _probe() -> SandboxResult:
    result = run_program("", timeout_s=15.0)
    if result.error is not None:
        logger.warning("sandbox probe failed: %s", result.error)
    elif not result.network_isolated:
        logger.warning(
            "no network namespace available: sandboxed programs can reach the network "
            "(run as root, or enable unprivileged user namespaces)"
        )
    return result


def network_isolation_available() -> bool:
    """Whether sandboxed programs run without network here (probed once, then cached)."""
    return _probe().network_isolated


def isolation_available() -> tuple[str, ...]:
    """The isolation layers sandboxed programs get here (probed once, then cached)."""
    return _probe().isolation


# ------------------------------------------------------------------------------------------------
# Parent side.


def _run(
    config: dict,
    *,
    max_output_bytes: int,
    site_packages: bool,
    stop: threading.Event | None = None,
    owned_fds: list[int] | None = None,
) -> SandboxResult:
    start = time.monotonic()
    token = secrets.token_hex(16)
    workdir = group = None
    sweep_stale()
    try:
        workdir = tempfile.mkdtemp(prefix=f"{WORKDIR_PREFIX}{owner_tag()}-")
        if config["cgroup"]:
            name = os.path.basename(workdir)  # carries the owner, for the start-up sweep
            group = cgroup.acquire(name, config["memory_bytes"], config["max_processes"])
        with lease_uid(config["drop_uid"]) as uid:
            if uid is not None:
                os.chown(workdir, uid, uid)
            cgroups = {
                "cgroups": list(group.paths) if group else [],
                "cgroup_layer": group.layer if group else "",
            }
            return _spawn_and_collect(
                {**config, **cgroups, "uid": uid, "workdir": workdir},
                token=token,
                start=start,
                max_output_bytes=max_output_bytes,
                site_packages=site_packages,
                stop=stop,
                owned_fds=owned_fds,
            )
    except OSError as exc:  # cannot create the directory, lease a uid, make pipes, spawn
        return _failed(f"{type(exc).__name__}: {exc}", start)
    finally:
        cgroup.release(group)
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)


def _spawn_and_collect(
    config: dict,
    *,
    token: str,
    start: float,
    max_output_bytes: int,
    site_packages: bool,
    stop: threading.Event | None,
    owned_fds: list[int] | None,
) -> SandboxResult:
    records_read, records_write = os.pipe()  # the supervisor's; the program never holds it
    # The program's __sandbox_report__ calls (a program that does not report gets no pipe).
    reports_read, reports_write = os.pipe() if config["reports"] else (None, None)
    config.update(
        records_fd=records_write, report_fd=reports_write, token=token, parent_pid=os.getpid()
    )
    flags = ["-I", "-B"] + ([] if site_packages else ["-S"])
    workdir = config["workdir"]
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "HOME": workdir,
        "TMPDIR": workdir,
    }
    fds = (records_write, *_given(reports_write), *config["link_fds"])
    try:
        if zygote.enabled():
            proc = zygote.spawn(site_packages, fds, workdir, env, config["reports"])
            config["parent_pid"] = proc.server_pid  # the supervisor's parent
            payload = marshal.dumps(config)  # the server has the boot code already
        else:
            proc = subprocess.Popen(
                [sys.executable, *flags, "-c", BOOT_STUB],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                pass_fds=fds,
                cwd=workdir,
                env=env,
                start_new_session=True,
            )
            payload = marshal.dumps((boot_code(), config))
    except OSError:
        _close_all([records_read, *_given(reports_read)])
        raise
    finally:
        _close_all([records_write, *_given(reports_write)])
        _close_all(owned_fds or [])  # the child has its copies of the link now
    with (
        proc,
        open(records_read, "rb", buffering=0) as records,
        open(reports_read, "rb", buffering=0)
        if reports_read is not None
        else nullcontext() as reports,
    ):
        try:
            proc.stdin.write(payload)
            proc.stdin.close()
        except BrokenPipeError:
            pass  # it died before reading its configuration; reported below as "did not start"
        deadline = start + _collect_deadline_s(config["timeout_s"])
        captures = _collect(proc, records, reports, max_output_bytes, deadline, stop)
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
            hard_timeout = False
        except subprocess.TimeoutExpired:
            hard_timeout = True  # the supervisor did not end in time: ask it, then force it
            _signal_group(proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(1.0)
            _signal_group(proc.pid, signal.SIGKILL)
        proc.wait()
    result = _make_result(captures, token, start, hard_timeout, proc.returncode)
    if config["uid"] is not None and ("pid" not in result.isolation or hard_timeout):
        kill_all_of_uid(config["uid"])  # what a pid namespace did not (or may not) take down
    return result


@dataclass
class _Capture:
    """The first ``limit`` bytes read from one pipe."""

    limit: int
    data: bytearray
    truncated: bool = False


def _collect(
    proc: subprocess.Popen,
    records,
    reports,
    max_output_bytes: int,
    deadline: float,
    stop: threading.Event | None,
) -> dict[str, _Capture]:
    """Read stdout, stderr, the records and the reports (each capped) until the supervisor is
    done; when ``stop`` is set, ask the supervisor to end the program."""
    captures = {
        "stdout": _Capture(max_output_bytes, bytearray()),
        "stderr": _Capture(max_output_bytes, bytearray()),
        "records": _Capture(64 * 1024, bytearray()),
        "reports": _Capture(_MAX_REPORT_BYTES, bytearray()),
    }
    exited_at = None
    stopped = False
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ, captures["stdout"])
        selector.register(proc.stderr, selectors.EVENT_READ, captures["stderr"])
        selector.register(records, selectors.EVENT_READ, captures["records"])
        if reports is not None:
            selector.register(reports, selectors.EVENT_READ, captures["reports"])

        def read(timeout: float) -> bool:
            events = selector.select(timeout)
            for key, _ in events:
                capture: _Capture = key.data
                chunk = os.read(key.fd, 65536)
                room = capture.limit - len(capture.data)
                capture.data += chunk[:room]
                if not chunk or len(chunk) > room:
                    capture.truncated = capture.truncated or len(chunk) > room
                    selector.unregister(key.fileobj)
                    if chunk:
                        key.fileobj.close()  # further writes fail instead of filling memory
            return bool(events)

        while selector.get_map():
            now = time.monotonic()
            if exited_at is None and proc.poll() is not None:
                exited_at = now
            if now >= deadline or (exited_at is not None and now - exited_at > 0.5):
                # Out of time, or the supervisor is gone and a straggler holds a pipe open:
                # take what is already written, stop waiting for the rest.
                while selector.get_map() and read(0):
                    pass
                break
            if stop is not None and not stopped and stop.is_set():
                stopped = True
                _signal_group(proc.pid, signal.SIGTERM)
            read(min(deadline - now, 0.05 if stop is not None and not stopped else 0.25))
    return captures


def _parse_records(data: bytes, token: str) -> dict[str, list[str]]:
    """Records ``<token> <kind> <escaped text>\\n``, by kind (complete lines only)."""
    records: dict[str, list[str]] = {}
    for piece in data.split(token.encode())[1:]:
        line, newline, _ = piece.partition(b"\n")
        if not newline:
            continue  # cut off by the cap
        kind, _, text = line.decode("utf-8", "replace")[1:].partition(" ")
        records.setdefault(kind, []).append(_unescape(text))
    return records


def _unescape(text: str) -> str:
    r"""Undo the boot channel's escaping (a backslash sent as two, a newline as ``\n``) with
    string methods, in linear time: a report is up to 4 MiB of the program's choosing.

    Every backslash of an escaped text starts a pair, so splitting on the doubled backslash from
    the left cuts between pairs, and the pieces hold only ``\n`` pairs.
    """
    return "\\".join(piece.replace("\\n", "\n") for piece in text.split("\\\\"))


def _make_result(
    captures: dict[str, _Capture],
    token: str,
    start: float,
    hard_timeout: bool,
    supervisor_code: int | None,
) -> SandboxResult:
    records = _parse_records(bytes(captures["records"].data), token)
    reports = _parse_records(bytes(captures["reports"].data), token).get("report")
    report_overflow = captures["reports"].truncated  # the program's fault: no report counts
    isolation = tuple(f for f in (records.get("ready") or [""])[-1].split(",") if f)
    exit_code = killed_by = None
    timed_out = hard_timeout
    if records.get("exit"):
        status, flag = records["exit"][-1].split()
        code = os.waitstatus_to_exitcode(int(status))
        exit_code, killed_by = (code, None) if code >= 0 else (None, -code)
        timed_out = timed_out or flag == "1"
    error = None
    if records.get("error"):
        error = records["error"][-1]
    elif not records.get("ready"):
        tail = captures["stderr"].data[-400:].decode("utf-8", "replace").strip()
        error = f"the sandbox did not start (supervisor exit {supervisor_code}): {tail}"
    elif not records.get("exit") and not hard_timeout:
        error = f"the sandbox supervisor died (exit {supervisor_code})"
    return SandboxResult(
        exit_code=exit_code,
        killed_by_signal=killed_by,
        timed_out=timed_out,
        stdout=captures["stdout"].data.decode("utf-8", "replace"),
        stderr=captures["stderr"].data.decode("utf-8", "replace"),
        stdout_truncated=captures["stdout"].truncated,
        stderr_truncated=captures["stderr"].truncated,
        wall_s=time.monotonic() - start,
        network_isolated="net" in isolation,
        isolation=isolation,
        report=reports[-1] if reports and not report_overflow else None,
        error=error,
        report_overflow=report_overflow,
    )


def _failed(error: str, start: float) -> SandboxResult:
    return SandboxResult(
        exit_code=None,
        killed_by_signal=None,
        timed_out=False,
        stdout="",
        stderr="",
        stdout_truncated=False,
        stderr_truncated=False,
        wall_s=time.monotonic() - start,
        network_isolated=False,
        isolation=(),
        report=None,
        error=error,
    )


def _given(fd: int | None) -> tuple[int, ...]:
    return () if fd is None else (fd,)


def _close_all(fds: list[int]) -> None:
    """Close the descriptors in ``fds`` and empty it (so that nothing is closed twice)."""
    while fds:
        os.close(fds.pop())


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
