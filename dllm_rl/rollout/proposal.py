"""Pure tensor maths of one decoding step: propose tokens, score them, pick the ones to commit.

Shapes: ``B`` rows, ``K`` scored positions (the current block), ``V`` vocabulary.

Working memory. Everything that needs a ``[B, K, V]`` temporary wider than the logits (float64
Gumbel noise, float32 copies for softmax) runs over the ``B * K`` rows in chunks of at most
``CHUNK_BYTES`` per temporary: at LLaDA-8B scale (V = 126464, B = 16, K = 256) the float64 noise
alone is 4 GiB unchunked. Every row is computed on its own, so on CPU chunking changes no result
bit; on CUDA only the Gumbel noise stream differs (see :func:`propose_tokens`).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from dllm_rl.rollout.config import REMASKING

NEG_INF = float("-inf")

# Largest temporary of one chunk, in bytes (float64 noise: 265 rows of V = 126464).
CHUNK_BYTES = 256 * 2**20


def row_chunks(rows: int, row_bytes: int, budget: int = CHUNK_BYTES) -> Iterator[slice]:
    """Consecutive slices of ``range(rows)`` whose temporaries fit ``budget`` (at least one row).

    Args:
        rows: number of rows (``B * K``).
        row_bytes: bytes of one row of the temporary (``V * itemsize``).
        budget: bytes per chunk.

    Yields:
        ``slice(start, stop)`` in ascending order, covering every row once.
    """
    step = max(1, budget // max(1, row_bytes))
    for start in range(0, rows, step):
        yield slice(start, min(start + step, rows))


def guided_logits(cond: torch.Tensor, uncond: torch.Tensor, cfg_scale: float) -> torch.Tensor:
    """Classifier-free guidance (LLaDA, Nie et al. 2025, eq. 16): u + (w + 1)(c - u).

    Args:
        cond: ``[B, K, V]`` logits with the prompt.
        uncond: ``[B, K, V]`` logits with the prompt masked.
        cfg_scale: w >= 0.

    Returns:
        ``[B, K, V]`` float32 guided logits.
    """
    uncond = uncond.float()  # [B, K, V]
    guided = cond.float() if cond.dtype != torch.float32 else cond.clone()  # [B, K, V]
    return guided.sub_(uncond).mul_(cfg_scale + 1.0).add_(uncond)  # two temporaries, not four


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


def exclude_tokens(logits: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
    """Give ``token_ids`` zero probability as proposals (in place; LLaDA's ``logits_eos_inf``).

    Unlike :func:`exclude_mask_token` this changes the model's distribution: the commit
    log-probs recorded afterwards are those of the restricted proposal. An evaluation option,
    not a training one (CJ-GRPO's scorer does not apply it).

    Args:
        logits: ``[..., V]`` scores (modified in place).
        token_ids: ``[E]`` long ids to exclude.

    Returns:
        ``logits`` with the columns ``token_ids`` set to -inf.
    """
    logits[..., token_ids] = NEG_INF
    return logits


def propose_tokens(
    logits: torch.Tensor,
    temperature: float,
    generator: torch.Generator | None = None,
    noise_dtype: torch.dtype = torch.float64,
    chunk_bytes: int = CHUNK_BYTES,
) -> torch.Tensor:
    """One token per position: argmax at T = 0, else Gumbel-max, an exact draw of softmax(logits/T).

    argmax(logits / T + g) with g = -log(-log u), u ~ U[0, 1), is distributed as
    softmax(logits / T). We keep -g = log(-log u) and take argmin(-g - logits / T), which saves a
    pass over ``[B, K, V]``. The noise is drawn and combined in ``noise_dtype`` (float64 where the
    device has it: low-precision Gumbel noise visibly distorts the tails of the distribution).

    The noise is drawn in chunks of rows of the row-major ``[B * K, V]`` view, in order, so no
    more than ``chunk_bytes`` of it exists at once. On CPU the generator's stream is consumed
    element by element, so the draws (and tokens) are bit-identical to one ``[B, K, V]`` draw. On
    CUDA (Philox, whose offsets depend on each launch's size) a chunked draw is a different but
    equally deterministic stream: fixed by the generator, ``V`` and ``chunk_bytes``.

    Args:
        logits: ``[B, K, V]`` scores (-inf for excluded tokens, which are never drawn).
        temperature: T >= 0.
        generator: source of the noise.
        noise_dtype: float64, or float32 on devices without float64 (MPS, Ascend NPU).
        chunk_bytes: largest noise chunk, in bytes.

    Returns:
        ``[B, K]`` long token ids.
    """
    if temperature == 0.0:
        return logits.argmax(dim=-1)  # [B, K]
    v = logits.shape[-1]
    flat = logits.reshape(-1, v)  # [B*K, V], a view of contiguous logits
    tokens = torch.empty(flat.shape[0], dtype=torch.long, device=logits.device)  # [B*K]
    row_bytes = v * torch.finfo(noise_dtype).bits // 8
    for rows in row_chunks(flat.shape[0], row_bytes, chunk_bytes):
        shape = (rows.stop - rows.start, v)
        noise = torch.rand(shape, generator=generator, device=logits.device, dtype=noise_dtype)
        noise.log_().neg_().log_()  # [c, V] -g; u = 0 gives +inf: never the argmin
        noise.sub_(flat[rows], alpha=1.0 / temperature)  # -(logits / T + g), in noise_dtype
        tokens[rows] = noise.argmin(dim=-1)  # [c]
    return tokens.view(logits.shape[:-1])  # [B, K]


def confidence_scores(
    logits: torch.Tensor,
    tokens: torch.Tensor,
    remasking: str,
    generator: torch.Generator | None = None,
    chunk_bytes: int = CHUNK_BYTES,
) -> torch.Tensor:
    """Nonnegative ranking score of each proposal (higher is committed first).

    Every score is >= 0 so that multiplying by an EOS factor gamma < 1 never raises a rank.
    Scores are computed over chunks of rows (float32 copies of at most ``chunk_bytes``).

    Args:
        logits: ``[B, K, V]`` scores (after guidance, before temperature, as in LLaDA).
        tokens: ``[B, K]`` proposed ids.
        remasking: "low_confidence" p(token), "random" U[0, 1), "entropy" exp(-H(p)),
            "margin" p_top1 - p_top2.
        generator: source of the "random" scores.
        chunk_bytes: largest float32 copy of logits, in bytes.

    Returns:
        ``[B, K]`` float32 scores.
    """
    if remasking not in REMASKING:
        raise ValueError(f"unknown remasking {remasking!r}; expected one of {REMASKING}")
    if remasking == "random":
        return torch.rand(tokens.shape, generator=generator, device=tokens.device)
    v = logits.shape[-1]
    flat, flat_tokens = logits.reshape(-1, v), tokens.reshape(-1)  # [B*K, V], [B*K]
    scores = torch.empty(flat_tokens.shape, dtype=torch.float32, device=logits.device)
    for rows in row_chunks(flat.shape[0], 4 * v, chunk_bytes):
        scores[rows] = _row_confidence(flat[rows].float(), flat_tokens[rows], remasking)
    return scores.view(tokens.shape)  # [B, K]


def _row_confidence(logits: torch.Tensor, tokens: torch.Tensor, remasking: str) -> torch.Tensor:
    """:func:`confidence_scores` of ``[c, V]`` float32 rows and ``[c]`` tokens: ``[c]``."""
    if remasking == "low_confidence":
        picked = logits.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)  # [c]
        return (picked - logits.logsumexp(dim=-1)).exp()  # [c] p(token)
    logp = logits.log_softmax(dim=-1)  # [c, V]
    if remasking == "entropy":
        entropy = -(logp.exp() * logp).nan_to_num_(0.0).sum(dim=-1)  # [c]; 0 log 0 = 0
        return (-entropy).exp()
    top2 = logp.topk(2, dim=-1).values.exp()  # [c, 2] (margin)
    return top2[..., 0] - top2[..., 1]


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


def rank_last(scores: torch.Tensor, tokens: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
    """Proposals of ``token_ids`` rank below every other proposal (score -inf).

    LLaDA's ``confidence_eos_eot_inf`` as intended, at every temperature: an EOS or EOT proposal
    is committed only when a step's quota leaves no other masked position to fill. (The reference
    code's chained assignment ``noisy[:, :, eos] = logits[:, :, eot] = -inf`` reaches the EOT
    confidence only when the noise tensor is the logits tensor, i.e. at T = 0.)

    Args:
        scores: ``[B, K]`` ranking scores.
        tokens: ``[B, K]`` proposed ids.
        token_ids: ``[E]`` ids ranked last.

    Returns:
        ``[B, K]`` scores, -inf on those proposals.
    """
    return scores.masked_fill(torch.isin(tokens, token_ids), NEG_INF)


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
    logits: torch.Tensor,
    positions: torch.Tensor,
    tokens: torch.Tensor,
    temperature: float,
    chunk_bytes: int = CHUNK_BYTES,
) -> torch.Tensor:
    """log_softmax(logits / T) of the committed tokens (T = 0 scores with log_softmax(logits)).

    Args:
        logits: ``[B, K, V]`` scores of the block (after guidance).
        positions: ``[B, k]`` committed positions in ``[0, K)``.
        tokens: ``[B, k]`` committed ids.
        temperature: T of the rollout.
        chunk_bytes: largest float32 copy of logit rows, in bytes.

    Returns:
        ``[B, k]`` float32 log-probabilities.
    """
    b, k = positions.shape
    batch = torch.arange(b, device=positions.device).repeat_interleave(k)  # [B*k]
    where, picked = positions.reshape(-1), tokens.reshape(-1)  # [B*k] each
    logps = torch.empty(where.shape, dtype=torch.float32, device=logits.device)  # [B*k]
    for rows in row_chunks(where.shape[0], 4 * logits.shape[-1], chunk_bytes):
        block = logits[batch[rows], where[rows]].float()  # [c, V]
        if temperature > 0.0:
            block = block / temperature
        chosen = block.gather(-1, picked[rows].unsqueeze(-1)).squeeze(-1)  # [c]
        logps[rows] = chosen - block.logsumexp(dim=-1)
    return logps.view(tokens.shape)  # [B, k]
