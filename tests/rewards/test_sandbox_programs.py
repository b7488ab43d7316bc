"""The code that runs inside the sandbox: plain files of the package, standard library only, read
once, joined in a fixed order; the attack suites are not part of the library."""

from __future__ import annotations

import ast
import importlib.util
import sys
from pathlib import Path

import pytest

from dllm_rl.rewards.sandbox import sources

PROGRAMS = Path(sources.__file__).with_name("programs")


def _imported_modules(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            names.add("." if node.level else (node.module or "").split(".")[0])
    return names


@pytest.mark.parametrize("name", ["boot", "forkserver", "link", "servant", "judge"])
def test_each_program_uses_the_standard_library_only_and_imports_inside_functions(name):
    tree = ast.parse((PROGRAMS / f"{name}.py").read_text(encoding="utf-8"))
    assert _imported_modules(tree) <= set(sys.stdlib_module_names), name
    # Nothing runs at the top level: the sandbox runs definitions, then the one call appended.
    for node in tree.body:
        assert isinstance(node, (ast.FunctionDef, ast.ClassDef)), (name, ast.dump(node)[:80])


def test_the_joined_programs_define_every_name_their_entry_points_call():
    for source, entry in (
        (sources.boot_source(), "_boot_main"),
        (sources.program_source("boot", "forkserver"), "_zygote_main"),
        (sources.servant_source(), "_servant_main"),
        (sources.judge_source(), "_judge_main"),
    ):
        defined = {n.name for n in ast.parse(source).body if hasattr(n, "name")}
        assert entry in defined
    assert sources.boot_source().rstrip().endswith("_boot_main()")
    # The judge and the servant share the link's code, placed first.
    link = sources.program_source("link")
    assert sources.servant_source().startswith(link) and sources.judge_source().startswith(link)
    assert "_Remote" not in sources.servant_source()  # the judge's proxies stay with the judge


def test_the_programs_are_read_once():
    sources.program_source.cache_clear()
    sources.judge_source()
    misses = sources.program_source.cache_info().misses
    for _ in range(3):
        sources.judge_source()
    assert sources.program_source.cache_info().misses == misses == 1


def test_the_attack_suites_are_not_part_of_the_library():
    for old in ("sandbox_redteam", "sandbox_hostile", "sandbox.redteam", "sandbox.hostile"):
        assert importlib.util.find_spec(f"dllm_rl.rewards.{old}") is None, old
    from tests.attacks import hostile, redteam

    assert callable(hostile.run_hostile_suite) and callable(redteam.run_redteam_suite)


def _undefined_globals(source: str) -> set[str]:
    """Names the functions and classes of ``source`` read as globals that neither the source's
    top level nor the builtins define (each program imports inside its functions)."""
    import builtins
    import symtable

    top = symtable.symtable(source, "<program>", "exec")
    defined = {s.get_name() for s in top.get_symbols() if s.is_assigned() or s.is_imported()}
    known = defined | set(dir(builtins))
    missing, stack = set(), list(top.get_children())
    while stack:
        table = stack.pop()
        stack.extend(table.get_children())
        for symbol in table.get_symbols():
            if symbol.is_referenced() and symbol.is_global() and symbol.get_name() not in known:
                missing.add(symbol.get_name())
    return missing


def test_every_name_a_joined_program_reads_is_defined_in_it():
    """The program files are linted without F821 (each reads names of the files joined before
    it), so this is where a missing import or a misspelled helper inside them fails."""
    assert _undefined_globals("def f():\n    return signal.SIGKILL\n") == {"signal"}  # can fail
    for source in (
        sources.boot_source(),
        sources.program_source("boot", "forkserver"),
        sources.servant_source(),
        sources.judge_source(),
    ):
        assert _undefined_globals(source) == set()


# The program's side of the boot, with its supervisor killed before or after the program armed
# its parent-death signal (a trainer SIGKILLed while a sandbox boots: the red team's finding 6).
_SUPERVISOR_DIES = r"""
import ctypes, os, sys, time
namespace = {}
exec(compile(sys.stdin.read(), "<boot>", "exec"), namespace)
boot_delay_s, supervisor_life_s = float(sys.argv[1]), float(sys.argv[2])
libc = ctypes.CDLL(None, use_errno=True)
report_read, report_write = os.pipe()
supervisor = os.fork()
if supervisor == 0:
    alive_read, alive_write = os.pipe()
    if os.fork() == 0:  # the program, booting
        os.close(alive_write)
        time.sleep(boot_delay_s)  # the mounts
        namespace["_boot_die_with_parent"](libc, alive_read)
        os.write(report_write, b"armed ")
        time.sleep(3.0)
        os.write(report_write, b"survived")
        os._exit(0)
    os.close(alive_read)
    time.sleep(supervisor_life_s)
    os._exit(0)  # killed
os.close(report_write)
os.waitpid(supervisor, 0)
out = b""
while chunk := os.read(report_read, 64):  # until the program is gone
    out += chunk
print(out.decode().split())
"""


@pytest.mark.skipif(sys.platform != "linux", reason="prctl is Linux's")
@pytest.mark.parametrize(
    ("boot_delay_s", "supervisor_life_s", "expected"),
    [
        (0.5, 0.0, []),  # the supervisor died before the signal was armed: exit at once
        (0.0, 0.5, ["armed"]),  # armed, then the supervisor died: killed by the signal
    ],
)
def test_a_program_never_outlives_its_supervisor(boot_delay_s, supervisor_life_s, expected):
    import subprocess

    run = subprocess.run(
        [sys.executable, "-c", _SUPERVISOR_DIES, str(boot_delay_s), str(supervisor_life_s)],
        input=sources.program_source("boot"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert ast.literal_eval(run.stdout.strip()) == expected
