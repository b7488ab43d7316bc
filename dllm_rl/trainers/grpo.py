"""CJ-GRPO (with d1's diffu-GRPO as a baseline): one explicit loop on accelerate.

One training step:

1. **Rollout**: ``prompts_per_step`` prompts (seeded shuffle, epochs wrap), split across the
   processes, G completions each from the sampler, with the commit log-probs recorded.
2. **Score**: the recipe's rewards on the completion texts.
3. **Advantages**: ``A = r - mean_group(r)``, scaled by ``scale_rewards``.
4. **Update**: ``num_iterations`` passes over the rollout buffer in micro-batches of
   ``per_device_batch_size``, one optimizer step per pass.

Advantages, log-probs and loss (``grpo.estimator``): one object per estimator,
:mod:`dllm_rl.trainers.estimators` (``trajectory``: CJ-GRPO, the rollout's own transitions;
``one_step``: d1's diffu-GRPO; ``spg``, ``wd1``, ``coupled``). The estimator turns the rewards
into each row's coefficient, runs its draws and no-grad passes when the buffer is built and
returns each micro-batch's forward/backward calls; this module holds only the loop.

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
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from dllm_rl.models.adapter import DiffusionLM
from dllm_rl.objectives.grpo import (
    counted_positions,
    reduction_totals,
    token_weights,
)
from dllm_rl.rollout.config import SamplerConfig
from dllm_rl.rollout.worker import RolloutBatch, RolloutWorker
from dllm_rl.run.build import Reference, derive_seed, generator
from dllm_rl.trainers.common import (
    EvalHook,
    Session,
    StepOutput,
    TrainLoop,
    all_reduce_sum,
    gather_rows,
    run_calls,
    shard_bounds,
)
from dllm_rl.trainers.estimators import (
    Buffer,
    Estimator,
    LossStats,
    LossTotals,
    StepContext,
    get_estimator,
)
from dllm_rl.trainers.grpo_config import BatchPlan, GRPOConfig

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- the buffer
@dataclass(frozen=True)
class BufferInfo:
    """What building one step's buffer cost and found.

    Attributes:
        forwards: forwards of the estimator's no-grad passes (old, reference).
        seconds: their wall time.
        frac_reward_zero_std: groups whose G rewards are all equal (no gradient).
        trained_fraction: rows the inner iterations forward, over all processes.
    """

    forwards: int
    seconds: float
    frac_reward_zero_std: float
    trained_fraction: float


def trained_rows(advantages: torch.Tensor, skip_zero: bool) -> torch.Tensor:
    """``[n]`` long indices of the rows to forward: every row, or (``skip_zero``) the rows whose
    advantage (the estimator's coefficient) is nonzero.

    Skipping is exact without a KL term: every estimator's per-token loss is the coefficient
    times a function of the log-probs (GRPO: ``-min(r * 0, clip(r) * 0) = 0`` for every ratio),
    so a row with 0 has a zero gradient in every inner iteration, and the token weights keep the
    normaliser of the whole step.
    """
    rows = torch.arange(len(advantages), device=advantages.device)
    return rows[advantages != 0] if skip_zero else rows


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
    eval_hooks: list[EvalHook] = field(default_factory=list)
    estimator: Estimator = field(init=False)

    def __post_init__(self) -> None:
        self.estimator = get_estimator(self.config.grpo.estimator)

    @property
    def policy(self) -> DiffusionLM:
        return self.session.policy

    def sampler(self, **changes: Any) -> SamplerConfig:
        """The rollout sampler (``changes``: e.g. the held-out temperature), recording the
        commit log-probs."""
        return replace(self.config.rollout, record_logprobs=True, **changes)

    def chunk_generator(self, tag: str, step: int) -> Callable[[int], torch.Generator]:
        seed, device = self.config.run.seed, self.policy.device
        return lambda chunk: generator(derive_seed(seed, tag, step, chunk), device)

    # ------------------------------------------------------------------ one step
    def rollout(self, step: int, indices: list[int]) -> RolloutBatch:
        session = self.session
        lp = self.plan.local_prompts
        mine = indices[session.rank * lp : (session.rank + 1) * lp]
        every = [self.records[i]["prompt"] for i in indices]
        width = max(len(t) for t in self.worker.prompt_tokens(every))
        with session.full_parameters():
            return self.worker.rollout(
                [self.records[i] for i in mine],
                self.config.grpo.num_generations,
                self.sampler(),
                self.chunk_generator("rollout", step),
                group_offset=session.rank * lp,
                prompt_width=width,
            )

    def context(self, step: int) -> StepContext:
        """What the estimator may use during ``step``."""
        session = self.session
        return StepContext(
            policy=self.policy,
            reference=self.reference,
            config=self.config,
            step=step,
            rank=session.rank,
            shards_parameters=session.engine.spec.shards_parameters,
            generator=lambda tag: self.chunk_generator(tag, step),
        )

    def make_buffer(self, step: int, batch: RolloutBatch) -> tuple[Buffer, BufferInfo]:
        """Advantages, token weights, and the estimator's no-grad passes."""
        settings, session = self.config.grpo, self.session
        traj = batch.trajectory
        total = gather_rows(session, batch.rewards.total.to(traj.device))  # [N_global]
        adv_all = self.estimator.advantages(total, self.config)
        n = len(batch)
        advantages = adv_all[session.rank * n : (session.rank + 1) * n].float()
        counted = counted_positions(
            traj.completion_ids, self.policy.ids.stop_ids, settings.loss_positions
        )
        totals = all_reduce_sum(
            session, reduction_totals(counted, traj.unmask_step, traj.num_steps, settings.loss_type)
        )
        weights = token_weights(counted, traj.unmask_step, settings.loss_type, totals)
        rows = trained_rows(advantages, settings.skip_zero_advantage and self.reference is None)
        buf = Buffer(traj, advantages, weights, counted, global_rewards=total, trained=rows)
        start = time.perf_counter()
        with session.full_parameters():
            forwards = self.estimator.prepare(self.context(step), buf)
        group_std = total.view(-1, settings.num_generations).std(dim=1)
        trained = all_reduce_sum(
            session, torch.tensor([float(len(buf.trained))], dtype=torch.float64)
        )
        info = BufferInfo(
            forwards=forwards,
            seconds=time.perf_counter() - start,
            frac_reward_zero_std=float((group_std < 1e-6).float().mean()),
            trained_fraction=float(trained) / len(total),
        )
        return buf, info

    def update(self, buf: Buffer, iteration: int, stats: LossStats, step: int = 0) -> float:
        """One pass over the buffer and one optimizer step; returns the gradient norm."""
        self.accumulate(buf, iteration, stats, step)
        return self.session.optimizer_step()

    def accumulate(self, buf: Buffer, iteration: int, stats: LossStats, step: int = 0) -> None:
        """One pass over the buffer in micro-batches: the step's gradient lands in the engine.

        Every process makes the same number of calls (:func:`run_calls`): a process with fewer
        trained rows pads with zero-weighted calls on one of its rows.
        """
        settings, ctx = self.config.grpo, self.context(step)
        self.policy.model.train()
        chunks = buf.trained.split(settings.per_device_batch_size) if len(buf.trained) else ()
        calls = [
            c for rows in chunks for c in self.estimator.calls(ctx, buf, rows, iteration, stats)
        ]
        padding = buf.trained[:1] if len(buf.trained) else torch.zeros(1, dtype=torch.long)
        padding = padding.to(buf.weights.device)
        pad = lambda: self.estimator.calls(ctx, buf, padding, iteration, None)  # noqa: E731
        run_calls(self.session, calls, pad)

    def step(self, step: int, indices: list[int]) -> tuple[dict[str, float], RolloutBatch]:
        settings, session = self.config.grpo, self.session
        t0 = time.perf_counter()
        batch = self.rollout(step, indices)
        buf, info = self.make_buffer(step, batch)
        t1 = time.perf_counter()
        stats = LossStats()
        norms = [self.update(buf, it, stats, step) for it in range(settings.num_iterations)]
        t2 = time.perf_counter()
        sums = LossTotals.from_sums(all_reduce_sum(session, stats.values()))
        tokens = max(sums.tokens, 1.0)
        values = gather_rows(session, batch.rewards.values.to(batch.trajectory.device))  # [N_g, R]
        totals = buf.global_rewards  # [N_global]
        lengths = gather_rows(session, batch.lengths.to(batch.trajectory.device).float())
        metrics: dict[str, float] = {
            "loss": sums.loss / settings.num_iterations,
            "reward": float(totals.mean()),
            "reward_std": float(totals.std()) if len(totals) > 1 else 0.0,
        }
        errors = all_reduce_sum(
            session,
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
        local_forwards = batch.forwards + info.forwards + stats.forwards
        metrics.update(
            {
                "frac_reward_zero_std": info.frac_reward_zero_std,
                "trained_fraction": info.trained_fraction,
                "kl": sums.kl / tokens if self.reference is not None else 0.0,
                "clip_ratio/low_mean": sums.low / tokens,
                "clip_ratio/high_mean": sums.high / tokens,
                "clip_ratio/region_mean": sums.region / tokens,
                "ratio_mean": sums.ratio / max(sums.ratio_tokens, 1.0),
                "entropy": sums.entropy / max(sums.entropy_tokens, 1.0),
                "completions/mean_length": float(lengths.mean()),
                "grad_norm": float(sum(norms) / len(norms)),
                "learning_rate": session.scheduler.get_last_lr()[0],
                "forwards": local_forwards,
                "time/rollout_s": batch.rollout_s,
                "time/score_s": batch.score_s,
                "time/reference_s": info.seconds,
                "time/train_s": (t2 - t1) + info.seconds,
                "time/step_s": step_s,
                "tokens_per_s": len(totals) * batch.trajectory.gen_length / step_s,
                "optimizer_steps": settings.num_iterations,
                "truncated_prompts": self.worker.truncated_prompts,
            }
        )
        return metrics, batch

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self, step: int) -> dict[str, float]:
        """The same rollout path on held-out prompts at the eval temperature."""
        session, held_out = self.session, self.config.eval
        rows = list(self.eval_records[: held_out.prompts])
        if not rows:
            return {}
        lo, hi = shard_bounds(len(rows), session.world_size, session.rank)
        # Fewer prompts than processes: a process without one still rolls one out (the same
        # work as the others) but contributes no row to the metrics.
        mine, keep = (rows[lo:hi], None) if hi > lo else (rows[:1], 0)
        sampler = self.sampler(temperature=held_out.temperature)
        width = max(len(t) for t in self.worker.prompt_tokens([r["prompt"] for r in rows]))
        with (
            session.full_parameters()
        ):  # global offsets and one width: the draws of a 1-process run
            batch = self.worker.rollout(
                mine,
                held_out.num_generations,
                sampler,
                self.chunk_generator("eval", step),
                group_offset=lo if keep is None else 0,
                prompt_width=width,
            )
        values = batch.rewards.values[:keep].to(self.policy.device)
        values = gather_rows(session, values, pad=True)
        totals = gather_rows(session, batch.rewards.total[:keep].to(self.policy.device), pad=True)
        out = {"eval/reward": float(totals.nanmean())}
        for r, name in enumerate(batch.rewards.names):
            out[f"eval/rewards/{name}/mean"] = float(values[:, r].nanmean())
        return out

    # ------------------------------------------------------------------ the loop
    def train(self) -> None:
        """The shared loop (:meth:`TrainLoop.run`): evaluation at step 0 and every
        ``run.eval_steps`` (then :attr:`eval_hooks`), checkpoints, signals."""
        note = dropout_note(self.config)
        if note and self.session.rank == 0:
            logger.warning(note)
        loop = TrainLoop(self.session, len(self.records), self.config.grpo.prompts_per_step)
        loop.run(self.logged_step, self.evaluate, self.eval_hooks)

    def logged_step(self, step: int, indices: list[int]) -> StepOutput:
        """:meth:`step` with the sample rows ``samples.jsonl`` shows."""
        metrics, batch = self.step(step, indices)
        return StepOutput(metrics, self.sample_rows(batch))

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
    """The prompt records of ``split`` under ``config.data``
    (:func:`dllm_rl.data.registry.load_records`)."""
    from dllm_rl.data.registry import load_records as load

    d = config.data
    return load(
        d.task,
        split,
        source=d.source,
        template=d.template,
        limit=d.limit,
        seed=config.run.seed,
        options=options,
    )


def check(config: GRPOConfig, world_size: int) -> list[str]:
    """The dry run: everything that can be checked without loading weights or the network.

    Returns:
        Lines describing what a real run would load.

    Raises:
        ValueError, FileNotFoundError, UnknownTaskError, UnknownRewardError: with the fix.
    """
    from dllm_rl.data.registry import describe_source
    from dllm_rl.rewards.registry import resolve_rewards
    from dllm_rl.run.build import check_model_source

    plan = config.check_batch(world_size)
    specs = resolve_rewards(config.reward_names)
    d = config.data
    lines = [f"model: {check_model_source(config.model)}"]
    for split in [d.split] + ([d.eval_split] if config.run.eval_steps else []):
        options = d.options if split == d.split else d.eval_options

        def rows(split: str = split, options: dict[str, Any] = options) -> int:
            return len(load_records(config, split, options))

        lines.append(f"data: {describe_source(d.task, split, d.source, config.run.seed, rows)}")
    lines.append(f"rewards: {', '.join(f'{s.name} x {s.weight:g}' for s in specs)}")
    sampler = config.rollout
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
    note = dropout_note(config)
    if note:
        lines.append(f"note: {note}")
    return lines


def dropout_note(config: GRPOConfig) -> str | None:
    """What LoRA dropout does to the on-policy ratio here, and the fix (``None``: nothing)."""
    lora, g = config.model.lora, config.grpo
    if not (lora.enabled and lora.dropout > 0):
        return None
    if g.estimator == "trajectory" and g.old_logps == "rollout":
        return (
            f"LoRA dropout {lora.dropout:g}: the rollout recorded its log-probs in eval mode and "
            "the update runs in train mode, so the first inner iteration's ratio is not exactly 1 "
            "(dropout noise, as in the reference trainers); for an exact on-policy ratio set "
            "model.lora.dropout=0, or grpo.old_logps=recompute to score the old log-probs in "
            "train mode like the update"
        )
    return None


def build_trainer(
    config: GRPOConfig,
    recipe: str,
    argv: list[str],
    records: Sequence[dict[str, Any]] | None = None,
    eval_records: Sequence[dict[str, Any]] | None = None,
) -> GRPOTrainer:
    """Everything a run needs, from the config (``records``: prompts given directly, instead of
    ``config.data``)."""
    from dllm_rl.rewards.registry import resolve_rewards
    from dllm_rl.trainers.common import start_session

    world = int(os.environ.get("WORLD_SIZE", "1"))
    plan = config.check_batch(world)
    specs = resolve_rewards(config.reward_names)
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
