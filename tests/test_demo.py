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


def test_ctrl_c_stops_the_demo_at_once_without_a_resume_hint(tmp_path):
    """SIGINT mid-SFT: the step finishes, the demo says it does not resume and exits (130)
    within seconds, with no hint of a 'demo' recipe that does not exist."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "demo"
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "dllm_rl.demo", "--quick", "--out", str(out)]
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        metrics = out / "sft" / "metrics.jsonl"
        while time.time() < deadline and proc.poll() is None:
            if metrics.is_file() and metrics.read_text().count("\n") >= 2:
                break
            time.sleep(0.1)
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        proc.send_signal(signal.SIGINT)
        sent = time.time()
        _, err = proc.communicate(timeout=60)
        waited = time.time() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
    err = err.decode()
    assert proc.returncode == 130, err[-2000:]
    assert "does not resume" in err and "resume_from" not in err and "recipe=" not in err
    assert waited < 15, waited
