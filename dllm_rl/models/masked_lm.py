"""Any bidirectional masked LM (BERT, RoBERTa, ModernBERT, ...) as a diffusion LM.

Encoder-only masked LMs already score token i at position i and attend bidirectionally, so the
adapter only has to find the special ids in the tokenizer. They receive the 2D padding mask
(``mask_format="2d"``): they are bidirectional by construction, and some build per-layer masks
of their own (ModernBERT's sliding-window layers) that a full 4D mask would override.

Ids: mask = the tokenizer's mask token; EOS = its EOS token, else SEP (BERT-style tokenizers
have no EOS); pad = its pad token (distinct from EOS in these tokenizers). No EOT.
"""

from __future__ import annotations

from torch import nn

from dllm_rl.models.adapter import DiffusionLM, SpecialIds


def masked_lm_ids(tokenizer: object) -> SpecialIds:
    """Special ids of a masked LM, read from its tokenizer.

    Raises:
        ValueError: the tokenizer has no mask token, no EOS/SEP, or no pad token.
    """
    name = type(tokenizer).__name__
    mask = getattr(tokenizer, "mask_token_id", None)
    eos = getattr(tokenizer, "eos_token_id", None)
    if eos is None:
        eos = getattr(tokenizer, "sep_token_id", None)
    pad = getattr(tokenizer, "pad_token_id", None)
    missing = [k for k, v in (("mask_token", mask), ("eos_token or sep_token", eos)) if v is None]
    if pad is None:
        missing.append("pad_token")
    if missing:
        raise ValueError(
            f"{name} cannot drive a masked diffusion LM: it has no {', '.join(missing)}. "
            "Set them on the tokenizer (tokenizer.add_special_tokens({...})) before wrapping."
        )
    return SpecialIds(mask=mask, eos=eos, pad=pad, eot=None)


def masked_lm_adapter(model: nn.Module, tokenizer: object) -> DiffusionLM:
    """Wrap an ``AutoModelForMaskedLM`` model; the tokenizer is required (it defines the ids)."""
    if tokenizer is None:
        raise ValueError(
            "a masked LM needs its tokenizer: the mask/EOS/pad ids are read from it "
            "(none was found next to the checkpoint)"
        )
    return DiffusionLM(
        model=model,
        ids=masked_lm_ids(tokenizer),
        shift_logits=False,
        family="masked_lm",
        tokenizer=tokenizer,
        mask_positions=True,
        mask_format="2d",
    )
