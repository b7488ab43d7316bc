"""Run untrusted, model-generated Python in a throwaway, locked-down process.

One call to :func:`run_program` starts one fresh interpreter (``python -I -S -B``: isolated mode,
no site-packages, no bytecode files; forked from a pre-started one, :mod:`dllm_rl.rewards.sandbox.zygote`)
with an environment scrubbed of the parent's variables, stdin on ``/dev/null`` and a fresh
working directory, and returns a typed :class:`SandboxResult`.
Layers, each used where the OS allows it (``SandboxResult.isolation`` lists those a run got):

- **always**: resource limits (address space, CPU seconds, processes, open files, file size, no
  core dumps), its own session, a wall-clock timeout after which the program and every descendant
  is killed (in a pid namespace with it; otherwise the supervisor is a child subreaper, so
  ``setsid`` daemons come back to it and are killed), output read with a cap, no descriptor but
  stdio and its own pipes (the supervisor's records travel on one the program never holds), no
  new privileges, not dumpable (no ptrace by its own uid), a parent-death signal;
- **Landlock** (``landlock-writes``; ``landlock-scoped`` from ABI 6): files are created or
  written only beneath its working directory; no signals or abstract sockets outside its sandbox;
- **seccomp** (``seccomp-no-unix-sockets``): no ``AF_UNIX`` socket can be created, so no socket
  file can be connected to; no io_uring; other syscall ABIs are killed;
- **cgroup** (``cgroup-v2:...``/``cgroup-v1:...``, :mod:`dllm_rl.rewards.sandbox.cgroup`): ``memory_mb``
  and ``max_processes`` for the whole program, where a cgroup can be created;
- **running as root**: an unprivileged uid leased for this run only (``uid=N``); where no such uid
  is mapped (a container mapping only root) it keeps uid 0 but loses every capability
  (``no-capabilities``), as it does inside a user namespace of its own;
- **root or unprivileged user namespaces**: network (``net``: no interface, not even loopback),
  pid (``pid``), ipc and mount namespaces; in the mount namespace a minimal root
  (``minimal-root``, ``read-only-fs``: ``pivot_root`` into the system libraries and the
  interpreter's files, read-only, five device files, a private size-capped ``/tmp`` that is its
  working directory, ``private-tmp``, and its own ``/proc``, ``private-proc``).

Forced degraded modes (tests, debugging): ``namespaces=False`` or
``$DLLM_RL_SANDBOX_NAMESPACES=0``; ``drop_uid=False`` or ``$DLLM_RL_SANDBOX_DROP_UID=0`` (how a
non-root caller runs); ``$DLLM_RL_SANDBOX_SECCOMP=0``, ``$DLLM_RL_SANDBOX_LANDLOCK=0``,
``$DLLM_RL_SANDBOX_CGROUP=0``. Without a mount namespace the program reads the whole file system
(and, as root dropping to a uid, imports only a preloaded set of standard modules when the
interpreter lives under a private home: ``preimported-stdlib``); without a network namespace it
reaches the network (``network_isolated`` says so).

Not covered: CPU shares between programs, reading world-readable files inside the minimal root
(``/usr``, the interpreter's folders), kernel exploits.

How a program reports a result: the sandbox puts ``__sandbox_report__(text)`` in the program's
globals; each call writes ``text`` to a report pipe (at most 4 MiB, else ``report_overflow`` and
no report). A report is what the program says: graders that must not trust the program judge
elsewhere (:func:`run_linked`, which the code reward uses; ``programs/judge.py``), and
there the untrusted program gets no report channel at all.

The package, by concept:

- :mod:`dllm_rl.rewards.sandbox.runner`: the public API and the parent side (spawning, collecting output
  and results), re-exported here;
- :mod:`dllm_rl.rewards.sandbox.isolation`: the uid leasing and the sweep of what a killed trainer left;
- :mod:`dllm_rl.rewards.sandbox.cgroup`: memory and process limits for a whole program;
- :mod:`dllm_rl.rewards.sandbox.zygote`: the fork server's parent side;
- ``programs/``: the code that runs inside the sandbox (boot, fork server, the code reward's
  servant and judge), real Python files read once by :mod:`dllm_rl.rewards.sandbox.sources`.

The attack suites that check all of it live with the tests (``tests/attacks/``), run by the suite
and by ``scripts/check_rewards.py``.
"""

from .runner import (
    SandboxResult,
    isolation_available,
    max_concurrency_default,
    max_wall_s,
    network_isolation_available,
    run_linked,
    run_program,
    run_programs,
)

__all__ = [
    "SandboxResult",
    "isolation_available",
    "max_concurrency_default",
    "max_wall_s",
    "network_isolation_available",
    "run_linked",
    "run_program",
    "run_programs",
]
