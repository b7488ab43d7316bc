"""scripts/demo_sample.py: the canvas markup cannot be confused with the tokens it shows."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from dllm_rl.models.tiny import build_tiny_llada
from dllm_rl.rollout import SamplerConfig

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "demo_sample.py"


def _demo():
    spec = importlib.util.spec_from_file_location("demo_sample", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_token_labels():
    demo = _demo()
    tiny = build_tiny_llada(0)
    decode = demo.canvas_decoder(tiny)
    assert decode([tiny.ids.eos]) == "⟨EOS⟩" and decode([tiny.ids.mask]) == "⟨MASK⟩"
    assert decode([10**6]) == "⟨1000000⟩"  # outside the tokenizer: never an empty "[]"
    bracket = tiny.tokenizer.convert_tokens_to_ids("[")
    assert decode([bracket]) == "["  # a committed "[" stays itself: the markup is ⟦ ⟧
    assert "⟦" not in decode([tiny.tokenizer.convert_tokens_to_ids("|")])
    assert decode(tiny.tokenizer("12+34=")["input_ids"]) == "12+34="


def test_heatmap_title_names_the_schedule():
    demo = _demo()
    title = demo.heatmap_title(SamplerConfig(gen_length=32, schedule="ascending"))
    assert title.startswith("ascending schedule, 5 steps (tokens per step [1, 2, 4, 8, 17])")
    assert "uniform schedule, 64 steps" in demo.heatmap_title(SamplerConfig(gen_length=64))


def test_main_prints_the_legend_and_writes_the_files(tmp_path, capsys):
    demo = _demo()
    assert demo.main(["--gen-length", "8", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "legend: ⟦x⟧ committed at this step" in out and "step 0 (+1): ⟦" in out
    assert (tmp_path / "commit_order.png").is_file() and (tmp_path / "trajectories.html").is_file()
