"""Smoke test of scripts/bench_train.py: the records, and the forward counts derived by hand."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_train.py"
FIELDS = (
    "estimator",
    "steps",
    "per_step_backward",
    "forwards_per_step",
    "reference_forwards_per_step",
    "rollout_s",
    "reference_s",
    "train_s",
    "peak_mem_mb",
    "tokens_per_s",
    "gen_length",
    "batch",
)


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_train", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_records_and_forward_counts(tmp_path, capsys):
    """Quick preset: L = 16, 2 prompts x G = 2 = 4 completions, micro-batches of 2 (2 of them),
    rollout chunks of 2 (2 of them), mu = 2, beta > 0.

    trajectory (S steps): rollout 2 chunks x S + reference 2 micro x S + mu 2 x 2 micro x S = 8S
        (every step commits a counted token: loss_positions = all);
        ASS: S = floor(log2 16) = 4 -> 32; one step -> 8. Reference code: S(3 + mu) = 5S.
    one_step (d1 rollout: uniform, L/2 = 8 steps, one block of 16): rollout 2 x 8 = 16, then per
        iteration (mu = 2) 2 micro-batches each of old (mu > 1), reference and policy = 12: 28.
    spg (beta 0, K = 2 draws): 16 + mu 2 x 2 micro x 2 draws = 24, no old or reference pass.
    wd1 (beta 0): 16 + mu 2 x 2 micro x 1 = 20.
    coupled (3 passes with the fully masked one): 16 + (old + reference + policy) 3 x mu 2 x 2
        micro x 3 = 52.
    """
    bench = load_bench()
    out = tmp_path / "bench.json"
    argv = ["--preset", "quick", "--in-process", "--threads", "1", "--num-iterations", "2"]
    argv += ["--beta", "0.04", "--micro-batch", "2", "--generation-batch", "2"]
    bench.main([*argv, "--out", str(out)])
    report = json.loads(out.read_text())
    rows = {r["configuration"]: r for r in report["results"]}
    assert list(rows) == list(bench.CONFIGS)
    for row in rows.values():
        assert "error" not in row and "oom" not in row, row
        for name in FIELDS:
            assert name in row, (row["configuration"], name)
        assert row["gen_length"] == 16 and row["batch"] == 4
        assert row["rollout_s"] > 0 and row["train_s"] > 0 and row["tokens_per_s"] > 0
        assert row["peak_mem_mb"] >= 0
        assert row["beta"] == (0.0 if row["estimator"] in ("spg", "wd1") else 0.04)
    ass, one, full, d1, spg, wd1, coupled = (rows[c] for c in bench.CONFIGS)
    assert (spg["forwards_per_step"], wd1["forwards_per_step"]) == (24, 20)
    assert coupled["forwards_per_step"] == 52
    assert (ass["steps"], one["steps"], full["steps"], d1["steps"]) == (4, 1, 4, 8)
    assert ass["per_step_backward"] and one["per_step_backward"] and not full["per_step_backward"]
    assert full["steps_per_backward"] == 4 and d1["estimator"] == "one_step"
    assert ass["forwards_per_step"] == full["forwards_per_step"] == 32
    assert one["forwards_per_step"] == 8
    assert d1["forwards_per_step"] == 28
    assert (ass["rollout_forwards"], one["rollout_forwards"], d1["rollout_forwards"]) == (8, 2, 16)
    assert ass["reference_forwards_per_step"] == 20 and one["reference_forwards_per_step"] == 5
    assert d1["reference_forwards_per_step"] is None
    # Holding every graph changes memory, not the update: the same loss and gradient norm.
    assert full["loss"] == pytest.approx(ass["loss"], rel=1e-5, abs=1e-7)
    assert full["grad_norm"] == pytest.approx(ass["grad_norm"], rel=1e-4)
    assert "trajectory all-graphs" in capsys.readouterr().out  # the printed table


def test_phase_memory_sees_an_allocation():
    """The meter reports what a phase adds on top of its start, not the process's history."""
    bench = load_bench()
    meter = bench.PhaseMemory(torch.device("cpu"))
    meter.start()
    block = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
    del block
    peak, base = meter.stop()
    assert peak > 60 and base > 0
    meter.start()
    assert meter.stop()[0] < 30  # a new phase starts from the current memory


def test_unknown_configuration_is_refused():
    with pytest.raises(SystemExit, match="unknown configs"):
        load_bench().main(["--preset", "quick", "--configs", "trajectory ass,nope"])
