"""Pure tensor maths of one decoding step: propose tokens, score them, pick the ones to commit.

Shapes: ``B`` rows, ``K`` scored positions (the current block), ``V`` vocabulary.
"""

from __future__ import annotations

import torch

NEG_INF = float("-inf")


def guided_logits(cond: torch.Tensor, uncond: torch.Tensor, cfg_scale: float) -> torch.Tensor:
    """Classifier-free guidance (LLaDA, Nie et al. 2025, eq. 16): u + (w + 1)(c - u).

    Args:
        cond: ``[B, K, V]`` logits with the prompt.
        uncond: ``[B, K, V]`` logits with the prompt masked.
        cfg_scale: w >= 0.

    Returns:
        ``[B, K, V]`` float32 guided logits.
    """
    uncond = uncond.float()
    return uncond + (cfg_scale + 1.0) * (cond.float() - uncond)


def exclude_mask_token(logits: torch.Tensor, mask_token_id: int) -> torch.Tensor:
    """Give [MASK] zero probability as a proposal (in place; MDLM's "zero masking" of SUBS).

    The denoiser predicts clean tokens; [MASK] is never a training target, so trained models give
    it almost no mass, but small or early models do, and a committed [MASK] would be a hole that
    is never filled. Every probability the sampler uses or records (proposal, confidence, commit
    log-probs) is therefore a softmax over the vocabulary without [MASK]; scorers that must match
    the rollout's log-probs (CJ-GRPO) apply this same function first.

    Args:
        logits: ``[..., V]`` scores (modified in place).
        mask_token_id: the [MASK] id.

    Returns:
        ``logits`` with column ``mask_token_id`` set to -inf.
    """
    logits[..., mask_token_id] = NEG_INF
    return logits


def propose_tokens(
    logits: torch.Tensor,
    temperature: float,
    generator: torch.Generator | None = None,
    noise_dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """One token per position: argmax at T = 0, else Gumbel-max, an exact draw of softmax(logits/T).

    argmax(logits / T + g) with g = -log(-log u), u ~ U[0, 1), is distributed as
    softmax(logits / T). We keep -g = log(-log u) and take argmin(-g - logits / T), which saves a
    pass over ``[B, K, V]``. The noise is drawn and combined in ``noise_dtype`` (float64 where the
    device has it: low-precision Gumbel noise visibly distorts the tails of the distribution).

    Args:
        logits: ``[B, K, V]`` scores (-inf for excluded tokens, which are never drawn).
        temperature: T >= 0.
        generator: source of the noise.
        noise_dtype: float64, or float32 on devices without float64 (MPS, Ascend NPU).

    Returns:
        ``[B, K]`` long token ids.
    """
    if temperature == 0.0:
        return logits.argmax(dim=-1)  # [B, K]
    noise = torch.rand(logits.shape, generator=generator, device=logits.device, dtype=noise_dtype)
    noise.log_().neg_().log_()  # [B, K, V] -g; u = 0 gives +inf: never the argmin
    noise.sub_(logits, alpha=1.0 / temperature)  # -(logits / T + g), computed in noise_dtype
    return noise.argmin(dim=-1)  # [B, K]


def confidence_scores(
    logits: torch.Tensor,
    tokens: torch.Tensor,
    remasking: str,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Nonnegative ranking score of each proposal (higher is committed first).

    Every score is >= 0 so that multiplying by an EOS factor gamma < 1 never raises a rank.

    Args:
        logits: ``[B, K, V]`` scores (after guidance, before temperature, as in LLaDA).
        tokens: ``[B, K]`` proposed ids.
        remasking: "low_confidence" p(token), "random" U[0, 1), "entropy" exp(-H(p)),
            "margin" p_top1 - p_top2.
        generator: source of the "random" scores.

    Returns:
        ``[B, K]`` float32 scores.
    """
    if remasking == "random":
        return torch.rand(tokens.shape, generator=generator, device=tokens.device)
    logits = logits.float()
    if remasking == "low_confidence":
        picked = logits.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)  # [B, K]
        return (picked - logits.logsumexp(dim=-1)).exp()  # [B, K] p(token)
    logp = logits.log_softmax(dim=-1)  # [B, K, V]
    if remasking == "entropy":
        entropy = -(logp.exp() * logp).nan_to_num_(0.0).sum(dim=-1)  # [B, K]; 0 log 0 = 0
        return (-entropy).exp()
    if remasking == "margin":
        top2 = logp.topk(2, dim=-1).values.exp()  # [B, K, 2]
        return top2[..., 0] - top2[..., 1]
    raise ValueError(f"unknown remasking {remasking!r}")


def reject_early_eos(
    scores: torch.Tensor, tokens: torch.Tensor, eos_ids: torch.Tensor, gamma: float
) -> torch.Tensor:
    """EOS early rejection: scale the score of EOS proposals by gamma (tokens are kept).

    Args:
        scores: ``[B, K]`` nonnegative ranking scores.
        tokens: ``[B, K]`` proposed ids.
        eos_ids: ``[E]`` ids counted as EOS.
        gamma: factor of this step, in [0, 1] for a rejection.

    Returns:
        ``[B, K]`` scaled scores.
    """
    is_eos = torch.isin(tokens, eos_ids)  # [B, K]
    return torch.where(is_eos, scores * gamma, scores)


def open_positions(block_ids: torch.Tensor, mask_token_id: int, count: int) -> torch.Tensor:
    """The still-masked positions of each row, ascending; every row has exactly ``count``.

    Args:
        block_ids: ``[B, K]`` current tokens of the block.
        mask_token_id: the [MASK] id.
        count: masked positions per row (known from the schedule, so no device sync).

    Returns:
        ``[B, count]`` long positions in ``[0, K)``.
    """
    is_open = (block_ids == mask_token_id).to(torch.uint8)  # [B, K]
    return is_open.sort(dim=1, descending=True, stable=True).indices[:, :count]  # [B, count]


def select_commits(
    scores: torch.Tensor, k: int, still_masked: torch.Tensor | None = None
) -> torch.Tensor:
    """The k highest-scoring (still-masked) positions of each row.

    Args:
        scores: ``[B, K]`` ranking scores.
        k: tokens to commit in every row at this step (<= masked positions per row).
        still_masked: ``[B, K]`` bool, False where a token is already committed (never
            revisited); None when every scored position is still masked.

    Returns:
        ``[B, k]`` long positions in ``[0, K)``.
    """
    if still_masked is not None:
        scores = scores.masked_fill(~still_masked, NEG_INF)  # [B, K]
    return scores.topk(k, dim=-1).indices  # [B, k]


def commit_logprobs(
    logits: torch.Tensor, positions: torch.Tensor, tokens: torch.Tensor, temperature: float
) -> torch.Tensor:
    """log_softmax(logits / T) of the committed tokens (T = 0 scores with log_softmax(logits)).

    Args:
        logits: ``[B, K, V]`` scores of the block (after guidance).
        positions: ``[B, k]`` committed positions in ``[0, K)``.
        tokens: ``[B, k]`` committed ids.
        temperature: T of the rollout.

    Returns:
        ``[B, k]`` float32 log-probabilities.
    """
    v = logits.shape[-1]
    rows = logits.gather(1, positions.unsqueeze(-1).expand(-1, -1, v)).float()  # [B, k, V]
    if temperature > 0.0:
        rows = rows / temperature
    picked = rows.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)  # [B, k]
    return picked - rows.logsumexp(dim=-1)  # [B, k]
