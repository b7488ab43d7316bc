"""LLaDA (GSAI-ML/LLaDA-8B-Base, -Instruct, LLaDA-1.5): our own implementation.

The published checkpoints ship remote code written for transformers 4.x (it breaks on 5.x:
``use_cache`` plumbing, the old checkpointing API, hard-coded cuda). This module re-implements the
same network with the same parameter names, so published ``model.safetensors`` shards load
unchanged and ``from_pretrained`` works without ``trust_remote_code``.

Architecture (the published ``block_type="llama"``): token embedding ``wte``; per block
``x + attn_out(attn(attn_norm(x)))`` then ``x + ff_out(act(ff_proj(h)) * up_proj(h))`` with
``h = ff_norm(x)``; final RMSNorm ``ln_f``; output head ``ff_out`` (or ``wte`` when
``weight_tying``). Attention is bidirectional (no causal mask), with RoPE applied in float32 and
grouped-query attention when ``n_kv_heads < n_heads``.

Published parameter names (checked against the checkpoint's ``model.safetensors.index.json``):
``model.transformer.wte.weight``, ``model.transformer.blocks.{i}.{attn_norm,ff_norm}.weight``,
``model.transformer.blocks.{i}.{q_proj,k_proj,v_proj,attn_out,ff_proj,up_proj,ff_out}.weight``,
``model.transformer.ln_f.weight``, ``model.transformer.ff_out.weight``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import MaskedLMOutput

from dllm_rl.models.adapter import (
    DiffusionLM,
    SpecialIds,
    additive_mask,
    as_4d_mask,
    tokenizer_token_id,
)

# Published special ids (tokenizer of GSAI-ML/LLaDA-8B-*).
LLADA_MASK_ID = 126336  # <|mdm_mask|>
LLADA_EOS_ID = 126081  # <|endoftext|>, also the pad id
LLADA_EOT_ID = 126348  # <|eot_id|>

_ACTIVATIONS = {"silu": F.silu, "gelu": F.gelu, "relu": F.relu}
_ATTN_BACKENDS = ("sdpa", "eager")


class LLaDAConfig(PretrainedConfig):
    """Configuration in the published LLaDA ``config.json`` format.

    Defaults are those of LLaDA-8B-Instruct. Every published field is accepted (unused training
    fields such as ``init_fn`` or ``precision`` are stored and saved back unchanged); options the
    published checkpoints never use and this implementation does not support (ALiBi, QK layer
    norm, non-llama blocks, non-RMS norms, norm biases, block groups, input embedding norm) are
    rejected with an error.
    """

    model_type = "llada"
    attribute_map = {
        "hidden_size": "d_model",
        "num_attention_heads": "n_heads",
        "num_hidden_layers": "n_layers",
        "num_key_value_heads": "n_kv_heads",
        "max_position_embeddings": "max_sequence_length",
    }

    def __init__(
        self,
        d_model: int = 4096,
        n_heads: int = 32,
        n_kv_heads: int | None = None,
        n_layers: int = 32,
        mlp_ratio: int = 4,
        mlp_hidden_size: int | None = 12288,
        activation_type: str = "silu",
        block_type: str = "llama",
        rope: bool = True,
        rope_theta: float = 500000.0,
        rope_full_precision: bool = True,
        alibi: bool = False,
        attention_layer_norm: bool = False,
        layer_norm_type: str = "rms",
        layer_norm_with_affine: bool = True,
        bias_for_layer_norm: bool | None = False,
        rms_norm_eps: float = 1e-5,
        include_bias: bool = False,
        include_qkv_bias: bool | None = False,
        input_emb_norm: bool = False,
        scale_logits: bool = False,
        attention_dropout: float = 0.0,
        residual_dropout: float = 0.0,
        embedding_dropout: float = 0.0,
        multi_query_attention: bool | None = None,
        max_sequence_length: int = 4096,
        vocab_size: int = 126464,
        embedding_size: int | None = 126464,
        weight_tying: bool = False,
        init_std: float = 0.02,
        mask_token_id: int = LLADA_MASK_ID,
        eos_token_id: int = LLADA_EOS_ID,
        pad_token_id: int = LLADA_EOS_ID,
        use_cache: bool = False,
        **kwargs,
    ):
        if n_kv_heads is None:
            n_kv_heads = 1 if multi_query_attention else n_heads
        self.d_model = d_model
        self.n_heads = n_heads
        self.n_kv_heads = n_kv_heads
        self.n_layers = n_layers
        self.mlp_ratio = mlp_ratio
        self.mlp_hidden_size = mlp_hidden_size
        self.activation_type = str(activation_type)
        self.block_type = str(block_type)
        self.rope = rope
        self.rope_theta = float(rope_theta)
        self.rope_full_precision = rope_full_precision
        self.alibi = alibi
        self.attention_layer_norm = attention_layer_norm
        self.layer_norm_type = str(layer_norm_type)
        self.layer_norm_with_affine = layer_norm_with_affine
        self.bias_for_layer_norm = bias_for_layer_norm
        self.rms_norm_eps = rms_norm_eps
        self.include_bias = include_bias
        self.include_qkv_bias = include_qkv_bias
        self.input_emb_norm = input_emb_norm
        self.scale_logits = scale_logits
        self.attention_dropout = attention_dropout
        self.residual_dropout = residual_dropout
        self.embedding_dropout = embedding_dropout
        self.multi_query_attention = multi_query_attention
        self.max_sequence_length = max_sequence_length
        self.vocab_size = vocab_size
        self.embedding_size = embedding_size
        self.weight_tying = weight_tying
        self.init_std = init_std
        self.mask_token_id = mask_token_id
        self.use_cache = use_cache
        # LLaDA ties through `weight_tying` (no ff_out module); transformers must never tie.
        kwargs["tie_word_embeddings"] = False
        super().__init__(eos_token_id=eos_token_id, pad_token_id=pad_token_id, **kwargs)
        self.check_supported()

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def ffn_hidden_size(self) -> int:
        """Width of ff_proj / up_proj: ``mlp_hidden_size``, else ``mlp_ratio * d_model``."""
        return self.mlp_hidden_size or self.mlp_ratio * self.d_model

    @property
    def num_embeddings(self) -> int:
        """Rows of ``wte`` and of the output head (``embedding_size`` pads ``vocab_size``)."""
        return self.embedding_size or self.vocab_size

    def check_supported(self) -> None:
        """Raise on options the published checkpoints do not use and this code does not run."""
        problems = []
        if self.block_type != "llama":
            problems.append(f"block_type={self.block_type!r} (only 'llama' is implemented)")
        if self.alibi or not self.rope:
            problems.append("position encoding other than RoPE (need rope=true, alibi=false)")
        if self.attention_layer_norm:
            problems.append("attention_layer_norm=true (QK norm)")
        if self.layer_norm_type != "rms":
            problems.append(f"layer_norm_type={self.layer_norm_type!r} (only 'rms')")
        if self.input_emb_norm:
            problems.append("input_emb_norm=true")
        # Both of these would load with a warning only, leaving some weights random or unused.
        if getattr(self, "block_group_size", 1) != 1:
            problems.append(
                f"block_group_size={self.block_group_size} (weights under transformer.block_groups; "
                "only 1 is implemented)"
            )
        norm_bias = (
            self.include_bias if self.bias_for_layer_norm is None else self.bias_for_layer_norm
        )
        if self.layer_norm_with_affine and norm_bias:
            problems.append(
                "layer-norm biases (bias_for_layer_norm, or include_bias when it is null)"
            )
        if self.activation_type not in _ACTIVATIONS:
            problems.append(
                f"activation_type={self.activation_type!r} (expected one of {sorted(_ACTIVATIONS)})"
            )
        if self.d_model % self.n_heads or self.n_heads % self.n_kv_heads:
            problems.append(
                f"d_model={self.d_model}, n_heads={self.n_heads}, n_kv_heads={self.n_kv_heads}: "
                "need d_model % n_heads == 0 and n_heads % n_kv_heads == 0"
            )
        if problems:
            raise ValueError("Unsupported LLaDA config: " + "; ".join(problems))


class LLaDARMSNorm(nn.Module):
    """RMSNorm computed in float32, cast back before the affine weight (as published)."""

    def __init__(self, dim: int, eps: float, affine: bool = True):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim)) if affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x32 = x.to(_at_least_fp32(dtype))
        x = (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)).to(dtype)
        return x if self.weight is None else self.weight * x


def _at_least_fp32(dtype: torch.dtype) -> torch.dtype:
    """float32 for half types, float64 stays float64 (norms and RoPE run at full precision)."""
    return torch.promote_types(dtype, torch.float32)


def rotary_cos_sin(
    positions: torch.Tensor, head_dim: int, theta: float, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor]:
    """RoPE tables (halves repeated: the rotate-half layout of the published code).

    Args:
        positions: ``[N]`` or ``[B, N]`` integer positions.
        dtype: float32, or float64 for a float64 model.

    Returns:
        cos, sin: ``[N, D]``, or ``[B, 1, N, D]`` for per-row positions.
    """
    inv_freq = 1.0 / theta ** (
        torch.arange(0, head_dim, 2, device=positions.device, dtype=dtype) / head_dim
    )  # [D/2]
    freqs = positions.to(dtype)[..., None] * inv_freq  # [..., N, D/2]
    emb = torch.cat([freqs, freqs], dim=-1)  # [..., N, D]
    if emb.dim() == 3:
        emb = emb[:, None]  # [B, 1, N, D]
    return emb.cos(), emb.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x [B, H, N, D]`` in (at least) float32 and return it in its own dtype."""
    x32 = x.to(_at_least_fp32(x.dtype))
    x1, x2 = x32.chunk(2, dim=-1)
    rotated = torch.cat([-x2, x1], dim=-1)
    return (x32 * cos + rotated * sin).to(x.dtype)


def keep_positions(x: torch.Tensor, logits_to_keep: int | torch.Tensor | None) -> torch.Tensor:
    """The positions of ``x [B, N, d]`` to score: ``[B, K, d]`` (``logits_to_keep`` as in
    transformers: an int n keeps the last n, 0 or None keeps all, a ``[K]`` tensor indexes the
    same positions in every row; beyond transformers, a ``[B, K]`` tensor indexes per row)."""
    if logits_to_keep is None:
        return x
    if isinstance(logits_to_keep, int):
        return x[:, -logits_to_keep:] if logits_to_keep else x
    if logits_to_keep.dim() == 2:
        index = logits_to_keep.unsqueeze(-1).expand(-1, -1, x.shape[-1])  # [B, K, d]
        return x.gather(1, index)
    if logits_to_keep.dim() != 1:
        raise ValueError(
            f"logits_to_keep must be an int, a [K] or a [B, K] index tensor, got shape "
            f"{tuple(logits_to_keep.shape)}"
        )
    return x[:, logits_to_keep]


class LLaDABlock(GradientCheckpointingLayer):
    """One pre-norm LLaMA-style block under the published names."""

    def __init__(self, config: LLaDAConfig):
        super().__init__()
        self.config = config
        d, hd = config.d_model, config.head_dim
        qkv_bias = bool(config.include_bias or config.include_qkv_bias)
        norm_kw = {"eps": config.rms_norm_eps, "affine": config.layer_norm_with_affine}
        self.attn_norm = LLaDARMSNorm(d, **norm_kw)
        self.ff_norm = LLaDARMSNorm(d, **norm_kw)
        self.q_proj = nn.Linear(d, config.n_heads * hd, bias=qkv_bias)
        self.k_proj = nn.Linear(d, config.n_kv_heads * hd, bias=qkv_bias)
        self.v_proj = nn.Linear(d, config.n_kv_heads * hd, bias=qkv_bias)
        self.attn_out = nn.Linear(d, d, bias=config.include_bias)
        h = config.ffn_hidden_size
        self.ff_proj = nn.Linear(d, h, bias=config.include_bias)  # gate (activated)
        self.up_proj = nn.Linear(d, h, bias=config.include_bias)
        self.ff_out = nn.Linear(h, d, bias=config.include_bias)
        self.act = _ACTIVATIONS[config.activation_type]

    def attention(
        self, x: torch.Tensor, mask: torch.Tensor | None, cos: torch.Tensor, sin: torch.Tensor
    ) -> torch.Tensor:
        cfg = self.config
        b, n, _ = x.shape
        hd = cfg.head_dim
        q = self.q_proj(x).view(b, n, cfg.n_heads, hd).transpose(1, 2)  # [B, H, N, D]
        k = self.k_proj(x).view(b, n, cfg.n_kv_heads, hd).transpose(1, 2)  # [B, Hkv, N, D]
        v = self.v_proj(x).view(b, n, cfg.n_kv_heads, hd).transpose(1, 2)  # [B, Hkv, N, D]
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if cfg.n_kv_heads != cfg.n_heads:
            rep = cfg.n_heads // cfg.n_kv_heads
            k = k.repeat_interleave(rep, dim=1)  # [B, H, N, D]
            v = v.repeat_interleave(rep, dim=1)
        dropout = cfg.attention_dropout if self.training else 0.0
        backend = cfg._attn_implementation or "sdpa"
        if backend == "sdpa":
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
        elif backend == "eager":
            scores = q @ k.transpose(-1, -2) / math.sqrt(hd)  # [B, H, N, N]
            bias = additive_mask(mask, scores.dtype)
            if bias is not None:
                scores = scores + bias
            probs = scores.to(_at_least_fp32(scores.dtype)).softmax(-1).to(q.dtype)
            probs = F.dropout(probs, dropout, self.training)
            out = probs @ v
        else:
            raise ValueError(
                f"LLaDA supports attn_implementation in {_ATTN_BACKENDS}, got {backend!r}"
            )
        out = out.transpose(1, 2).reshape(b, n, cfg.n_heads * hd)  # [B, N, d]
        return self.attn_out(out)

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        cos: torch.Tensor | None = None,
        sin: torch.Tensor | None = None,
    ) -> torch.Tensor:
        p = self.config.residual_dropout if self.training else 0.0
        x = x + F.dropout(self.attention(self.attn_norm(x), mask, cos, sin), p, self.training)
        h = self.ff_norm(x)
        h = self.ff_out(self.act(self.ff_proj(h)) * self.up_proj(h))
        return x + F.dropout(h, p, self.training)


class LLaDAModel(nn.Module):
    """Holds ``transformer`` (a ModuleDict, so the names read ``model.transformer.*``)."""

    def __init__(self, config: LLaDAConfig):
        super().__init__()
        self.config = config
        modules = {
            "wte": nn.Embedding(config.num_embeddings, config.d_model),
            "blocks": nn.ModuleList(LLaDABlock(config) for _ in range(config.n_layers)),
            "ln_f": LLaDARMSNorm(
                config.d_model, config.rms_norm_eps, config.layer_norm_with_affine
            ),
        }
        if not config.weight_tying:
            modules["ff_out"] = nn.Linear(
                config.d_model, config.num_embeddings, bias=config.include_bias
            )
        self.transformer = nn.ModuleDict(modules)


class LLaDAModelLM(PreTrainedModel):
    """LLaDA mask predictor: ``forward(input_ids, attention_mask).logits`` is ``[B, N, V]``.

    Position i of the output scores token i (no shift). ``attention_mask`` may be ``[B, N]``
    padding (1 = real token) or an explicit 4D mask; attention is never causal.
    """

    config_class = LLaDAConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["LLaDABlock"]
    _supports_sdpa = True
    _supports_flash_attn = False
    _supports_flex_attn = False
    _supports_attention_backend = False

    def __init__(self, config: LLaDAConfig):
        super().__init__(config)
        self.model = LLaDAModel(config)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.init_std
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, LLaDARMSNorm) and module.weight is not None:
            nn.init.ones_(module.weight)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.transformer.wte

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.transformer.wte = value

    def get_output_embeddings(self) -> nn.Linear | None:
        return None if self.config.weight_tying else self.model.transformer.ff_out

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        logits_to_keep: int | torch.Tensor | None = None,
        **kwargs,
    ) -> MaskedLMOutput:
        """Args:
            input_ids: ``[B, N]``.
            attention_mask: ``[B, N]`` padding mask or ``[B, 1, N, N]`` (bool True = attend).
            inputs_embeds: ``[B, N, d]`` instead of ``input_ids``.
            position_ids: ``[B, N]`` RoPE positions; default ``0..N-1`` (as published).
            output_hidden_states: also return the input of every block and the final state.
            logits_to_keep: as in transformers' causal LMs: a ``[K]`` index tensor of positions,
                or an int n for the last n (0 or None: all); or a ``[B, K]`` tensor of
                positions per row. The final norm and the output
                head run on those positions only; attention still covers all N.

        Returns:
            MaskedLMOutput with ``logits [B, N, V]`` (or ``[B, K, V]``; float in the model dtype).
        """
        if kwargs.get("past_key_values") is not None or kwargs.get("use_cache"):
            raise ValueError("LLaDA is bidirectional: there is no KV cache (use_cache must be off)")
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        t = self.model.transformer
        x = t.wte(input_ids) if inputs_embeds is None else inputs_embeds  # [B, N, d]
        x = F.dropout(x, self.config.embedding_dropout, self.training)
        n = x.shape[1]
        mask = as_4d_mask(attention_mask, n)
        if position_ids is None:
            position_ids = torch.arange(n, device=x.device)  # [N]
        cos, sin = rotary_cos_sin(
            position_ids, self.config.head_dim, self.config.rope_theta, _at_least_fp32(x.dtype)
        )
        hidden = [] if output_hidden_states else None
        for block in t.blocks:
            if hidden is not None:
                hidden.append(x)
            x = block(x, mask, cos, sin)
        if hidden is None:
            x = keep_positions(x, logits_to_keep)  # [B, K, d]: norm and head where scored only
        x = t.ln_f(x)
        if hidden is not None:
            hidden.append(x)  # the final state of every position
            x = keep_positions(x, logits_to_keep)  # [B, K, d]
        if self.config.weight_tying:
            logits = F.linear(x, t.wte.weight)  # [B, K, V]
        else:
            # Called as a module, not through its .weight: LoRA on ff_out, ZeRO-3 gathering,
            # offload and quantization hooks all act in the module's forward.
            logits = t.ff_out(x)  # [B, K, V]
        if self.config.scale_logits:
            logits = logits / math.sqrt(self.config.d_model)
        return MaskedLMOutput(logits=logits, hidden_states=tuple(hidden) if hidden else None)


def register_llada() -> None:
    """Make ``AutoConfig``/``AutoModel*`` resolve ``model_type="llada"`` to these classes.

    With the type known locally, transformers uses our classes for published configs and ignores
    their ``auto_map`` (remote code) unless ``trust_remote_code=True`` is passed explicitly.
    """
    from transformers import (
        AutoConfig,
        AutoModel,
        AutoModelForCausalLM,
        AutoModelForMaskedLM,
    )

    AutoConfig.register("llada", LLaDAConfig, exist_ok=True)
    for auto in (AutoModel, AutoModelForCausalLM, AutoModelForMaskedLM):
        auto.register(LLaDAConfig, LLaDAModelLM, exist_ok=True)


def llada_ids(config: LLaDAConfig, tokenizer: object | None = None) -> SpecialIds:
    """Special ids of a LLaDA checkpoint: mask/eos/pad from the config, EOT from the tokenizer.

    The published tokenizer has ``<|eot_id|>`` = 126348; a config whose vocabulary is too small
    for that id (a tiny test model without tokenizer) has no EOT.
    """
    eot = None
    if tokenizer is not None:
        eot = tokenizer_token_id(tokenizer, "<|eot_id|>")
    elif config.num_embeddings > LLADA_EOT_ID:
        eot = LLADA_EOT_ID
    pad = config.pad_token_id if config.pad_token_id is not None else config.eos_token_id
    return SpecialIds(mask=config.mask_token_id, eos=config.eos_token_id, pad=pad, eot=eot)


def llada_adapter(model: LLaDAModelLM, tokenizer: object | None = None) -> DiffusionLM:
    """Wrap a :class:`LLaDAModelLM` (output i scores token i: no shift)."""
    return DiffusionLM(
        model=model,
        ids=llada_ids(model.config, tokenizer),
        shift_logits=False,
        family="llada",
        tokenizer=tokenizer,
        keeps_logits=True,
        keeps_row_logits=True,
    )


register_llada()
