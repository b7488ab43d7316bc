"""SPG, the sandwiched policy gradient (Wang et al. 2025, "SPG: Sandwiched Policy Gradient for
Masked Diffusion Language Models").

A masked diffusion LM has no tractable log-likelihood, so a policy gradient needs a surrogate.
Raising a LOWER bound raises the likelihood, but lowering a lower bound proves nothing about it.
SPG therefore uses the evidence lower bound (ELBO, eq. 2) for completions with a positive
advantage and an evidence UPPER bound (EUBO, eq. 7) for the negative ones, so both pushes move the
true likelihood the intended way (Algorithm 1: ``1[A >= 0] A ELBO + 1[A < 0] A EUBO``). The
mixture variant uses ``omega * EUBO + (1 - omega) * ELBO`` for the negative completions.

The Monte-Carlo draws are block-wise (sec. 3.3): a draw picks one block of the completion, masks a
random number of its tokens, masks every later block and leaves earlier blocks clean (each of
their tokens, and each prompt token, masked with a small probability), so the masked inputs look
like the states the block-wise sampler visits.

Shapes: ``N`` completions, ``K`` draws per completion, ``L`` completion length.

Every bound comes as PER-TOKEN terms ``[N, L]`` whose row sum is the completion's bound (in
log-likelihood units: the reference code's per-token means times the counted length ``L_n``), so
the trainer weighs them with any reduction's token weights and the gradient splits across
micro-batches exactly. With ``loss_type: token_mean`` the loss is the reference's
``sum_n -A_n L_n S_n / sum_n L_n``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

SPG_BOUNDS = ("elbo", "eubo", "mix")


@dataclass(frozen=True)
class BlockMasks:
    """K block-wise masked copies of each completion.

    Attributes:
        masked: ``[N, K, L]`` bool, the completion positions replaced by [MASK] in draw k (the
            positions outside the loss, e.g. after the first EOS, are masked in every draw).
        scored: ``[N, K, L]`` bool, ``masked`` and counted: the tokens whose log-probs a draw
            scores. Every draw scores at least one token of a completion with a counted token.
        prompt: ``[N, K, P]`` bool, the prompt tokens masked in draw k.
    """

    masked: torch.Tensor
    scored: torch.Tensor
    prompt: torch.Tensor


def block_masks(
    counted: torch.Tensor,
    prompt_mask: torch.Tensor,
    block_length: int,
    num_draws: int,
    p_mask_clean: float,
    generator: torch.Generator,
) -> BlockMasks:
    """SPG's block-wise masks (sec. 3.3), K per completion.

    Draw k picks block ``b_k`` among the blocks holding a counted token (a random order of them,
    cycled when K exceeds their number, so the K draws pick distinct blocks while they can), then
    masks ``n ~ U{1..m}`` of the block's ``m`` counted tokens (a uniform subset), every position
    of the later blocks, and each counted token of the earlier blocks and each real prompt token
    independently with probability ``p_mask_clean``.

    Example: L = 4, blocks of 2, every token counted, K = 1. Picking block 1 (positions 2, 3)
    with n = 1 masks one of positions 2, 3 and nothing after it; picking block 0 with n = 2
    masks positions 0, 1 and the whole of block 1: ``[T, T, T, T]``.

    Args:
        counted: ``[N, L]`` bool, the positions in the loss (every row needs one).
        prompt_mask: ``[N, P]`` 1 on real prompt tokens, 0 on padding (never masked).
        block_length: tokens per block (the sampler's block length).
        num_draws: K >= 1.
        p_mask_clean: probability of masking a clean (prompt or earlier-block) token, in [0, 1).
        generator: the only source of randomness, on ``counted``'s device.

    Returns:
        :class:`BlockMasks`.
    """
    if block_length < 1 or num_draws < 1:
        raise ValueError(
            f"block_length and num_draws must be >= 1, got {block_length}, {num_draws}"
        )
    if not 0.0 <= p_mask_clean < 1.0:
        raise ValueError(f"p_mask_clean must lie in [0, 1), got {p_mask_clean}")
    counted = counted.bool()
    if bool((~counted.any(dim=1)).any()):
        raise ValueError("every completion needs at least one counted position")
    n, length = counted.shape
    device = counted.device

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(shape, generator=generator, device=device)

    block = torch.arange(length, device=device) // block_length  # [L]
    num_blocks = int(block[-1]) + 1
    per_block = torch.zeros(n, num_blocks, device=device).index_add_(
        1, block, counted.float()
    )  # [N, nb] counted tokens of each block
    occupied = per_block > 0  # [N, nb]
    order = rand(n, num_blocks).masked_fill(~occupied, 2.0).argsort(dim=1)  # [N, nb] occupied first
    slot = torch.arange(num_draws, device=device)[None, :] % occupied.sum(dim=1, keepdim=True)
    chosen = order.gather(1, slot)  # [N, K] block of each draw
    m = per_block.gather(1, chosen)  # [N, K] counted tokens of the chosen block
    how_many = (rand(n, num_draws) * m).long().clamp(max=m.long() - 1) + 1  # [N, K] in [1, m]
    in_chosen = (block[None, None, :] == chosen[..., None]) & counted[:, None, :]  # [N, K, L]
    keys = rand(n, num_draws, length).masked_fill(~in_chosen, 2.0)  # [N, K, L]
    ranks = keys.argsort(dim=-1).argsort(dim=-1)  # [N, K, L]
    partial = ranks < how_many[..., None]  # [N, K, L] a uniform subset of the chosen block
    later = block[None, None, :] > chosen[..., None]  # [N, K, L]
    earlier = block[None, None, :] < chosen[..., None]  # [N, K, L]
    noise = (rand(n, num_draws, length) < p_mask_clean) & earlier & counted[:, None, :]
    masked = partial | later | noise | ~counted[:, None, :]  # [N, K, L]
    p = prompt_mask.shape[1]
    prompt = (rand(n, num_draws, p) < p_mask_clean) & prompt_mask.bool()[:, None, :]  # [N, K, P]
    return BlockMasks(masked, masked & counted[:, None, :], prompt)


def elbo_terms(logps: torch.Tensor, scored: torch.Tensor, counted: torch.Tensor) -> torch.Tensor:
    """Per-token terms of the ELBO estimate (eq. 2, with the draw's own masked fraction as t).

    ``v_i = 1/K sum_k 1[i in M_k] (L_n / |M_k|) log p_ik``: each draw is ``1/t_k`` times its
    masked tokens' log-probs, ``t_k = |M_k| / L_n``; the row sum is the completion's ELBO.

    Example (L = 4, K = 2): draw 1 masks tokens 3, 4 (p = 0.5, 0.25), draw 2 masks 2, 3, 4
    (p = 0.8, 0.4, 0.2). v_1 = 0, v_2 = 1/2 (4/3) ln 0.8 = -0.14876, v_3 = 1/2 (2 ln 0.5 + 4/3
    ln 0.4) = -1.30401, v_4 = 1/2 (2 ln 0.25 + 4/3 ln 0.2) = -2.45925; the ELBO is -3.91202
    (the reference's per-token mean -0.97801 times L = 4).

    Args:
        logps: ``[N, K, L]`` log p of each completion token in each draw (read where scored;
            differentiable).
        scored: ``[N, K, L]`` bool, the counted tokens masked in each draw.
        counted: ``[N, L]`` bool, the positions in the loss.

    Returns:
        ``[N, L]`` float32 terms, 0 where never scored.
    """
    lengths = counted.sum(dim=1).clamp(min=1).float()  # [N]
    sizes = scored.sum(dim=-1).clamp(min=1).float()  # [N, K] |M_k|
    per_draw = torch.where(scored, logps.float(), 0.0) * (lengths[:, None] / sizes)[..., None]
    return per_draw.mean(dim=1)  # [N, L]


def eubo_terms(
    logps: torch.Tensor, scored: torch.Tensor, counted: torch.Tensor, beta: float
) -> torch.Tensor:
    """Per-token terms of SPG's tractable evidence upper bound (eq. 7), the reference's
    mean-field form.

    ``a_i = 1/K sum_k 1[i in M_k] p_ik^beta / t_k`` and ``u_i = (L_n / |U_n|) (1/beta) log a_i``
    over the tokens ``U_n`` masked in at least one draw (the others are 0); the row sum is the
    completion's EUBO. Computed in log space: ``log a_i = logsumexp_k (beta log p_ik - log t_k) -
    log K`` over the draws that mask i.

    It is an upper bound of ``log p(x)`` (in expectation over the draws, as K grows) when the
    denoiser's conditionals are those of one joint distribution, the model class masked diffusion
    assumes, for beta >= 1 (the test enumerates it). A network's conditionals need not agree with
    any joint; there the bound can fail (SPG uses beta in {1, 1.5, 2}).

    Example (the draws of :func:`elbo_terms`, beta = 1.5): a_2 = 1/2 0.8^1.5 / 0.75 = 0.47703,
    a_3 = 1/2 (0.5^1.5 / 0.5 + 0.4^1.5 / 0.75) = 0.52221, a_4 = 1/2 (0.25^1.5 / 0.5 + 0.2^1.5 /
    0.75) = 0.18463; U = {2, 3, 4}, u_i = (4/3)(1/1.5) ln a_i: -0.65793, -0.57749, -1.50170; the
    EUBO is -2.73712 (the reference's -0.68428 times 4), above the ELBO -3.91202.

    Args:
        logps: ``[N, K, L]`` log p of each token in each draw (differentiable).
        scored: ``[N, K, L]`` bool, the counted tokens masked in each draw.
        counted: ``[N, L]`` bool.
        beta: the EUBO's exponent, > 0 (>= 1 for the bound).

    Returns:
        ``[N, L]`` float32 terms.
    """
    if not beta > 0:
        raise ValueError(f"eubo_beta must be > 0, got {beta}")
    k = logps.shape[1]
    lengths = counted.sum(dim=1).clamp(min=1).float()  # [N]
    t = scored.sum(dim=-1).clamp(min=1).float() / lengths[:, None]  # [N, K]
    inner = beta * logps.float() - t.log()[..., None]  # [N, K, L]
    ever = scored.any(dim=1)  # [N, L] the set U
    # -inf drops the draws that leave i clean; a column no draw masks gets finite zeros instead
    # (its logsumexp's gradient would be NaN, even when multiplied by 0 below).
    inner = inner.masked_fill(~scored, float("-inf")).masked_fill(~ever[:, None, :], 0.0)
    log_a = torch.logsumexp(inner, dim=1) - torch.log(torch.tensor(float(k)))  # [N, L]
    log_a = torch.where(ever, log_a, 0.0)  # no -inf (nor its NaN gradient) outside U
    spread = lengths / ever.sum(dim=1).clamp(min=1).float()  # [N] L_n / |U_n|
    return spread[:, None] * log_a / beta  # [N, L]


def sandwich_terms(
    advantages: torch.Tensor,
    elbo: torch.Tensor,
    eubo: torch.Tensor | None,
    bound: str,
    mix_weight: float,
) -> torch.Tensor:
    """The per-token likelihood terms SPG differentiates (Algorithm 1): the ELBO's where
    ``A >= 0``; where ``A < 0`` the EUBO's (``bound="eubo"``), ``omega EUBO + (1 - omega) ELBO``
    (``"mix"``, omega = ``mix_weight``) or the ELBO's (``"elbo"``, the lower bound everywhere, the
    paper's ablation). The loss per token is ``-A`` times the term.

    Example: A = [1, -1], elbo rows [-3, -3], eubo rows [-2, -2], mix with omega = 0.5: [-3, -2.5].

    Args:
        advantages: ``[N]``.
        elbo: ``[N, L]`` (:func:`elbo_terms`).
        eubo: ``[N, L]`` (:func:`eubo_terms`), or None with ``bound="elbo"``.
        bound: one of :data:`SPG_BOUNDS`.
        mix_weight: omega in [0, 1].

    Returns:
        ``[N, L]``.
    """
    if bound not in SPG_BOUNDS:
        raise ValueError(f"spg bound={bound!r} is unknown; expected one of {SPG_BOUNDS}")
    if bound == "elbo":
        return elbo
    if eubo is None:
        raise ValueError(f"bound={bound!r} needs the EUBO terms")
    upper = eubo if bound == "eubo" else mix_weight * eubo + (1.0 - mix_weight) * elbo
    return torch.where((advantages < 0)[:, None], upper, elbo)  # [N, L]
