"""The programs that run inside the sandbox, read once from the package's ``programs/`` folder.

They are real Python files (linted and read like the rest of the code), not modules of the
package: each runs in a fresh ``python -I -S`` interpreter, so it uses only the standard library,
imported inside its functions. Some are joined into one source before they run:

- ``boot.py`` + ``_boot_main()``: every sandbox's supervisor (:func:`boot_code`);
- ``boot.py`` + ``forkserver.py`` + ``_zygote_main()``: the fork server (:func:`zygote_code`);
- ``link.py`` + ``servant.py``: the code reward's candidate side (:func:`servant_source`);
- ``link.py`` + ``judge.py``: the code reward's test side (:func:`judge_source`).

Reading the files needs no parsing (the programs used to be assembled from this package's own
functions with ``inspect.getsource``, which parses with ``ast`` and needed a lock under threads).
"""

from __future__ import annotations

import functools
from importlib import resources


def _stub(name: str) -> str:
    """A ``python -c`` program that runs the code and configuration sent on stdin (marshal) as
    ``name``."""
    return (
        "import marshal, sys\n"
        "code, config = marshal.loads(sys.stdin.buffer.read())\n"
        f"exec(code, {{'__name__': '{name}', '__sandbox_config__': config}})\n"
    )


BOOT_STUB = _stub("__sandbox_boot__")
"""The ``-c`` program of a sandbox: it runs :func:`boot_code` with its configuration."""

ZYGOTE_STUB = _stub("__sandbox_zygote__")
"""The ``-c`` program of the fork server: it runs :func:`zygote_code` with its configuration."""


@functools.cache
def program_source(*names: str) -> str:
    """The files ``programs/<name>.py``, joined in order (read once per process)."""
    folder = resources.files(__package__).joinpath("programs")
    return "\n\n".join(folder.joinpath(f"{name}.py").read_text(encoding="utf-8") for name in names)


def boot_source() -> str:
    """The supervisor's program: ``boot.py``, then ``_boot_main()``."""
    return program_source("boot") + "\n\n_boot_main()\n"


@functools.cache
def boot_code():
    """:func:`boot_source`, compiled once per process (compiling it costs more than the rest of a
    sandbox's start-up)."""
    return compile(boot_source(), "<sandbox-boot>", "exec")


@functools.cache
def zygote_code():
    """The fork server's code: the boot functions, its own, then ``_zygote_main()``."""
    source = program_source("boot", "forkserver") + "\n\n_zygote_main()\n"
    return compile(source, "<sandbox-zygote>", "exec")


def servant_source() -> str:
    """The servant's functions (call ``_servant_main(data)`` after them)."""
    return program_source("link", "servant")


def judge_source() -> str:
    """The judge's functions (call ``_judge_main(data)`` after them)."""
    return program_source("link", "judge")
