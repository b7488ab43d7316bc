"""Recorded values (torchtune's regression habit): the tiny recipes for a few steps on the CPU in
fp32, compared against metric values recorded in this file.

Every invariant test compares the trainer with itself (micro-batching, resume, processes), so a
change that alters the maths the same way everywhere passes them all. These numbers catch it.
A deliberate change of the maths updates them: run this file with ``DLLM_RL_RECORD=1`` and paste
the printed dict over :data:`RECORDED` (and say why in the commit).
"""

from __future__ import annotations

import json
import math
import os

import pytest

from dllm_rl import train
from dllm_rl.run.metrics import read_metrics

CASES = {
    "cj_grpo_tiny": [
        "grpo.prompts_per_step=4",
        "grpo.per_device_batch_size=8",
        "grpo.generation_batch_size=8",
        "eval.prompts=8",
    ],
    "sft_tiny": ["sft.batch_size=8", "sft.per_device_batch_size=4", "sft.eval_rows=8"],
    "vrpo_tiny": [
        "preference.pairs_per_step=4",
        "preference.per_device_batch_size=2",
        "preference.n_t=2",
        "data.eval_rows=4",
    ],
}
COMMON = ["run.device=cpu", "model.dtype=float32", "max_steps=3", "eval_steps=3", "save_steps=0"]
KEYS = {
    "cj_grpo_tiny": ("loss", "reward", "grad_norm", "kl", "entropy", "eval/reward"),
    "sft_tiny": ("loss", "grad_norm", "eval/loss"),
    "vrpo_tiny": ("loss", "grad_norm", "eval/loss", "eval/rewards/margins"),
}
RECORDED: dict[str, dict[str, dict[str, float]]] = {
    "cj_grpo_tiny": {
        "0": {"eval/reward": 0.0078125},
        "1": {
            "loss": -0.02554761747160228,
            "reward": 0.015625,
            "grad_norm": 0.5870917588472366,
            "kl": 0.02023380994796753,
            "entropy": 4.831038258969784,
        },
        "2": {
            "loss": -0.02300957309489604,
            "reward": 0.015625,
            "grad_norm": 0.46427468955516815,
            "kl": 0.03397375484928489,
            "entropy": 4.81878525018692,
        },
        "3": {
            "loss": -0.03557604691013694,
            "reward": 0.025390625,
            "grad_norm": 0.9414910674095154,
            "kl": 0.04499769816175103,
            "entropy": 4.817898370325565,
            "eval/reward": 0.0458984375,
        },
    },
    "sft_tiny": {
        "0": {"eval/loss": 2.962367296218872},
        "1": {"loss": 4.33923864364624, "grad_norm": 4.672758102416992},
        "2": {"loss": 4.689523696899414, "grad_norm": 3.939340591430664},
        "3": {
            "loss": 3.1428632736206055,
            "grad_norm": 3.461312770843506,
            "eval/loss": 2.6060882806777954,
        },
    },
    "vrpo_tiny": {
        "0": {"eval/loss": 0.9415138959884644, "eval/rewards/margins": 0.0},
        "1": {"loss": 0.9380976259708405, "grad_norm": 2.378253221511841},
        "2": {"loss": 0.8583590984344482, "grad_norm": 3.0630035400390625},
        "3": {
            "loss": 0.8151946365833282,
            "grad_norm": 2.6763367652893066,
            "eval/loss": 0.7181457877159119,
            "eval/rewards/margins": 0.5290068089962006,
        },
    },
}


def observed(name: str, tmp_path) -> dict[str, dict[str, float]]:
    out = tmp_path / name
    assert train.main([f"recipe={name}", *CASES[name], *COMMON, f"output_dir={out}"]) == 0
    values: dict[str, dict[str, float]] = {}
    for row in read_metrics(out / "metrics.jsonl"):
        for key in KEYS[name]:
            if key in row:
                values.setdefault(str(row["step"]), {})[key] = row[key]
    return values


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_tiny_recipes_reproduce_their_recorded_values(name, tmp_path):
    values = observed(name, tmp_path)
    if os.environ.get("DLLM_RL_RECORD"):
        print(f"\n    {name!r}: {json.dumps(values, indent=4)},")
        return
    expected = RECORDED[name]
    assert values.keys() == expected.keys()
    for step, row in expected.items():
        assert row.keys() == values[step].keys(), step
        for key, want in row.items():
            got = values[step][key]
            assert math.isclose(got, want, rel_tol=1e-4, abs_tol=1e-6), (name, step, key, got, want)
