"""Exact resume, per trainer: N steps uninterrupted == k steps, a crash, resume, N - k steps.

Each run goes through ``train.main`` in this process on CPU float32, so every trainer that uses
the shared loop is held to the same contract: the final weights are equal bit for bit (we allow
1e-6) and ``metrics.jsonl`` has one row per step, equal to the uninterrupted run's row except for
wall-time keys.
"""

from __future__ import annotations

import json
import math
import os
import signal
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dllm_rl import train
from dllm_rl.run.cli import recipe_names
from dllm_rl.run.metrics import read_metrics
from dllm_rl.trainers import common
from dllm_rl.trainers.estimators import ESTIMATORS
from dllm_rl.trainers.grpo_config import RATIO_FREE

# recipe -> overrides that keep it small, exercise a non-constant schedule, and (for RL) dropout
RECIPES = {
    "cj_grpo_tiny": [
        "grpo.prompts_per_step=4",
        "grpo.per_device_batch_size=8",
        "grpo.generation_batch_size=8",
        "rewards=[tests.trainers.fixtures:digit_fraction]",
    ],
    "sft_tiny": ["sft.batch_size=8", "sft.per_device_batch_size=4", "sft.eval_rows=8"],
    "vrpo_tiny": [
        "preference.pairs_per_step=4",
        "preference.per_device_batch_size=2",
        "preference.n_t=2",
        "data.eval_rows=4",
    ],
}
COMMON = [
    "run.device=cpu",
    "model.dtype=float32",
    "save_steps=2",
    "eval_steps=3",
    "run.log_samples=1",
    "training.lr_scheduler=linear",
    "training.warmup_steps=1",
]


def is_wall_time(key: str) -> bool:
    return key.startswith("time/") or key.endswith("per_s")


def available(name: str) -> bool:
    return name in recipe_names()


def recipes() -> list:
    return [
        pytest.param(n, marks=pytest.mark.skipif(not available(n), reason=f"no recipe {n} yet"))
        for n in RECIPES
    ]


def comparable(row: dict) -> dict:
    return {k: v for k, v in row.items() if not is_wall_time(k)}


def final_weights(out: Path) -> dict[str, torch.Tensor]:
    folder = out / "checkpoints" / (out / "checkpoints" / "latest").read_text().strip() / "model"
    weights = {}
    for f in sorted(folder.glob("*.safetensors")):
        weights.update(load_file(str(f)))
    assert weights, f"no weights in {folder}"
    return weights


def max_weight_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


def assert_rows_equal(a: list[dict], b: list[dict]) -> None:
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for x, y in zip(a, b):
        x, y = comparable(x), comparable(y)
        assert x.keys() == y.keys(), x.keys() ^ y.keys()
        for key in x:
            if isinstance(x[key], float) and isinstance(y[key], float):
                same = (math.isnan(x[key]) and math.isnan(y[key])) or abs(x[key] - y[key]) <= 1e-6
                assert same, (x["step"], key, x[key], y[key])
            else:
                assert x[key] == y[key], (x["step"], key)


def crash_after_logging(monkeypatch, at_step: int, action) -> None:
    """Make ``TrainLoop.log`` run ``action()`` right after writing step ``at_step``'s row."""
    log = common.TrainLoop.log

    def patched(self, step, metrics, samples=None):
        log(self, step, metrics, samples=samples)
        if step == at_step:
            action()

    monkeypatch.setattr(common.TrainLoop, "log", patched)


def run(recipe: str, out: Path, *extra: str, steps: int = 4) -> int:
    args = [f"recipe={recipe}", *RECIPES[recipe], *COMMON, f"max_steps={steps}"]
    return train.main([*args, f"output_dir={out}", *extra])


def estimator_overrides(name: str) -> tuple[str, ...]:
    """What cj_grpo_tiny needs to run with estimator ``name`` (the ratio-free ones refuse its KL
    term)."""
    return ("grpo.beta=0",) if name in RATIO_FREE else ()


# every registered estimator resumes exactly, not only the recipe's own
ESTIMATOR_CASES = [
    pytest.param(
        "cj_grpo_tiny",
        (f"grpo.estimator={name}", "grpo.num_iterations=2", *estimator_overrides(name)),
        id=name,
    )
    for name in sorted(ESTIMATORS)
]


@pytest.mark.parametrize(
    "recipe, extra",
    [pytest.param(p.values[0], (), marks=p.marks) for p in recipes()] + ESTIMATOR_CASES,
)
def test_resume_equals_uninterrupted(recipe, extra, tmp_path, monkeypatch):
    """4 steps straight vs 3 steps (checkpoint at 2, a crash after step 3's row) + resume."""
    assert run(recipe, tmp_path / "straight", *extra) == 0
    straight = read_metrics(tmp_path / "straight" / "metrics.jsonl")

    class Crash(Exception):
        pass

    def crash():
        raise Crash

    with monkeypatch.context() as m:
        crash_after_logging(m, 3, crash)
        with pytest.raises(Crash):
            run(recipe, tmp_path / "resumed", *extra)
    rows = read_metrics(tmp_path / "resumed" / "metrics.jsonl")
    assert max(r["step"] for r in rows) == 3  # the row the resumed run must drop
    assert run(recipe, tmp_path / "resumed", *extra, "resume_from=latest") == 0
    resumed = read_metrics(tmp_path / "resumed" / "metrics.jsonl")

    assert_rows_equal(straight, resumed)
    train_rows = [r for r in resumed if "learning_rate" in r or "loss" in r]
    assert len({r["step"] for r in train_rows}) == len(train_rows)
    diff = max_weight_difference(
        final_weights(tmp_path / "straight"), final_weights(tmp_path / "resumed")
    )
    print(f"{recipe}: max |weight difference| after resume = {diff:.3g}")
    assert diff <= 1e-6
    state = json.loads(
        (tmp_path / "resumed" / "checkpoints" / "step-000004" / "trainer_state.json").read_text()
    )
    assert state["step"] == 4 and "skipped_updates" in state["extra"]
    if (tmp_path / "straight" / "samples.jsonl").is_file():  # the RL trainer writes samples
        samples = [read_metrics(tmp_path / d / "samples.jsonl") for d in ("straight", "resumed")]
        assert [r["step"] for r in samples[0]] == [r["step"] for r in samples[1]]
    ckpt_rows = tmp_path / "resumed" / "checkpoints" / "step-000004" / "metrics.jsonl"
    assert len(read_metrics(ckpt_rows)) == len(resumed)  # the history travels with the checkpoint


def test_lora_resume_restores_dropout_rng(tmp_path, monkeypatch):
    """LoRA with dropout draws from the global torch RNG: resume restores it exactly."""
    lora = ["model.lora.enabled=true", "model.lora.r=4", "model.lora.dropout=0.2"]
    assert run("cj_grpo_tiny", tmp_path / "a", *lora) == 0
    with monkeypatch.context() as m:
        crash_after_logging(m, 2, lambda: os.kill(os.getpid(), signal.SIGTERM))
        assert run("cj_grpo_tiny", tmp_path / "b", *lora) == common.EXIT_PREEMPTED
    assert (tmp_path / "b" / "checkpoints" / "latest").read_text().strip() == "step-000002"
    assert run("cj_grpo_tiny", tmp_path / "b", *lora, "resume_from=latest") == 0
    a, b = final_weights(tmp_path / "a"), final_weights(tmp_path / "b")
    assert all("lora" in k for k in a)  # adapters only
    diff = max_weight_difference(a, b)
    print(f"cj_grpo_tiny + LoRA dropout, SIGTERM + resume: max |adapter difference| = {diff:.3g}")
    assert diff <= 1e-6
    assert_rows_equal(
        read_metrics(tmp_path / "a" / "metrics.jsonl"),
        read_metrics(tmp_path / "b" / "metrics.jsonl"),
    )


def test_resume_into_a_new_directory_brings_the_history(tmp_path):
    """resume_from=<checkpoint> with a fresh output_dir starts from the checkpoint's metrics."""
    assert run("cj_grpo_tiny", tmp_path / "a", steps=2) == 0
    ckpt = tmp_path / "a" / "checkpoints" / "step-000002"
    assert run("cj_grpo_tiny", tmp_path / "b", f"resume_from={ckpt}", steps=3) == 0
    rows = [r for r in read_metrics(tmp_path / "b" / "metrics.jsonl") if "loss" in r]
    assert [r["step"] for r in rows] == [1, 2, 3]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_resume_on_gpu(tmp_path, monkeypatch):
    """The same contract on CUDA (float32; kernels may differ in the last bits: 1e-5)."""
    gpu = ["run.device=cuda", "model.lora.enabled=true", "model.lora.r=4"]
    args = list(RECIPES["cj_grpo_tiny"])
    base = ["recipe=cj_grpo_tiny", *args, *[c for c in COMMON if c != "run.device=cpu"], *gpu]
    assert train.main([*base, "max_steps=4", f"output_dir={tmp_path / 'a'}"]) == 0
    with monkeypatch.context() as m:
        crash_after_logging(m, 2, lambda: os.kill(os.getpid(), signal.SIGTERM))
        code = train.main([*base, "max_steps=4", f"output_dir={tmp_path / 'b'}"])
        assert code == common.EXIT_PREEMPTED
    more = ["max_steps=4", f"output_dir={tmp_path / 'b'}", "resume_from=latest"]
    assert train.main([*base, *more]) == 0
    rng = torch.load(tmp_path / "b/checkpoints/step-000002/rng.pt", weights_only=False)
    assert "torch_cuda" in rng["ranks"][0]
    diff = max_weight_difference(final_weights(tmp_path / "a"), final_weights(tmp_path / "b"))
    assert diff <= 1e-5
