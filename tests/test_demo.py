"""The CPU demo end to end, shortened: ``python -m dllm_rl.demo --quick`` (same code path as
the full demo, fewer steps and a smaller held-out set)."""

from __future__ import annotations

import json

from dllm_rl import demo


def test_quick_demo_writes_its_run_directory_and_rl_beats_the_sft_plateau(tmp_path, capsys):
    out = tmp_path / "demo"
    assert demo.main(["--quick", "--out", str(out), "--seed", "0"]) == 0

    for name in ("summary.json", "table.md", "reward.png", "trajectories.html"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    for stage in ("sft", "rl", "control"):
        assert (out / stage / "metrics.jsonl").is_file(), stage

    summary = json.loads((out / "summary.json").read_text())
    assert summary["seed"] == 0
    for key in ("sft_exact", "rl_exact", "control_exact"):
        assert 0.0 <= summary[key] <= 1.0, key
    assert summary["wall_s"] > 0
    # The verifier, not more steps on the labels, moves held-out accuracy.
    assert summary["rl_exact"] >= summary["sft_exact"] + 0.05, summary
    assert summary["rl_exact"] > summary["control_exact"], summary

    printed = capsys.readouterr().out
    assert "| + RL with the verifier |" in printed
    assert (out / "table.md").read_text() in printed
    html = (out / "trajectories.html").read_text()
    assert "before RL" in html and "after RL" in html
