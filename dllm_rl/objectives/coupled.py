"""Coupled-GRPO's log-likelihood estimate (Gong et al. 2025, "DiffuCoder: Understanding and
Improving Masked Diffusion Models for Code Generation", coupled sampling).

d1's one-step estimate scores every completion token once with the whole completion masked.
A single random mask at level t would score each token with probability t only. Coupled
sampling draws a PAIR of complementary masks: t ~ U[t_min, t_max], then each position is masked
in the first pass when ``u < t`` and in the second otherwise, so every token is scored exactly
once across the pair, each pass's log-probs weighted by its inverse masking level (1/t,
1/(1 - t)), as in the masked-diffusion ELBO. The reference code (apple/ml-diffucoder) adds a
third, fully masked pass and averages it with the pair.

Shapes: ``N`` completions, ``L`` completion length.
"""

from __future__ import annotations

import torch


def coupled_masks(
    shape: tuple[int, int],
    t_min: float,
    t_max: float,
    generator: torch.Generator,
    device: torch.device | str = "cpu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """A complementary pair of completion masks per row.

    Args:
        shape: ``(N, L)``.
        t_min, t_max: the range of the masking level, ``0 < t_min <= t_max < 1``
            (DiffuCoder: 0.2, 0.8).
        generator: the only source of randomness, on ``device``.
        device: where the masks live.

    Returns:
        ``first [N, L]`` bool (masked in the first pass; the second pass masks ``~first``) and
        ``t [N]`` float32, each row's level (one per row; the reference draws one per batch).
    """
    if not 0.0 < t_min <= t_max < 1.0:
        raise ValueError(
            f"coupled masking levels need 0 < t_min <= t_max < 1, got {t_min}, {t_max}"
        )
    n, length = shape
    u = torch.rand(n, generator=generator, device=device)  # [N]
    t = t_min + (t_max - t_min) * u  # [N]
    first = torch.rand(n, length, generator=generator, device=device) < t[:, None]  # [N, L]
    return first, t.float()


def coupled_token_logps(
    first_logps: torch.Tensor,
    second_logps: torch.Tensor,
    first: torch.Tensor,
    t: torch.Tensor,
    full_logps: torch.Tensor | None = None,
) -> torch.Tensor:
    """Each token's log-prob estimate from the pass that masked it.

    ``pair_i = log p_first(i) / t`` where the first pass masked i, ``log p_second(i) / (1 - t)``
    where the second did; the estimate is ``pair / 2`` (the mean of the two passes' ELBO terms),
    or ``(full + pair) / 2`` with the fully masked pass ``full`` (the reference code).

    Example: t = 0.25, first = [T, F], first log-probs [-1, *], second [*, -2]: pair = [-1 / 0.25,
    -2 / 0.75] = [-4, -2.66667], the estimate [-2, -1.33333]; with full = [-0.5, -0.5] it is
    [(-0.5 - 4) / 2, (-0.5 - 2.66667) / 2] = [-2.25, -1.58333].

    Args:
        first_logps: ``[N, L]`` log-probs in the first pass (read where ``first``).
        second_logps: ``[N, L]`` log-probs in the second pass (read where ``~first``).
        first: ``[N, L]`` bool.
        t: ``[N]`` masking levels.
        full_logps: ``[N, L]`` log-probs with the whole completion masked, or None.

    Returns:
        ``[N, L]`` float32 (differentiable through the log-probs).
    """
    level = t.float()[:, None]  # [N, 1]
    pair = torch.where(first, first_logps.float() / level, second_logps.float() / (1.0 - level))
    if full_logps is None:
        return pair / 2.0
    return (full_logps.float() + pair) / 2.0
