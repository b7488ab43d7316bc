"""Dream (Dream-org/Dream-v0-Base-7B, -Instruct-7B): Qwen2 weights run bidirectionally.

Dream is Qwen2.5-7B continued as a masked diffusion model: same parameters and names as
``Qwen2ForCausalLM`` (``model.embed_tokens``, ``model.layers.{i}.self_attn.{q,k,v,o}_proj``,
``model.layers.{i}.mlp.{gate,up,down}_proj``, ``model.norm``, ``lm_head``), a published config
with ``model_type="Dream"`` and remote code that breaks on transformers 5. Two things differ from
the autoregressive model:

* attention is bidirectional. transformers' ``is_causal`` switches fall back to causal attention
  when a 2D padding mask is passed or the eager backend runs, so :class:`DreamModel` always hands
  the Qwen2 stack an explicit 4D mask (all-True when there is no padding) and marks every
  attention module non-causal as a second guard;
* the output at position i predicts token i+1 (inherited from the AR initialisation). The model
  returns raw outputs; :class:`~dllm_rl.models.adapter.DiffusionLM` with ``shift_logits=True``
  realigns them.
"""

from __future__ import annotations

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from dllm_rl.models.adapter import (
    DiffusionLM,
    SpecialIds,
    additive_mask,
    as_4d_mask,
    tokenizer_token_id,
)

# Published special ids (Qwen2 tokenizer + Dream's mask token).
DREAM_MASK_ID = 151666  # <|mask|>
DREAM_EOS_ID = 151643  # <|endoftext|>: EOS, BOS and pad in the published config
DREAM_EOT_ID = 151645  # <|im_end|>: end of a chat turn

_ATTN_BACKENDS = ("sdpa", "eager")


class DreamConfig(Qwen2Config):
    """Qwen2 config under the published ``model_type="Dream"``, plus ``mask_token_id``."""

    model_type = "Dream"

    def __init__(
        self,
        mask_token_id: int = DREAM_MASK_ID,
        pad_token_id: int | None = DREAM_EOS_ID,
        bos_token_id: int | None = DREAM_EOS_ID,
        eos_token_id: int | None = DREAM_EOS_ID,
        **kwargs,
    ):
        self.mask_token_id = mask_token_id
        kwargs["use_cache"] = False  # no KV cache for a bidirectional model
        super().__init__(
            pad_token_id=pad_token_id,
            bos_token_id=bos_token_id,
            eos_token_id=eos_token_id,
            **kwargs,
        )


class DreamModel(Qwen2ForCausalLM):
    """Bidirectional Qwen2 (published architecture name ``DreamModel``).

    ``forward(input_ids, attention_mask)`` accepts None, a ``[B, N]`` padding mask or an explicit
    4D mask and always runs without causal masking. ``logits[:, i]`` predicts token i+1.
    """

    config_class = DreamConfig
    _supports_flash_attn = False
    _supports_flex_attn = False
    _supports_attention_backend = False

    def __init__(self, config: DreamConfig):
        super().__init__(config)
        for layer in self.model.layers:
            layer.self_attn.is_causal = False

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        **kwargs,
    ):
        """Args:
            input_ids: ``[B, N]``.
            attention_mask: None, ``[B, N]`` padding (1 = real) or ``[B, 1, N, N]`` (True = attend).

        Returns:
            ``CausalLMOutputWithPast`` whose ``logits [B, N, V]`` are unshifted (i predicts i+1).
        """
        if kwargs.get("past_key_values") is not None or kwargs.get("use_cache"):
            raise ValueError("Dream is bidirectional: there is no KV cache (use_cache must be off)")
        kwargs["use_cache"] = False
        ref = input_ids if input_ids is not None else inputs_embeds
        b, n = ref.shape[0], ref.shape[1]
        mask = as_4d_mask(attention_mask, n)
        if mask is None:
            # An explicit all-True mask: with no mask, SDPA/eager paths may default to causal.
            mask = torch.ones(b, 1, n, n, dtype=torch.bool, device=ref.device)
        backend = self.config._attn_implementation or "sdpa"
        if backend == "eager":
            mask = additive_mask(mask, self.dtype)  # eager adds the mask to the scores
        elif backend != "sdpa":
            raise ValueError(
                f"Dream supports attn_implementation in {_ATTN_BACKENDS}, got {backend!r}"
            )
        return super().forward(
            input_ids=input_ids, attention_mask=mask, inputs_embeds=inputs_embeds, **kwargs
        )


def dream_ids(config: DreamConfig, tokenizer: object | None = None) -> SpecialIds:
    """Mask/EOS/pad from the config; EOT from ``config.eot_token_id`` when set (our tiny
    models), else ``<|im_end|>`` of the tokenizer, else the published id if the vocab has it.
    """
    eot = getattr(config, "eot_token_id", None)
    if eot is None and tokenizer is not None:
        eot = tokenizer_token_id(tokenizer, "<|im_end|>")
    elif eot is None and config.vocab_size > DREAM_EOT_ID:
        eot = DREAM_EOT_ID
    eos = config.eos_token_id[0] if isinstance(config.eos_token_id, list) else config.eos_token_id
    pad = config.pad_token_id if config.pad_token_id is not None else eos
    return SpecialIds(mask=config.mask_token_id, eos=eos, pad=pad, eot=eot)


def dream_adapter(model: DreamModel, tokenizer: object | None = None) -> DiffusionLM:
    """Wrap a :class:`DreamModel`; ``shift_logits=True`` undoes its one-position shift."""
    return DiffusionLM(
        model=model,
        ids=dream_ids(model.config, tokenizer),
        shift_logits=True,
        family="dream",
        tokenizer=tokenizer,
        mask_positions=True,
        keeps_logits=True,  # Qwen2ForCausalLM's logits_to_keep
    )


def register_dream() -> None:
    """Resolve ``model_type="Dream"`` to these classes locally (no remote code needed)."""
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    AutoConfig.register("Dream", DreamConfig, exist_ok=True)
    for auto in (AutoModel, AutoModelForCausalLM):
        auto.register(DreamConfig, DreamModel, exist_ok=True)


register_dream()
