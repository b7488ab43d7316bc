"""SPG, wd1 and coupled-GRPO inside the trainer: each estimator's gradient is the gradient of
its paper's loss written out directly from the pure functions, with the draws the trainer made.
(The invariants every estimator shares, micro-batching, skipping, resume and process count, run
over ``ESTIMATORS`` in test_grpo_trainer.py, test_resume.py and test_distributed.py.)"""

from __future__ import annotations

import pytest
import torch

from dllm_rl.objectives.coupled import coupled_token_logps
from dllm_rl.objectives.grpo import clipped_surrogate, group_advantages, k3_kl
from dllm_rl.objectives.logps import masked_logps, one_step_logps
from dllm_rl.objectives.spg import elbo_terms, eubo_terms
from dllm_rl.objectives.wd1 import wd1_weights
from tests.trainers.test_grpo_trainer import assert_grads_close, grads, make_trainer


def direct_grads(trainer, loss_fn):
    trainer.session.optimizer.zero_grad(set_to_none=True)
    trainer.policy.model.train()
    loss_fn().backward()
    out = {
        n: p.grad.clone() for n, p in trainer.policy.model.named_parameters() if p.grad is not None
    }
    trainer.session.optimizer.zero_grad(set_to_none=True)
    return out


def buffer(trainer):
    batch = trainer.rollout(1, [0, 1])
    buf, _ = trainer.make_buffer(1, batch)
    assert buf.advantages.abs().sum() > 0
    return batch, buf


def test_wd1_is_the_weighted_likelihood_averaged_over_prompts(tmp_path):
    """-1/B sum_prompts sum_i (w+_i - w-_i) sum_tokens log p, w+- = softmax(+-A) per group."""
    grpo = {"estimator": "wd1", "loss_type": "sequence_sum", "scale_rewards": "none"}
    trainer = make_trainer(
        tmp_path, grpo=grpo, rollout={"gen_length": 8, "schedule": "uniform", "steps": 4}
    )
    batch, buf = buffer(trainer)
    traj = buf.traj
    adv = group_advantages(batch.rewards.total, 4, "none")
    pos, neg = wd1_weights(adv, 4)

    def loss():
        logps, _ = one_step_logps(
            trainer.policy,
            traj.prompt_ids,
            traj.prompt_mask,
            traj.completion_ids,
            buf.tables.prompt_masks[0],
            1.0,
        )
        per_prompt = ((pos - neg) * (logps * buf.counted).sum(1)).view(2, 4).sum(1)
        return -per_prompt.mean()

    assert_grads_close(grads(trainer, buf), direct_grads(trainer, loss))


@pytest.mark.parametrize("bound", ["mix", "eubo", "elbo"])
def test_spg_is_minus_a_times_the_sandwiched_bound(tmp_path, bound):
    """sum_n -A_n B_n / sum_n L_n, B_n the ELBO where A_n >= 0 and the chosen bound where
    A_n < 0, both from the trainer's own block-wise draws."""
    grpo = {
        "estimator": "spg",
        "loss_type": "token_mean",
        "scale_rewards": "none",
        "spg": {"bound": bound, "num_t": 3, "eubo_beta": 2.0, "mix_weight": 0.25},
    }
    rollout = {"gen_length": 8, "schedule": "uniform", "steps": 4, "block_length": 4}
    trainer = make_trainer(tmp_path, grpo=grpo, rollout=rollout)
    _, buf = buffer(trainer)
    assert (buf.advantages < 0).any() and (buf.advantages > 0).any()
    traj, t = buf.traj, buf.tables

    def loss():
        draws = torch.stack(
            [
                masked_logps(
                    trainer.policy,
                    traj.prompt_ids,
                    traj.prompt_mask,
                    traj.completion_ids,
                    t.prompt[0][:, k],
                    t.masked[0][:, k],
                    1.0,
                )[0]
                for k in range(3)
            ],
            dim=1,
        )
        lower = elbo_terms(draws, t.scored[0], buf.counted).sum(1)
        upper = eubo_terms(draws, t.scored[0], buf.counted, 2.0).sum(1)
        if bound == "mix":
            upper = 0.25 * upper + 0.75 * lower
        elif bound == "elbo":
            upper = lower
        chosen = torch.where(buf.advantages >= 0, lower, upper)
        return (-buf.advantages * chosen).sum() / buf.counted.sum()

    assert_grads_close(grads(trainer, buf), direct_grads(trainer, loss))


@pytest.mark.parametrize("full_mask", [True, False])
def test_coupled_is_grpo_on_the_coupled_log_probs(tmp_path, full_mask):
    """The clipped surrogate + beta k3 on coupled log-probs, against a reference that differs,
    in the second inner iteration (old log-probs from the first)."""
    grpo = {
        "estimator": "coupled",
        "loss_type": "token_mean",
        "num_iterations": 2,
        "beta": 0.1,
        "coupled": {"full_mask": full_mask},
    }
    trainer = make_trainer(
        tmp_path, grpo=grpo, rollout={"gen_length": 8, "schedule": "uniform", "steps": 4}
    )
    _, buf = buffer(trainer)
    traj, t = buf.traj, buf.tables
    t.old[1] = t.old[1] - 0.3  # the ratio is not 1: clipping and its gradient are exercised
    t.ref[1] = t.ref[1] + 0.2

    def loss():
        clean = torch.zeros_like(traj.prompt_mask, dtype=torch.bool)
        first = t.first[1]

        def scored(masked):
            return masked_logps(
                trainer.policy,
                traj.prompt_ids,
                traj.prompt_mask,
                traj.completion_ids,
                clean,
                masked,
                1.0,
            )[0]

        full = None
        if full_mask:
            full = one_step_logps(
                trainer.policy, traj.prompt_ids, traj.prompt_mask, traj.completion_ids, clean, 1.0
            )[0]
        logps = coupled_token_logps(scored(first), scored(~first), first, t.t[1], full)
        terms = clipped_surrogate(logps, t.old[1], buf.advantages[:, None], 0.2, 0.2)
        per_token = terms.loss + 0.1 * k3_kl(logps, t.ref[1])
        return (per_token * buf.counted).sum() / buf.counted.sum()

    assert_grads_close(grads(trainer, buf, iteration=1), direct_grads(trainer, loss))


@pytest.mark.parametrize("estimator", ["spg", "wd1"])
def test_ratio_free_estimators_refuse_a_kl_term(estimator, tmp_path):
    with pytest.raises(ValueError, match="grpo.beta=0"):
        make_trainer(tmp_path, grpo={"estimator": estimator, "beta": 0.04})


@pytest.mark.parametrize("estimator", ["spg", "wd1", "coupled"])
def test_a_step_reports_its_forwards(tmp_path, estimator):
    """Forwards per RL step (rollout excluded) = micro-batches x inner iterations x the
    estimator's forwards per micro-batch (+ the old and reference passes)."""
    grpo = {"estimator": estimator, "num_iterations": 2, "per_device_batch_size": 4}
    grpo["beta"] = 0.04 if estimator == "coupled" else 0.0
    trainer = make_trainer(
        tmp_path, grpo=grpo, rollout={"gen_length": 8, "schedule": "uniform", "steps": 4}
    )
    metrics, batch = trainer.step(1, [0, 1])
    trained = round(metrics["trained_fraction"] * 8)
    micro = -(-trained // 4)
    per = {"spg": 2, "wd1": 1, "coupled": 3}[estimator]
    # coupled: the old pass (mu = 2, on trained rows) and the reference (all 8 rows), per iteration
    extra = 2 * 3 * micro + 2 * 3 * 2 if estimator == "coupled" else 0
    assert metrics["forwards"] - batch.forwards == 2 * per * micro + extra
    assert metrics["ratio_mean"] == pytest.approx(1.0, abs=1e-5)
