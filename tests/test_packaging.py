"""The non-editable install (a wheel) must carry every package and the recipes."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _source_packages() -> set[str]:
    """Every folder of dllm_rl/ and rewards/ that holds Python code, as a dotted name."""
    found = set()
    for top in ("dllm_rl", "rewards"):
        for init in (REPO / top).rglob("__init__.py"):
            found.add(".".join(init.parent.relative_to(REPO).parts))
    return found


@pytest.fixture(scope="module")
def wheel_names(tmp_path_factory) -> set[str]:
    out = tmp_path_factory.mktemp("wheel")
    cmd = [sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "--no-build-isolation",
           "-w", str(out), "-q"]
    subprocess.run(cmd, check=True, cwd=out, timeout=300)
    (wheel,) = out.glob("dllm_rl-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        return set(zf.namelist())


def test_wheel_has_every_package(wheel_names):
    packages = _source_packages()
    assert {"dllm_rl", "dllm_rl.models", "dllm_rl.rollout", "dllm_rl.data", "rewards"} <= packages
    for pkg in sorted(packages):
        assert pkg.replace(".", "/") + "/__init__.py" in wheel_names, pkg
    for py in list((REPO / "dllm_rl").rglob("*.py")) + list((REPO / "rewards").rglob("*.py")):
        assert str(py.relative_to(REPO)) in wheel_names, py


def test_wheel_has_the_recipes(wheel_names):
    assert "dllm_rl/recipes/__init__.py" in wheel_names
    for recipe in (REPO / "recipes").glob("*.yaml"):
        assert f"dllm_rl/recipes/{recipe.name}" in wheel_names, recipe.name


def test_wheel_has_no_tests_or_scripts(wheel_names):
    assert not any(n.startswith(("tests/", "scripts/")) for n in wheel_names)


def test_a_source_checkout_finds_the_recipes():
    """Tests import ``dllm_rl`` from the checkout (``pythonpath = ["."]``), where ``recipes/`` is
    not a subpackage of ``dllm_rl``: CI's non-editable install must still see every recipe."""
    from dllm_rl.run.cli import load_recipe, recipe_names

    on_disk = sorted(p.stem for p in (REPO / "recipes").glob("*.yaml"))
    assert on_disk and recipe_names() == on_disk
    name, data = load_recipe(on_disk[0])
    assert name == on_disk[0] and isinstance(data, dict)
