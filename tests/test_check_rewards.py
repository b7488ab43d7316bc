"""scripts/check_rewards.py end to end on a few rows of a few datasets."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

from tests.conftest import REPO


def test_check_rewards_script(shared_data, tmp_path):
    names = ["gsm8k", "countdown", "countdown_generated", "sudoku"]
    if importlib.util.find_spec("rewards.code") is not None:
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
