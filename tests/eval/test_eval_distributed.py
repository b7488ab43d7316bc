"""Two CPU processes (gloo, ``torch.distributed.run``) evaluate 11 prompts (6 + 5): the gathered
samples.jsonl holds every prompt once, in order, and equals the one-process file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _eval(out: Path, procs: int) -> list[dict]:
    launcher = [sys.executable]
    if procs > 1:
        launcher += [
            "-m",
            "torch.distributed.run",
            f"--nproc_per_node={procs}",
            "--standalone",  # a free port: parallel runs never collide
        ]
    cmd = [
        *launcher,
        "-m",
        "dllm_rl.eval",
        "recipe=eval_tiny",
        "limit=11",
        "batch_size=4",
        "device=cpu",
        f"output_dir={out}",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    results = json.loads((out / "results.json").read_text())
    assert results["processes"] == procs and results["samples"] == 11
    return [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]


def test_two_processes_equal_one(tmp_path):
    one, two = _eval(tmp_path / "one", 1), _eval(tmp_path / "two", 2)
    assert [r["index"] for r in two] == list(range(11))
    assert [r["completion_ids"] for r in two] == [r["completion_ids"] for r in one]
    assert [r["unmask_step"] for r in two] == [r["unmask_step"] for r in one]
