"""Masked-diffusion SFT loss: LLaDA's supervised fine-tuning recipe (Nie et al. 2025, Eq. 5).

For a prompt x and response y of real length L, draw t ~ U(eps, 1], mask every response token
independently with probability t (the prompt is never masked), and take the cross-entropy of the
clean tokens at the masked positions, each weighted 1 / t:

    loss = E_t E_mask [ (1 / L) * sum over masked i of -log p(y_i | x, y masked) / t ]

Normalisations (``normalization``):

* ``"response_length"`` (default; LLaDA's GUIDELINES): each row's weighted sum is divided by its
  response length L_b, then rows are averaged: -(1 / B) sum_b ELBO_b / L_b.
* ``"masked_tokens"``: the batch's weighted sum is divided by the number of masked tokens in the
  batch (the per-token mean used by several masked-diffusion codebases).

LLaDA pads each answer with EOS to the batch length and trains on those EOS like answer tokens,
which is how the model learns to stop; ``eos_padding=True`` does the same: padding positions of
the response become EOS targets, count in L, and are attended to.

Log-probabilities exclude [MASK] (``exclude_mask=True``, as the sampler proposes tokens): the
loss is then the NLL of the distribution the sampler draws from.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from dllm_rl.models.adapter import DiffusionLM
from dllm_rl.objectives.elbo import masked_positions
from dllm_rl.rollout.proposal import exclude_mask_token

NORMALIZATIONS = ("response_length", "masked_tokens")
DEFAULT_EPS = 1e-3


def masked_cross_entropy(
    logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """Per-row weighted cross-entropy summed over the selected positions.

    Args:
        logits: ``[B, K, V]`` scores.
        targets: ``[B, K]`` long target ids.
        mask: ``[B, K]`` bool, the positions that count.
        weights: ``[B]`` per-row or ``[B, K]`` per-position weights (1 / t).

    Returns:
        ``[B]`` float32: sum over k with ``mask`` of weight * -log softmax(logits)[target].
    """
    b, k, v = logits.shape
    ce = F.cross_entropy(logits.float().reshape(b * k, v), targets.reshape(b * k), reduction="none")
    ce = ce.view(b, k)  # [B, K]
    w = weights if weights.dim() == 2 else weights[:, None]  # [B, K] or [B, 1]
    return torch.where(mask.bool(), ce * w, 0.0).sum(dim=-1)  # [B]


def draw_sft_masks(
    response_mask: torch.Tensor,
    *,
    eps: float = DEFAULT_EPS,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw t ~ U(eps, 1] per row and mask each real response token with probability t.

    Args:
        response_mask: ``[B, L]`` True on the response tokens that may be masked.
        eps: lower end of t (keeps 1 / t bounded).
        generator: source of the draws (drawn on its device, moved to ``response_mask``'s).

    Returns:
        ``masks [B, L]`` bool (never True outside ``response_mask``) and ``t [B]`` float32.
    """
    real = response_mask.bool()  # [B, L]
    b, length = real.shape
    device = generator.device if generator is not None else torch.device("cpu")
    u = torch.rand(b, generator=generator, device=device, dtype=torch.float64)  # [B] in [0, 1)
    t = (eps + (1.0 - eps) * (1.0 - u)).to(real.device)  # [B] in (eps, 1]
    draws = torch.rand(b, length, generator=generator, device=device, dtype=torch.float64)
    masks = (draws.to(real.device) < t[:, None]) & real  # [B, L]
    return masks, t.float()


@dataclass(frozen=True)
class SFTLoss:
    """The masked-diffusion SFT loss of one batch.

    Attributes:
        loss: ``[]`` the normalised loss to backpropagate.
        per_row: ``[B]`` sum over masked i of CE_i / t_b (before normalisation).
        num_masked: ``[B]`` masked tokens per row.
        lengths: ``[B]`` response lengths L_b used for the normalisation.
        t: ``[B]`` the masking rates.
    """

    loss: torch.Tensor
    per_row: torch.Tensor
    num_masked: torch.Tensor
    lengths: torch.Tensor
    t: torch.Tensor


def normalize_sft_loss(
    per_row: torch.Tensor, lengths: torch.Tensor, num_masked: torch.Tensor, normalization: str
) -> torch.Tensor:
    """``[]`` loss from per-row weighted CE sums ``[B]`` (see the module docstring)."""
    if normalization == "response_length":
        return (per_row / lengths.to(per_row).clamp(min=1)).mean()
    if normalization == "masked_tokens":
        return per_row.sum() / num_masked.sum().clamp(min=1).to(per_row)
    raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")


def mdlm_sft_loss(
    model: DiffusionLM,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor | None,
    response_ids: torch.Tensor,
    response_mask: torch.Tensor,
    *,
    generator: torch.Generator | None = None,
    eps: float = DEFAULT_EPS,
    normalization: str = "response_length",
    eos_padding: bool = False,
    exclude_mask: bool = True,
    masks: torch.Tensor | None = None,
    t: torch.Tensor | None = None,
) -> SFTLoss:
    """LLaDA's SFT loss for one batch, the LM head run on the masked positions only.

    Args:
        model: the diffusion LM (in train mode for training).
        prompt_ids: ``[B, P]`` left-padded prompt ids (never masked).
        prompt_mask: ``[B, P]`` 1 on real prompt tokens, or None.
        response_ids: ``[B, L]`` right-padded response ids, EOS included.
        response_mask: ``[B, L]`` 1 on real response tokens.
        generator: source of t and the masks.
        eps: lower end of t.
        normalization: ``"response_length"`` or ``"masked_tokens"``.
        eos_padding: response padding becomes EOS targets that count as answer tokens.
        exclude_mask: softmax over the vocabulary without [MASK].
        masks, t: a fixed ``[B, L]`` mask and ``[B]`` rates instead of drawing them (tests,
            evaluation on fixed draws).

    Returns:
        :class:`SFTLoss`.
    """
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
    real = response_mask.bool()  # [B, L]
    if eos_padding:
        response_ids = response_ids.masked_fill(~real, model.eos_token_id)  # [B, L]
        real = torch.ones_like(real)  # [B, L]
    if (masks is None) != (t is None):
        raise ValueError("pass both masks and t, or neither")
    if masks is None:
        masks, t = draw_sft_masks(real, eps=eps, generator=generator)  # [B, L], [B]
    masks = masks.bool() & real  # [B, L]
    b = prompt_ids.shape[0]
    if prompt_mask is None:
        prompt_mask = torch.ones_like(prompt_ids, dtype=torch.bool)
    ids = torch.cat([prompt_ids, response_ids], dim=1)  # [B, P+L]
    attn = torch.cat([prompt_mask.bool(), real], dim=1)  # [B, P+L]
    full_mask = torch.cat([torch.zeros_like(prompt_mask, dtype=torch.bool), masks], dim=1)
    lengths = real.sum(dim=-1)  # [B]
    num_masked = masks.sum(dim=-1)  # [B]
    if not bool(masks.any()):
        # Nothing masked (tiny t on short answers): a zero loss that still reaches the graph.
        zero = sum(w.sum() for w in model.model.parameters() if w.requires_grad) * 0.0
        per_row = torch.zeros(b, device=ids.device) + zero
    else:
        positions, valid = masked_positions(full_mask)  # [B, K], [B, K]
        noisy = ids.masked_fill(full_mask, model.mask_token_id)  # [B, P+L]
        logits = model.logits(noisy, None if bool(attn.all()) else attn, positions=positions)
        logits = logits.float()  # [B, K, V]
        if exclude_mask:
            logits = exclude_mask_token(logits, model.mask_token_id)
        targets = ids.gather(1, positions)  # [B, K]
        per_row = masked_cross_entropy(logits, targets, valid, 1.0 / t.to(logits))  # [B]
    loss = normalize_sft_loss(per_row, lengths, num_masked, normalization)
    return SFTLoss(loss=loss, per_row=per_row, num_masked=num_masked, lengths=lengths, t=t)
