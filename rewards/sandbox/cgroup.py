"""Control groups for sandboxed programs: one memory and one process limit for the whole program.

``RLIMIT_AS`` bounds each process; a program that forks can hold ``memory_mb`` per child. Where
this machine lets us create control groups (root, or a delegated subtree), each run gets its own:

- **cgroup v2** where the unified hierarchy offers the ``memory`` and ``pids`` controllers to our
  cgroup's children: ``memory.max`` (and ``memory.swap.max = 0``), ``pids.max``;
- else **cgroup v1** ``memory`` (``memory.limit_in_bytes``, and ``memory.memsw.limit_in_bytes``
  where swap is accounted) and ``pids`` (``pids.max``) hierarchies.

Groups of finished runs are kept, empty, for the next run (:func:`acquire`, :func:`release`).
The program's first process joins them before it forks anything (in the sandbox, before the
privilege drop: ``_boot_enter`` in ``programs/boot.py``); the parent removes them after the run
and, at start-up, removes those left by a process that is gone (:func:`sweep_cgroups`). The layer is reported as
``cgroup-v2`` or ``cgroup-v1`` with the controllers it holds; without one, memory is bounded per
process only.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Cgroup:
    """The control group folders of one run, and the layer name to report."""

    paths: tuple[str, ...]
    layer: str


def _mounts() -> dict[str, str]:
    """``{"unified": path, "memory": path, "pids": path}`` for the hierarchies mounted here."""
    found: dict[str, str] = {}
    with contextlib.suppress(OSError), open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            dash = fields.index("-")
            fstype, options = fields[dash + 1], fields[dash + 3].split(",") + fields[5].split(",")
            if fstype == "cgroup2":
                found.setdefault("unified", fields[4])
            elif fstype == "cgroup":
                for controller in ("memory", "pids"):
                    if controller in options:
                        found.setdefault(controller, fields[4])
    return found


def _own_paths() -> dict[str, str]:
    """Our cgroup in each hierarchy (``"unified"`` for v2), from ``/proc/self/cgroup``."""
    own: dict[str, str] = {}
    with contextlib.suppress(OSError), open("/proc/self/cgroup") as f:
        for line in f:
            number, controllers, path = line.rstrip("\n").split(":", 2)
            if number == "0" and not controllers:
                own["unified"] = path
            for controller in controllers.split(","):
                if controller in ("memory", "pids"):
                    own[controller] = path
    return own


def _write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _base_v2(mounts: dict[str, str], own: dict[str, str]) -> str | None:
    """Our v2 cgroup's folder, if its children may have the memory and pids controllers."""
    if "unified" not in mounts or "unified" not in own:
        return None
    base = os.path.join(mounts["unified"], own["unified"].lstrip("/"))
    try:
        with open(os.path.join(base, "cgroup.controllers")) as f:
            available = set(f.read().split())
        if not {"memory", "pids"} <= available:
            return None
        with open(os.path.join(base, "cgroup.subtree_control")) as f:
            enabled = set(f.read().split())
        if not {"memory", "pids"} <= enabled:
            _write(os.path.join(base, "cgroup.subtree_control"), "+memory +pids")
    except OSError:
        return None  # not delegated, or processes in a non-root cgroup (no internal processes)
    return base


_idle: list[Cgroup] = []  # empty groups of finished runs, reused (creating one costs ~15 ms)
_idle_lock = threading.Lock()
_unavailable: list[bool] = []


def acquire(name: str, memory_bytes: int, max_processes: int) -> Cgroup | None:
    """Control groups for one run with these limits: an idle one of an earlier run, else new ones
    named ``name``; ``None`` where none can be made here (remembered: not tried again)."""
    with _idle_lock:
        group = _idle.pop() if _idle else None
    if group is not None:
        try:
            _set_limits(group, memory_bytes, max_processes)
            return group
        except OSError:
            remove(group)
    if _unavailable:
        return None
    group = create(name, memory_bytes, max_processes)
    if group is None:
        _unavailable.append(True)
    return group


def release(group: Cgroup | None) -> None:
    """After a run: kill what is left in ``group``, then keep it for the next run (or remove it
    if it does not empty)."""
    if group is None:
        return
    deadline = time.monotonic() + 2.0
    while any(_members(path) for path in group.paths):
        for path in group.paths:
            _kill_members(path)
        if time.monotonic() > deadline:
            remove(group)
            return
        time.sleep(0.005)
    with _idle_lock:
        _idle.append(group)


@atexit.register
def _remove_idle() -> None:
    with _idle_lock:
        groups, _idle[:] = list(_idle), []
    for group in groups:
        remove(group, wait_s=0.5)


def _members(path: str) -> list[str]:
    try:
        with open(os.path.join(path, "cgroup.procs")) as f:
            return f.read().split()
    except OSError:
        return []


def _set_limits(group: Cgroup, memory_bytes: int, max_processes: int) -> None:
    for path in group.paths:
        if group.layer.startswith("cgroup-v2"):
            _write(os.path.join(path, "memory.max"), str(memory_bytes))
            _write(os.path.join(path, "pids.max"), str(max_processes))
        elif os.path.exists(os.path.join(path, "memory.limit_in_bytes")):
            memsw = os.path.join(path, "memory.memsw.limit_in_bytes")
            if os.path.exists(memsw):  # memsw >= memory at all times: order matters
                _write(memsw, str(2**62))
            _write(os.path.join(path, "memory.limit_in_bytes"), str(memory_bytes))
            if os.path.exists(memsw):
                _write(memsw, str(memory_bytes))
        else:
            _write(os.path.join(path, "pids.max"), str(max_processes))


def create(name: str, memory_bytes: int, max_processes: int) -> Cgroup | None:
    """Control groups for one run, named ``name`` (``None`` where none can be made here)."""
    mounts, own = _mounts(), _own_paths()
    base = _base_v2(mounts, own)
    made: list[str] = []
    try:
        if base is not None:
            path = os.path.join(base, name)
            os.mkdir(path)
            made.append(path)
            _write(os.path.join(path, "memory.max"), str(memory_bytes))
            with contextlib.suppress(OSError):
                _write(os.path.join(path, "memory.swap.max"), "0")
            _write(os.path.join(path, "pids.max"), str(max_processes))
            return Cgroup(tuple(made), "cgroup-v2:memory+pids")
        controllers = []
        for controller in ("memory", "pids"):
            if controller not in mounts or controller not in own:
                continue
            path = os.path.join(mounts[controller], own[controller].lstrip("/"), name)
            with contextlib.suppress(OSError):
                os.mkdir(path)
                made.append(path)
                if controller == "memory":
                    _write(os.path.join(path, "memory.limit_in_bytes"), str(memory_bytes))
                    with contextlib.suppress(OSError):  # swap accounting may be off
                        _write(os.path.join(path, "memory.memsw.limit_in_bytes"), str(memory_bytes))
                else:
                    _write(os.path.join(path, "pids.max"), str(max_processes))
                controllers.append(controller)
        if controllers:
            return Cgroup(tuple(made), "cgroup-v1:" + "+".join(controllers))
    except OSError as exc:
        logger.debug("no cgroup for the sandbox: %s", exc)
    remove(Cgroup(tuple(made), ""))
    return None


def remove(group: Cgroup | None, wait_s: float = 2.0) -> None:
    """Kill what is left in ``group`` and remove its folders (retrying while processes exit)."""
    if group is None:
        return
    deadline = time.monotonic() + wait_s
    for path in group.paths:
        while True:
            try:
                os.rmdir(path)
                break
            except FileNotFoundError:
                break
            except OSError:
                _kill_members(path)
                if time.monotonic() > deadline:
                    logger.warning("could not remove the sandbox cgroup %s", path)
                    break
                time.sleep(0.01)


def _kill_members(path: str) -> None:
    for pid in _members(path):
        with contextlib.suppress(OSError):
            os.kill(int(pid), signal.SIGKILL)


def sweep_cgroups(prefix: str, is_stale) -> None:
    """Remove our cgroups (folders named ``prefix...``) for which ``is_stale(name)`` is true."""
    mounts, own = _mounts(), _own_paths()
    for key in ("unified", "memory", "pids"):
        if key not in mounts or key not in own:
            continue
        base = os.path.join(mounts[key], own[key].lstrip("/"))
        with contextlib.suppress(OSError):
            for name in os.listdir(base):
                if name.startswith(prefix) and is_stale(name):
                    remove(Cgroup((os.path.join(base, name),), ""), wait_s=0.5)
