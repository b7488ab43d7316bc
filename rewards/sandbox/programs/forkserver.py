# The fork server's program (the parent side is rewards/sandbox/zygote.py). It runs after boot.py
# in one namespace, followed by `_zygote_main()`: dllm_rl.rewards.sandbox.sources joins them. Standard
# library only, imported inside each function.


def _zygote_main() -> None:
    """The fork server: started once per trainer process, it imports what every sandbox needs and
    then forks one supervisor per request (which runs :func:`_boot_main`, as a freshly started
    interpreter would). It never holds a program's source: that reaches the forked child on its
    own stdin, so no program inherits another's text through this process's memory.

    Requests arrive on a ``SOCK_SEQPACKET`` socket from the trainer, with the child's descriptors
    attached: ``spawn`` answers the supervisor's pid, ``reap`` waits for an exited supervisor and
    answers its exit code (the pid stays reserved until then, so the trainer may signal its group
    safely)."""
    import ctypes
    import json  # noqa: F401  (imported once here: every servant and judge uses them)
    import marshal
    import os
    import resource  # noqa: F401
    import select  # noqa: F401
    import signal
    import socket

    config = globals().pop("__sandbox_config__")
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG: the trainer died, so do we
    if os.getppid() != config["parent_pid"]:
        os._exit(70)
    server = socket.socket(fileno=config["socket_fd"])
    while True:
        try:
            message, fds, _, _ = socket.recv_fds(server, 1 << 16, 16)
        except OSError:
            os._exit(0)
        if not message:  # the trainer closed the socket
            os._exit(0)
        request = marshal.loads(message)
        if request["op"] == "reap":
            for fd in fds:
                os.close(fd)
            try:
                _, status = os.waitpid(request["pid"], 0)
                answer = {"code": os.waitstatus_to_exitcode(status)}
            except ChildProcessError:
                answer = {"code": None}
            server.send(marshal.dumps(answer))
            continue
        try:
            pid = os.fork()
        except OSError as exc:
            for fd in fds:
                os.close(fd)
            server.send(marshal.dumps({"error": f"fork: {exc}"}))
            continue
        if pid == 0:
            server.close()
            del message, config
            _zygote_child(request, fds)  # never returns
        for fd in fds:
            os.close(fd)
        server.send(marshal.dumps({"pid": pid}))


def _zygote_child(request: dict, fds: list) -> None:
    """In the forked child: become what ``subprocess.Popen`` would have started (its own session,
    stdio on the given pipes, the working directory and environment), read the run's
    configuration from stdin, and boot (:func:`_boot_main`)."""
    import marshal
    import os

    os.setsid()
    for target, fd in zip((0, 1, 2), fds[:3]):
        os.dup2(fd, target)
        os.close(fd)
    rest = list(fds[3:])
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    chunks = []
    while True:
        chunk = os.read(0, 1 << 20)
        if not chunk:
            break
        chunks.append(chunk)
    config = marshal.loads(b"".join(chunks))
    config["records_fd"] = rest.pop(0)
    config["report_fd"] = rest.pop(0) if request["report"] else None
    config["link_fds"] = tuple(rest)
    globals()["__sandbox_config__"] = config
    _boot_main()
    os._exit(0)
