"""GRPO maths: group advantages, the clipped surrogate, k3 KL, and the token weights of a reduction.

Shapes: ``B`` prompts, ``G`` completions per prompt, ``L`` completion length, ``S`` decoding steps;
``N`` completions in a (micro-)batch (``N = B * G`` for a whole rollout). Everything here is a pure
function of tensors; nothing holds trainer state.

The loss of one optimizer step is ``sum_tokens w * loss_token`` with the weights ``w`` of
:func:`token_weights`. The weights depend on statistics of the WHOLE optimizer step (all
micro-batches, all ranks): each micro-batch computes its :func:`reduction_totals`, the trainer sums
them (and all-reduces them with SUM across ranks) once, and every micro-batch then weighs its tokens
with the global totals. The summed gradient is therefore the gradient of the full-batch loss
whatever the micro-batching, the gradient accumulation or the number of ranks.

References:
    GRPO: Shao et al. 2024, "DeepSeekMath", eq. 3 (group-relative advantages, clipped surrogate,
    k3 KL estimator). PPO clipping: Schulman et al. 2017, eq. 7; asymmetric clip bounds
    ("clip-higher"): Yu et al. 2025, "DAPO", eq. 10. k3: Schulman 2020, "Approximating KL
    divergence". Step-mean reduction: Yang et al. 2025, "Taming masked diffusion language models
    via consistency trajectory RL" (CJ-GRPO), eq. 11.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

SCALES = ("group", "batch", "none", "leave_one_out")
REDUCTIONS = ("step_mean", "token_mean", "sequence_mean", "sequence_sum")
COUNTED_MODES = ("all", "until_eos")
STD_EPS = 1e-4  # TRL's constant in A = (r - mean) / (std + 1e-4)


def group_advantages(rewards: torch.Tensor, num_generations: int, scale: str) -> torch.Tensor:
    """Group-relative advantages (GRPO, Shao et al. 2024, sec. 4.1.2).

    ``A_i = r_i - mean(r of i's group)``, a group being ``G`` consecutive rows (one prompt's
    completions). ``scale`` then divides by ``std + 1e-4``: the unbiased std of each group
    ("group", TRL's default), of the whole tensor ("batch", Hu 2025 REINFORCE++ style), or not at
    all ("none", Dr. GRPO and the CJ-GRPO reference code). "leave_one_out" centres on the mean
    of the OTHER G - 1 rewards, ``r_i - mean_{j != i} r_j = G / (G - 1) * (r_i - mean)``
    (RLOO, Ahmadian et al. 2024; DiffuCoder's coupled-GRPO).

    Example (G = 2): r = [1, 3, 2, 2] -> means [2, 2], A = [-1, 1, 0, 0]. Group stds are
    sqrt(((-1)^2 + 1^2) / 1) = sqrt(2) and 0, so "group" gives [-1, 1] / (sqrt(2) + 1e-4) and
    [0, 0]. The batch std of r is sqrt((1 + 1 + 0 + 0) / 3) = sqrt(2/3), so "batch" gives
    [-1, 1, 0, 0] / (sqrt(2/3) + 1e-4). "leave_one_out" gives 2 / 1 * [-1, 1, 0, 0] =
    [-2, 2, 0, 0] (r_0 - r_1 = 1 - 3).

    Args:
        rewards: ``[B*G]`` rewards, prompt-major (a prompt's G completions are consecutive).
        num_generations: G.
        scale: "group", "batch", "none" or "leave_one_out".

    Returns:
        ``[B*G]`` advantages (float32 unless ``rewards`` is another floating dtype).

    Raises:
        ValueError: unknown ``scale``, a length that G does not divide, or a std of one value.
    """
    if scale not in SCALES:
        raise ValueError(f"scale_rewards={scale!r} is unknown; expected one of {SCALES}")
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be 1-D [B*G], got shape {tuple(rewards.shape)}")
    if num_generations < 1 or rewards.numel() % num_generations:
        raise ValueError(
            f"{rewards.numel()} rewards cannot be split into groups of num_generations="
            f"{num_generations}: the length must be B * G (a multiple of G >= 1)"
        )
    if scale in ("group", "leave_one_out") and num_generations < 2:
        raise ValueError(f"scale_rewards={scale!r} needs num_generations >= 2 (a group of one)")
    if scale == "batch" and rewards.numel() < 2:
        raise ValueError("scale_rewards='batch' needs at least 2 rewards (a std of one value)")
    r = rewards if rewards.is_floating_point() else rewards.float()  # [B*G]
    groups = r.view(-1, num_generations)  # [B, G]
    centred = (groups - groups.mean(dim=1, keepdim=True)).reshape(-1)  # [B*G]
    if scale == "none":
        return centred
    if scale == "leave_one_out":
        return centred * (num_generations / (num_generations - 1))
    if scale == "group":
        std = groups.std(dim=1).repeat_interleave(num_generations)  # [B*G]
    else:
        std = r.std()  # []
    return centred / (std + STD_EPS)  # [B*G]


@dataclass
class SurrogateTerms:
    """Per-token terms of the clipped surrogate (all of the broadcast shape of the inputs).

    Attributes:
        loss: ``[..]`` per-token loss ``-min(r A, clip(r) A)``, before any weighting.
        ratio: ``[..]`` importance ratio ``r = exp(logp - old_logp)``.
        is_low_clipped: ``[..]`` bool, ``r < 1 - eps_low`` and ``A < 0`` (TRL's definition).
        is_high_clipped: ``[..]`` bool, ``r > 1 + eps_high`` and ``A > 0``.
        is_region_clipped: ``[..]`` bool, either of the two (the gradient is zero there).
    """

    loss: torch.Tensor
    ratio: torch.Tensor
    is_low_clipped: torch.Tensor
    is_high_clipped: torch.Tensor
    is_region_clipped: torch.Tensor


def clipped_surrogate(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    advantages: torch.Tensor,
    epsilon_low: float,
    epsilon_high: float,
) -> SurrogateTerms:
    """PPO/GRPO clipped surrogate per token (Schulman et al. 2017, eq. 7; DAPO eq. 10 bounds).

    ``loss = -min(r A, clip(r, 1 - eps_low, 1 + eps_high) A)`` with ``r = exp(logp - old_logp)``.

    Example: logp - old = log 2 (r = 2), A = 1, eps = 0.2: min(2, 1.2) = 1.2, loss -1.2, high
    clipped. r = 0.5, A = -1: min(-0.5, -0.8) = -0.8, loss 0.8, low clipped. r = 2, A = -1:
    min(-2, -1.2) = -2, loss 2, not clipped (the unclipped term is the pessimistic one).

    Args:
        logps: ``[..]`` log-probs under the policy being optimised (differentiable).
        old_logps: ``[..]`` log-probs under the rollout policy (no gradient needed).
        advantages: advantages broadcastable to ``logps`` (per token, or ``[N, 1]`` per sequence).
        epsilon_low: lower clip range, >= 0.
        epsilon_high: upper clip range, >= 0.

    Returns:
        :class:`SurrogateTerms` of the broadcast shape.
    """
    if epsilon_low < 0 or epsilon_high < 0:
        raise ValueError(
            f"clip ranges must be >= 0, got epsilon_low={epsilon_low}, epsilon_high={epsilon_high}"
        )
    ratio = torch.exp(logps - old_logps)  # [..]
    clipped = ratio.clamp(1.0 - epsilon_low, 1.0 + epsilon_high)  # [..]
    loss = -torch.min(ratio * advantages, clipped * advantages)  # [..]
    low = (ratio < 1.0 - epsilon_low) & (advantages < 0)  # [..]
    high = (ratio > 1.0 + epsilon_high) & (advantages > 0)  # [..]
    return SurrogateTerms(loss, ratio, low, high, low | high)


def k3_kl(logps: torch.Tensor, ref_logps: torch.Tensor) -> torch.Tensor:
    """Schulman's k3 estimator of KL(pi || pi_ref) per token (GRPO, Shao et al. 2024, eq. 4).

    ``exp(ref - logp) - (ref - logp) - 1``: unbiased for the KL when tokens are drawn from pi, and
    nonnegative (e^x - x - 1 >= 0). Example: ref - logp = log 2 gives 2 - log 2 - 1 = 0.3069.

    Args:
        logps: ``[..]`` policy log-probs.
        ref_logps: ``[..]`` reference log-probs of the same tokens.

    Returns:
        ``[..]`` per-token KL estimates (0 where ``logps == ref_logps``).
    """
    delta = ref_logps - logps  # [..]
    return torch.exp(delta) - delta - 1.0


def counted_positions(
    completion_ids: torch.Tensor, stop_ids: Sequence[int], mode: str
) -> torch.Tensor:
    """Which completion positions enter the loss.

    "all": every position (the CJ-GRPO reference: in a fixed canvas, the EOS run after the answer
    is a decision the sampler made). "until_eos": positions up to and including the first stop id
    of each row, every position when a row has none (d1 / TRL's completion mask).

    Example: ids [5, 0, 7, 0] with stop id 0 -> "until_eos" counts [T, T, F, F].

    Args:
        completion_ids: ``[N, L]`` completion tokens.
        stop_ids: ids that end an answer (EOS, EOT).
        mode: "all" or "until_eos".

    Returns:
        ``[N, L]`` bool.
    """
    if mode not in COUNTED_MODES:
        raise ValueError(f"counted positions mode={mode!r} is unknown; expected {COUNTED_MODES}")
    if mode == "all":
        return torch.ones_like(completion_ids, dtype=torch.bool)  # [N, L]
    if len(stop_ids) == 0:
        raise ValueError("mode='until_eos' needs at least one stop id (EOS / EOT)")
    stops = torch.tensor(list(stop_ids), device=completion_ids.device, dtype=completion_ids.dtype)
    is_stop = torch.isin(completion_ids, stops).long()  # [N, L]
    stops_before = is_stop.cumsum(dim=1) - is_stop  # [N, L] stop ids strictly before each position
    return stops_before == 0  # [N, L]


def reduction_totals(
    counted: torch.Tensor, unmask_step: torch.Tensor, num_steps: int, reduction: str
) -> torch.Tensor:
    """Local statistics a reduction normalises by; SUM them over micro-batches and ranks.

    Example (S = 2): counted [[T, T, F], [T, F, F]], unmask_step [[0, 1, 1], [1, 0, 0]] ->
    "token_mean" [3], "step_mean" [1, 2] (one counted token at step 0, two at step 1),
    "sequence_mean" and "sequence_sum" [2].

    Args:
        counted: ``[N, L]`` bool, the positions in the loss (:func:`counted_positions`).
        unmask_step: ``[N, L]`` integer step (0..S-1) at which each token was committed.
        num_steps: S.
        reduction: one of :data:`REDUCTIONS`.

    Returns:
        float64 ``[1]`` (token_mean: counted tokens; sequence_mean, sequence_sum: sequences) or ``[S]``
        (step_mean: counted tokens committed at each step).
    """
    _check_reduction(reduction, counted, unmask_step)
    if reduction == "token_mean":
        return counted.sum().to(torch.float64).view(1)  # [1]
    if reduction in ("sequence_mean", "sequence_sum"):
        return torch.tensor([float(counted.shape[0])], dtype=torch.float64, device=counted.device)
    steps = unmask_step[counted].long()  # [n_counted]
    if steps.numel() and (int(steps.min()) < 0 or int(steps.max()) >= num_steps):
        raise ValueError(f"unmask_step values must lie in [0, {num_steps}) for counted tokens")
    return torch.bincount(steps, minlength=num_steps).to(torch.float64)  # [S]


def token_weights(
    counted: torch.Tensor, unmask_step: torch.Tensor, reduction: str, totals: torch.Tensor
) -> torch.Tensor:
    """Weights w with ``loss_step = sum over all tokens of the optimizer step of w * loss_token``.

    With the GLOBAL ``totals`` (:func:`reduction_totals` summed over every micro-batch and rank):

    * "token_mean" (DAPO, Yu et al. 2025, eq. 8): ``w = counted / T``, T the counted tokens.
    * "sequence_mean" (GRPO eq. 3): ``w = counted / n_i / N``, n_i = row i's counted tokens
      (clamped at 1), N the sequences.
    * "sequence_sum": ``w = counted / N``: each sequence's token SUM (its log-likelihood, for the
      likelihood-weighted objectives: wd1), then the mean over sequences.
    * "step_mean" (CJ-GRPO reference code): for each step s the token mean over the batch of the
      counted tokens committed at s, then the mean over the S_eff steps with any counted token:
      ``w = counted / (c_s * S_eff)``, c_s the counted tokens committed at step s.

    Example (the one of :func:`reduction_totals`, as the whole batch): token_mean w =
    [[1/3, 1/3, 0], [1/3, 0, 0]]; sequence_mean [[1/4, 1/4, 0], [1/2, 0, 0]]; sequence_sum
    [[1/2, 1/2, 0], [1/2, 0, 0]]; step_mean with
    c = [1, 2], S_eff = 2: [[1/2, 1/4, 0], [1/4, 0, 0]].

    Args:
        counted: ``[N, L]`` bool, the positions in the loss of this micro-batch.
        unmask_step: ``[N, L]`` integer commit step of each token.
        reduction: one of :data:`REDUCTIONS`.
        totals: the global totals, ``[1]`` or ``[S]`` (any float dtype; float64 recommended).

    Returns:
        ``[N, L]`` float32 weights, 0 on uncounted tokens.
    """
    _check_reduction(reduction, counted, unmask_step)
    totals = totals.to(device=counted.device, dtype=torch.float64)
    mask = counted.to(torch.float64)  # [N, L]
    if reduction == "token_mean":
        weights = mask / totals[0].clamp(min=1.0)  # [N, L]
    elif reduction == "sequence_mean":
        per_row = mask.sum(dim=1, keepdim=True).clamp(min=1.0)  # [N, 1]
        weights = mask / per_row / totals[0].clamp(min=1.0)  # [N, L]
    elif reduction == "sequence_sum":
        weights = mask / totals[0].clamp(min=1.0)  # [N, L]
    else:
        steps_used = (totals > 0).sum().clamp(min=1).to(torch.float64)  # [] S_eff
        per_step = totals.clamp(min=1.0)[unmask_step.long().clamp(0, totals.numel() - 1)]  # [N, L]
        weights = mask / (per_step * steps_used)  # [N, L]
    return weights.to(torch.float32)


def _check_reduction(reduction: str, counted: torch.Tensor, unmask_step: torch.Tensor) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"loss reduction={reduction!r} is unknown; expected one of {REDUCTIONS}")
    if counted.dim() != 2 or counted.shape != unmask_step.shape:
        raise ValueError(
            f"counted and unmask_step must both be [N, L], got {tuple(counted.shape)} and "
            f"{tuple(unmask_step.shape)}"
        )
    if counted.dtype != torch.bool:
        raise ValueError(f"counted must be a bool mask, got {counted.dtype}")
