"""Smoke test of scripts/bench_rollout.py on a very short decode."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_rollout.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_rollout", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_bench_writes_every_metric(tmp_path, capsys):
    bench = load_bench()
    out = tmp_path / "bench.json"
    bench.main(
        ["--gen-length", "32", "--batch-size", "2", "--prompt-length", "8", "--out", str(out)]
    )
    report = json.loads(out.read_text())
    rows = report["results"]
    # uniform: L/2 = 16 steps in blocks of 32; ascending: floor(log2 32) = 5 steps.
    assert rows["uniform (d1)"]["nfe_per_sample"] == 16
    assert rows["ascending"]["nfe_per_sample"] == 5
    assert rows["ascending+eoser"]["steps"] == 5 and rows["ascending+eoser"]["eos_rejection"]
    for row in rows.values():
        assert 0 < row["forward_share"] <= 1 and row["tokens_per_s"] > 0 and row["peak_mem_mb"] > 0
    assert "ascending+eoser" in capsys.readouterr().out  # the printed table


def test_bench_rejects_unknown_configs():
    with pytest.raises(SystemExit, match="unknown configs"):
        load_bench().main(["--gen-length", "32", "--configs", "uniform,nope"])


def test_bench_vocab_size_override(tmp_path):
    bench = load_bench()
    out = tmp_path / "bench.json"
    args = ["--gen-length", "16", "--batch-size", "2", "--prompt-length", "4"]
    bench.main([*args, "--vocab-size", "300", "--configs", "ascending", "--out", str(out)])
    assert json.loads(out.read_text())["vocab_size"] == 300
    with pytest.raises(SystemExit, match="tiny preset only"):
        bench.main(["--preset", "llada-1b", "--vocab-size", "300"])
