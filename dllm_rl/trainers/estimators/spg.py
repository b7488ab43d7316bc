"""SPG's estimator (Wang et al. 2025, "SPG: Sandwiched Policy Gradient for Masked Diffusion
Language Models"): the ELBO for positive advantages, the EUBO or the mixture for negative ones.

Per inner iteration, K = ``grpo.spg.num_t`` block-wise masked copies of each completion
(:func:`~dllm_rl.objectives.spg.block_masks`, fresh each iteration); one forward per copy scores
its masked tokens, and the per-token bound terms (:func:`~dllm_rl.objectives.spg.elbo_terms`,
:func:`~dllm_rl.objectives.spg.eubo_terms`, :func:`~dllm_rl.objectives.spg.sandwich_terms`)
make the loss ``-A`` times the chosen bound. With ``loss_type: token_mean`` that is the
reference's ``sum_n -A_n L_n S_n / sum_n L_n``, normalised over the whole step rather than each
micro-batch.

No old-policy ratio, no clipping, no reference (``grpo.beta`` must be 0): ``ratio_mean`` reads 1
by construction. Cost per RL step: K forwards per micro-batch and inner iteration, nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dllm_rl.objectives.logps import masked_logps
from dllm_rl.objectives.spg import block_masks, elbo_terms, eubo_terms, sandwich_terms
from dllm_rl.trainers.estimators.base import (
    Buffer,
    Call,
    GroupRelative,
    LossStats,
    StepContext,
    draw_per_chunk,
    weighted_loss,
)
from dllm_rl.trainers.grpo_config import GRPOConfig


@dataclass
class SPGTables:
    """Attributes:
    masked: ``[mu, N, K, L]`` bool, the completion positions masked in each draw.
    scored: ``[mu, N, K, L]`` bool, the counted ones among them.
    prompt: ``[mu, N, K, P]`` bool, the prompt tokens masked in each draw.
    """

    masked: torch.Tensor
    scored: torch.Tensor
    prompt: torch.Tensor


def spg_block_length(config: GRPOConfig) -> int:
    """``grpo.spg.block_length``, or the rollout's block (its length, L / blocks, or L)."""
    r, own = config.rollout, config.grpo.spg.block_length
    if own is not None:
        return own
    if r.block_length is not None:
        return r.block_length
    return r.gen_length // r.num_blocks if r.num_blocks else r.gen_length


class SPGEstimator(GroupRelative):
    name = "spg"

    def prepare(self, ctx: StepContext, buf: Buffer) -> int:
        g, traj = ctx.config.grpo, buf.traj
        block = spg_block_length(ctx.config)

        def draw(lo: int, hi: int, gen: torch.Generator):
            return block_masks(
                buf.counted[lo:hi],
                traj.prompt_mask[lo:hi],
                block,
                g.spg.num_t,
                g.p_mask_prompt,
                gen,
            )

        per_iteration = []
        for it in range(g.num_iterations):
            parts = draw_per_chunk(ctx, len(traj), f"spg_mask/{it}", draw)
            per_iteration.append(
                [torch.cat([getattr(p, name) for p in parts]) for name in SPGTables.__annotations__]
            )
        buf.tables = SPGTables(*(torch.stack(t) for t in zip(*per_iteration)))
        return 0

    def calls(
        self,
        ctx: StepContext,
        buf: Buffer,
        rows: torch.Tensor,
        iteration: int,
        stats: LossStats | None,
    ) -> list[Call]:
        """One call: K forwards (their graphs held together: the EUBO mixes the draws), one
        backward."""
        settings, tables = ctx.config.grpo.spg, buf.tables

        def call() -> torch.Tensor:
            traj = buf.traj[rows]
            masked = tables.masked[iteration][rows]  # [n, K, L]
            scored = tables.scored[iteration][rows]  # [n, K, L]
            prompt = tables.prompt[iteration][rows]  # [n, K, P]
            first = iteration == 0 and stats is not None
            logps, entropy = [], None
            for k in range(settings.num_t):
                lp, ent = masked_logps(
                    ctx.policy,
                    traj.prompt_ids,
                    traj.prompt_mask,
                    traj.completion_ids,
                    prompt[:, k],
                    masked[:, k],
                    ctx.config.rollout.temperature,
                    with_entropy=first and k == 0,
                )  # [n, L]
                logps.append(lp)
                entropy = ent if k == 0 else entropy
            draws = torch.stack(logps, dim=1)  # [n, K, L]
            counted, adv = buf.counted[rows], buf.advantages[rows]
            lower = elbo_terms(draws, scored, counted)  # [n, L]
            upper = None
            if settings.bound != "elbo":
                upper = eubo_terms(draws, scored, counted, settings.eubo_beta)  # [n, L]
            terms = sandwich_terms(adv, lower, upper, settings.bound, settings.mix_weight)
            loss = -adv[:, None] * terms  # [n, L]
            return weighted_loss(
                buf,
                rows,
                loss,
                stats,
                first_iteration=iteration == 0,
                forwards=settings.num_t,
                entropy=entropy,
                entropy_at=scored[:, 0],
            )

        return [call]
