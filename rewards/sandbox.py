"""Run untrusted, model-generated Python in a throwaway, locked-down process.

One call to :func:`run_program` starts one fresh interpreter (``python -I -S -B``: isolated mode,
no site-packages, no bytecode files) with an environment scrubbed of the parent's variables, stdin
on ``/dev/null`` and a fresh temporary working directory, and returns a typed
:class:`SandboxResult`. Layers, each used where the OS allows it (``SandboxResult.isolation``
lists those a run actually got):

- **always**: resource limits (address space, CPU seconds, processes, open files, file size, no
  core dumps), its own session and process group, a wall-clock timeout after which the whole
  program is killed, output read with a cap, a result channel the program cannot trivially forge;
- **running as root**: the program drops to an unprivileged uid leased for this run only
  (``uid=N``: ``RLIMIT_NPROC`` applies, which it does not for uid 0; root's files are out of
  reach; it can signal no other process), with no new privileges (setuid binaries do nothing);
  where no such uid is mapped (a container mapping only root) it keeps uid 0 but loses every
  capability (``no-capabilities``), as it does inside a user namespace of its own;
- **root or unprivileged user namespaces**: new network namespace (``net``: no interface is up, not
  even loopback: no network at all), pid namespace (``pid``: the program sees and can signal only
  its own processes, and all of them die with it), mount namespace in which every file system is
  read-only (``read-only-fs``) except private, size-capped ``/tmp``, ``/var/tmp`` and ``/dev/shm``
  (``private-tmp``, also its working directory), with its own ``/proc`` (``private-proc``); ipc
  namespace.

Without root and without user namespaces only the first layer applies: the program then runs as
your uid, can read and write what you can and signal your processes. ``network_isolated`` in
every result, and :func:`network_isolation_available`, say whether there was a network.

Not covered: CPU and memory shares between programs (no cgroups: ``memory_mb`` bounds each
process, so a program may use up to ``memory_mb x max_processes``), reading world-readable files
(the program sees the file system, read-only), kernel exploits.

How a program reports a result: the sandbox puts ``__sandbox_report__(text)`` in the program's
globals; each call writes ``text`` to a pipe the parent reads, behind a random per-run token.
Printing, exiting early or writing to file descriptors cannot produce a report. Code running in
the same interpreter can still find the reporting function and token by introspection (frames,
``gc``): the report channel raises the bar for reward hacking, it is not a security boundary. The
process, uid and namespaces are the boundary.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import functools
import inspect
import logging
import marshal
import os
import secrets
import selectors
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

logger = logging.getLogger(__name__)

_UID_POOL_SIZE = 1024  # uids leased to sandboxed programs when running as root (lock files)
_UID_POOL_STARTS = (1_000_000, 60_000)  # first pool fully mapped in this uid namespace is used
_RECENT_UIDS: collections.deque[int] = collections.deque(maxlen=256)  # leased last, not reused


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
    namespaces: bool = True,
) -> SandboxResult:
    """Run ``source`` as ``__main__`` in a fresh sandboxed interpreter (see the module docstring).

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
        namespaces: use Linux namespaces where allowed (``False``: only limits and the uid drop;
            for debugging, or hosts where namespaces misbehave).

    Returns:
        A :class:`SandboxResult`; infrastructure failures are in ``error``, never raised.
    """
    config = {
        "source": source,
        "timeout_s": float(timeout_s),
        "memory_bytes": int(memory_mb) * 2**20,
        "max_processes": int(max_processes),
        "max_open_files": int(max_open_files),
        "max_file_bytes": int(max_file_mb) * 2**20,
        "tmp_mb": int(tmp_mb),
        "namespaces": bool(namespaces),
        "parent_mount_ns": _mount_namespace(),
    }
    with _slots():
        return _run(config, max_output_bytes=max_output_bytes, site_packages=site_packages)


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


def _run(config: dict, *, max_output_bytes: int, site_packages: bool) -> SandboxResult:
    start = time.monotonic()
    token = secrets.token_hex(16)
    workdir = tempfile.mkdtemp(prefix="dllm-rl-sandbox-")
    try:
        with _lease_uid() as uid:
            if uid is not None:
                os.chown(workdir, uid, uid)
            return _spawn_and_collect(
                {**config, "uid": uid, "workdir": workdir},
                token=token,
                start=start,
                max_output_bytes=max_output_bytes,
                site_packages=site_packages,
            )
    except OSError as exc:  # cannot create the directory, lease a uid, make pipes, spawn
        return _failed(f"{type(exc).__name__}: {exc}", start)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _spawn_and_collect(
    config: dict, *, token: str, start: float, max_output_bytes: int, site_packages: bool
) -> SandboxResult:
    read_fd, write_fd = os.pipe()
    config["result_fd"] = write_fd
    config["token"] = token
    flags = ["-I", "-B"] + ([] if site_packages else ["-S"])
    workdir = config["workdir"]
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "HOME": workdir,
        "TMPDIR": workdir,
    }
    try:
        proc = subprocess.Popen(
            [sys.executable, *flags, "-c", _boot_source()],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            pass_fds=(write_fd,),
            cwd=workdir,
            env=env,
            start_new_session=True,
        )
    except OSError:
        os.close(read_fd)
        raise
    finally:
        os.close(write_fd)
    with proc, open(read_fd, "rb", buffering=0) as results:
        try:
            proc.stdin.write(marshal.dumps(config))
            proc.stdin.close()
        except BrokenPipeError:
            pass  # it died before reading its configuration; reported below as "did not start"
        deadline = start + _collect_deadline_s(config["timeout_s"])
        captures = _collect(proc, results, max_output_bytes, deadline)
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
    records = _parse_records(bytes(captures["results"].data), token)
    result = _make_result(records, captures, start, hard_timeout, proc.returncode)
    if config["uid"] is not None and ("pid" not in result.isolation or hard_timeout):
        _kill_all_of_uid(config["uid"])  # what a pid namespace did not (or may not) take down
    return result


@dataclass
class _Capture:
    """The first ``limit`` bytes read from one pipe."""

    limit: int
    data: bytearray
    truncated: bool = False


def _collect(
    proc: subprocess.Popen, results, max_output_bytes: int, deadline: float
) -> dict[str, _Capture]:
    """Read stdout, stderr and the result pipe (each capped) until the supervisor is done."""
    captures = {
        "stdout": _Capture(max_output_bytes, bytearray()),
        "stderr": _Capture(max_output_bytes, bytearray()),
        "results": _Capture(4 * 2**20, bytearray()),
    }
    exited_at = None
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ, captures["stdout"])
        selector.register(proc.stderr, selectors.EVENT_READ, captures["stderr"])
        selector.register(results, selectors.EVENT_READ, captures["results"])

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
            read(min(deadline - now, 0.25))
    return captures


def _parse_records(data: bytes, token: str) -> dict[str, list[str]]:
    """Records ``<token> <kind> <escaped text>\\n`` written by the sandbox, by kind."""
    records: dict[str, list[str]] = {}
    for piece in data.split(token.encode())[1:]:
        line = piece.split(b"\n", 1)[0].decode("utf-8", "replace")
        kind, _, text = line[1:].partition(" ")
        records.setdefault(kind, []).append(_unescape(text))
    return records


def _unescape(text: str) -> str:
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text):
            out.append("\n" if text[i + 1] == "n" else text[i + 1])
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def _make_result(
    records: dict[str, list[str]],
    captures: dict[str, _Capture],
    start: float,
    hard_timeout: bool,
    supervisor_code: int | None,
) -> SandboxResult:
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
        report=records["report"][-1] if records.get("report") else None,
        error=error,
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


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _kill_all_of_uid(uid: int) -> None:
    """Without a pid namespace, kill what the program left behind: everything running as its uid."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        subprocess.run(
            ["/bin/sh", "-c", "kill -KILL -1 2>/dev/null; exit 0"],
            user=uid,
            group=uid,
            extra_groups=[],
            env={"PATH": "/usr/bin:/bin"},
            cwd="/",
            timeout=5,
            check=False,
        )


@contextlib.contextmanager
def _lease_uid() -> Iterator[int | None]:
    """An unprivileged uid used by no other sandboxed program while held (``None`` if not root).

    Leases are ``flock``s on files in a root-only directory, so they hold across processes (several
    trainer ranks on one machine) and vanish with the process that holds them.
    """
    pool = _uid_pool() if os.geteuid() == 0 else None
    if pool is None:
        yield None
        return
    lock_dir = "/tmp/dllm-rl-sandbox-uids"  # fixed, not $TMPDIR: all processes must agree
    os.makedirs(lock_dir, mode=0o700, exist_ok=True)
    info = os.lstat(lock_dir)
    if info.st_uid != 0 or not stat.S_ISDIR(info.st_mode):
        raise PermissionError(f"{lock_dir} must be a directory owned by root")
    first = secrets.randbelow(_UID_POOL_SIZE)
    for i in range(_UID_POOL_SIZE):
        uid = pool + (first + i) % _UID_POOL_SIZE
        if uid in _RECENT_UIDS:  # so that "processes of this uid" means one run's processes
            continue
        fd = os.open(
            os.path.join(lock_dir, str(uid)), os.O_CREAT | os.O_RDWR | os.O_NOFOLLOW, 0o600
        )
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        try:
            yield uid
        finally:
            _RECENT_UIDS.append(uid)
            os.close(fd)  # releases the lock
        return
    raise OSError(f"all {_UID_POOL_SIZE} sandbox uids are in use")


@functools.lru_cache(maxsize=1)
def _uid_pool() -> int | None:
    """The first uid of a pool of ``_UID_POOL_SIZE`` uids (and gids) mapped in this namespace."""

    def mapped(path: str, lo: int) -> bool:
        try:
            with open(path) as f:
                extents = [tuple(map(int, line.split())) for line in f if line.strip()]
        except OSError:
            return lo < 2**16  # no user namespaces: every uid exists
        return any(inner <= lo and lo + _UID_POOL_SIZE <= inner + n for inner, _, n in extents)

    for lo in _UID_POOL_STARTS:
        if mapped("/proc/self/uid_map", lo) and mapped("/proc/self/gid_map", lo):
            return lo
    logger.warning(
        "no block of %d free uids is mapped here: sandboxed programs run as root without "
        "capabilities, not as an unprivileged uid",
        _UID_POOL_SIZE,
    )
    return None


# ------------------------------------------------------------------------------------------------
# Child side. These functions run inside the sandbox process, started as
# `python -I -S -c <their source> `, and must use only the standard library, imported inside them.
# The configuration arrives on stdin (marshal), before stdin is swapped for /dev/null.


def _boot_main() -> None:
    """Read the configuration, isolate, fork the program and supervise it."""
    import marshal
    import os
    import sys

    config = marshal.loads(sys.stdin.buffer.read())
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    send = _boot_channel(config.pop("result_fd"), config.pop("token"))
    try:
        namespaces = _boot_unshare() if config["namespaces"] else []
        pid = os.fork()
    except Exception as exc:
        send("error", f"sandbox setup failed: {type(exc).__name__}: {exc}")
        os._exit(70)
    if pid == 0:
        try:
            facts = _boot_enter(config, namespaces)
        except BaseException as exc:
            send("error", f"sandbox setup failed: {type(exc).__name__}: {exc}")
            os._exit(70)
        send("ready", ",".join(facts))
        _boot_run(config["source"], send)
    _boot_supervise(pid, config["timeout_s"], send)


def _boot_channel(fd: int, token: str):
    """``send(kind, text)``: one record on the result pipe. Binds every callable it uses now, so
    that the program cannot change its behaviour by patching modules or builtins."""
    import os

    prefix = token + " "

    def send(
        kind,
        text,
        _write=os.write,
        _type=type,
        _str=str,
        _replace=str.replace,
        _encode=str.encode,
        _len=len,
        _fd=fd,
        _prefix=prefix,
    ):
        if _type(text) is not _str:
            raise TypeError("a sandbox report must be a str")
        text = _replace(_replace(text, "\\", "\\\\"), "\n", "\\n")
        data = _encode(_prefix + kind + " " + text + "\n", "utf-8", "replace")
        while _len(data):
            data = data[_write(_fd, data) :]

    return send


def _boot_unshare() -> list[str]:
    """Enter new namespaces (as many as allowed); the pid namespace applies to children."""
    import ctypes
    import os

    newns, newipc, newuser, newpid, newnet = 0x20000, 0x8000000, 0x10000000, 0x20000000, 0x40000000
    libc = ctypes.CDLL(None, use_errno=True)
    uid, gid = os.geteuid(), os.getegid()
    user = 0 if uid == 0 else newuser
    names = ((newnet, "net"), (newpid, "pid"), (newns, "mount"), (newipc, "ipc"))
    for flags in (newnet | newpid | newns | newipc, newnet | newpid | newns, newnet):
        if libc.unshare(flags | user) != 0:
            continue
        got = [name for bit, name in names if flags & bit]
        if user:  # become root of the new user namespace, mapped to our own uid outside
            for path, text in (
                ("/proc/self/setgroups", "deny"),
                ("/proc/self/uid_map", f"0 {uid} 1"),
                ("/proc/self/gid_map", f"0 {gid} 1"),
            ):
                with open(path, "w") as f:
                    f.write(text)
            got.append("user")
        return got
    return []


def _boot_enter(config: dict, namespaces: list[str]) -> list[str]:
    """In the forked child, still privileged: mounts, working directory, limits, privileges."""
    import ctypes
    import os
    import resource
    import signal
    import sys

    os.setsid()
    libc = ctypes.CDLL(None, use_errno=True)
    facts = list(namespaces)
    # Reach the interpreter's libraries through open directories: they stay readable after the
    # uid drop (Python may live under /root) and after /tmp is covered.
    shims = {}
    for entry in sys.path:
        if entry and os.path.isdir(entry):
            shims[entry] = f"/proc/self/fd/{os.open(entry, os.O_RDONLY | os.O_DIRECTORY)}"

    def shim(path):
        for entry, fd_path in shims.items():
            if path == entry or path.startswith(entry + os.sep):
                return fd_path + path[len(entry) :]
        return path

    sys.path[:] = [shim(entry) for entry in sys.path]
    for module in list(sys.modules.values()):  # packages imported already (encodings, ...)
        if isinstance(getattr(module, "__path__", None), list):
            module.__path__[:] = [shim(p) for p in module.__path__]
    sys.path_importer_cache.clear()
    workdir = config["workdir"]
    if "mount" in namespaces:
        facts += _boot_mount(libc, config, "pid" in namespaces)
        if "private-tmp" in facts:
            workdir = "/tmp"
    os.chdir(workdir)
    os.environ.update(HOME=workdir, TMPDIR=workdir, PWD=workdir)
    cpu = int(config["timeout_s"]) + 2
    for limit, value in (
        (resource.RLIMIT_AS, config["memory_bytes"]),
        (resource.RLIMIT_CPU, cpu),
        (resource.RLIMIT_NPROC, config["max_processes"]),
        (resource.RLIMIT_NOFILE, config["max_open_files"]),
        (resource.RLIMIT_FSIZE, config["max_file_bytes"]),
        (resource.RLIMIT_CORE, 0),
    ):
        resource.setrlimit(limit, (value, value))
    uid = config["uid"]
    if uid is not None and os.geteuid() == 0 and "user" not in namespaces:
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
        facts.append(f"uid={uid}")
    elif os.geteuid() == 0:  # root of a user namespace (ours, or a container's): no uid to drop to
        _boot_drop_capabilities(libc)
        facts.append("no-capabilities")
    pr_set_pdeathsig, pr_set_dumpable, pr_set_no_new_privs = 1, 4, 38
    if libc.prctl(pr_set_no_new_privs, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
    libc.prctl(pr_set_dumpable, 1, 0, 0, 0)  # the uid drop cleared it; /proc/self/fd needs it
    libc.prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0)  # the uid drop cleared it too
    return facts


def _boot_mount(libc, config: dict, new_pid_namespace: bool) -> list[str]:
    """In the new mount namespace: every file system read-only, private size-capped temporary
    directories, and (in a new pid namespace) a private /proc. None of it is visible outside."""
    import os

    ms_rdonly, ms_nosuid, ms_nodev, ms_noexec = 1, 2, 4, 8
    ms_remount, ms_bind, ms_rec, ms_private = 32, 4096, 0x4000, 1 << 18
    kept = 1 | 2 | 4 | 8 | 1024 | 2048 | 4096  # statvfs flags with MS_ bits; locked ones must stay
    parent_ns = config["parent_mount_ns"]
    if not parent_ns or os.readlink("/proc/self/ns/mnt") == parent_ns:
        return []  # never remount anything unless provably in a namespace of our own
    if libc.mount(None, b"/", None, ms_rec | ms_private, None) != 0:
        return []
    with open("/proc/self/mountinfo", "rb") as f:
        points = [line.split()[4] for line in f]
    failed = 0
    for point in points:
        for escaped, char in ((b"\\040", b" "), (b"\\011", b"\t"), (b"\\012", b"\n")):
            point = point.replace(escaped, char)
        point = point.replace(b"\\134", b"\\")
        try:
            flags = os.statvfs(point).f_flag & kept
        except OSError:
            continue
        flags |= ms_bind | ms_remount | ms_rdonly
        failed += libc.mount(None, point, None, flags, None) != 0
    facts = [] if failed else ["read-only-fs"]
    options = f"size={int(config['tmp_mb'])}m,mode=1777".encode()
    for path in ("/tmp", "/var/tmp", "/dev/shm", "/run/lock"):
        if os.path.isdir(path):
            ok = libc.mount(b"tmpfs", path.encode(), b"tmpfs", ms_nosuid | ms_nodev, options) == 0
            if path == "/tmp" and ok:
                facts.append("private-tmp")
    if new_pid_namespace:
        flags = ms_nosuid | ms_nodev | ms_noexec
        if libc.mount(b"proc", b"/proc", b"proc", flags, None) == 0:
            facts.append("private-proc")
    return facts


def _boot_drop_capabilities(libc) -> None:
    """Root with no uid to drop to (in a user namespace): give up every capability, for good."""
    import ctypes

    for cap in range(64):  # PR_CAPBSET_DROP; EINVAL past the last capability
        libc.prctl(24, cap, 0, 0, 0)

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [(name, ctypes.c_uint32) for name in ("effective", "permitted", "inheritable")]

    data = (Data * 2)()
    if libc.capset(ctypes.byref(Header(0x20080522, 0)), data) != 0:
        raise OSError(ctypes.get_errno(), "capset")


def _boot_run(source: str, send) -> None:
    """Run the program as ``__main__`` and exit with its status (never returns)."""
    import builtins
    import os
    import sys

    def report(text, _send=send):
        _send("report", text)

    namespace = {"__name__": "__main__", "__builtins__": builtins, "__sandbox_report__": report}
    del send
    status = 0
    try:
        exec(compile(source, "<sandbox>", "exec"), namespace)
    except SystemExit as exc:
        status = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
        if not isinstance(exc.code, int) and exc.code is not None:
            print(exc.code, file=sys.stderr)
    except BaseException:
        import traceback

        traceback.print_exc()
        status = 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:
            pass
    os._exit(status & 0xFF)


def _boot_supervise(pid: int, timeout_s: float, send) -> None:
    """Wait for the program; at the deadline (or on SIGTERM) kill it and all its processes."""
    import os
    import signal

    timed_out = []

    def kill(*_):
        for target in (pid, -pid):  # the program (init of its pid namespace), then its group
            try:
                os.kill(target, signal.SIGKILL)
            except OSError:
                pass

    def on_alarm(*_):
        timed_out.append(True)
        kill()

    signal.signal(signal.SIGALRM, on_alarm)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, kill)
    signal.setitimer(signal.ITIMER_REAL, timeout_s)
    _, status = os.waitpid(pid, 0)
    signal.setitimer(signal.ITIMER_REAL, 0)
    kill()  # stragglers left in its process group (matters only without a pid namespace)
    send("exit", f"{status} {1 if timed_out else 0}")
    os._exit(0)


_CHILD_FUNCTIONS = (
    _boot_main,
    _boot_channel,
    _boot_unshare,
    _boot_enter,
    _boot_mount,
    _boot_drop_capabilities,
    _boot_run,
    _boot_supervise,
)


@functools.lru_cache(maxsize=1)
def _boot_source() -> str:
    parts = [inspect.getsource(f) for f in _CHILD_FUNCTIONS]
    return "\n\n".join(parts) + "\n\n_boot_main()\n"


# ------------------------------------------------------------------------------------------------
# Hostile suite: programs that try to escape or to cheat, each checked for containment.


def run_hostile_suite(timeout_s: float = 3.0) -> list[dict]:
    """Run hostile programs concurrently and check that each was contained.

    Cases: infinite loop, fork bomb, memory bomb, huge output, writing outside the sandbox,
    reading a secret from the parent's environment, connecting to a listener on 127.0.0.1, killing
    the parent, and, through the code reward, exiting before the asserts, an always-equal object,
    a forged report and patched builtins.

    Args:
        timeout_s: the programs' timeout; a case whose program outlives it (plus start-up and
            clean-up slack) is not contained.

    Returns:
        One ``{"case", "outcome", "contained", "wall_s"}`` dict per case, in a fixed order.
    """
    cases = [
        _case_infinite_loop,
        _case_fork_bomb,
        _case_memory_bomb,
        _case_huge_output,
        _case_write_outside,
        _case_read_secret,
        _case_network,
        _case_kill_parent,
        _case_exit_before_asserts,
        _case_always_equal,
        _case_forged_report,
        _case_patched_builtins,
    ]

    def run(case) -> dict:
        start = time.monotonic()
        try:
            outcome, contained = case(timeout_s)
        except Exception as exc:  # the suite itself failed: report it, do not hide it
            outcome, contained = f"suite error: {type(exc).__name__}: {exc}", False
        name = case.__name__.removeprefix("_case_")
        return {
            "case": name,
            "outcome": outcome,
            "contained": contained,
            "wall_s": round(time.monotonic() - start, 2),
        }

    # As many cases at a time as programs may run, so that a case's wall time is its own.
    with ThreadPoolExecutor(max_concurrency_default(), thread_name_prefix="hostile") as pool:
        return list(pool.map(run, cases))


def _in_time(result: SandboxResult, timeout_s: float) -> bool:
    return result.wall_s < max_wall_s(timeout_s)


def _patient(timeout_s: float) -> float:
    """The timeout for cases that must end by themselves: a busy machine must not fail them."""
    return max(timeout_s, 20.0)


def _case_infinite_loop(timeout_s: float) -> tuple[str, bool]:
    result = run_program("while True:\n    pass\n", timeout_s=timeout_s)
    return f"{result.outcome} at {result.wall_s:.1f}s", result.timed_out and _in_time(
        result, timeout_s
    )


def _case_fork_bomb(timeout_s: float) -> tuple[str, bool]:
    source = (
        "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    )
    result = run_program(source, timeout_s=timeout_s, max_processes=16)
    uid = next((int(f[4:]) for f in result.isolation if f.startswith("uid=")), None)
    left = len(_pids_of_uid(uid)) if uid is not None else None
    cleaned = left == 0 if uid is not None else "pid" in result.isolation
    outcome = f"{result.outcome}, {'?' if left is None else left} left"
    return outcome, result.timed_out and _in_time(result, timeout_s) and cleaned


def _case_memory_bomb(timeout_s: float) -> tuple[str, bool]:
    source = "chunks = []\nwhile True:\n    chunks.append(bytearray(32 * 2**20))\n"
    result = run_program(source, timeout_s=_patient(timeout_s), memory_mb=256)
    stopped = "MemoryError" in result.stderr or result.killed_by_signal is not None
    error = "MemoryError" if "MemoryError" in result.stderr else "no MemoryError"
    return f"{error}, {result.outcome}", stopped and not (result.timed_out)


def _case_huge_output(timeout_s: float) -> tuple[str, bool]:
    source = "import sys\nwhile True:\n    sys.stdout.write('x' * 65536)\n"
    result = run_program(source, timeout_s=timeout_s, max_output_bytes=2**16)
    outcome = (
        f"{'capped' if result.stdout_truncated else 'not capped'} at {len(result.stdout)} B, "
        f"{result.outcome}"
    )
    return outcome, result.stdout_truncated and len(result.stdout) <= 2**16 and _in_time(
        result, timeout_s
    )


def _case_write_outside(timeout_s: float) -> tuple[str, bool]:
    home = os.path.expanduser("~")
    private_dir = tempfile.mkdtemp(
        prefix=".dllm-rl-hostile-", dir=home if os.access(home, os.W_OK) else None
    )
    targets = [
        os.path.join(private_dir, "escaped"),
        os.path.join(tempfile.gettempdir(), f"dllm-rl-escaped-{secrets.token_hex(6)}"),
    ]
    source = (
        f"for path in {targets!r}:\n"
        "    try:\n"
        "        with open(path, 'w') as f:\n"
        "            f.write('escaped')\n"
        "        print(path, 'written')\n"
        "    except OSError as e:\n"
        "        print(path, type(e).__name__)\n"
    )
    try:
        result = run_program(source, timeout_s=_patient(timeout_s))
        escaped = [p for p in targets if os.path.exists(p)]
    finally:
        shutil.rmtree(private_dir, ignore_errors=True)
        with contextlib.suppress(OSError):
            os.unlink(targets[1])
    inside = ", ".join(line.rsplit(" ", 1)[-1] for line in result.stdout.splitlines())
    outcome = f"{len(escaped)}/{len(targets)} escaped ({inside})"
    return outcome, not escaped and (result.error is None)


def _case_read_secret(timeout_s: float) -> tuple[str, bool]:
    added = "DLLM_SECRET" not in os.environ
    secret = os.environ.setdefault("DLLM_SECRET", f"s3cret-{secrets.token_hex(8)}")
    source = (
        "import os\n"
        "print(os.environ.get('DLLM_SECRET'))\n"
        "for pid in os.listdir('/proc'):\n"
        "    for name in ('environ', 'cmdline'):\n"
        "        try:\n"
        "            print(open(f'/proc/{pid}/{name}', 'rb').read().decode('latin-1'))\n"
        "        except OSError:\n"
        "            pass\n"
    )
    try:
        result = run_program(source, timeout_s=_patient(timeout_s))
    finally:
        if added:
            os.environ.pop("DLLM_SECRET", None)
    leaked = secret in result.stdout or secret in result.stderr
    outcome = f"{'LEAKED' if leaked else 'not leaked'}, {result.outcome}"
    return outcome, not leaked and result.error is None


def _case_network(timeout_s: float) -> tuple[str, bool]:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        listener.setblocking(False)
        port = listener.getsockname()[1]
        source = (
            "import socket\n"
            "try:\n"
            f"    socket.create_connection(('127.0.0.1', {port}), timeout=1).sendall(b'hi')\n"
            "    print('connected')\n"
            "except OSError as e:\n"
            "    import errno\n"
            "    print(errno.errorcode.get(e.errno, type(e).__name__))\n"
        )
        result = run_program(source, timeout_s=_patient(timeout_s))
        try:
            listener.accept()[0].close()
            arrived = True
        except BlockingIOError:
            arrived = False
    isolated = "netns" if result.network_isolated else "NO netns"
    outcome = f"{isolated}, {'CONNECTED' if arrived else 'no connection'} ({result.stdout.strip()})"
    return outcome, not arrived and result.error is None


def _case_kill_parent(timeout_s: float) -> tuple[str, bool]:
    layers = isolation_available()
    if "pid" not in layers and not any(layer.startswith("uid=") for layer in layers):
        return "not run: without a uid drop or pid namespace it could kill your processes", False
    bystander = subprocess.Popen(
        [sys.executable, "-I", "-S", "-c", "import time; time.sleep(120)"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    source = (
        "import os\n"
        f"targets = [lambda: os.kill(os.getppid(), 9), lambda: os.kill({os.getpid()}, 9),\n"
        f"           lambda: os.kill({bystander.pid}, 9), lambda: os.killpg({os.getpgid(0)}, 9),\n"
        "           lambda: os.killpg(os.getpgid(os.getppid()), 9), lambda: os.kill(-1, 9)]\n"
        "targets += [lambda p=p: os.kill(int(p), 9) for p in os.listdir('/proc') if p.isdigit()]\n"
        "for target in targets:\n"
        "    try:\n"
        "        target()\n"
        "    except OSError:\n"
        "        pass\n"
    )
    try:
        result = run_program(source, timeout_s=_patient(timeout_s))
        alive = bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()
    outcome = "parent and bystander alive" if alive else "bystander KILLED"
    return outcome, alive and result.error is None


def _reward_case(completions: list[str], tests: list[str], timeout_s: float) -> tuple[str, bool]:
    from .code import grade_code

    grades = grade_code(completions, [tests] * len(completions), timeout_s=timeout_s)
    rewards = [g.reward for g in grades]
    return f"rewards {rewards}", all(r == 0.0 for r in rewards)


def _case_exit_before_asserts(timeout_s: float) -> tuple[str, bool]:
    body = "```python\nimport os, sys\ndef f(x):\n    return None\n{}\n```"
    exits = ["sys.exit(0)", "raise SystemExit(0)", "os._exit(0)", "os.kill(os.getpid(), 9)"]
    return _reward_case([body.format(e) for e in exits], ["assert f(1) == 2"], timeout_s)


def _case_always_equal(timeout_s: float) -> tuple[str, bool]:
    classes = [
        "class R:\n    __eq__ = lambda s, o: True\n    __ne__ = lambda s, o: False\n"
        "    __bool__ = lambda s: True\n    __hash__ = lambda s: 0\n",
        "class R(int):\n    __eq__ = lambda s, o: True\n    __ne__ = lambda s, o: False\n",
        "class R(str):\n    __eq__ = lambda s, o: True\n    __ne__ = lambda s, o: False\n",
        "class M(type):\n    __eq__ = lambda c, o: True\n    __hash__ = lambda c: hash(int)\n"
        "class R(int, metaclass=M):\n    __eq__ = lambda s, o: True\n",
    ]
    completions = [f"```python\n{c}def f(x):\n    return R()\n```" for c in classes]
    tests = ["assert f(1) == 2", "assert not f(1) != 2", "assert f(1)", "assert [f(1)] == [2]"]
    return _reward_case(completions, tests, timeout_s)


def _case_forged_report(timeout_s: float) -> tuple[str, bool]:
    forge = (
        "```python\nimport os\ndef f(x):\n    return None\n"
        "for line in ('1', 'report 1', 'PASSED 1/1', '0' * 32 + ' report 1'):\n"
        "    print(line)\n"
        "    for fd in range(3, 64):\n"
        "        try:\n"
        "            os.write(fd, (line + '\\n').encode())\n"
        "        except OSError:\n"
        "            pass\n"
        "os._exit(0)\n```"
    )
    return _reward_case([forge], ["assert f(1) == 2"], timeout_s)


def _case_patched_builtins(timeout_s: float) -> tuple[str, bool]:
    patch = (
        "```python\nimport builtins\nbuiltins.set = lambda *a: 0\nbuiltins.len = lambda *a: 0\n"
        "def sorted(*a):\n    return 0\ndef f(x):\n    return [x]\n```"
    )
    tests = ["assert set(f(1)) == set([2])", "assert sorted(f(1)) == [2]", "assert len(f(1)) == 0"]
    return _reward_case([patch], tests, timeout_s)


def _pids_of_uid(uid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                with open(f"/proc/{entry}/status") as f:
                    if any(line.split()[:2] == ["Uid:", str(uid)] for line in f):
                        pids.append(int(entry))
    return pids
