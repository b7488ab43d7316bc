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
