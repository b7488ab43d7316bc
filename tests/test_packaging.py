"""The non-editable install (a wheel) must carry every package and the recipes."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


# Source folder -> the path it installs under (rewards/ is the package dllm_rl.rewards).
INSTALLED_AS = {"dllm_rl": "dllm_rl", "rewards": "dllm_rl/rewards"}


def _installed_path(source: Path) -> str:
    top, *rest = source.relative_to(REPO).parts
    return "/".join([INSTALLED_AS[top], *rest])


def _source_packages() -> set[str]:
    """Every folder of dllm_rl/ and rewards/ that holds Python code, as its installed dotted name."""
    found = set()
    for top in INSTALLED_AS:
        for init in (REPO / top).rglob("__init__.py"):
            found.add(_installed_path(init.parent).replace("/", "."))
    return found


def _python_stdout(code: str, cwd: Path, pythonpath: str | None = None) -> str:
    """Run ``python -c code`` in a fresh interpreter; its stdout, stripped (fails on exit != 0)."""
    env = {**os.environ, "PYTHONPATH": pythonpath} if pythonpath is not None else None
    run = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=120, env=env
    )
    assert run.returncode == 0, run.stderr[-2000:]
    return run.stdout.strip()


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    cmd = [sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "--no-build-isolation"]
    subprocess.run([*cmd, "-w", str(out), "-q"], check=True, cwd=out, timeout=300)
    (found,) = out.glob("dllm_rl-*.whl")
    return found


@pytest.fixture(scope="module")
def wheel_names(wheel) -> set[str]:
    with zipfile.ZipFile(wheel) as zf:
        return set(zf.namelist())


def test_wheel_has_every_package(wheel_names):
    packages = _source_packages()
    assert {"dllm_rl", "dllm_rl.models", "dllm_rl.rollout", "dllm_rl.data"} <= packages
    assert {"dllm_rl.rewards", "dllm_rl.rewards.sandbox"} <= packages
    for pkg in sorted(packages):
        assert pkg.replace(".", "/") + "/__init__.py" in wheel_names, pkg
    for top in INSTALLED_AS:  # modules, and the sandbox's programs (package data)
        for py in (REPO / top).rglob("*.py"):
            assert _installed_path(py) in wheel_names, py


def test_the_wheel_installs_nothing_at_the_top_level_but_dllm_rl(wheel_names):
    """``rewards`` is a name many projects use: the package installs as ``dllm_rl.rewards``."""
    tops = {
        name.split("/")[0] for name in wheel_names if not name.split("/")[0].endswith(".dist-info")
    }
    assert tops == {"dllm_rl"}


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


def test_a_source_checkout_imports_the_rewards_as_dllm_rl_rewards():
    import dllm_rl.rewards.planning as planning
    from dllm_rl.rewards.registry import get_reward

    assert Path(planning.__file__).resolve().parent == REPO / "rewards"
    assert get_reward("countdown") is planning.countdown_reward


def test_the_old_name_rewards_is_the_same_package_with_a_deprecation_warning():
    """One release of ``import rewards``: the same module objects (one registry, one grader
    pool), not a second copy of the folder, and a warning naming the new import."""
    code = (
        "import warnings, sys\n"
        "warnings.simplefilter('always')\n"
        "import dllm_rl.rewards.registry as new\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    import rewards.registry as old\n"
        "    from rewards.planning import countdown_reward\n"
        "    from rewards import get_reward\n"
        "assert old is new and sys.modules['rewards'] is sys.modules['dllm_rl.rewards']\n"
        "assert countdown_reward is sys.modules['dllm_rl.rewards.planning'].countdown_reward\n"
        "assert get_reward('rewards.planning:countdown_reward') is countdown_reward\n"
        "assert not [m for m in sys.modules if m.startswith('rewards.') and\n"
        "            sys.modules[m] is not sys.modules['dllm_rl.' + m]]\n"
        "texts = [str(w.message) for w in caught if w.category is DeprecationWarning]\n"
        "assert any('import dllm_rl.rewards.registry instead' in t for t in texts), texts\n"
        "assert all(w.filename == '<string>' for w in caught), [w.filename for w in caught]\n"
        "print('ok')\n"
    )
    assert _python_stdout(code, REPO) == "ok"


def test_another_projects_rewards_package_keeps_its_name(tmp_path):
    (tmp_path / "rewards").mkdir()
    (tmp_path / "rewards" / "__init__.py").write_text("OWNER = 'someone else'\n")
    code = "import dllm_rl, rewards; print(rewards.OWNER)"
    assert _python_stdout(code, tmp_path, f"{tmp_path}:{REPO}") == "someone else"


def test_the_installed_wheel_imports_the_rewards_and_runs_the_sandbox(wheel, tmp_path):
    """Unpacked away from the checkout: ``dllm_rl.rewards`` is a real subpackage there, the
    sandbox reads its programs from the installed package data, and the old name still works."""
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site)
    code = (
        "import warnings, dllm_rl.rewards.code as code\n"
        "from dllm_rl.rewards.sandbox import sources\n"
        f"assert code.__file__.startswith({str(site)!r}), code.__file__\n"
        "assert '_judge_main' in sources.judge_source()\n"
        "with warnings.catch_warnings(record=True):\n"
        "    warnings.simplefilter('always')\n"
        "    import rewards.code\n"
        "assert rewards.code is code\n"
        "grade = code.grade_code(['```python\\ndef f(x):\\n    return x + 1\\n```'],\n"
        "                        [['assert f(1) == 2', 'assert f(1) == 3']])[0]\n"
        "print(grade.reward)\n"
    )
    assert _python_stdout(code, tmp_path, str(site)) == "0.5"
