"""Coupled-GRPO's estimator (Gong et al. 2025, DiffuCoder): GRPO's clipped surrogate on
log-probs estimated from a complementary pair of masks.

Per inner iteration, each completion gets a pair of masks at level t ~ U[t_min, t_max]
(:func:`~dllm_rl.objectives.coupled.coupled_masks`, fresh each iteration, the same for the old,
reference and current policies); the prompt is never masked. Each token's log-prob comes from the
pass that masked it (:func:`~dllm_rl.objectives.coupled.coupled_token_logps`), averaged with the
fully masked pass under ``grpo.coupled.full_mask``. The rest is GRPO's: ratio, clipping, k3 KL,
token weights. With ``num_iterations`` 1 the first pass's own detached log-probs are the old ones.

Cost per RL step: 2 forwards (3 with ``full_mask``) per micro-batch and inner iteration, + the
same per micro-batch and inner iteration for the old pass when mu > 1, + the same for the
reference.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dllm_rl.models.adapter import DiffusionLM
from dllm_rl.objectives.coupled import coupled_masks, coupled_token_logps
from dllm_rl.objectives.logps import masked_logps, one_step_logps
from dllm_rl.rollout.trajectory import Trajectory
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
from dllm_rl.trainers.grpo_config import GRPOConfig


@dataclass
class CoupledTables:
    """Attributes:
    first: ``[mu, N, L]`` bool, the positions the first pass masks (the second masks the rest).
    t: ``[mu, N]`` masking levels.
    old: ``[mu, N, L]`` old log-probs; ``None`` with mu = 1 (the first pass's own serve).
    ref: ``[mu, N, L]`` reference log-probs; ``None`` when beta = 0.
    """

    first: torch.Tensor
    t: torch.Tensor
    old: torch.Tensor | None = None
    ref: torch.Tensor | None = None


def coupled_logps(
    model: DiffusionLM,
    traj: Trajectory,
    first: torch.Tensor,
    t: torch.Tensor,
    full_mask: bool,
    temperature: float,
    with_entropy: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None, int]:
    """``[n, L]`` coupled log-probs of ``traj``'s completions, their entropy (from the pass that
    masked each token) or None, and the forwards spent (2, or 3 with ``full_mask``)."""
    clean = torch.zeros_like(traj.prompt_mask, dtype=torch.bool)  # [n, P] the prompt stays
    passes = []
    for masked in (first, ~first):
        passes.append(
            masked_logps(
                model,
                traj.prompt_ids,
                traj.prompt_mask,
                traj.completion_ids,
                clean,
                masked,
                temperature,
                with_entropy,
            )
        )
    full = None
    if full_mask:
        full, _ = one_step_logps(
            model, traj.prompt_ids, traj.prompt_mask, traj.completion_ids, clean, temperature
        )
    logps = coupled_token_logps(passes[0][0], passes[1][0], first, t, full)  # [n, L]
    entropy = None
    if with_entropy:
        entropy = torch.where(first, passes[0][1], passes[1][1])  # [n, L]
    return logps, entropy, 2 + int(full_mask)


@torch.no_grad()
def coupled_logps_table(
    model: DiffusionLM, traj: Trajectory, tables: CoupledTables, config: GRPOConfig
) -> tuple[torch.Tensor, int]:
    """``[mu, N, L]`` coupled log-probs under each iteration's masks, in micro-batches."""
    size, temperature = config.grpo.per_device_batch_size, config.rollout.temperature
    out, forwards = [], 0
    for it in range(len(tables.first)):
        rows = []
        for lo in range(0, len(traj), size):
            part = slice(lo, lo + size)
            logps, _, f = coupled_logps(
                model,
                traj[part],
                tables.first[it][part],
                tables.t[it][part],
                config.grpo.coupled.full_mask,
                temperature,
            )
            rows.append(logps)
            forwards += f
        out.append(torch.cat(rows))
    return torch.stack(out), forwards


class CoupledEstimator(GroupRelative):
    name = "coupled"

    def prepare(self, ctx: StepContext, buf: Buffer) -> int:
        g, traj = ctx.config.grpo, buf.traj
        shape = tuple(traj.completion_ids.shape)

        def draw(lo: int, hi: int, gen: torch.Generator):
            return coupled_masks(
                (hi - lo, shape[1]), g.coupled.t_min, g.coupled.t_max, gen, gen.device
            )

        firsts, levels = [], []
        for it in range(g.num_iterations):
            parts = draw_per_chunk(ctx, len(traj), f"coupled_mask/{it}", draw)
            firsts.append(torch.cat([p[0] for p in parts]).to(traj.device))
            levels.append(torch.cat([p[1] for p in parts]).to(traj.device))
        first, t = torch.stack(firsts), torch.stack(levels)

        def table(model, rows):
            picked = (
                CoupledTables(first, t)
                if rows is None
                else CoupledTables(first[:, rows], t[:, rows])
            )
            return coupled_logps_table(
                model, traj if rows is None else traj[rows], picked, ctx.config
            )

        old, ref, forwards = old_and_reference(ctx, buf, table)
        buf.tables = CoupledTables(first, t, old, ref)
        return forwards

    def calls(
        self,
        ctx: StepContext,
        buf: Buffer,
        rows: torch.Tensor,
        iteration: int,
        stats: LossStats | None,
    ) -> list[Call]:
        """One call: 2 or 3 forwards (a token's log-prob may mix two of them), one backward."""
        tables = buf.tables

        def call() -> torch.Tensor:
            logps, entropy, forwards = coupled_logps(
                ctx.policy,
                buf.traj[rows],
                tables.first[iteration][rows],
                tables.t[iteration][rows],
                ctx.config.grpo.coupled.full_mask,
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
                forwards=forwards,
                terms=terms,
                kl=kl,
                entropy=entropy,
            )

        return [call]
