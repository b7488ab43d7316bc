"""scripts/check_rewards.py end to end on a few rows of a few datasets."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

from tests.conftest import REPO


def test_check_rewards_script(shared_data, tmp_path):
    names = ["gsm8k", "countdown", "countdown_generated", "sudoku"]
    if importlib.util.find_spec("dllm_rl.rewards.code") is not None:
        names.append("mbpp")
    out = tmp_path / "check.json"
    command = [
        sys.executable,
        str(REPO / "scripts" / "check_rewards.py"),
        "--data", str(shared_data),
        "--out", str(out),
        "--datasets", ",".join(names),
        "--limit", "6",
        "--workers", "1",
        "--no-sandbox-suite",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    report = json.loads(out.read_text())
    assert list(report["datasets"]) == names
    for name, result in report["datasets"].items():
        assert result["n"] == 6, name
        assert result["gold_mean"] == 1.0 and result["failures"] == [], (name, result)
        assert result["shuffled_mean"] < result["gold_mean"], name
    assert "sandbox" not in report
    assert "gsm8k" in done.stdout  # the printed summary table


def _load_script():
    spec = importlib.util.spec_from_file_location(
        "check_rewards", REPO / "scripts" / "check_rewards.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["check_rewards"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_summary_reports_isolation_layers_and_redteam(capsys):
    script = _load_script()
    row = {
        "case": "fake_math_module",
        "finding": 1,
        "expected": "rewards 0.0",
        "observed": "rewards [0.0]",
        "contained": True,
        "wall_s": 0.3,
    }
    skipped = {**row, "case": "memory_of_all_processes[full]", "finding": 7, "contained": None}
    report = {
        "datasets": {},
        "sandbox": {
            "network_isolation": True,
            "isolation": {"default": ["net", "minimal-root"], "no-namespaces": ["uid=1000001"]},
            "all_contained": True,
            "cases": [],
            "redteam": [row, skipped],
        },
    }  # fmt: skip
    script.print_summary(report)
    out = capsys.readouterr().out
    assert "isolation (default): net, minimal-root" in out
    assert "isolation (no-namespaces): uid=1000001" in out
    assert "fake_math_module (1)" in out and "n/a" in out
    assert "all contained: True" in out


def test_isolation_report_covers_the_forced_degraded_modes():
    script = _load_script()
    layers = script.isolation_report()
    assert list(layers) == ["default", "no-namespaces", "no-namespaces-no-uid"]
    assert not {"net", "pid", "mount"} & set(layers["no-namespaces"])
