"""Dream: published config/names load locally, logits are realigned by exactly one position."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file
from transformers import AutoConfig, AutoModel

from dllm_rl.models import load_model
from dllm_rl.models.dream import DreamConfig, DreamModel, dream_ids
from dllm_rl.models.tiny import build_tiny_dream

# config.json of Dream-org/Dream-v0-Instruct-7B.
PUBLISHED_CONFIG = {
    "architectures": ["DreamModel"],
    "attention_dropout": 0.0,
    "auto_map": {
        "AutoConfig": "configuration_dream.DreamConfig",
        "AutoModel": "modeling_dream.DreamModel",
    },
    "bos_token_id": 151643,
    "eos_token_id": 151643,
    "hidden_act": "silu",
    "hidden_size": 3584,
    "initializer_range": 0.02,
    "intermediate_size": 18944,
    "mask_token_id": 151666,
    "max_position_embeddings": 131072,
    "max_window_layers": 28,
    "model_type": "Dream",
    "num_attention_heads": 28,
    "num_hidden_layers": 28,
    "num_key_value_heads": 4,
    "pad_token_id": 151643,
    "rms_norm_eps": 1e-06,
    "rope_scaling": None,
    "rope_theta": 1000000.0,
    "sliding_window": 131072,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "transformers_version": "4.46.2",
    "use_cache": True,
    "use_sliding_window": False,
    "vocab_size": 152064,
}
SMALL = {
    "hidden_size": 32,
    "intermediate_size": 48,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "num_hidden_layers": 2,
    "max_window_layers": 2,
    "max_position_embeddings": 64,
    "sliding_window": 64,
    "vocab_size": 96,
    "mask_token_id": 90,
    "bos_token_id": 91,
    "eos_token_id": 91,
    "pad_token_id": 91,
}


def published_shapes(cfg: dict) -> dict[str, tuple[int, ...]]:
    """Qwen2 tensor names and shapes (Dream's safetensors), derived by hand from the config."""
    d, v, inter = cfg["hidden_size"], cfg["vocab_size"], cfg["intermediate_size"]
    kv = cfg["num_key_value_heads"] * d // cfg["num_attention_heads"]
    shapes = {
        "model.embed_tokens.weight": (v, d),
        "model.norm.weight": (d,),
        "lm_head.weight": (v, d),
    }
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        shapes |= {
            p + "input_layernorm.weight": (d,),
            p + "post_attention_layernorm.weight": (d,),
            p + "self_attn.q_proj.weight": (d, d),
            p + "self_attn.q_proj.bias": (d,),
            p + "self_attn.k_proj.weight": (kv, d),
            p + "self_attn.k_proj.bias": (kv,),
            p + "self_attn.v_proj.weight": (kv, d),
            p + "self_attn.v_proj.bias": (kv,),
            p + "self_attn.o_proj.weight": (d, d),
            p + "mlp.gate_proj.weight": (inter, d),
            p + "mlp.up_proj.weight": (inter, d),
            p + "mlp.down_proj.weight": (d, inter),
        }
    return shapes


@pytest.fixture
def published_dir(tmp_path):
    cfg = {**PUBLISHED_CONFIG, **SMALL}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    g = torch.Generator().manual_seed(0)
    sd = {k: torch.randn(s, generator=g) * 0.2 for k, s in published_shapes(cfg).items()}
    save_file(sd, tmp_path / "model.safetensors")
    return tmp_path


def test_parameter_names_and_shapes_are_published_ones():
    model = DreamModel(DreamConfig(**{**PUBLISHED_CONFIG, **SMALL}))
    ours = {k: tuple(t.shape) for k, t in model.state_dict().items()}
    assert ours == published_shapes({**PUBLISHED_CONFIG, **SMALL})


def test_published_checkpoint_loads_without_remote_code(published_dir):
    assert type(AutoConfig.from_pretrained(published_dir)) is DreamConfig
    model, info = AutoModel.from_pretrained(
        published_dir, dtype=torch.float32, output_loading_info=True
    )
    assert type(model) is DreamModel
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert model.config.use_cache is False  # forced off for a bidirectional model
    lm = load_model(published_dir, dtype="float32")
    assert lm.family == "dream" and lm.shift_logits and lm.mask_positions
    assert (lm.mask_token_id, lm.eos_token_id, lm.pad_token_id) == (90, 91, 91)


def test_published_ids():
    ids = dream_ids(DreamConfig(**PUBLISHED_CONFIG))
    assert (ids.mask, ids.eos, ids.pad, ids.eot) == (151666, 151643, 151643, 151645)


@pytest.mark.parametrize("backend", ["sdpa", "eager"])
@torch.no_grad()
def test_shift_is_undone_by_exactly_one_position(backend):
    """adapter[:, i] == raw[:, i - 1] for i >= 1; position 0 keeps its own row."""
    lm = build_tiny_dream(0, attn_implementation=backend)
    ids = torch.randint(10, 100, (2, 9), generator=torch.Generator().manual_seed(0))
    raw = lm.model(input_ids=ids).logits  # [2, 9, V]
    out = lm.logits(ids)
    assert torch.equal(out[:, 1:], raw[:, :-1])
    assert torch.equal(out[:, 0], raw[:, 0])
    assert not torch.equal(out[:, 1:], raw[:, 1:])  # the shift is not a no-op


def test_no_kv_cache():
    lm = build_tiny_dream(0)
    with pytest.raises(ValueError, match="use_cache"):
        lm.model(input_ids=torch.tensor([[5, 6]]), use_cache=True)


def test_unsupported_backend_is_refused():
    lm = build_tiny_dream(0)
    lm.model.config._attn_implementation = "flex_attention"
    with pytest.raises(ValueError, match="attn_implementation"):
        lm.logits(torch.tensor([[5, 6]]))
