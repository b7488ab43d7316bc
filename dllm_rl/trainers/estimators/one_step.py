"""d1's diffu-GRPO estimator (Zhao et al. 2025, sec. 3.1): the completion fully masked, the
prompt partly masked (``p_mask_prompt``), one forward; each completion token's log-prob is a
mean-field estimate of its sequence log-likelihood.

A fresh prompt mask per inner iteration, the same one for the old, reference and current
log-probs. With ``num_iterations`` 1 the first iteration's own detached log-probs are the old
ones (no old pass). Cost per RL step: one forward per micro-batch and inner iteration (+ mu per
micro-batch for the old pass when mu > 1, + mu for the reference).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dllm_rl.objectives.logps import draw_prompt_mask, one_step_logps, one_step_logps_table
from dllm_rl.trainers.estimators.base import (
    Buffer,
    Call,
    GroupRelative,
    LossStats,
    StepContext,
    draw_per_chunk,
    old_and_reference,
    token_loss,
    weighted_loss,
)


@dataclass
class OneStepTables:
    """Attributes:
    prompt_masks: ``[mu, N, P]`` bool, the prompt tokens masked in each inner iteration.
    old: ``[mu, N, L]`` old log-probs; ``None`` with mu = 1 (the first pass's own serve).
    ref: ``[mu, N, L]`` reference log-probs; ``None`` when beta = 0.
    """

    prompt_masks: torch.Tensor
    old: torch.Tensor | None = None
    ref: torch.Tensor | None = None


def prompt_masks(ctx: StepContext, buf: Buffer) -> list[torch.Tensor]:
    """d1's prompt masks, one ``[N, P]`` per inner iteration (fresh each iteration)."""
    g, traj = ctx.config.grpo, buf.traj

    def draw(lo: int, hi: int, gen: torch.Generator) -> torch.Tensor:
        return draw_prompt_mask(traj.prompt_mask[lo:hi], g.p_mask_prompt, gen)

    return [
        torch.cat(draw_per_chunk(ctx, len(traj), f"prompt_mask/{it}", draw))
        for it in range(g.num_iterations)
    ]


class OneStepEstimator(GroupRelative):
    name = "one_step"

    def prepare(self, ctx: StepContext, buf: Buffer) -> int:
        g, temp = ctx.config.grpo, ctx.config.rollout.temperature
        masks = prompt_masks(ctx, buf)

        def table(model, rows):
            picked = buf.traj if rows is None else buf.traj[rows]
            chosen = masks if rows is None else [m[rows] for m in masks]
            return one_step_logps_table(model, picked, chosen, temp, g.per_device_batch_size)

        old, ref, forwards = old_and_reference(ctx, buf, table)
        buf.tables = OneStepTables(torch.stack(masks), old, ref)
        return forwards

    def calls(
        self,
        ctx: StepContext,
        buf: Buffer,
        rows: torch.Tensor,
        iteration: int,
        stats: LossStats | None,
    ) -> list[Call]:
        """One call: one forward, one backward."""
        tables = buf.tables

        def call() -> torch.Tensor:
            traj = buf.traj[rows]
            logps, entropy = one_step_logps(
                ctx.policy,
                traj.prompt_ids,
                traj.prompt_mask,
                traj.completion_ids,
                tables.prompt_masks[iteration][rows],
                ctx.config.rollout.temperature,
                with_entropy=iteration == 0 and stats is not None,
            )  # [n, L]
            old = logps.detach() if tables.old is None else tables.old[iteration][rows]
            ref = None if tables.ref is None else tables.ref[iteration][rows]
            adv = buf.advantages[rows][:, None].expand_as(logps)
            loss, terms, kl = token_loss(logps, old, adv, ref, ctx.config)
            return weighted_loss(
                buf,
                rows,
                loss,
                stats,
                first_iteration=iteration == 0,
                forwards=1,
                terms=terms,
                kl=kl,
                entropy=entropy,
            )

        return [call]
