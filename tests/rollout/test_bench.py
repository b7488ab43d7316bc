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


def test_llada_presets_are_built_in_the_target_dtype(monkeypatch):
    """No fp32 copy of the weights first: at 8B that is 32 GB before the 16 GB bf16 cast."""
    import torch

    from dllm_rl.models.llada import LLaDAModelLM

    bench = load_bench()
    shape = dict(d_model=16, n_layers=1, n_heads=2, n_kv_heads=1, mlp_hidden_size=32)
    monkeypatch.setitem(bench.LLADA_SHAPES, "llada-1b", shape)
    seen = set()
    init = LLaDAModelLM._init_weights

    def recording_init(self, module):
        seen.update(p.dtype for p in module.parameters(recurse=False))
        return init(self, module)

    monkeypatch.setattr(LLaDAModelLM, "_init_weights", recording_init)
    lm = bench.build_model("llada-1b", torch.device("cpu"), torch.bfloat16)
    assert seen == {torch.bfloat16}
    assert {p.dtype for p in lm.model.parameters()} == {torch.bfloat16}
    assert torch.get_default_dtype() == torch.float32  # restored
