"""wd1's group weights (Tang et al. 2025, "wd1: Weighted Policy Optimization for Reasoning in
Diffusion Language Models").

wd1 is ratio-free: no old-policy ratio, no clipping. Each prompt's G completions get a positive
weight ``w+ = softmax(psi A)`` and a negative weight ``w- = softmax(-psi A)`` over the group, and
the objective raises ``sum_i w+_i log pi(o_i)`` while lowering ``sum_i w-_i log pi(o_i)``: the
completions above the group mean are imitated, those below it unlearned, and a group whose
rewards all agree contributes nothing (``w+ = w- = 1/G``). The sequence log-likelihood
``log pi(o_i)`` is d1's one-step estimate summed over the completion's tokens.
"""

from __future__ import annotations

import torch


def wd1_weights(
    advantages: torch.Tensor, num_generations: int, psi: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """``w+ = softmax(psi A)`` and ``w- = softmax(-psi A)`` within each group of G rows.

    Each sums to 1 over a group. The reference code's softmax of A is ``psi = 1``.

    Example: G = 2, A = [-1, 1], psi = 1: w+ = [e^-1, e] / (e^-1 + e) = [0.11920, 0.88080] and
    w- = [0.88080, 0.11920]; A = [0, 0] gives w+ = w- = [1/2, 1/2].

    Args:
        advantages: ``[B*G]``, prompt-major (a prompt's G completions are consecutive).
        num_generations: G.
        psi: the inverse temperature of the weights, > 0.

    Returns:
        ``(w+, w-)``, ``[B*G]`` each.
    """
    if not psi > 0:
        raise ValueError(f"wd1 psi must be > 0, got {psi}")
    if num_generations < 1 or advantages.numel() % num_generations:
        raise ValueError(
            f"{advantages.numel()} advantages cannot be split into groups of {num_generations}"
        )
    groups = advantages.float().view(-1, num_generations)  # [B, G]
    positive = torch.softmax(psi * groups, dim=1).reshape(-1)  # [B*G]
    negative = torch.softmax(-psi * groups, dim=1).reshape(-1)  # [B*G]
    return positive, negative


def wd1_coefficients(
    advantages: torch.Tensor, num_generations: int, psi: float = 1.0
) -> torch.Tensor:
    """Each completion's coefficient ``c_i = G (w+_i - w-_i)``: the trainer's loss is ``-c_i``
    times the completion's log-likelihood, with the ``sequence_sum`` reduction (each sequence's
    token sum, averaged over the step's N = B G sequences). The factor G turns that average over
    sequences into wd1's average over prompts of ``sum_i (w+_i - w-_i) log pi(o_i)``.

    The coefficients of a group sum to 0; a group whose advantages are all equal has c = 0 (no
    forward is needed under ``grpo.skip_zero_advantage``).

    Example (the one of :func:`wd1_weights`): c = 2 ([0.11920, 0.88080] - [0.88080, 0.11920]) =
    [-1.52319, 1.52319].

    Returns:
        ``[B*G]`` float32.
    """
    positive, negative = wd1_weights(advantages, num_generations, psi)
    return num_generations * (positive - negative)
