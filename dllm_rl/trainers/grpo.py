"""CJ-GRPO (with d1's diffu-GRPO as a baseline): one explicit loop on accelerate.

One training step:

1. **Rollout**: ``prompts_per_step`` prompts (seeded shuffle, epochs wrap), split across the
   processes, G completions each from the sampler, with the commit log-probs recorded.
2. **Score**: the recipe's rewards on the completion texts.
3. **Advantages**: ``A = r - mean_group(r)``, scaled by ``scale_rewards``.
4. **Update**: ``num_iterations`` passes over the rollout buffer in micro-batches of
   ``per_device_batch_size``, one optimizer step per pass.

Log-probs (``grpo.estimator``):

* ``trajectory`` (CJ-GRPO, Yang et al. 2025): for each decoding step s, one forward on the state
  before s and the log-probs of the tokens committed at s, so the optimised transitions are exactly
  the rollout's. The rollout's recorded commit log-probs are log pi_old of those transitions (no
  old-log-prob pass). Backward runs per ``steps_per_backward`` steps, each part weighted by the
  step's global normaliser, so peak memory does not grow with S and the summed gradient is the
  full-graph gradient.
* ``one_step`` (d1, Zhao et al. 2025): prompt tokens masked with ``p_mask_prompt``, completion fully
  masked, one forward; a fresh mask per inner iteration, the same one for old, reference and
  current log-probs.

Gradients are summed, never averaged, across micro-batches and processes: the token weights
(:func:`~dllm_rl.objectives.grpo.token_weights`) already hold the global normaliser, so micro-batch
and process counts never change the update.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from dllm_rl.config import BatchPlan, GRPOConfig
from dllm_rl.models.adapter import DiffusionLM
from dllm_rl.objectives.grpo import (
    SurrogateTerms,
    clipped_surrogate,
    counted_positions,
    group_advantages,
    k3_kl,
    reduction_totals,
    token_weights,
)
from dllm_rl.objectives.logps import draw_prompt_mask, one_step_logps, trajectory_step_logps
from dllm_rl.rollout.config import SamplerConfig
from dllm_rl.rollout.trajectory import Trajectory
from dllm_rl.rollout.worker import RolloutBatch, RolloutWorker
from dllm_rl.run.build import Reference, derive_seed, generator
from dllm_rl.trainers.common import Session, TrainLoop, all_reduce_sum, gather_rows, run_calls

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- the buffer
@dataclass
class Buffer:
    """One process's rollout buffer, ready for the inner iterations (N local completions).

    Attributes:
        traj: ``[N]`` trajectories.
        advantages: ``[N]`` float32.
        weights: ``[N, L]`` float32 token weights with the global normaliser.
        counted: ``[N, L]`` bool positions in the loss.
        old: ``[N, L]`` (trajectory) or ``[mu, N, L]`` (one_step) old log-probs, None when the
            first iteration's own detached log-probs serve (one_step with mu = 1).
        ref: like ``old``, reference log-probs; None when beta = 0.
        prompt_masks: one_step only, ``[mu, N, P]`` bool, the prompt tokens masked per iteration.
        global_rewards: ``[N_global]`` total rewards of every process's rows, in rank order.
        trained: ``[n]`` long, the rows the inner iterations forward (all rows, or those with a
            nonzero advantage under ``grpo.skip_zero_advantage``).
    """

    traj: Trajectory
    advantages: torch.Tensor
    weights: torch.Tensor
    counted: torch.Tensor
    old: torch.Tensor | None = None
    ref: torch.Tensor | None = None
    prompt_masks: torch.Tensor | None = None
    global_rewards: torch.Tensor | None = None
    trained: torch.Tensor | None = None


@dataclass
class LossStats:
    """Sums over counted tokens, kept on the model's device (no host sync inside the loss loop)
    and reduced across processes once per step before they become means."""

    FIELDS = (
        "tokens",
        "ratio",
        "ratio_tokens",
        "low",
        "high",
        "region",
        "kl",
        "entropy",
        "entropy_tokens",
        "loss",
    )
    sums: torch.Tensor | None = None  # [len(FIELDS)] float64
    forwards: int = 0

    def add(
        self,
        counted: torch.Tensor,
        terms: SurrogateTerms,
        kl: torch.Tensor | None,
        entropy: torch.Tensor | None,
        loss: torch.Tensor,
        first_iteration: bool,
    ) -> None:
        """Add one scored block of tokens (``[n, k]`` tensors; ``counted`` selects)."""
        c = counted.double()  # [n, k]
        n = c.sum()
        zero = n.new_zeros(())

        def total(x: torch.Tensor | None) -> torch.Tensor:
            return zero if x is None else (x.detach().double() * c).sum()

        part = torch.stack(
            [
                n,
                total(terms.ratio) if first_iteration else zero,
                n if first_iteration else zero,
                total(terms.is_low_clipped),
                total(terms.is_high_clipped),
                total(terms.is_region_clipped),
                total(kl),
                total(entropy),
                n if entropy is not None else zero,
                loss.detach().double(),
            ]
        )  # [len(FIELDS)]
        self.sums = part if self.sums is None else self.sums + part

    def values(self) -> torch.Tensor:
        """``[len(FIELDS)]`` float64 on the CPU (zeros before any token was added)."""
        if self.sums is None:
            return torch.zeros(len(self.FIELDS), dtype=torch.float64)
        return self.sums.cpu()


def trained_rows(advantages: torch.Tensor, skip_zero: bool) -> torch.Tensor:
    """``[n]`` long indices of the rows to forward: every row, or (``skip_zero``) the rows whose
    advantage is nonzero.

    Skipping is exact without a KL term: a row with A = 0 has the per-token loss
    ``-min(r * 0, clip(r) * 0) = 0`` for every ratio, so its gradient is zero in every inner
    iteration, and the token weights keep the normaliser of the whole step.
    """
    rows = torch.arange(len(advantages), device=advantages.device)
    return rows[advantages != 0] if skip_zero else rows


def on_rows(part: torch.Tensor, rows: torch.Tensor, n: int, dim: int) -> torch.Tensor:
    """A table over ``n`` rows (along ``dim``) holding ``part``, computed on ``rows`` only; the
    other rows are zeros, never read (the inner iterations forward ``rows`` only)."""
    if len(rows) == n:
        return part
    shape = list(part.shape)
    shape[dim] = n
    return part.new_zeros(shape).index_copy_(dim, rows, part)


# ----------------------------------------------------------------------------- per-token loss
def _token_loss(
    logps: torch.Tensor,
    old: torch.Tensor,
    adv: torch.Tensor,
    ref: torch.Tensor | None,
    config: GRPOConfig,
) -> tuple[torch.Tensor, SurrogateTerms, torch.Tensor | None]:
    """Clipped surrogate (+ beta k3) per token: ``[n, k]`` each."""
    g = config.grpo
    eps_high = g.epsilon if g.epsilon_high is None else g.epsilon_high
    terms = clipped_surrogate(logps, old, adv, g.epsilon, eps_high)
    loss = terms.loss
    kl = None
    if ref is not None:
        kl = k3_kl(logps, ref)
        loss = loss + g.beta * kl
    return loss, terms, kl


Call = Callable[[], torch.Tensor]
"""One forward/backward unit of a step: runs its forward(s) and returns the loss to
back-propagate (:func:`~dllm_rl.trainers.common.run_calls`)."""


def trajectory_calls(
    model: DiffusionLM,
    buf: Buffer,
    rows: torch.Tensor,
    config: GRPOConfig,
    stats: LossStats | None,
    first_iteration: bool,
    skip_empty: bool = True,
) -> list[Call]:
    """CJ-GRPO loss of one micro-batch as calls of ``steps_per_backward`` decoding steps each.

    Args:
        stats: where the counted tokens' sums go; None for a zero-weighted padding call.
        skip_empty: leave out the decoding steps at which no counted token was committed (they
            add nothing). Off, every micro-batch makes the same calls with the same forwards,
            which engines that shard parameters need (every forward communicates).
    """
    traj = buf.traj[rows]
    weights, counted, adv = buf.weights[rows], buf.counted[rows], buf.advantages[rows]
    if stats is None:
        weights = torch.zeros_like(weights)
    old = traj.step_logprobs if buf.old is None else buf.old[rows]
    ref = None if buf.ref is None else buf.ref[rows]
    temperature = config.rollout.temperature
    steps, per = traj.num_steps, config.grpo.steps_per_backward
    wanted = [s for s in range(steps) if not skip_empty or bool(weights.gather(1, traj.committed_at(s)).any())]

    def chunk(decoding_steps: list[int]) -> Call:
        def call() -> torch.Tensor:
            part = None
            for s in decoding_steps:
                where = traj.committed_at(s)  # [n, k]
                w = weights.gather(1, where)  # [n, k]
                out = trajectory_step_logps(
                    model, traj, s, temperature, with_entropy=first_iteration and stats is not None
                )
                loss, terms, kl = _token_loss(
                    out.logps,
                    old.gather(1, where),
                    adv[:, None].expand_as(w),
                    None if ref is None else ref.gather(1, where),
                    config,
                )
                term = (w * loss).sum()
                if stats is not None:
                    stats.forwards += 1
                    stats.add(
                        counted.gather(1, where), terms, kl, out.entropy, term.detach(),
                        first_iteration,
                    )
                part = term if part is None else part + term
            return part

        return call

    calls = []
    for start in range(0, steps, per):
        chosen = [s for s in wanted if start <= s < start + per]
        if chosen:
            calls.append(chunk(chosen))
    return calls


def one_step_calls(
    model: DiffusionLM,
    buf: Buffer,
    rows: torch.Tensor,
    iteration: int,
    config: GRPOConfig,
    stats: LossStats | None,
) -> list[Call]:
    """d1's one-step loss of one micro-batch: one call (one forward, one backward)."""

    def call() -> torch.Tensor:
        traj = buf.traj[rows]
        masked = buf.prompt_masks[iteration][rows]
        logps, entropy = one_step_logps(
            model,
            traj.prompt_ids,
            traj.prompt_mask,
            traj.completion_ids,
            masked,
            config.rollout.temperature,
            with_entropy=iteration == 0 and stats is not None,
        )  # [n, L]
        old = logps.detach() if buf.old is None else buf.old[iteration][rows]
        ref = None if buf.ref is None else buf.ref[iteration][rows]
        adv = buf.advantages[rows][:, None].expand_as(logps)
        loss, terms, kl = _token_loss(logps, old, adv, ref, config)
        weights = buf.weights[rows] if stats is not None else torch.zeros_like(buf.weights[rows])
        term = (weights * loss).sum()
        if stats is not None:
            stats.forwards += 1
            stats.add(buf.counted[rows], terms, kl, entropy, term.detach(), iteration == 0)
        return term

    return [call]


# ----------------------------------------------------------------------------- no-grad passes
@torch.no_grad()
def trajectory_logps_table(
    model: DiffusionLM, traj: Trajectory, temperature: float, size: int
) -> tuple[torch.Tensor, int]:
    """``[N, L]`` log-prob of every token at its commit step (S forwards per micro-batch)."""
    table = torch.zeros(traj.completion_ids.shape, dtype=torch.float32, device=traj.device)
    forwards = 0
    for lo in range(0, len(traj), size):
        part = traj[lo : lo + size]
        for s in range(part.num_steps):
            out = trajectory_step_logps(model, part, s, temperature)
            table[lo : lo + size].scatter_(1, out.positions, out.logps.float())
            forwards += 1
    return table, forwards


@torch.no_grad()
def one_step_logps_table(
    model: DiffusionLM,
    traj: Trajectory,
    masks: Sequence[torch.Tensor],
    temperature: float,
    size: int,
) -> tuple[torch.Tensor, int]:
    """``[mu, N, L]`` one-step log-probs under each iteration's prompt mask ``[N, P]`` (and the
    forwards spent), in micro-batches of ``size``."""
    out = []
    forwards = 0
    for masked in masks:
        rows = []
        for lo in range(0, len(traj), size):
            part = traj[lo : lo + size]
            logps, _ = one_step_logps(
                model,
                part.prompt_ids,
                part.prompt_mask,
                part.completion_ids,
                masked[lo : lo + size],
                temperature,
            )
            rows.append(logps.float())
            forwards += 1
        out.append(torch.cat(rows))
    return torch.stack(out), forwards


# ----------------------------------------------------------------------------- the trainer
@dataclass
class GRPOTrainer:
    """State of one GRPO run; :meth:`train` is the loop."""

    config: GRPOConfig
    session: Session
    worker: RolloutWorker
    plan: BatchPlan
    records: Sequence[dict[str, Any]]
    eval_records: Sequence[dict[str, Any]] = field(default_factory=list)
    reference: Reference | None = None

    @property
    def policy(self) -> DiffusionLM:
        return self.session.policy

    def sampler(self) -> SamplerConfig:
        return self.config.rollout.sampler()

    def chunk_generator(self, tag: str, step: int) -> Callable[[int], torch.Generator]:
        seed, device = self.config.run.seed, self.policy.device
        return lambda chunk: generator(derive_seed(seed, tag, step, chunk), device)

    # ------------------------------------------------------------------ one step
    def rollout(self, step: int, indices: list[int]) -> RolloutBatch:
        s = self.session
        lp = self.plan.local_prompts
        mine = indices[s.rank * lp : (s.rank + 1) * lp]
        every = [self.records[i]["prompt"] for i in indices]
        width = max(len(t) for t in self.worker.prompt_tokens(every))
        with s.full_parameters():
            return self.worker.rollout(
                [self.records[i] for i in mine],
                self.config.grpo.num_generations,
                self.sampler(),
                self.chunk_generator("rollout", step),
                group_offset=s.rank * lp,
                prompt_width=width,
            )

    def make_buffer(self, step: int, batch: RolloutBatch) -> tuple[Buffer, dict[str, float]]:
        """Advantages, token weights, and the no-grad old/reference passes."""
        g, s = self.config.grpo, self.session
        traj = batch.trajectory
        device = traj.device
        total = gather_rows(s, batch.rewards.total.to(device))  # [N_global]
        adv_all = group_advantages(total, g.num_generations, g.scale_rewards)
        n = len(batch)
        advantages = adv_all[s.rank * n : (s.rank + 1) * n].float()
        counted = counted_positions(traj.completion_ids, self.policy.ids.stop_ids, g.loss_positions)
        totals = all_reduce_sum(
            s, reduction_totals(counted, traj.unmask_step, traj.num_steps, g.loss_type)
        )
        weights = token_weights(counted, traj.unmask_step, g.loss_type, totals)
        buf = Buffer(traj, advantages, weights, counted, global_rewards=total)
        buf.trained = trained_rows(advantages, g.skip_zero_advantage and self.reference is None)
        start = time.perf_counter()
        with s.full_parameters():
            forwards = self.no_grad_passes(step, buf)
        group_std = total.view(-1, g.num_generations).std(dim=1)
        info = {
            "forwards_reference": forwards,
            "time/reference_s": time.perf_counter() - start,
            "frac_reward_zero_std": float((group_std < 1e-6).float().mean()),
        }
        trained = all_reduce_sum(s, torch.tensor([float(len(buf.trained))], dtype=torch.float64))
        info["trained_fraction"] = float(trained) / len(total)
        return buf, info

    def no_grad_passes(self, step: int, buf: Buffer) -> int:
        """The prompt masks (one_step), old and reference log-probs; returns the forwards."""
        g, s = self.config.grpo, self.session
        traj, n = buf.traj, len(buf.traj)
        size, temp = g.per_device_batch_size, self.config.rollout.temperature
        forwards = 0
        if g.estimator == "one_step":
            masks = []
            for it in range(g.num_iterations):
                rows = []
                gen = self.chunk_generator(f"prompt_mask/{it}", step)
                first = s.rank * n // g.generation_batch_size
                for c, lo in enumerate(range(0, n, g.generation_batch_size)):
                    part = traj.prompt_mask[lo : lo + g.generation_batch_size]
                    rows.append(draw_prompt_mask(part, g.p_mask_prompt, gen(first + c)))
                masks.append(torch.cat(rows))
            buf.prompt_masks = torch.stack(masks)  # [mu, N, P]
            if g.num_iterations > 1 and len(buf.trained):
                part = [m[buf.trained] for m in masks]
                old, f = one_step_logps_table(self.policy, traj[buf.trained], part, temp, size)
                buf.old = on_rows(old, buf.trained, n, dim=1)
                forwards += f
            if self.reference is not None:
                with self.reference.active(self.policy.model) as ref:
                    buf.ref, f = one_step_logps_table(ref, traj, masks, temp, size)
                forwards += f
        else:
            if g.old_logps == "recompute" and len(buf.trained):
                old, f = trajectory_logps_table(self.policy, traj[buf.trained], temp, size)
                buf.old = on_rows(old, buf.trained, n, dim=0)
                forwards += f
            if self.reference is not None:
                with self.reference.active(self.policy.model) as ref:
                    buf.ref, f = trajectory_logps_table(ref, traj, temp, size)
                forwards += f
        return forwards

    def update(self, buf: Buffer, iteration: int, stats: LossStats) -> float:
        """One pass over the buffer and one optimizer step; returns the gradient norm."""
        self.accumulate(buf, iteration, stats)
        return self.session.optimizer_step()

    def calls(
        self, buf: Buffer, rows: torch.Tensor, iteration: int, stats: LossStats | None
    ) -> list[Call]:
        """The calls of one micro-batch (``stats`` None: a zero-weighted padding micro-batch)."""
        if self.config.grpo.estimator == "one_step":
            return one_step_calls(self.policy, buf, rows, iteration, self.config, stats)
        skip = stats is not None and not self.session.engine.spec.shards_parameters
        return trajectory_calls(
            self.policy, buf, rows, self.config, stats, iteration == 0, skip_empty=skip
        )

    def accumulate(self, buf: Buffer, iteration: int, stats: LossStats) -> None:
        """One pass over the buffer in micro-batches: the step's gradient lands in the engine.

        Every process makes the same number of calls (:func:`run_calls`): a process with fewer
        trained rows pads with zero-weighted calls on one of its rows.
        """
        g = self.config.grpo
        self.policy.model.train()
        chunks = buf.trained.split(g.per_device_batch_size) if len(buf.trained) else ()
        calls = [c for rows in chunks for c in self.calls(buf, rows, iteration, stats)]
        padding = buf.trained[:1] if len(buf.trained) else torch.zeros(1, dtype=torch.long)
        pad = lambda: self.calls(buf, padding.to(buf.weights.device), iteration, None)  # noqa: E731
        run_calls(self.session, calls, pad)

    def step(self, step: int, indices: list[int]) -> tuple[dict[str, float], RolloutBatch]:
        g, s = self.config.grpo, self.session
        t0 = time.perf_counter()
        batch = self.rollout(step, indices)
        buf, info = self.make_buffer(step, batch)
        t1 = time.perf_counter()
        stats = LossStats()
        norms = [self.update(buf, it, stats) for it in range(g.num_iterations)]
        t2 = time.perf_counter()
        sums = all_reduce_sum(s, stats.values()).tolist()
        tokens, ratio, ratio_n, low, high, region, kl, ent, ent_n, loss = sums
        values = gather_rows(s, batch.rewards.values.to(batch.trajectory.device))  # [N_g, R]
        totals = buf.global_rewards  # [N_global]
        lengths = gather_rows(s, batch.lengths.to(batch.trajectory.device).float())
        metrics: dict[str, float] = {
            "loss": loss / g.num_iterations,
            "reward": float(totals.mean()),
            "reward_std": float(totals.std()) if len(totals) > 1 else 0.0,
        }
        errors = all_reduce_sum(
            s,
            torch.tensor(
                [
                    batch.rewards.metrics.get(f"rewards/{n}/errors", 0.0)
                    for n in batch.rewards.names
                ],
                dtype=torch.float64,
            ),
        ).tolist()
        for r, name in enumerate(batch.rewards.names):
            col = values[:, r][~torch.isnan(values[:, r])]
            metrics[f"rewards/{name}/mean"] = float(col.mean()) if len(col) else math.nan
            metrics[f"rewards/{name}/std"] = float(col.std()) if len(col) > 1 else 0.0
            metrics[f"rewards/{name}/errors"] = errors[r]  # rows whose reward raised
        step_s = time.perf_counter() - t0
        local_forwards = batch.forwards + info["forwards_reference"] + stats.forwards
        metrics.update(
            {
                "frac_reward_zero_std": info["frac_reward_zero_std"],
                "trained_fraction": info["trained_fraction"],
                "kl": kl / max(tokens, 1.0) if self.reference is not None else 0.0,
                "clip_ratio/low_mean": low / max(tokens, 1.0),
                "clip_ratio/high_mean": high / max(tokens, 1.0),
                "clip_ratio/region_mean": region / max(tokens, 1.0),
                "ratio_mean": ratio / max(ratio_n, 1.0),
                "entropy": ent / max(ent_n, 1.0),
                "completions/mean_length": float(lengths.mean()),
                "grad_norm": float(sum(norms) / len(norms)),
                "learning_rate": s.scheduler.get_last_lr()[0],
                "forwards": local_forwards,
                "time/rollout_s": batch.rollout_s,
                "time/score_s": batch.score_s,
                "time/reference_s": info["time/reference_s"],
                "time/train_s": (t2 - t1) + info["time/reference_s"],
                "time/step_s": step_s,
                "tokens_per_s": len(totals) * batch.trajectory.gen_length / step_s,
                "optimizer_steps": g.num_iterations,
                "truncated_prompts": self.worker.truncated_prompts,
            }
        )
        return metrics, batch

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self, step: int) -> dict[str, float]:
        """The same rollout path on held-out prompts at the eval temperature."""
        s, e = self.session, self.config.eval
        rows = list(self.eval_records[: e.prompts])
        if not rows:
            return {}
        per = math.ceil(len(rows) / s.world_size)
        mine = rows[s.rank * per : (s.rank + 1) * per] or rows[:1]
        sampler = self.config.rollout.sampler(temperature=e.temperature)
        width = max(len(t) for t in self.worker.prompt_tokens([r["prompt"] for r in rows]))
        with s.full_parameters():  # global offsets and one width: the draws of a 1-process run
            batch = self.worker.rollout(
                mine,
                e.num_generations,
                sampler,
                self.chunk_generator("eval", step),
                group_offset=min(s.rank * per, len(rows) - 1),
                prompt_width=width,
            )
        values = gather_rows(s, batch.rewards.values.to(self.policy.device), pad=True)
        totals = gather_rows(s, batch.rewards.total.to(self.policy.device), pad=True)
        out = {"eval/reward": float(totals.nanmean())}
        for r, name in enumerate(batch.rewards.names):
            out[f"eval/rewards/{name}/mean"] = float(values[:, r].nanmean())
        return out

    # ------------------------------------------------------------------ the loop
    def train(self) -> None:
        loop = TrainLoop(self.session, len(self.records), self.config.grpo.prompts_per_step)
        for step, indices in loop:
            metrics, batch = self.step(step, indices)
            loop.log(step, metrics, samples=self.sample_rows(batch))
            run = self.config.run
            if run.eval_steps and step % run.eval_steps == 0:
                loop.log_eval(step, self.evaluate(step))
        loop.finish()

    def sample_rows(self, batch: RolloutBatch) -> list[dict[str, Any]]:
        k = self.config.run.log_samples
        rows = []
        for i in range(min(k, len(batch))):
            rows.append(
                {
                    "prompt": batch.prompts[i],
                    "completion": batch.completions[i],
                    "reward": float(batch.rewards.total[i]),
                    "rewards": {
                        n: (None if math.isnan(v) else v)
                        for n, v in zip(batch.rewards.names, batch.rewards.values[i].tolist())
                    },
                    "length": int(batch.lengths[i]),
                    "completion_ids": batch.trajectory.completion_ids[i].tolist(),
                    "unmask_step": batch.trajectory.unmask_step[i].tolist(),
                }
            )
        return rows


# ----------------------------------------------------------------------------- entry points
def load_records(config: GRPOConfig, split: str, options: dict[str, Any]) -> list[dict[str, Any]]:
    """The prompt records of ``split`` (``dllm_rl.data.load_task``) as plain dicts."""
    from dllm_rl.data import load_task

    d = config.data
    data = load_task(
        d.task,
        split,
        source=d.source,
        template=d.template,
        limit=d.limit,
        seed=config.run.seed,
        **options,
    )
    return [dict(row) for row in data]


def check(config: GRPOConfig, world_size: int) -> list[str]:
    """The dry run: everything that can be checked without loading weights or the network.

    Returns:
        Lines describing what a real run would load.

    Raises:
        ValueError, FileNotFoundError, UnknownTaskError, UnknownRewardError: with the fix.
    """
    from dllm_rl.data.paths import data_dir
    from dllm_rl.data.registry import get_task
    from dllm_rl.run.build import check_model_source
    from rewards.registry import resolve_rewards

    plan = config.check_batch(world_size)
    specs = resolve_rewards(config.rewards)
    d = config.data
    spec = get_task(d.task)
    lines = [f"model: {check_model_source(config.model)}"]
    for split in [d.split] + ([d.eval_split] if config.run.eval_steps else []):
        if split not in spec.splits:
            raise ValueError(f"task {d.task!r} has no split {split!r}; choose from {spec.splits}")
        if d.source in (None, "local") and split in spec.local:
            path = data_dir() / spec.local[split]
            if not path.is_file():
                raise FileNotFoundError(
                    f"{d.task} {split}: no local copy at {path}; set DLLM_RL_DATA or data.source"
                )
            lines.append(f"data: {d.task}/{split} from {path}")
        elif d.source in (None, "generate") and spec.generator is not None:
            lines.append(f"data: {d.task}/{split} generated (seed {config.run.seed})")
        elif Path(str(d.source)).expanduser().is_file():  # read and checked, as the run will
            options = d.options if split == d.split else d.eval_options
            rows = load_records(config, split, options)
            lines.append(f"data: {d.task}/{split} from {d.source}: {len(rows)} rows")
        else:
            lines.append(f"data: {d.task}/{split} from {d.source!r} (not checked offline)")
    lines.append(f"rewards: {', '.join(f'{s.name} x {s.weight:g}' for s in specs)}")
    sampler = config.rollout.sampler()
    g = config.grpo
    lines.append(
        f"rollout: {sampler.schedule}, L={sampler.gen_length}, S={sampler.plan.num_steps}, "
        f"T={sampler.temperature}, counts {list(sampler.plan.counts)[:12]}"
    )
    lines.append(
        f"batch: {g.prompts_per_step} prompts x G={g.num_generations} over {world_size} "
        f"process(es) = {plan.local_completions} completions each, {plan.micro_batches} "
        f"micro-batches of {g.per_device_batch_size}, {plan.generation_chunks} rollout chunks "
        f"of {g.generation_batch_size}; {g.num_iterations} update(s) per step"
    )
    return lines


def build_trainer(
    config: GRPOConfig,
    recipe: str,
    argv: list[str],
    records: Sequence[dict[str, Any]] | None = None,
    eval_records: Sequence[dict[str, Any]] | None = None,
) -> GRPOTrainer:
    """Everything a run needs, from the config (``records``: prompts given directly, instead of
    ``config.data``)."""
    from dllm_rl.trainers.common import start_session
    from rewards.registry import resolve_rewards

    world = int(os.environ.get("WORLD_SIZE", "1"))
    plan = config.check_batch(world)
    specs = resolve_rewards(config.rewards)
    if records is None:
        records = load_records(config, config.data.split, config.data.options)
    if eval_records is None:
        eval_records = []
        if config.run.eval_steps:
            eval_records = load_records(config, config.data.eval_split, config.data.eval_options)
    session = start_session(
        config,
        recipe,
        argv,
        updates_per_step=config.grpo.num_iterations,
        needs_reference=config.grpo.beta > 0,
    )
    worker = RolloutWorker(
        session.policy,
        specs,
        config.grpo.generation_batch_size,
        chat_template=config.model.chat_template,
        max_prompt_length=config.data.max_prompt_length,
    )
    return GRPOTrainer(config, session, worker, plan, records, eval_records, session.reference)


def run(config: GRPOConfig, recipe: str, argv: list[str]) -> GRPOTrainer:
    """Build everything from the config and train; returns the finished trainer."""
    trainer = build_trainer(config, recipe, argv)
    trainer.train()
    return trainer
