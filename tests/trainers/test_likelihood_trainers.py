"""The SFT and VRPO/DPO trainers on tiny random models."""

from __future__ import annotations

import pytest
import torch

from dllm_rl.run.cli import build_config, merge
from dllm_rl.run.metrics import read_metrics
from dllm_rl.trainers import preference, sft
from dllm_rl.trainers.preference_config import PreferenceConfig
from dllm_rl.trainers.sft_config import SFTConfig


def sft_trainer(tmp_path, rows=None, eval_rows=None, **sections):
    base = {
        "algorithm": "sft",
        "run": {"max_steps": 2, "output_dir": str(tmp_path / "sft")},
        "model": {"name_or_path": "tiny"},
        "data": {
            "dataset": "addition",
            "template": "compact",
            "options": {"digits": 3, "size": 400},
            "eval_options": {"digits": 3, "size": 64},
        },
        "sft": {"batch_size": 8, "per_device_batch_size": 8, "eval_rows": 32},
        "training": {"lr": 1e-3},
    }
    config = build_config(SFTConfig, merge(base, sections))
    return sft.build_trainer(config, "test", [], rows=rows, eval_rows=eval_rows)


def grads_of(trainer, step_fn):
    model = trainer.policy.model
    trainer.session.optimizer.zero_grad(set_to_none=True)
    captured = {}

    def capture():
        captured.update(
            {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        )
        trainer.session.optimizer.zero_grad(set_to_none=True)
        return 0.0

    trainer.session.optimizer_step = capture
    step_fn()
    return captured


def assert_same(a, b):
    assert a.keys() == b.keys() and a
    scale = max(float(g.abs().max()) for g in a.values())
    assert scale > 0
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-6 * scale, rtol=1e-5, msg=name)


@pytest.mark.parametrize("normalization", ["response_length", "masked_tokens"])
def test_sft_micro_batching_never_changes_the_gradient(tmp_path, normalization):
    trainer = sft_trainer(tmp_path, sft={"normalization": normalization})
    results = {}
    for size in (8, 2):
        trainer.config.sft.per_device_batch_size = size
        results[size] = grads_of(trainer, lambda: trainer.step(1, list(range(8))))
    assert_same(results[8], results[2])


def test_sft_lowers_the_held_out_loss(tmp_path):
    trainer = sft_trainer(
        tmp_path,
        run={"max_steps": 25, "eval_steps": 25},
        sft={"batch_size": 32, "per_device_batch_size": 32},
    )
    trainer.train()
    evals = [
        r["eval/loss"] for r in read_metrics(tmp_path / "sft" / "metrics.jsonl") if "eval/loss" in r
    ]
    assert len(evals) == 2  # before training (step 0) and at the end
    assert evals[1] < 0.8 * evals[0], evals


SEPARABLE = [{"prompt": f"q{i % 10}:", "chosen": "aaaaaa", "rejected": "zzzzzz"} for i in range(48)]


def vrpo_trainer(tmp_path, **sections):
    base = {
        "algorithm": "vrpo",
        "run": {"max_steps": 2, "output_dir": str(tmp_path / "vrpo")},
        "model": {"name_or_path": "tiny"},
        "data": {"eval_rows": 16, "max_prompt_length": None, "max_length": None},
        "preference": {"pairs_per_step": 8, "per_device_batch_size": 8, "n_t": 4, "beta": 0.2},
        "training": {"lr": 1e-3},
    }
    config = build_config(PreferenceConfig, merge(base, sections))
    return preference.build_trainer(config, "test", [], rows=SEPARABLE)


def test_vrpo_micro_batching_never_changes_the_gradient(tmp_path):
    trainer = vrpo_trainer(tmp_path, preference={"sft_weight": 0.05})
    with torch.no_grad():  # move the policy off the reference so the loss has a gradient
        for p in trainer.policy.model.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
    results = {}
    for size in (8, 2):
        trainer.config.preference.per_device_batch_size = size
        results[size] = grads_of(trainer, lambda: trainer.step(1, list(range(8))))
    assert_same(results[8], results[2])


def test_antithetic_scores_are_zero_at_the_start(tmp_path):
    """pi_theta == pi_ref and shared draws: every score is exactly 0 (LLaDA 1.5, Prop. 2)."""
    trainer = vrpo_trainer(tmp_path)
    metrics = trainer.step(1, list(range(8)))
    assert metrics["rewards/margins"] == 0.0 and metrics["rewards/chosen"] == 0.0
    naive = vrpo_trainer(tmp_path / "naive", preference={"antithetic": False})
    assert naive.step(1, list(range(8)))["rewards/margins"] != 0.0


def test_vrpo_learns_a_separable_preference(tmp_path):
    trainer = vrpo_trainer(
        tmp_path,
        run={"max_steps": 12, "eval_steps": 12},
        training={"lr": 3e-3},
    )
    trainer.train()
    rows = read_metrics(tmp_path / "vrpo" / "metrics.jsonl")
    evals = [r for r in rows if "eval/rewards/accuracies" in r]
    train_rows = [r for r in rows if "rewards/accuracies" in r]
    assert evals[0]["eval/rewards/margins"] == 0.0  # step 0: policy == reference
    assert evals[-1]["eval/rewards/accuracies"] == 1.0
    assert evals[-1]["eval/rewards/margins"] > 0.5
    assert train_rows[-1]["rewards/margins"] > train_rows[0]["rewards/margins"]


def test_training_starts_from_a_run_directory_or_a_lora_checkpoint(tmp_path, capsys):
    """model.name_or_path resolves for training as for evaluation (run/build.py): a run
    directory is its latest checkpoint's model, and a LoRA checkpoint is merged onto its base
    (the run's own model section), so stage 2 starts from stage 1 without naming model/ by hand."""
    from dllm_rl import train
    from dllm_rl.config import ModelConfig
    from dllm_rl.run.build import load_policy, resolve_model

    first = tmp_path / "first"
    common = ["recipe=cj_grpo_tiny", "run.device=cpu", "max_steps=1", "eval_steps=0"]
    assert (
        train.main([*common, "model.lora.enabled=true", "model.lora.r=4", f"output_dir={first}"])
        == 0
    )
    source = resolve_model(ModelConfig(name_or_path=str(first)))
    assert source.base is not None and source.base.is_tiny  # the adapter and its tiny base
    merged = load_policy(ModelConfig(name_or_path=str(first)), torch.device("cpu"))
    assert not any("lora" in n for n, _ in merged.model.named_parameters())
    second = tmp_path / "second"
    args = [*common, f"model.name_or_path={first}", f"output_dir={second}"]
    assert train.main([*args, "dry_run=true"]) == 0
    assert f"model: LoRA adapter {first}/checkpoints/step-000001/model" in capsys.readouterr().out
    assert train.main(args) == 0
    third = tmp_path / "third"
    assert train.main([*common, f"model.name_or_path={second}", f"output_dir={third}"]) == 0
    assert (third / "checkpoints" / "step-000001" / "model" / "model.safetensors").is_file()
