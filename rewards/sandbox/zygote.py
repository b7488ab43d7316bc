"""The sandbox's fork server: one pre-started interpreter per trainer process that forks each
sandbox's supervisor, instead of a fresh ``python`` per program.

Starting an interpreter, importing ``ctypes``, ``json`` and ``select`` and running the boot code
cost about 20 ms of CPU per sandbox, two sandboxes per graded completion: most of what grading an
MBPP solution costs. The fork server (``programs/forkserver.py``) pays that
once; each request forks a child that becomes exactly what ``subprocess.Popen`` used to start
(its own session, stdio on fresh pipes, its working directory and scrubbed environment) and boots
the same way, so every isolation layer is applied per program as before, in the child.

What the server never sees: a program's source or preamble. Those travel on the child's own
stdin, after the fork, so no program inherits another's text (a judge's tests) through the
server's memory. The server holds no secret; its requests are working directories and
environments.

:class:`ForkedProcess` gives the parent the part of ``Popen``'s interface the sandbox uses
(``pid``, ``stdin``/``stdout``/``stderr``, ``poll``, ``wait``, ``returncode``). Exit is watched
through a pidfd; the server reaps a supervisor only when the parent asks, so its pid (and
process group) cannot be reused while the parent may still signal it.

``$DLLM_RL_SANDBOX_FORKSERVER=0`` turns it off (each sandbox is then a fresh interpreter, as on a
kernel without ``pidfd_open``).
"""

from __future__ import annotations

import contextlib
import marshal
import os
import select
import socket
import subprocess
import sys
import threading

from .sources import ZYGOTE_STUB, zygote_code

_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}


class ForkServerError(OSError):
    """The fork server is gone or refused a request (the caller falls back or reports it)."""


class ForkServer:
    """A client of one running fork server (see the module docstring)."""

    def __init__(self, site_packages: bool) -> None:
        self.owner_pid = os.getpid()
        self.alive = True
        self._lock = threading.Lock()
        self._socket, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        started = threading.Event()
        failure: list[BaseException] = []
        flags = ["-I", "-B"] + ([] if site_packages else ["-S"])

        def keep() -> None:
            # The server's parent-death signal follows this thread: it lives as long as the
            # server does (and so the server dies with the trainer, not with a worker thread).
            try:
                process = subprocess.Popen(
                    [sys.executable, *flags, "-c", ZYGOTE_STUB],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    pass_fds=(theirs.fileno(),),
                    cwd="/",
                    env=_ENV,
                    start_new_session=True,
                )
                setup = {"socket_fd": theirs.fileno(), "parent_pid": os.getpid()}
                process.stdin.write(marshal.dumps((zygote_code(), setup)))
                process.stdin.close()
                self.pid = process.pid
            except BaseException as exc:  # noqa: BLE001  (reported to the starting thread)
                failure.append(exc)
                started.set()
                return
            started.set()
            process.wait()
            self.alive = False

        threading.Thread(target=keep, name="sandbox-fork-server", daemon=True).start()
        started.wait()
        theirs.close()
        if failure:
            self.alive = False
            raise ForkServerError(f"could not start the fork server: {failure[0]}")

    def _ask(self, request: dict, fds: tuple[int, ...] = ()) -> dict:
        with self._lock:
            try:
                socket.send_fds(self._socket, [marshal.dumps(request)], list(fds))
                answer = self._socket.recv(1 << 16)
            except OSError as exc:
                self.alive = False
                raise ForkServerError(f"the fork server is gone: {exc}") from exc
        if not answer:
            self.alive = False
            raise ForkServerError("the fork server is gone")
        return marshal.loads(answer)

    def spawn(
        self, stdio: tuple[int, int, int], fds: tuple[int, ...], cwd: str, env: dict, report: bool
    ) -> int:
        """Fork a supervisor with ``stdio`` as its 0/1/2 and ``fds`` (records, the report pipe
        when ``report``, the link) after them; its pid."""
        answer = self._ask(
            {"op": "spawn", "cwd": cwd, "env": env, "report": report}, (*stdio, *fds)
        )
        if "error" in answer:
            raise ForkServerError(answer["error"])
        return int(answer["pid"])

    def reap(self, pid: int) -> int | None:
        """The exit code of an exited supervisor (negative: the signal), after which its pid is
        free."""
        try:
            return self._ask({"op": "reap", "pid": pid})["code"]
        except ForkServerError:
            return None  # the server died, and its children with it (parent-death signal)


class ForkedProcess:
    """A supervisor forked by the fork server, seen through ``Popen``'s interface."""

    def __init__(self, server: ForkServer, pid: int, stdin: int, stdout: int, stderr: int):
        self._server, self.pid, self.returncode = server, pid, None
        self.server_pid = server.pid
        self._pidfd = os.pidfd_open(pid)
        self.stdin = open(stdin, "wb", buffering=0)
        self.stdout = open(stdout, "rb", buffering=0)
        self.stderr = open(stderr, "rb", buffering=0)

    def _exited(self, timeout: float | None) -> bool:
        return bool(select.select([self._pidfd], [], [], timeout)[0])

    def poll(self) -> int | None:
        if self.returncode is None and self._exited(0):
            self.returncode = self._reap()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int | None:
        if self.returncode is None:
            if not self._exited(timeout):
                raise subprocess.TimeoutExpired(f"sandbox supervisor {self.pid}", timeout or 0)
            self.returncode = self._reap()
        return self.returncode

    def _reap(self) -> int:
        code = self._server.reap(self.pid)
        return -9 if code is None else code

    def __enter__(self) -> ForkedProcess:
        return self

    def __exit__(self, *exc) -> None:
        for stream in (self.stdin, self.stdout, self.stderr):
            with contextlib.suppress(OSError):
                stream.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.wait()
        os.close(self._pidfd)


_SERVERS: dict[bool, ForkServer] = {}
_SERVERS_LOCK = threading.Lock()


def enabled() -> bool:
    """Whether sandboxes start through a fork server here (``$DLLM_RL_SANDBOX_FORKSERVER``, and
    a kernel with ``pidfd_open``)."""
    wanted = os.environ.get("DLLM_RL_SANDBOX_FORKSERVER", "1").strip().lower()
    return wanted not in ("0", "false", "no", "off") and hasattr(os, "pidfd_open")


def server(site_packages: bool) -> ForkServer:
    """This process's fork server for ``site_packages`` (started on first use, and again if it
    died or the process forked)."""
    with _SERVERS_LOCK:
        current = _SERVERS.get(site_packages)
        if current is None or not current.alive or current.owner_pid != os.getpid():
            current = _SERVERS[site_packages] = ForkServer(site_packages)
        return current


def spawn(
    site_packages: bool, fds: tuple[int, ...], cwd: str, env: dict, report: bool
) -> ForkedProcess:
    """Start a supervisor through the fork server: new pipes for its stdio, ``fds`` passed on
    (the caller closes its copies)."""
    pipes = [os.pipe() for _ in range(3)]
    child_ends = (pipes[0][0], pipes[1][1], pipes[2][1])
    our_ends = (pipes[0][1], pipes[1][0], pipes[2][0])
    try:
        fork_server = server(site_packages)
        try:
            pid = fork_server.spawn(child_ends, fds, cwd, env, report)
        except ForkServerError:
            if fork_server.alive:
                raise
            pid = (fork_server := server(site_packages)).spawn(child_ends, fds, cwd, env, report)
    except BaseException:
        for fd in (*child_ends, *our_ends):
            os.close(fd)
        raise
    for fd in child_ends:
        os.close(fd)
    return ForkedProcess(fork_server, pid, *our_ends)
