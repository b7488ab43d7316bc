"""Our LLaDA against the published checkpoint format and an independent reference forward."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForMaskedLM

from dllm_rl.models import load_model
from dllm_rl.models.llada import LLaDAConfig, LLaDAModelLM, llada_ids
from dllm_rl.models.tiny import build_tiny_llada, tiny_llada_config

# config.json of GSAI-ML/LLaDA-8B-Instruct (LLaDA-8B-Base and LLaDA-1.5 share the format).
PUBLISHED_CONFIG = {
    "activation_type": "silu",
    "alibi": False,
    "alibi_bias_max": 8.0,
    "architectures": ["LLaDAModelLM"],
    "attention_dropout": 0.0,
    "attention_layer_norm": False,
    "attention_layer_norm_with_affine": True,
    "auto_map": {
        "AutoConfig": "configuration_llada.LLaDAConfig",
        "AutoModelForCausalLM": "modeling_llada.LLaDAModelLM",
        "AutoModel": "modeling_llada.LLaDAModelLM",
    },
    "bias_for_layer_norm": False,
    "block_group_size": 1,
    "block_type": "llama",
    "d_model": 4096,
    "embedding_dropout": 0.0,
    "embedding_size": 126464,
    "eos_token_id": 126081,
    "flash_attention": False,
    "include_bias": False,
    "include_qkv_bias": False,
    "init_cutoff_factor": None,
    "init_device": "meta",
    "init_fn": "mitchell",
    "init_std": 0.02,
    "input_emb_norm": False,
    "layer_norm_type": "rms",
    "layer_norm_with_affine": True,
    "mask_token_id": 126336,
    "max_sequence_length": 4096,
    "mlp_hidden_size": 12288,
    "mlp_ratio": 4,
    "model_type": "llada",
    "multi_query_attention": None,
    "n_heads": 32,
    "n_kv_heads": 32,
    "n_layers": 32,
    "pad_token_id": 126081,
    "precision": "amp_bf16",
    "residual_dropout": 0.0,
    "rms_norm_eps": 1e-05,
    "rope": True,
    "rope_full_precision": True,
    "rope_theta": 500000.0,
    "scale_logits": False,
    "torch_dtype": "bfloat16",
    "transformers_version": "4.46.3",
    "use_cache": False,
    "vocab_size": 126464,
    "weight_tying": False,
}
SMALL = {
    "d_model": 32,
    "n_heads": 4,
    "n_kv_heads": 4,
    "n_layers": 2,
    "mlp_hidden_size": 48,
    "vocab_size": 96,
    "embedding_size": 128,  # padded past vocab_size, as published configs may do
    "max_sequence_length": 64,
    "mask_token_id": 90,
    "eos_token_id": 91,
    "pad_token_id": 91,
}


def published_names(n_layers: int) -> set[str]:
    """Tensor names of the published model.safetensors.index.json (weight_tying=False)."""
    names = {
        "model.transformer.wte.weight",
        "model.transformer.ln_f.weight",
        "model.transformer.ff_out.weight",
    }
    for i in range(n_layers):
        for part in (
            "attn_norm", "ff_norm", "q_proj", "k_proj", "v_proj",
            "attn_out", "ff_proj", "up_proj", "ff_out",
        ):  # fmt: skip
            names.add(f"model.transformer.blocks.{i}.{part}.weight")
    return names


def published_state_dict(cfg: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors under the published names, shapes derived by hand from the config."""
    g = torch.Generator().manual_seed(seed)
    d, v, h = cfg["d_model"], cfg["embedding_size"], cfg["mlp_hidden_size"]
    kv = cfg["n_kv_heads"] * d // cfg["n_heads"]
    shapes = {"wte": (v, d), "ln_f": (d,), "ff_out": (v, d)}
    sd = {
        f"model.transformer.{k}.weight": torch.randn(s, generator=g) * 0.2
        for k, s in shapes.items()
    }
    block = {
        "attn_norm": (d,), "ff_norm": (d,), "q_proj": (d, d), "k_proj": (kv, d),
        "v_proj": (kv, d), "attn_out": (d, d), "ff_proj": (h, d), "up_proj": (h, d),
        "ff_out": (d, h),
    }  # fmt: skip
    for i in range(cfg["n_layers"]):
        for k, s in block.items():
            t = torch.randn(s, generator=g) * 0.2
            sd[f"model.transformer.blocks.{i}.{k}.weight"] = t + 1 if len(s) == 1 else t
    return sd


@pytest.fixture
def published_dir(tmp_path):
    """A directory laid out like the hub checkpoint (small sizes; no remote .py files)."""
    cfg = {**PUBLISHED_CONFIG, **SMALL}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    save_file(published_state_dict(cfg), tmp_path / "model.safetensors")
    return tmp_path


def test_published_names_are_our_parameter_names():
    model = LLaDAModelLM(LLaDAConfig(**{**PUBLISHED_CONFIG, **SMALL}))
    assert set(model.state_dict()) == published_names(SMALL["n_layers"])
    sd = published_state_dict({**PUBLISHED_CONFIG, **SMALL})
    result = model.load_state_dict(sd, strict=True)
    assert not result.missing_keys and not result.unexpected_keys


@pytest.mark.parametrize("auto", [AutoModel, AutoModelForCausalLM, AutoModelForMaskedLM])
def test_published_checkpoint_loads_without_remote_code(published_dir, auto):
    """The auto_map names remote files that do not exist: our local class must be used."""
    config = AutoConfig.from_pretrained(published_dir)
    assert type(config) is LLaDAConfig
    model, info = auto.from_pretrained(published_dir, dtype=torch.float32, output_loading_info=True)
    assert type(model) is LLaDAModelLM
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert not info["mismatched_keys"]
    sd = published_state_dict({**PUBLISHED_CONFIG, **SMALL})
    name = "model.transformer.blocks.1.k_proj.weight"
    assert torch.equal(model.state_dict()[name], sd[name])


def test_load_model_on_published_dir(published_dir):
    lm = load_model(published_dir, dtype="float32")
    assert lm.family == "llada" and not lm.shift_logits
    assert (lm.mask_token_id, lm.eos_token_id, lm.pad_token_id) == (90, 91, 91)
    assert lm.tokenizer is None  # weights-only directory
    logits = lm.logits(torch.tensor([[1, 2, 90, 90]]))
    assert logits.shape == (1, 4, 128)  # rows = embedding_size


def test_published_ids_and_fields():
    config = LLaDAConfig(**PUBLISHED_CONFIG)
    ids = llada_ids(config)
    assert (ids.mask, ids.eos, ids.pad, ids.eot) == (126336, 126081, 126081, 126348)
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (
        4096,
        32,
        32,
    )
    assert config.ffn_hidden_size == 12288 and config.head_dim == 128
    assert config.init_fn == "mitchell"  # training-only fields are kept for the round trip


def reference_logits(sd: dict[str, torch.Tensor], cfg: dict, ids: torch.Tensor) -> torch.Tensor:
    """LLaDA forward written out from the equations, independently of llada.py.

    RoPE rotates the pairs (j, j + D/2) by angle pos * theta^(-2j/D).
    """
    d, nh, nkv = cfg["d_model"], cfg["n_heads"], cfg["n_kv_heads"]
    hd, eps = d // nh, cfg["rms_norm_eps"]

    def rms(x, w):
        return w * x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps)

    def rope(t):  # [B, H, N, hd]
        n = t.shape[2]
        ang = torch.arange(n, dtype=t.dtype)[:, None] * cfg["rope_theta"] ** (
            -torch.arange(0, hd, 2, dtype=t.dtype) / hd
        )
        a, b = t[..., : hd // 2], t[..., hd // 2 :]
        return torch.cat([a * ang.cos() - b * ang.sin(), b * ang.cos() + a * ang.sin()], -1)

    p = "model.transformer."
    x = sd[p + "wte.weight"][ids]
    bsz, n = ids.shape
    for i in range(cfg["n_layers"]):
        w = {
            k[len(f"{p}blocks.{i}.") :]: t for k, t in sd.items() if k.startswith(f"{p}blocks.{i}.")
        }
        h = rms(x, w["attn_norm.weight"])
        q = (h @ w["q_proj.weight"].T).view(bsz, n, nh, hd).transpose(1, 2)
        k = (h @ w["k_proj.weight"].T).view(bsz, n, nkv, hd).transpose(1, 2)
        v = (h @ w["v_proj.weight"].T).view(bsz, n, nkv, hd).transpose(1, 2)
        group = [j // (nh // nkv) for j in range(nh)]  # query head j uses kv head j // group
        k, v = rope(k)[:, group], v[:, group]
        att = torch.softmax(rope(q) @ k.transpose(-1, -2) / math.sqrt(hd), -1) @ v
        x = x + att.transpose(1, 2).reshape(bsz, n, d) @ w["attn_out.weight"].T
        h = rms(x, w["ff_norm.weight"])
        x = (
            x
            + (F.silu(h @ w["ff_proj.weight"].T) * (h @ w["up_proj.weight"].T))
            @ w["ff_out.weight"].T
        )
    head = sd[p + "wte.weight"] if cfg.get("weight_tying") else sd[p + "ff_out.weight"]
    return rms(x, sd[p + "ln_f.weight"]) @ head.T


@pytest.mark.parametrize("n_kv_heads", [4, 2, 1])
@pytest.mark.parametrize("backend", ["sdpa", "eager"])
def test_matches_reference_forward(n_kv_heads, backend):
    cfg = {**PUBLISHED_CONFIG, **SMALL, "n_kv_heads": n_kv_heads, "rope_theta": 100.0}
    sd = {k: t.double() for k, t in published_state_dict(cfg, seed=n_kv_heads).items()}
    model = LLaDAModelLM(LLaDAConfig(**cfg, attn_implementation=backend)).double().eval()
    model.load_state_dict(sd, strict=True)
    ids = torch.randint(0, 96, (2, 11), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = model(input_ids=ids).logits
    torch.testing.assert_close(ours, reference_logits(sd, cfg, ids), atol=1e-10, rtol=1e-10)


def test_weight_tying_uses_the_embedding_as_head():
    cfg = {**PUBLISHED_CONFIG, **SMALL, "weight_tying": True}
    model = LLaDAModelLM(LLaDAConfig(**cfg)).double().eval()
    names = published_names(SMALL["n_layers"]) - {"model.transformer.ff_out.weight"}
    assert set(model.state_dict()) == names
    sd = {k: t.double() for k, t in published_state_dict(cfg).items() if k in names}
    model.load_state_dict(sd, strict=True)
    ids = torch.tensor([[3, 1, 4, 1, 5]])
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, reference_logits(sd, cfg, ids))


@pytest.mark.parametrize(
    "override, word",
    [
        ({"block_type": "sequential"}, "block_type"),
        ({"alibi": True}, "RoPE"),
        ({"layer_norm_type": "default"}, "layer_norm_type"),
        ({"attention_layer_norm": True}, "attention_layer_norm"),
        ({"activation_type": "swiglu"}, "activation_type"),
        ({"n_heads": 4, "n_kv_heads": 3}, "n_kv_heads"),
        ({"block_group_size": 2}, "block_group_size"),
        ({"bias_for_layer_norm": True}, "layer-norm biases"),
        ({"bias_for_layer_norm": None, "include_bias": True}, "layer-norm biases"),
    ],
)
def test_unsupported_config_fails_before_weights(tmp_path, override, word):
    (tmp_path / "config.json").write_text(json.dumps({**PUBLISHED_CONFIG, **SMALL, **override}))
    with pytest.raises(ValueError, match=word):
        load_model(tmp_path)  # no weight file here: the error must come from the config


def test_no_kv_cache():
    lm = build_tiny_llada(0)
    with pytest.raises(ValueError, match="use_cache"):
        lm.model(input_ids=torch.tensor([[5, 6]]), use_cache=True)


def test_bfloat16_close_to_float32():
    fp32, bf16 = (
        build_tiny_llada(0, init_std=0.2),
        build_tiny_llada(0, init_std=0.2, dtype=torch.bfloat16),
    )
    ids = torch.randint(10, 100, (2, 16), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[0, :5] = 0
    with torch.no_grad():
        a, b = fp32.logits(ids, mask), bf16.logits(ids, mask)
    assert b.dtype == torch.bfloat16 and bf16.dtype == torch.bfloat16
    assert torch.isfinite(b).all()
    assert (a[:, 5:] - b[:, 5:].float()).abs().max() < 0.05 * a.abs().max()


def test_config_round_trip(tmp_path):
    config = tiny_llada_config(n_kv_heads=2)
    config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "llada" and saved["d_model"] == 64 and saved["n_kv_heads"] == 2
    again = LLaDAConfig.from_pretrained(tmp_path)
    assert (again.d_model, again.n_kv_heads, again.mask_token_id) == (64, 2, config.mask_token_id)


@torch.no_grad()
def test_logits_to_keep_as_in_transformers():
    """An index tensor or "the last n" keep those rows; hidden states still cover every position."""
    lm = build_tiny_llada(0, init_std=0.2)
    ids = torch.randint(10, 100, (2, 9), generator=torch.Generator().manual_seed(0))
    full = lm.model(input_ids=ids, output_hidden_states=True)
    rows = torch.tensor([0, 3, 3, 8])
    kept = lm.model(input_ids=ids, logits_to_keep=rows, output_hidden_states=True)
    torch.testing.assert_close(kept.logits, full.logits[:, rows], atol=1e-5, rtol=1e-5)
    assert kept.hidden_states[-1].shape == (2, 9, 64)
    assert torch.equal(kept.hidden_states[-1], full.hidden_states[-1])
    last = lm.model(input_ids=ids, logits_to_keep=3).logits
    torch.testing.assert_close(last, full.logits[:, -3:], atol=1e-5, rtol=1e-5)
    assert torch.equal(lm.model(input_ids=ids, logits_to_keep=0).logits, full.logits)
    per_row = torch.tensor([[0, 8], [5, 1]])  # [B, K]: our extension, different rows per row
    kept = lm.model(input_ids=ids, logits_to_keep=per_row).logits
    torch.testing.assert_close(kept[0], full.logits[0, [0, 8]], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(kept[1], full.logits[1, [5, 1]], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match=r"\[B, K\]"):
        lm.model(input_ids=ids, logits_to_keep=rows[None, None])
