"""wd1's estimator (Tang et al. 2025, "wd1: Weighted Policy Optimization for Reasoning in
Diffusion Language Models"): ratio-free weighted likelihood.

Each completion's coefficient is ``G (w+ - w-)`` from its group's advantages
(:func:`~dllm_rl.objectives.wd1.wd1_coefficients`), and its tokens' loss is ``-c`` times d1's
one-step log-probs (a fresh prompt mask per inner iteration, the completion fully masked). With
``loss_type: sequence_sum`` the loss is wd1's: the mean over prompts of
``-sum_i (w+_i - w-_i) log pi(o_i)``, ``log pi(o_i)`` the sum over the completion's tokens.

No old-policy ratio, no clipping, no reference (``grpo.beta`` must be 0), so no no-grad pass:
``ratio_mean`` reads 1 by construction. Cost per RL step: one forward per micro-batch and inner
iteration.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dllm_rl.objectives.grpo import group_advantages
from dllm_rl.objectives.logps import one_step_logps
from dllm_rl.objectives.wd1 import wd1_coefficients
from dllm_rl.trainers.estimators.base import (
    Buffer,
    Call,
    LossStats,
    StepContext,
    weighted_loss,
)
from dllm_rl.trainers.estimators.one_step import prompt_masks
from dllm_rl.trainers.grpo_config import GRPOConfig


@dataclass
class Wd1Tables:
    """Attributes:
    prompt_masks: ``[mu, N, P]`` bool, the prompt tokens masked in each inner iteration.
    """

    prompt_masks: torch.Tensor


class Wd1Estimator:
    name = "wd1"

    def advantages(self, rewards: torch.Tensor, config: GRPOConfig) -> torch.Tensor:
        """The coefficients ``G (w+ - w-)`` of the group-relative advantages."""
        g = config.grpo
        adv = group_advantages(rewards, g.num_generations, g.scale_rewards)
        return wd1_coefficients(adv, g.num_generations, g.wd1.psi)

    def prepare(self, ctx: StepContext, buf: Buffer) -> int:
        buf.tables = Wd1Tables(torch.stack(prompt_masks(ctx, buf)))
        return 0

    def calls(
        self,
        ctx: StepContext,
        buf: Buffer,
        rows: torch.Tensor,
        iteration: int,
        stats: LossStats | None,
    ) -> list[Call]:
        """One call: one forward, one backward."""

        def call() -> torch.Tensor:
            traj = buf.traj[rows]
            logps, entropy = one_step_logps(
                ctx.policy,
                traj.prompt_ids,
                traj.prompt_mask,
                traj.completion_ids,
                buf.tables.prompt_masks[iteration][rows],
                ctx.config.rollout.temperature,
                with_entropy=iteration == 0 and stats is not None,
            )  # [n, L]
            loss = -buf.advantages[rows][:, None] * logps  # [n, L]
            first = iteration == 0
            return weighted_loss(
                buf, rows, loss, stats, first_iteration=first, forwards=1, entropy=entropy
            )

        return [call]
