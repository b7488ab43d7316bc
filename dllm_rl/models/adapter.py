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
  eager backend; only an explicit 4D mask is honoured by every backend. (Encoder-only masked
  LMs, bidirectional by construction, get the 2D padding mask instead: ``mask_format="2d"``.)

Everything downstream (sampler, objectives, trainers) only ever calls :meth:`DiffusionLM.logits`.
Callers that score a window of positions (the sampler's current block) pass ``positions``; families
that can (``keeps_logits``) then run the final norm and the LM head on that window only, which at
LLaDA-8B scale (V = 126464) is the difference between a block and the whole canvas of logits.
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


def tokenizer_token_id(tokenizer: object | None, token: str) -> int | None:
    """The id of ``token`` in ``tokenizer``; None without a tokenizer or when it is unknown."""
    if tokenizer is None:
        return None
    token_id = tokenizer.convert_tokens_to_ids(token)
    if isinstance(token_id, int) and token_id != getattr(tokenizer, "unk_token_id", None):
        return token_id
    return None


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


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions counted over real tokens: ``[B, N]`` long, 0 at each row's first real token.

    Padding positions get 0 (their outputs are ignored). Example: mask ``[0, 0, 1, 1, 1]`` ->
    positions ``[0, 0, 0, 1, 2]``.
    """
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def as_4d_mask(attention_mask: torch.Tensor | None, n: int) -> torch.Tensor | None:
    """Normalise what a model's ``forward`` receives into a 4D mask (or None for "no padding").

    Args:
        attention_mask: None, a ``[B, N]`` padding mask (1 = real token), or an explicit
            ``[B, 1|H, N, N]`` mask (bool True = attend, or additive float), used as given.
        n: sequence length N.

    Returns:
        None when there is nothing to mask, else a 4D mask; 2D masks become
        :func:`bidirectional_mask`.
    """
    if attention_mask is None:
        return None
    if attention_mask.dim() == 2:
        if attention_mask.shape[1] != n:
            raise ValueError(f"attention_mask is {tuple(attention_mask.shape)}, expected [B, {n}]")
        return None if bool(attention_mask.all()) else bidirectional_mask(attention_mask)
    if attention_mask.dim() == 4:
        return attention_mask
    raise ValueError(
        f"attention_mask must be [B, N] or [B, 1, N, N], got shape {tuple(attention_mask.shape)}"
    )


def additive_mask(mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """Boolean mask (True = attend) -> additive float mask (0 or dtype min); floats pass through.

    Eager attention kernels add the mask to the scores, so a boolean mask must be converted.
    """
    if mask is None or mask.dtype != torch.bool:
        return mask
    zeros = torch.zeros(mask.shape, dtype=dtype, device=mask.device)
    return zeros.masked_fill(~mask, torch.finfo(dtype).min)


def window_bounds(positions: slice, n: int) -> tuple[int, int]:
    """``(lo, hi)`` of a contiguous window of a length-N sequence (negative bounds count from N).

    Raises:
        ValueError: ``positions`` is not a slice, has a step other than 1, or is empty.
    """
    if not isinstance(positions, slice):
        raise ValueError(f"positions must be a slice(lo, hi), got {type(positions).__name__}")
    lo, hi, step = positions.indices(n)
    if step != 1 or hi <= lo:
        raise ValueError(
            f"positions must be a non-empty contiguous window of the {n} positions, got "
            f"{positions} (-> [{lo}, {hi}) with step {step})"
        )
    return lo, hi


@dataclass(eq=False)
class DiffusionLM:
    """A masked diffusion LM behind one interface.

    Attributes:
        model: the wrapped network; called as ``model(input_ids=..., attention_mask=4D).logits``.
        ids: the family's special ids.
        shift_logits: True when the network's position i predicts token i+1 (Dream).
        family: registry name of the family ("llada", "dream", "masked_lm").
        tokenizer: the matching tokenizer, when one was loaded with the model.
        mask_format: "4d" (default) passes the explicit bidirectional ``[B, 1, N, N]`` mask;
            "2d" passes the ``[B, N]`` padding mask unchanged, for encoder-only masked LMs that
            are bidirectional by construction and derive their own masks (e.g. ModernBERT's
            sliding-window layers, which a full 4D mask would silently make global).
        mask_positions: when padding is given, also pass ``position_ids`` counted over real
            tokens only (:func:`position_ids_from_mask`), so a left-padded row sees the same
            positions as the row alone. Needed by absolute position embeddings (BERT); what
            Dream's own generation does. LLaDA's published code uses plain 0..N-1 (RoPE is
            shift-invariant), so it stays off there.
        keeps_logits: the network's ``forward`` accepts transformers' ``logits_to_keep`` as a 1D
            index tensor of positions and applies the LM head only there (our LLaDA, Dream).
            Off (the default, for masked LMs and arbitrary wrappers), ``positions`` slices the
            full output instead.
        keeps_row_logits: ``logits_to_keep`` also accepts a ``[B, K]`` tensor of positions per
            row (our LLaDA). Off, per-row ``positions`` score the window from the smallest to the
            largest position asked for and gather from it.
        mask_in_softmax: keep [MASK] in the softmax of every score and log-prob (the reference
            trainers' convention; ``model.mask_in_softmax``). Off, [MASK] has zero probability.
    """

    model: nn.Module
    ids: SpecialIds
    shift_logits: bool = False
    family: str = "llada"
    tokenizer: object | None = field(default=None, repr=False)
    mask_format: str = "4d"
    mask_positions: bool = False
    keeps_logits: bool = False
    keeps_row_logits: bool = False
    mask_in_softmax: bool = False
    runner: nn.Module | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.mask_format not in ("4d", "2d"):
            raise ValueError(f"mask_format must be '4d' or '2d', got {self.mask_format!r}")

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
    def network(self) -> nn.Module:
        """The module forwards go through: the engine's wrapper, or the model."""
        return self.model if self.runner is None else self.runner

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def logits(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        positions: slice | torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Scores aligned so that position i scores token i, for every position or a window.

        Args:
            input_ids: ``[B, N]`` token ids (masked positions hold ``mask_token_id``).
            attention_mask: ``[B, N]`` padding mask (1 = real token), or None for no padding.
            positions: a contiguous window ``slice(lo, hi)`` of positions to score (the whole
                sequence is still attended to); None scores all N. Equal to
                ``logits(input_ids, attention_mask)[:, lo:hi]``, without computing the rest
                when the family supports it (``keeps_logits``). Or a ``[B, K]`` integer tensor
                of positions per row (CJ-GRPO's committed tokens, the ELBO's masked ones):
                equal to ``logits(...).gather(1, positions)``; the LM head runs on those
                ``B * K`` positions only where the family supports it (``keeps_row_logits``).

        Returns:
            ``[B, N, V]`` logits in the model's dtype, ``[B, hi - lo, V]`` for a window, or
            ``[B, K, V]`` for per-row positions.
        """
        if isinstance(positions, torch.Tensor):
            return self._row_logits(input_ids, attention_mask, positions)
        n = input_ids.shape[1]
        lo, hi = (0, n) if positions is None else window_bounds(positions, n)
        window = (lo, hi) != (0, n)
        if attention_mask is None or self.mask_format == "2d":
            mask = attention_mask
        else:
            mask = bidirectional_mask(attention_mask)  # [B, 1, N, N]
        kwargs = {}
        if self.mask_positions and attention_mask is not None:
            kwargs["position_ids"] = position_ids_from_mask(attention_mask)  # [B, N]
        if window and self.keeps_logits:
            # Output rows that score positions lo..hi-1 (one to the left under the shift).
            rows = torch.arange(lo, hi, device=input_ids.device)  # [K]
            if self.shift_logits:
                rows = (rows - 1).clamp_(min=0)  # position 0 reuses its own row, as below
            kwargs["logits_to_keep"] = rows
        out = self.network(input_ids=input_ids, attention_mask=mask, **kwargs)
        logits = out.logits if hasattr(out, "logits") else out  # [B, N, V] or [B, K, V]
        if "logits_to_keep" in kwargs:
            return logits  # [B, K, V], already aligned
        if self.shift_logits:
            # Output i predicts token i+1: move every row one step right. Position 0 has no
            # predictor; it is always a prompt token, so it reuses its own row.
            logits = torch.cat([logits[:, :1], logits[:, :-1]], dim=1)  # [B, N, V]
        if window:
            # A copy, so that the caller does not keep the whole [B, N, V] alive through a view.
            logits = logits[:, lo:hi].clone()  # [B, K, V]
        return logits

    def _row_logits(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, positions: torch.Tensor
    ) -> torch.Tensor:
        """``[B, K, V]`` scores of ``positions [B, K]`` (see :meth:`logits`)."""
        b, n = input_ids.shape
        if positions.dim() != 2 or positions.shape[0] != b or positions.is_floating_point():
            raise ValueError(
                f"positions as a tensor must be [B={b}, K] integer positions, got "
                f"{tuple(positions.shape)} {positions.dtype}"
            )
        if positions.numel() == 0:
            raise ValueError("positions is empty: ask for at least one position per row")
        lo, hi = int(positions.min()), int(positions.max()) + 1
        if lo < 0 or hi > n:
            raise ValueError(f"positions must lie in [0, {n}), got values in [{lo}, {hi - 1}]")
        positions = positions.long()
        if not self.keeps_row_logits:
            window = self.logits(input_ids, attention_mask, positions=slice(lo, hi))  # [B, W, V]
            index = (positions - lo).unsqueeze(-1).expand(-1, -1, window.shape[-1])
            return window.gather(1, index)  # [B, K, V]
        mask = None if attention_mask is None else bidirectional_mask(attention_mask)
        kwargs = {}
        if self.mask_positions and attention_mask is not None:
            kwargs["position_ids"] = position_ids_from_mask(attention_mask)  # [B, N]
        rows = (positions - 1).clamp(min=0) if self.shift_logits else positions  # [B, K]
        out = self.network(input_ids=input_ids, attention_mask=mask, logits_to_keep=rows, **kwargs)
        return out.logits if hasattr(out, "logits") else out  # [B, K, V]

    def __call__(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        positions: slice | torch.Tensor | None = None,
    ) -> torch.Tensor:
        return self.logits(input_ids, attention_mask, positions)
