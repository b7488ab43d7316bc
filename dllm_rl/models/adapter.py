"""The one contract every model family meets.

A :class:`DiffusionLM` wraps a ``torch.nn.Module`` and hides what differs between families:

* the special ids (mask, EOS, EOT, pad; kept distinct: LLaDA pads with its EOS, and that EOS is a
  real training target, so "pad" must never be inferred from "equals EOS");
* whether the network's output at position i scores token i (LLaDA, BERT-style masked LMs) or
  token i+1 (Dream, inherited from its autoregressive Qwen2 initialisation). Dream's one-position
  shift is undone in :meth:`DiffusionLM.logits` and nowhere else;
* how a padding mask reaches attention. Every call builds an explicit 4D boolean mask
  ``[B, 1, N, N]`` from the ``[B, N]`` padding mask, because transformers 5 silently falls back to
  causal attention for ``is_causal=False`` modules when it receives a 2D padding mask or runs the
  eager backend; only an explicit 4D mask is honoured by every backend.

Everything downstream (sampler, objectives, trainers) only ever calls :meth:`DiffusionLM.logits`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass(frozen=True)
class SpecialIds:
    """Special token ids of one model family.

    Attributes:
        mask: the [MASK] id the sampler fills in.
        eos: end of sequence (LLaDA ``<|endoftext|>`` 126081; a real training target).
        pad: id used to pad batches (LLaDA: equal to ``eos``; Dream: 151643).
        eot: end of turn in chat models (LLaDA ``<|eot_id|>`` 126348), if any.
    """

    mask: int
    eos: int
    pad: int
    eot: int | None = None

    @property
    def stop_ids(self) -> tuple[int, ...]:
        """EOS plus EOT when the family has one (the ids that end an answer)."""
        return (self.eos,) if self.eot is None else (self.eos, self.eot)


def bidirectional_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Padding mask -> explicit 4D bidirectional boolean mask.

    Args:
        attention_mask: ``[B, N]``, 1/True on real tokens, 0/False on padding.

    Returns:
        ``[B, 1, N, N]`` bool, True where query i may attend key j: every real key for every query.
        Padded query rows also see the real keys (never an all-False row, which would give NaN in
        SDPA); their outputs are meaningless and ignored downstream.
    """
    keys = attention_mask.bool()[:, None, None, :]  # [B, 1, 1, N]
    n = attention_mask.shape[1]
    return keys.expand(-1, 1, n, n)  # [B, 1, N, N]


@dataclass(eq=False)
class DiffusionLM:
    """A masked diffusion LM behind one interface.

    Attributes:
        model: the wrapped network; called as ``model(input_ids=..., attention_mask=4D).logits``.
        ids: the family's special ids.
        shift_logits: True when the network's position i predicts token i+1 (Dream).
        family: registry name of the family ("llada", "dream", "masked_lm").
        tokenizer: the matching tokenizer, when one was loaded with the model.
    """

    model: nn.Module
    ids: SpecialIds
    shift_logits: bool = False
    family: str = "llada"
    tokenizer: object | None = field(default=None, repr=False)

    @property
    def mask_token_id(self) -> int:
        return self.ids.mask

    @property
    def eos_token_id(self) -> int:
        return self.ids.eos

    @property
    def pad_token_id(self) -> int:
        return self.ids.pad

    @property
    def eot_token_id(self) -> int | None:
        return self.ids.eot

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def logits(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Scores for every position, aligned so that position i scores token i.

        Args:
            input_ids: ``[B, N]`` token ids (masked positions hold ``mask_token_id``).
            attention_mask: ``[B, N]`` padding mask (1 = real token), or None for no padding.

        Returns:
            ``[B, N, V]`` logits in the model's dtype.
        """
        mask4d = None if attention_mask is None else bidirectional_mask(attention_mask)
        out = self.model(input_ids=input_ids, attention_mask=mask4d)
        logits = out.logits if hasattr(out, "logits") else out  # [B, N, V]
        if self.shift_logits:
            # Output i predicts token i+1: move every row one step right. Position 0 has no
            # predictor; it is always a prompt token, so it reuses its own row.
            logits = torch.cat([logits[:, :1], logits[:, :-1]], dim=1)  # [B, N, V]
        return logits

    def __call__(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.logits(input_ids, attention_mask)
