"""CJ-GRPO's estimator (Yang et al. 2025, sec. 3.2): the policy gradient on exactly the
transitions the rollout took.

For each decoding step s, one forward on the state before s and the log-probs of the tokens
committed at s. The rollout's recorded commit log-probs are log pi_old of those transitions, so
no old-log-prob pass is needed (``grpo.old_logps: rollout``; ``recompute`` takes them afresh).
Backward runs per ``steps_per_backward`` decoding steps, each part weighted by the step's global
normaliser, so peak memory does not grow with S and the summed gradient is the full-graph one.
Cost per RL step: S forwards per micro-batch and inner iteration (+ S per micro-batch for the
reference, + S for ``recompute``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dllm_rl.objectives.logps import trajectory_logps_table, trajectory_step_logps
from dllm_rl.trainers.estimators.base import (
    Buffer,
    Call,
    GroupRelative,
    LossStats,
    StepContext,
    on_rows,
    token_loss,
)


@dataclass
class TrajectoryTables:
    """Attributes:
    old: ``[N, L]`` recomputed old log-probs; ``None``: the rollout's recorded ones serve.
    ref: ``[N, L]`` reference log-probs at each token's commit step; ``None`` when beta = 0.
    """

    old: torch.Tensor | None = None
    ref: torch.Tensor | None = None


class TrajectoryEstimator(GroupRelative):
    name = "trajectory"

    def prepare(self, ctx: StepContext, buf: Buffer) -> int:
        g, temp = ctx.config.grpo, ctx.config.rollout.temperature
        traj, n, size = buf.traj, len(buf.traj), g.per_device_batch_size
        tables, forwards = TrajectoryTables(), 0
        if g.old_logps == "recompute" and len(buf.trained):
            ctx.policy.model.train()  # the update's mode (LoRA dropout on, as it will be)
            old, f = trajectory_logps_table(ctx.policy, traj[buf.trained], temp, size)
            tables.old = on_rows(old, buf.trained, n, dim=0)
            forwards += f
        if ctx.reference is not None:
            with ctx.reference.active(ctx.policy.model) as ref:
                tables.ref, f = trajectory_logps_table(ref, traj, temp, size)
            forwards += f
        buf.tables = tables
        return forwards

    def calls(
        self,
        ctx: StepContext,
        buf: Buffer,
        rows: torch.Tensor,
        iteration: int,
        stats: LossStats | None,
    ) -> list[Call]:
        """The micro-batch's loss as calls of ``steps_per_backward`` decoding steps each.

        Decoding steps at which no counted token was committed add nothing and are left out,
        except for a padding micro-batch (``stats`` None) or when the engine shards parameters:
        then every micro-batch makes the same forwards (every forward communicates).
        """
        config, tables = ctx.config, buf.tables
        first_iteration = iteration == 0
        skip_empty = stats is not None and not ctx.shards_parameters
        traj = buf.traj[rows]
        weights, counted, adv = buf.weights[rows], buf.counted[rows], buf.advantages[rows]
        if stats is None:
            weights = torch.zeros_like(weights)
        old = traj.step_logprobs if tables.old is None else tables.old[rows]
        ref = None if tables.ref is None else tables.ref[rows]
        temperature = config.rollout.temperature
        steps, per = traj.num_steps, config.grpo.steps_per_backward
        wanted = [
            s
            for s in range(steps)
            if not skip_empty or bool(weights.gather(1, traj.committed_at(s)).any())
        ]

        def chunk(decoding_steps: list[int]) -> Call:
            def call() -> torch.Tensor:
                part = None
                for s in decoding_steps:
                    where = traj.committed_at(s)  # [n, k]
                    w = weights.gather(1, where)  # [n, k]
                    out = trajectory_step_logps(
                        ctx.policy,
                        traj,
                        s,
                        temperature,
                        with_entropy=first_iteration and stats is not None,
                    )
                    loss, terms, kl = token_loss(
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
                            counted.gather(1, where),
                            terms,
                            kl,
                            out.entropy,
                            term.detach(),
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
