"""The GRPO trainer on tiny random models: on-policy ratio, gradient equivalences, learning."""

from __future__ import annotations

import time

import pytest
import torch

from dllm_rl.run.cli import build_config, merge
from dllm_rl.run.metrics import read_metrics
from dllm_rl.trainers.estimators import ESTIMATORS, LossStats
from dllm_rl.trainers.grpo import build_trainer
from dllm_rl.trainers.grpo_config import RATIO_FREE, GRPOConfig

LETTERS = "abcd"
RECORDS = [{"prompt": f"write {x}:", "letter": x} for x in LETTERS]


def make_trainer(tmp_path, eval_records=None, **sections):
    base = {
        "run": {"max_steps": 2, "output_dir": str(tmp_path / "run"), "log_samples": 2},
        "model": {"name_or_path": "tiny"},
        "rewards": ["tests.trainers.fixtures:letter_fraction"],
        "rollout": {"gen_length": 8, "schedule": "ascending", "temperature": 1.0},
        "grpo": {
            "prompts_per_step": 2,
            "num_generations": 4,
            "per_device_batch_size": 8,
            "generation_batch_size": 8,
            "scale_rewards": "group",
        },
        "training": {"lr": 1e-3},
    }
    config = build_config(GRPOConfig, merge(base, sections))
    return build_trainer(config, "test", [], records=RECORDS, eval_records=eval_records)


def grads(trainer, buf, iteration=0):
    """The gradient one pass over ``buf`` accumulates (no optimizer step)."""
    trainer.session.optimizer.zero_grad(set_to_none=True)
    trainer.accumulate(buf, iteration, LossStats())
    out = {
        n: p.grad.clone() for n, p in trainer.policy.model.named_parameters() if p.grad is not None
    }
    trainer.session.optimizer.zero_grad(set_to_none=True)
    return out


def assert_grads_close(a, b, tol=1e-6):
    assert a.keys() == b.keys() and a
    scale = max(float(g.abs().max()) for g in a.values())
    assert scale > 0, "the gradient is zero: the comparison would prove nothing"
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=tol * scale, rtol=1e-5, msg=name)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
@pytest.mark.parametrize("schedule", ["ascending", "uniform"])
def test_ratio_is_one_on_policy(tmp_path, temperature, schedule):
    """The rollout's recorded commit log-probs are log pi_old: the first iteration's importance
    ratio is 1 on every counted token (no old-log-prob pass)."""
    rollout = {"gen_length": 8, "schedule": schedule, "temperature": temperature}
    if schedule == "uniform":
        rollout.update(steps=4, block_length=4)
    trainer = make_trainer(tmp_path, rollout=rollout)
    batch = trainer.rollout(1, [0, 1])
    buf, _ = trainer.make_buffer(1, batch)
    ratios = []
    from dllm_rl.objectives.logps import trajectory_step_logps

    trainer.policy.model.train()
    for s in range(buf.traj.num_steps):
        out = trajectory_step_logps(trainer.policy, buf.traj, s, temperature)
        old = buf.traj.step_logprobs.gather(1, out.positions)
        ratios.append(torch.exp(out.logps - old).flatten())
    ratio = torch.cat(ratios).detach()
    assert ratio.numel() == 8 * 8
    assert float((ratio - 1).abs().max()) < 1e-5
    metrics, _ = trainer.step(1, [0, 1])
    assert abs(metrics["ratio_mean"] - 1) < 1e-5


@pytest.mark.parametrize("mu", [1, 2])
@pytest.mark.parametrize("estimator", sorted(set(ESTIMATORS) - set(RATIO_FREE)))
def test_every_estimator_is_on_policy_at_its_first_iteration(tmp_path, estimator, mu):
    """Through the protocol: the first inner iteration's importance ratio is 1 on every counted
    token, whichever estimator and however many inner iterations follow."""
    trainer = make_trainer(tmp_path, grpo={"estimator": estimator, "num_iterations": mu})
    metrics, _ = trainer.step(1, [0, 1])
    assert metrics["ratio_mean"] != 0.0
    assert abs(metrics["ratio_mean"] - 1) < 1e-5


def test_an_unknown_estimator_names_the_known_ones():
    from dllm_rl.trainers.estimators import get_estimator

    with pytest.raises(ValueError, match="one_step"):
        get_estimator("one-step")


def test_per_step_backward_equals_one_full_graph(tmp_path):
    """Backward per decoding step sums to the gradient of one backward through all S graphs."""
    trainer = make_trainer(tmp_path, grpo={"beta": 0.1})
    batch = trainer.rollout(1, [0, 1])
    buf, _ = trainer.make_buffer(1, batch)
    buf.tables.ref = (
        buf.traj.step_logprobs - 0.05
    )  # a reference that differs: the KL term has a gradient
    per_step = grads(trainer, buf)
    trainer.config.grpo.steps_per_backward = buf.traj.num_steps
    calls = []
    trainer.session.backward = lambda loss: (calls.append(1), loss.backward())
    full = grads(trainer, buf)
    assert len(calls) == 1  # one backward for the micro-batch: every graph held at once
    assert_grads_close(per_step, full)


@pytest.mark.parametrize("estimator", sorted(ESTIMATORS))
@pytest.mark.parametrize("loss_type", ["step_mean", "token_mean", "sequence_mean"])
def test_micro_batching_never_changes_the_gradient(tmp_path, estimator, loss_type):
    """1 x 8, 2 x 4 and 8 x 1 micro-batches accumulate the same gradient (the global normaliser
    is in the token weights)."""
    grpo = {"estimator": estimator, "loss_type": loss_type, "loss_positions": "until_eos"}
    trainer = make_trainer(tmp_path, grpo=grpo)
    batch = trainer.rollout(1, [0, 1])
    buf, _ = trainer.make_buffer(1, batch)
    assert buf.advantages.abs().sum() > 0
    results = {}
    for size in (8, 4, 1):
        trainer.config.grpo.per_device_batch_size = size
        results[size] = grads(trainer, buf)
    assert_grads_close(results[8], results[4])
    assert_grads_close(results[8], results[1])


def test_one_step_masks_differ_across_iterations_and_match_old_and_ref(tmp_path):
    trainer = make_trainer(
        tmp_path,
        grpo={"estimator": "one_step", "num_iterations": 3, "beta": 0.1, "p_mask_prompt": 0.5},
    )
    state = torch.random.get_rng_state()
    batch = trainer.rollout(1, [0, 1])
    buf, info = trainer.make_buffer(1, batch)
    assert torch.equal(state, torch.random.get_rng_state())  # the global RNG is never touched
    masks = buf.tables.prompt_masks  # [mu, N, P]
    assert masks.shape[0] == 3 and not torch.equal(masks[0], masks[1])
    assert not bool((masks & ~buf.traj.prompt_mask.bool()).any())  # padding never masked
    # Old and reference log-probs were computed under each iteration's own mask: with no update
    # yet, iteration i's fresh log-probs equal old[i], and equal ref[i] (same weights).
    from dllm_rl.objectives.logps import one_step_logps

    for i in range(3):
        t = buf.traj
        fresh, _ = one_step_logps(
            trainer.policy, t.prompt_ids, t.prompt_mask, t.completion_ids, masks[i], 1.0
        )
        torch.testing.assert_close(fresh, buf.tables.old[i], atol=1e-5, rtol=0)
        torch.testing.assert_close(fresh, buf.tables.ref[i], atol=1e-5, rtol=0)
    assert info.forwards == 2 * 3  # (old + ref) x mu for one micro-batch


def test_kl_is_zero_when_policy_is_the_reference(tmp_path):
    trainer = make_trainer(tmp_path, grpo={"beta": 0.5, "num_iterations": 1})
    metrics, _ = trainer.step(1, [0, 1])
    assert metrics["kl"] < 1e-10  # before the update the policy is its own reference


def test_forwards_are_counted(tmp_path):
    """S rollout + S reference + mu x S training forwards per micro-batch (ours), vs the
    reference code's S (3 + mu)."""
    trainer = make_trainer(tmp_path, grpo={"beta": 0.1, "num_iterations": 2})
    metrics, _ = trainer.step(1, [0, 1])
    s = 3  # ascending, L = 8
    assert metrics["forwards"] == s + s + 2 * s


def test_a_tiny_model_learns(tmp_path):
    """Fixed seed, 30 steps: the fraction of completion characters equal to the letter named in
    the prompt rises clearly above its random start."""
    trainer = make_trainer(
        tmp_path,
        run={"max_steps": 30, "log_samples": 0},
        grpo={
            "prompts_per_step": 4,
            "num_generations": 8,
            "per_device_batch_size": 32,
            "generation_batch_size": 32,
        },
        training={"lr": 3e-3},
    )
    start = time.perf_counter()
    trainer.train()
    rewards = [row["reward"] for row in read_metrics(tmp_path / "run" / "metrics.jsonl")]
    first, last = sum(rewards[:5]) / 5, sum(rewards[-5:]) / 5
    print(f"reward first 5 {first:.4f}, last 5 {last:.4f}, {time.perf_counter() - start:.1f} s")
    assert len(rewards) == 30
    assert last > first + 0.08, (first, last)


def test_lora_trains_only_adapters_and_saves_a_loadable_adapter(tmp_path):
    from peft import PeftModel

    from dllm_rl.models import build_tiny_llada

    trainer = make_trainer(
        tmp_path,
        model={"lora": {"enabled": True, "r": 4, "alpha": 8, "dropout": 0.0}},
        grpo={"beta": 0.1},
        training={"lr": 1e-2},
    )
    model = trainer.policy.model
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer.train()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all("lora_" in n for n in changed)
    assert any("lora_B" in n for n in changed)
    folder = tmp_path / "run" / "checkpoints" / "step-000002" / "model"
    assert (folder / "adapter_config.json").is_file()
    base = build_tiny_llada(0)
    loaded = PeftModel.from_pretrained(base.model, str(folder)).eval()
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    model.eval()
    torch.testing.assert_close(loaded(input_ids=ids).logits, model(input_ids=ids).logits)


@pytest.mark.parametrize("estimator", sorted(ESTIMATORS))
def test_skipping_zero_advantage_rows_is_exact(tmp_path, estimator):
    """Rows of a group whose rewards all agree have A = 0: forwarding only the other rows gives
    the same gradient (the token weights keep the whole step's normaliser) with fewer forwards."""
    from dllm_rl.trainers.grpo import trained_rows

    trainer = make_trainer(tmp_path, grpo={"estimator": estimator, "per_device_batch_size": 2})
    batch = trainer.rollout(1, [0, 1])
    buf, _ = trainer.make_buffer(1, batch)
    buf.advantages[:4] = 0.0  # the first prompt's group: all rewards equal
    assert buf.advantages[4:].abs().min() > 0
    buf.trained = trained_rows(buf.advantages, skip_zero=False)
    every, all_stats = grads(trainer, buf), LossStats()
    trainer.accumulate(buf, 0, all_stats)
    buf.trained = trained_rows(buf.advantages, skip_zero=True)
    assert buf.trained.tolist() == [4, 5, 6, 7]
    skipped, few_stats = grads(trainer, buf), LossStats()
    trainer.accumulate(buf, 0, few_stats)
    assert_grads_close(every, skipped)
    assert few_stats.forwards * 2 == all_stats.forwards  # 2 of 4 micro-batches forwarded


def test_a_step_with_no_trained_row_still_steps_adamw_like_a_zero_gradient(tmp_path):
    """All advantages zero: nothing is forwarded, yet AdamW moves the weights by its momentum
    exactly as the zero gradient of the unskipped loss would."""
    outcomes = []
    for skip in (True, False):
        trainer = make_trainer(tmp_path / str(skip), grpo={"skip_zero_advantage": skip})
        trainer.step(1, [0, 1])  # a real update: AdamW now has momentum
        batch = trainer.rollout(2, [0, 1])
        buf, info = trainer.make_buffer(2, batch)
        buf.advantages.zero_()
        buf.trained = buf.trained[:0] if skip else buf.trained
        before = [p.detach().clone() for p in trainer.policy.model.parameters()]
        stats = LossStats()
        trainer.update(buf, 0, stats)
        assert (stats.forwards == 0) == skip
        after = list(trainer.policy.model.parameters())
        assert any(not torch.equal(a, b) for a, b in zip(before, after))  # momentum moved them
        outcomes.append([p.detach().clone() for p in after])
    for a, b in zip(*outcomes):
        torch.testing.assert_close(a, b, atol=1e-7, rtol=0)


def test_trained_fraction_is_logged_and_the_kl_term_disables_skipping(tmp_path):
    """A constant reward zeroes every advantage: nothing is trained unless the KL term (beta > 0)
    gives those rows a gradient."""
    rewards = ["tests.trainers.fixtures:constant"]
    metrics, _ = make_trainer(tmp_path / "a", rewards=rewards).step(1, [0, 1])
    assert metrics["trained_fraction"] == 0.0 and metrics["forwards"] == 3  # the rollout's S
    metrics, _ = make_trainer(tmp_path / "b", rewards=rewards, grpo={"beta": 0.1}).step(1, [0, 1])
    assert metrics["trained_fraction"] == 1.0
    for grpo in ({"old_logps": "recompute"}, {"estimator": "one_step", "num_iterations": 2}):
        trainer = make_trainer(tmp_path / str(len(grpo)), rewards=rewards, grpo=grpo)
        metrics, batch = trainer.step(1, [0, 1])  # no old-log-prob pass over untrained rows
        assert metrics["forwards"] == batch.forwards, grpo
    metrics, _ = make_trainer(tmp_path / "c").step(1, [0, 1])  # groups of equal rewards skip
    assert 0.0 < metrics["trained_fraction"] <= 1.0 - metrics["frac_reward_zero_std"]


def _lora_module_names(lm, target_modules):
    from dllm_rl.config import LoraConfig, ModelConfig
    from dllm_rl.run.build import apply_lora

    config = ModelConfig(lora=LoraConfig(enabled=True, r=2, alpha=4, target_modules=target_modules))
    wrapped = apply_lora(lm.model, config, lm.family)
    names = {
        n.split("base_model.model.", 1)[1]
        for n, m in wrapped.named_modules()
        if hasattr(m, "lora_A") and "lora_" not in n.rsplit(".", 1)[-1]
    }
    return {n.rsplit(".", 1)[-1] for n in names}, len(names)


def test_lora_targets_resolve_per_family():
    """``default`` is each family's every projection inside the blocks (never the head);
    ``reference`` is the CJ-GRPO trainer's list: q/k/v/up in LLaDA, every projection in Dream."""
    from dllm_rl.models.tiny import build_tiny_dream, build_tiny_llada

    llada = {"q_proj", "k_proj", "v_proj", "attn_out", "ff_proj", "up_proj", "ff_out"}
    kinds, count = _lora_module_names(build_tiny_llada(0, n_layers=2), "default")
    assert (kinds, count) == (llada, 14)
    kinds, _ = _lora_module_names(build_tiny_llada(0), "reference")
    assert kinds == {"q_proj", "k_proj", "v_proj", "up_proj"}
    dream = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    kinds, count = _lora_module_names(build_tiny_dream(0), "default")
    assert kinds == dream and count == 7 * 2
    kinds, _ = _lora_module_names(build_tiny_dream(0), "reference")
    assert kinds == dream


def test_lora_on_a_tiny_dream_model_trains(tmp_path):
    """GRPO with LoRA on the default targets of a Dream checkpoint: only adapters change."""
    from dllm_rl.models.tiny import build_tiny_dream

    lm = build_tiny_dream(0)
    folder = tmp_path / "dream"
    lm.model.save_pretrained(folder)
    lm.tokenizer.save_pretrained(folder)
    trainer = make_trainer(
        tmp_path,
        model={"name_or_path": str(folder), "lora": {"enabled": True, "r": 4, "alpha": 8}},
        training={"lr": 1e-2},
    )
    model = trainer.policy.model
    assert trainer.policy.family == "dream"
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer.train()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all("lora_" in n for n in changed)
    assert any("lora_B" in n and "mlp" in n for n in changed)


@pytest.mark.parametrize("estimator", sorted(ESTIMATORS))
def test_mask_in_softmax_switches_rollout_and_training_together(tmp_path, estimator):
    """``model.mask_in_softmax`` changes the recorded commit log-probs (the random tiny model
    gives [MASK] mass) and the training log-probs together: the first ratio stays exactly 1."""
    recorded = {}
    for keep in (False, True):
        trainer = make_trainer(
            tmp_path / str(keep),
            model={"mask_in_softmax": keep},
            grpo={"estimator": estimator, "num_iterations": 2},
        )
        assert trainer.policy.mask_in_softmax is keep
        recorded[keep] = trainer.rollout(1, [0, 1]).trajectory.step_logprobs
        metrics, _ = trainer.step(1, [0, 1])
        assert abs(metrics["ratio_mean"] - 1) < 1e-5, keep
    assert bool((recorded[True] < recorded[False] - 1e-6).any())  # [MASK] takes some mass


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_lora_dropout_and_the_on_policy_ratio(tmp_path, dropout):
    """Without dropout the LoRA policy's first ratio is exactly 1; with dropout the rollout
    (eval mode) and the update (train mode) differ by dropout noise, and the dry run says so
    with the fix."""
    from dllm_rl.trainers.grpo import check

    lora = {"enabled": True, "r": 4, "alpha": 8, "dropout": dropout}
    # beta > 0: every row is trained (no zero-advantage skipping), so the ratio is measured
    trainer = make_trainer(
        tmp_path, model={"lora": lora}, grpo={"beta": 0.1}, training={"lr": 3e-2}
    )
    trainer.step(1, [0, 1])  # lora_B starts at zero: dropout acts once it has moved
    metrics, _ = trainer.step(2, [0, 1])
    assert metrics["trained_fraction"] == 1.0
    notes = [line for line in check(trainer.config, 1) if line.startswith("note: ")]
    if dropout == 0.0:
        assert abs(metrics["ratio_mean"] - 1) < 1e-5 and notes == []
    else:
        assert abs(metrics["ratio_mean"] - 1) > 1e-4
        assert len(notes) == 1 and "old_logps=recompute" in notes[0]


def test_grpo_runs_on_the_shared_loop_with_an_evaluation_at_step_0_and_hooks(tmp_path):
    """GRPO trains through TrainLoop.run like SFT and VRPO: a held-out evaluation before the
    first step, then every eval_steps; each evaluation's hooks run in order, the later ones
    seeing the earlier ones' metrics, and what they return is logged."""
    trainer = make_trainer(
        tmp_path,
        eval_records=RECORDS[:2],
        run={"max_steps": 2, "eval_steps": 2, "output_dir": str(tmp_path / "run")},
        eval={"prompts": 2, "temperature": 1.0},
    )
    seen = []
    trainer.eval_hooks += [
        lambda step, metrics: {"eval/extra": 10.0 + step},
        lambda step, metrics: seen.append((step, metrics["eval/extra"], "eval/reward" in metrics)),
    ]
    trainer.train()
    assert seen == [(0, 10.0, True), (2, 12.0, True)]
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    evals = {r["step"]: r["eval/extra"] for r in rows if "eval/extra" in r}
    assert evals == {0: 10.0, 2: 12.0}
    assert [r["step"] for r in rows if "loss" in r] == [1, 2]
