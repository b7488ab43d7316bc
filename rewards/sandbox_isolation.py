"""Sandbox isolation: the uid a program runs as, and the code that locks its process down.

Parent side: :func:`lease_uid` leases an unprivileged uid for one run when running as root (a pool
of ``_UID_POOL_SIZE`` uids, shared across processes through file locks), and
:func:`kill_all_of_uid` kills whatever a run left behind as that uid.

Child side: the ``_boot_*`` functions run inside the sandbox process, whose source
:func:`boot_source` assembles: enter namespaces (network, pid, mount, ipc, user where needed),
make file systems read-only and mount private temporary directories and ``/proc``, set resource
limits, drop to the leased uid (or drop every capability), run the program and supervise it with
a wall-clock timeout. :mod:`rewards.sandbox` describes the layers and runs programs.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import functools
import inspect
import logging
import os
import secrets
import stat
import subprocess
from collections.abc import Iterator

logger = logging.getLogger(__name__)

_UID_POOL_SIZE = 1024  # uids leased to sandboxed programs when running as root (lock files)
_UID_POOL_STARTS = (1_000_000, 60_000)  # first pool fully mapped in this uid namespace is used
_RECENT_UIDS: collections.deque[int] = collections.deque(maxlen=256)  # leased last, not reused


def kill_all_of_uid(uid: int) -> None:
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
def lease_uid() -> Iterator[int | None]:
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
def boot_source() -> str:
    parts = [inspect.getsource(f) for f in _CHILD_FUNCTIONS]
    return "\n\n".join(parts) + "\n\n_boot_main()\n"
