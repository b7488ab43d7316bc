"""Sandbox isolation, parent side: the uid a program runs as, and the sweep of leftovers.

:func:`lease_uid` leases an unprivileged uid for one run when running as root (a pool of
``_UID_POOL_SIZE`` uids, shared across processes through file locks), :func:`kill_all_of_uid`
kills whatever a run left behind as that uid, and :func:`sweep_stale` removes, once per process,
what a killed trainer left: working folders and cgroups named after a process that is gone, and
processes of pool uids that nobody leases. The code that locks the sandbox process down runs
inside it: ``programs/boot.py``.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import functools
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


WORKDIR_PREFIX = "dllm-rl-sandbox-"
_LOCK_DIR = "/tmp/dllm-rl-sandbox-uids"  # fixed, not $TMPDIR: all processes must agree


def _start_time(pid: int) -> str | None:
    """The start time of process ``pid`` (clock ticks since boot), ``None`` if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat_line = f.read()
    except OSError:
        return None
    return stat_line[stat_line.rindex(b")") + 2 :].split()[19].decode()


@functools.lru_cache(maxsize=1)
def owner_tag() -> str:
    """``<pid>.<start time>`` of this process: working directories carry it, so that a later
    process can tell the folders of a process that is gone (a trainer killed with SIGKILL)."""
    return f"{os.getpid()}.{_start_time(os.getpid())}"


_swept: set[int] = set()


def _owner_gone(name: str) -> bool:
    """Whether ``name`` (``dllm-rl-sandbox-<pid>.<start>-...``) belongs to a process now gone."""
    if not name.startswith(WORKDIR_PREFIX):
        return False
    pid, _, started = name[len(WORKDIR_PREFIX) :].split("-", 1)[0].partition(".")
    return pid.isdigit() and bool(started) and _start_time(int(pid)) != started


def sweep_stale(force: bool = False) -> None:
    """Once per process (or when ``force``): delete the sandbox working directories whose owner
    process is gone, and (as root) kill what still runs as a pool uid no live process leases."""
    if os.getpid() in _swept and not force:
        return
    _swept.add(os.getpid())
    import shutil
    import tempfile

    from .cgroup import sweep_cgroups

    base = tempfile.gettempdir()
    with contextlib.suppress(OSError):
        for name in os.listdir(base):
            path = os.path.join(base, name)
            with contextlib.suppress(OSError):
                # Ours: our uid, or (as root) chowned to a sandbox uid.
                mine = os.geteuid() == 0 or os.lstat(path).st_uid == os.geteuid()
                if mine and _owner_gone(name):
                    shutil.rmtree(path, ignore_errors=True)
    sweep_cgroups(WORKDIR_PREFIX, _owner_gone)
    pool = _uid_pool() if os.geteuid() == 0 else None
    if pool is None:
        return
    uids = set()
    for entry in os.listdir("/proc"):
        with contextlib.suppress(OSError, ValueError):
            if entry.isdigit():
                uid = os.stat(f"/proc/{entry}").st_uid
                if pool <= uid < pool + _UID_POOL_SIZE:
                    uids.add(uid)
    for uid in uids:
        with contextlib.suppress(OSError), _try_lock(uid) as held:
            if held:
                kill_all_of_uid(uid)


@contextlib.contextmanager
def _try_lock(uid: int) -> Iterator[bool]:
    """Hold the lease lock of ``uid`` if nobody does (``True``), else yield ``False``."""
    os.makedirs(_LOCK_DIR, mode=0o700, exist_ok=True)
    info = os.lstat(_LOCK_DIR)
    if info.st_uid != 0 or not stat.S_ISDIR(info.st_mode):
        raise PermissionError(f"{_LOCK_DIR} must be a directory owned by root")
    fd = os.open(os.path.join(_LOCK_DIR, str(uid)), os.O_CREAT | os.O_RDWR | os.O_NOFOLLOW, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # releases the lock


@contextlib.contextmanager
def lease_uid(drop: bool = True) -> Iterator[int | None]:
    """An unprivileged uid used by no other sandboxed program while held (``None`` if not root,
    or if ``drop`` is false: the program then keeps the caller's uid).

    Leases are ``flock``s on files in a root-only directory, so they hold across processes (several
    trainer ranks on one machine) and vanish with the process that holds them.
    """
    pool = _uid_pool() if os.geteuid() == 0 and drop else None
    if pool is None:
        yield None
        return
    first = secrets.randbelow(_UID_POOL_SIZE)
    for i in range(_UID_POOL_SIZE):
        uid = pool + (first + i) % _UID_POOL_SIZE
        if uid in _RECENT_UIDS:  # so that "processes of this uid" means one run's processes
            continue
        with _try_lock(uid) as held:
            if not held:
                continue
            try:
                yield uid
            finally:
                _RECENT_UIDS.append(uid)
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
