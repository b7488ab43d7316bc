"""scripts/eval_matrix.py: every default setting is a valid sampler; one table per sweep."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from dllm_rl import eval as ev
from dllm_rl.eval_results import nfe

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "eval_matrix.py"


def _matrix():
    spec = importlib.util.spec_from_file_location("eval_matrix", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("recipe", ["eval_tiny", "eval_d1_gsm8k", "eval_cj_gsm8k"])
def test_default_settings_are_valid(recipe):
    m = _matrix()
    _, base, _ = ev.resolve([f"recipe={recipe}"])
    nfes = {}
    for name, extra in m.default_settings(base.sampler.gen_length).items():
        _, r, _ = ev.resolve(m.combine([f"recipe={recipe}"], extra))
        nfes[name] = nfe(r.sampler)
    if recipe != "eval_tiny":  # L = 256: d1 128 forwards, ascending floor(log2 256) = 8
        assert nfes["d1 (block 32, L/2 steps)"] == 128 and nfes["ascending"] == 8


def test_combine_lets_the_setting_win():
    m = _matrix()
    assert m.combine(["recipe=x", "output_dir=a", "limit=3"], ["output_dir=b"]) == [
        "recipe=x",
        "output_dir=b",
        "limit=3",
    ]


def test_a_sweep_prints_one_table(tmp_path, capsys):
    m = _matrix()
    args = [
        "recipe=eval_tiny",
        "limit=4",
        f"output_dir={tmp_path}",
        "--setting",
        "one=sampler.schedule=uniform,sampler.steps=8",
        "--setting",
        "two=sampler.schedule=uniform,sampler.steps=2",
    ]
    assert m.main(args) == 0
    out = capsys.readouterr().out
    assert "setting" in out and "NFE" in out and out.count("\none ") == 1
    rows = json.loads((tmp_path / "matrix.json").read_text())
    assert [(r["setting"], r["nfe"]) for r in rows] == [("one", 8), ("two", 2)]
