# The sandbox's boot program. It runs inside the sandbox process, started as
# `python -I -S -c BOOT_STUB` (or forked by the fork server, forkserver.py), and locks the process
# down before running the program: enter namespaces (network, pid, mount, ipc, user where needed),
# join the run's cgroups, `pivot_root` into a minimal read-only root with a private /tmp and /proc,
# set resource limits, drop to the leased uid (or drop every capability), apply Landlock and
# seccomp, close every descriptor but the program's own, run the program and supervise it (a child
# subreaper with a wall-clock timeout). rewards/sandbox/__init__.py describes the layers.
#
# Standard library only, imported inside each function. Not a module of the package: the parent
# reads this file once (dllm_rl.rewards.sandbox.sources), appends `_boot_main()`, compiles it and sends the
# code with the run's configuration on stdin (marshal), before stdin is swapped for /dev/null.


def _boot_main() -> None:
    """Read the configuration, isolate, fork the program and supervise it."""
    import ctypes
    import os
    import signal

    config = globals().pop("__sandbox_config__")
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig, pr_set_child_subreaper = 1, 36
    libc.prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0)  # the trainer died: so do we
    if os.getppid() != config["parent_pid"]:  # it died before the line above
        os._exit(70)
    libc.prctl(pr_set_child_subreaper, 1, 0, 0, 0)  # orphans (setsid daemons) come back to us
    records_fd = config.pop("records_fd")
    send = _boot_channel(records_fd, config["token"])
    try:
        namespaces = _boot_unshare() if config["namespaces"] else []
        # The program's proof that this supervisor lives: its write end, held here until death.
        alive_read, alive_write = os.pipe()
        pid = os.fork()
    except Exception as exc:
        send("error", f"sandbox setup failed: {type(exc).__name__}: {exc}")
        os._exit(70)
    if pid == 0:
        os.close(alive_write)
        config["alive_fd"] = alive_read  # closed with the rest before the program runs
        try:
            facts = _boot_enter(config, namespaces)
        except BaseException as exc:
            send("error", f"sandbox setup failed: {type(exc).__name__}: {exc}")
            os._exit(70)
        send("ready", ",".join(facts))
        # The supervisor's records travel on a descriptor the program never holds; nothing
        # opened before the privilege drop survives either: only stdio, report and link pipes.
        report_fd = config["report_fd"]  # None: the program has no report channel
        keep = sorted({0, 1, 2, *config["link_fds"]} | ({report_fd} - {None}))
        for low, high in zip(keep, keep[1:] + [2**20]):
            os.closerange(low + 1, high)
        del send
        report = None if report_fd is None else _boot_channel(report_fd, config["token"])
        _boot_run(config["source"], report, config)
    os.close(alive_read)
    for fd in config["link_fds"]:  # the program's alone: its peer must see it end
        os.close(fd)
    _boot_supervise(pid, config["timeout_s"], send, "pid" in namespaces)


def _boot_channel(fd: int, token: str):
    """``send(kind, text)``: one record on a pipe. Binds every callable it uses now, so that the
    program cannot change its behaviour by patching modules or builtins."""
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

    libc = ctypes.CDLL(None, use_errno=True)
    _boot_die_with_parent(libc, config["alive_fd"])  # fork cleared the supervisor's own
    os.setsid()
    facts = list(namespaces)
    # Opened now, while /sys is in view; joined after the mounts (cheaper: less to charge) and
    # before anything forks.
    cgroup_fds = [os.open(f"{path}/cgroup.procs", os.O_WRONLY) for path in config["cgroups"]]
    workdir = config["workdir"]
    if "mount" in namespaces:
        facts += _boot_mount(libc, config, "pid" in namespaces)
        if "private-tmp" in facts:
            workdir = "/tmp"
    for fd in cgroup_fds:
        os.write(fd, str(os.getpid()).encode())  # read in our pid namespace: ourselves
        os.close(fd)
    if cgroup_fds:
        facts.append(config["cgroup_layer"])
    uid = config["uid"]
    drop_uid = uid is not None and os.geteuid() == 0 and "user" not in namespaces
    if drop_uid and "minimal-root" not in facts:
        facts += _boot_preimport(uid)
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
    if drop_uid:
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
        facts.append(f"uid={uid}")
    elif os.geteuid() == 0:  # root of a user namespace (ours, or a container's): no uid to drop to
        _boot_drop_capabilities(libc)
        facts.append("no-capabilities")
    pr_set_dumpable, pr_set_no_new_privs = 4, 38
    if libc.prctl(pr_set_no_new_privs, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
    # Not dumpable: no process of the same uid may ptrace it or read its memory (the judge of the
    # code grader, where both run as one uid).
    libc.prctl(pr_set_dumpable, 0, 0, 0, 0)
    _boot_die_with_parent(libc, config["alive_fd"])  # the uid drop cleared it
    if config["landlock"]:
        facts += _boot_landlock(libc, workdir)
    if config["seccomp"]:
        facts += _boot_seccomp(libc)
    return facts


def _boot_die_with_parent(libc, alive_fd: int) -> None:
    """Arm the parent-death signal (SIGKILL when the supervisor dies), then exit if the supervisor
    already died before it was armed: a fork and a uid change clear the signal, so a supervisor
    killed while the program boots (its mounts take a while) would leave the program running.
    The supervisor holds the pipe's write end until it dies and never writes, so the pipe reads
    as end-of-file exactly when it is gone (``getppid`` cannot tell: in a pid namespace it is 0)."""
    import os
    import signal

    libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
    os.set_blocking(alive_fd, False)
    try:
        gone = os.read(alive_fd, 1) == b""
    except BlockingIOError:  # nothing to read, and a writer still holds the pipe
        gone = False
    if gone:
        os._exit(70)


def _boot_landlock(libc, workdir: str) -> list[str]:
    """Landlock (Linux 5.13+, no privilege needed), in every mode: the program may create, write,
    truncate, rename or delete files only beneath its working directory (and write to
    ``/dev/null``); from ABI 6 on it may also neither signal processes nor reach abstract Unix
    sockets outside its own sandbox (the supervisor, the trainer, the judge of the code grader).
    Reading is not restricted here (the minimal root hides what it should)."""
    import ctypes
    import os

    create, add_rule, restrict = 444, 445, 446  # the same on every architecture
    abi = libc.syscall(create, None, 0, 1)  # LANDLOCK_CREATE_RULESET_VERSION
    if abi < 1:
        return []
    writes = 0
    for bit, since in (
        (1, 1),
        (4, 1),
        (5, 1),
        (6, 1),
        (7, 1),
        (8, 1),
        (9, 1),
        (10, 1),
        (11, 1),
        (12, 1),
        (13, 2),
        (14, 3),
        (15, 5),
    ):
        if abi >= since:  # write_file, remove_dir/file, make_*, refer, truncate, ioctl_dev
            writes |= 1 << bit
    file_rights = writes & ((1 << 1) | (1 << 14) | (1 << 15))
    scoped = 3 if abi >= 6 else 0  # abstract Unix sockets, signals

    class Ruleset(ctypes.Structure):
        _fields_ = [("fs", ctypes.c_uint64), ("net", ctypes.c_uint64), ("scoped", ctypes.c_uint64)]

    class Beneath(ctypes.Structure):
        _pack_ = 1
        _fields_ = [("allowed", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]

    attr = Ruleset(writes, 0, scoped)
    size = 24 if abi >= 6 else 16 if abi >= 4 else 8
    ruleset = libc.syscall(create, ctypes.byref(attr), size, 0)
    if ruleset < 0:
        raise OSError(ctypes.get_errno(), "landlock_create_ruleset")
    try:
        for path, rights in ((workdir, writes), ("/dev/null", file_rights)):
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                rule = Beneath(rights, fd)
                if libc.syscall(add_rule, ruleset, 1, ctypes.byref(rule), 0) != 0:
                    raise OSError(ctypes.get_errno(), f"landlock_add_rule {path}")
            finally:
                os.close(fd)
        if libc.syscall(restrict, ruleset, 0) != 0:
            raise OSError(ctypes.get_errno(), "landlock_restrict_self")
    finally:
        os.close(ruleset)
    return ["landlock-writes"] + (["landlock-scoped"] if scoped else [])


def _boot_preimport(uid: int) -> list[str]:
    """Without a minimal root, the interpreter's files may be out of the uid's reach (Python
    under a 0700 home): import common standard modules while still privileged, so that programs
    can use them; other imports then fail. No descriptor is kept open for the program."""
    import os
    import stat
    import sys

    def reachable(path):
        parts = os.path.abspath(path).split(os.sep)
        for i in range(1, len(parts) + 1):
            try:
                mode = os.stat(os.sep.join(parts[:i]) or os.sep).st_mode
            except OSError:
                return False
            if not mode & stat.S_IXOTH or (i == len(parts) and not mode & stat.S_IROTH):
                return False
        return True

    if all(reachable(entry) for entry in sys.path if entry and os.path.isdir(entry)):
        return []
    for name in (
        "array bisect cmath collections copy dataclasses datetime decimal enum errno fractions "
        "functools hashlib heapq io itertools json math numbers operator random re select "
        "signal socket stat statistics string struct textwrap threading time traceback typing "
        "unicodedata"
    ).split():
        try:
            __import__(name)
        except ImportError:
            pass
    return ["preimported-stdlib"]


def _boot_mount(libc, config: dict, new_pid_namespace: bool) -> list[str]:
    """In the new mount namespace: a minimal root file system holding only the interpreter's
    files and system libraries (read-only), five device files, a private size-capped ``/tmp``
    and (in a new pid namespace) a private ``/proc``; then ``pivot_root`` into it. The project
    tree, home directories, ``/etc``, ``/run`` and every socket file outside it are gone."""
    import ctypes
    import os
    import sys

    ms_rdonly, ms_nosuid, ms_nodev, ms_noexec = 1, 2, 4, 8
    ms_remount, ms_bind, ms_rec, ms_private = 32, 4096, 0x4000, 1 << 18
    kept = 1 | 2 | 4 | 8 | 1024 | 2048 | 4096  # statvfs flags with MS_ bits; locked ones must stay
    parent_ns = config["parent_mount_ns"]
    if not parent_ns or os.readlink("/proc/self/ns/mnt") == parent_ns:
        return []  # never remount anything unless provably in a namespace of our own
    pivot_root = {"x86_64": 155, "aarch64": 41}.get(os.uname().machine)
    if pivot_root is None or libc.mount(None, b"/", None, ms_rec | ms_private, None) != 0:
        return []

    def check(ok, what):
        if not ok:
            raise OSError(ctypes.get_errno(), f"{what}: {os.strerror(ctypes.get_errno())}")

    root = config["workdir"]
    check(
        libc.mount(b"tmpfs", root.encode(), b"tmpfs", ms_nosuid | ms_nodev, b"size=1m,mode=755")
        == 0,
        "mount the new root",
    )
    binds = []
    system = ["/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"]
    for path in system + sorted(sys.path, key=len):
        if not path or not os.path.exists(path):
            continue
        if os.path.islink(path) and os.path.dirname(path) == "/":  # merged /usr: /lib -> usr/lib
            os.symlink(os.readlink(path), root + path)
        elif os.path.isdir(path) and not any(path.startswith(b + "/") for b in binds):
            binds.append(path)
    files = [f"/dev/{name}" for name in ("null", "zero", "full", "random", "urandom")]
    files.append("/etc/ld.so.cache")  # where the dynamic loader finds shared libraries
    for path in binds + files:
        if path in files:
            if not os.path.exists(path):
                continue
            os.makedirs(os.path.dirname(root + path), exist_ok=True)
            open(root + path, "w").close()
        else:
            os.makedirs(root + path, exist_ok=True)
        check(libc.mount(path.encode(), (root + path).encode(), None, ms_bind, None) == 0, path)
        flags = (os.statvfs(root + path).f_flag & kept) | ms_bind | ms_remount | ms_rdonly
        check(libc.mount(None, (root + path).encode(), None, flags | ms_nosuid, None) == 0, path)
    facts = ["minimal-root", "read-only-fs"]
    os.makedirs(root + "/tmp")
    options = f"size={int(config['tmp_mb'])}m,mode=1777".encode()
    check(
        libc.mount(b"tmpfs", (root + "/tmp").encode(), b"tmpfs", ms_nosuid | ms_nodev, options)
        == 0,
        "mount /tmp",
    )
    facts.append("private-tmp")
    os.makedirs(root + "/var")
    for link in ("/var/tmp", "/dev/shm"):
        os.symlink("/tmp", root + link)
    if new_pid_namespace:
        os.makedirs(root + "/proc")
        flags = ms_nosuid | ms_nodev | ms_noexec
        if libc.mount(b"proc", (root + "/proc").encode(), b"proc", flags, None) == 0:
            facts.append("private-proc")
    os.chdir(root)
    check(libc.syscall(pivot_root, b".", b".") == 0, "pivot_root")
    check(libc.umount2(b".", 2) == 0, "detach the old root")  # MNT_DETACH
    os.chdir("/")
    flags = ms_remount | ms_bind | ms_rdonly | ms_nosuid | ms_nodev
    check(libc.mount(None, b"/", None, flags, None) == 0, "make the new root read-only")
    return facts


def _boot_seccomp(libc) -> list[str]:
    """A seccomp filter: no Unix-domain sockets (``socket``/``socketpair`` with ``AF_UNIX`` fail
    with ``EACCES``, so no socket file anywhere can be connected to, in any mode), no io_uring
    (it could create them), and no other system call ABI (32-bit, x32) to get around it."""
    import ctypes
    import os

    table = {  # machine: (audit arch, socket, socketpair, io_uring_setup)
        "x86_64": (0xC000003E, 41, 53, 425),
        "aarch64": (0xC00000B7, 198, 199, 425),
    }
    if os.uname().machine not in table:
        return []
    arch, socket, socketpair, io_uring = table[os.uname().machine]
    ld, jeq, jge, ret = 0x20, 0x15, 0x35, 0x06
    allow, kill, refuse = 0x7FFF0000, 0x80000000, 0x00050000 | 13  # EACCES
    program = [
        (ld, 0, 0, 4),  # arch
        (jeq, 1, 0, arch),
        (ret, 0, 0, kill),
        (ld, 0, 0, 0),  # system call number
        (jge, 0, 1, 0x40000000),  # x32 numbers
        (ret, 0, 0, kill),
        (jeq, 3, 0, io_uring),
        (jeq, 3, 0, socket),
        (jeq, 2, 0, socketpair),
        (ret, 0, 0, allow),
        (ret, 0, 0, refuse),  # io_uring_setup
        (ld, 0, 0, 16),  # socket(family, ...): the family, low 32 bits of the first argument
        (jeq, 1, 0, 1),  # AF_UNIX
        (ret, 0, 0, allow),
        (ret, 0, 0, refuse),
    ]

    class Filter(ctypes.Structure):
        _fields_ = [
            ("code", ctypes.c_uint16),
            ("jt", ctypes.c_uint8),
            ("jf", ctypes.c_uint8),
            ("k", ctypes.c_uint32),
        ]

    class Program(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(Filter))]

    filters = (Filter * len(program))(*[Filter(*row) for row in program])
    prog = Program(len(program), filters)
    pr_set_seccomp, seccomp_mode_filter = 22, 2
    if libc.prctl(pr_set_seccomp, seccomp_mode_filter, ctypes.byref(prog), 0, 0) != 0:
        if ctypes.get_errno() == 22:  # EINVAL: a kernel without seccomp filters; say so
            return []
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP)")
    return ["seccomp-no-unix-sockets"]


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


def _boot_run(source: str, send, config: dict) -> None:
    """Run the program as ``__main__`` and exit with its status (never returns)."""
    import builtins
    import os
    import sys

    namespace = {
        "__name__": "__main__",
        "__builtins__": builtins,
        "__sandbox_link__": tuple(config["link_fds"]),
    }
    if send is not None:

        def report(text, _send=send):
            _send("report", text)

        namespace["__sandbox_report__"] = report
    preamble = config["preamble"]
    del send, config
    status = 0
    try:
        if preamble is not None:  # compiled by the parent (code the program builds on)
            exec(preamble, namespace)
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


def _boot_supervise(pid: int, timeout_s: float, send, pid_namespace: bool) -> None:
    """Wait for the program; at the deadline (or on SIGTERM) kill it and every descendant.

    In a pid namespace the program is its init: when it dies the kernel kills the rest. Without
    one, this process is a child subreaper, so descendants that left the program's session
    (``setsid`` daemons, double forks) are reparented here and killed too."""
    import os
    import signal
    import time

    timed_out = []
    me = os.getpid()

    def children():
        found = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat", "rb") as f:
                        stat = f.read()
                except OSError:
                    continue
                if int(stat[stat.rindex(b")") + 2 :].split()[1]) == me:
                    found.append(int(entry))
        return found

    def kill(*_):
        for target in (pid, -pid):  # the program (init of its pid namespace), then its group
            try:
                os.kill(target, signal.SIGKILL)
            except OSError:
                pass

    def kill_descendants():
        while True:  # until no child is left: each round takes the orphans of the last
            for child in children():
                try:
                    os.kill(child, signal.SIGKILL)
                except OSError:
                    pass
            try:
                while os.waitpid(-1, os.WNOHANG)[0] > 0:
                    pass
            except ChildProcessError:
                return
            time.sleep(0.005)

    def on_alarm(*_):
        timed_out.append(True)
        kill()

    signal.signal(signal.SIGALRM, on_alarm)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, kill)
    signal.setitimer(signal.ITIMER_REAL, timeout_s)
    while True:
        waited, status = os.waitpid(-1, 0)  # orphans come here too: reap them as they end
        if waited == pid:
            break
    signal.setitimer(signal.ITIMER_REAL, 0)
    kill()
    if not pid_namespace:
        kill_descendants()
    send("exit", f"{status} {1 if timed_out else 0}")
    os._exit(0)
