"""load_model: family detection, options, and errors raised before any weights are read."""

from __future__ import annotations

import json

import pytest
import torch

from dllm_rl.models import FAMILIES, detect_family, load_model
from dllm_rl.models.load import load_tokenizer
from dllm_rl.models.tiny import build_tiny_llada, build_tiny_masked_lm, build_tiny_tokenizer


@pytest.fixture(scope="module")
def llada_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("llada")
    lm = build_tiny_llada(0)
    lm.model.save_pretrained(path)
    lm.tokenizer.save_pretrained(path)
    return path


def _config_only(tmp_path, **fields):
    (tmp_path / "config.json").write_text(json.dumps(fields))
    return tmp_path


@pytest.mark.parametrize(
    "model_type, family",
    [("llada", "llada"), ("Dream", "dream"), ("modernbert", "masked_lm"), ("bert", "masked_lm")],
)
def test_detect_family(model_type, family):
    assert detect_family({"model_type": model_type}) == family


def test_unknown_model_type_lists_known_families(tmp_path):
    path = _config_only(tmp_path, model_type="llama")  # causal only: no masked-LM head
    with pytest.raises(ValueError, match="llama") as err:
        load_model(path)
    assert all(name in str(err.value) for name in FAMILIES)
    assert "family=" in str(err.value)


def test_unknown_family_argument(llada_dir):
    with pytest.raises(ValueError, match="known families") as err:
        load_model(llada_dir, family="mdlm")
    assert all(name in str(err.value) for name in FAMILIES)


def test_missing_checkpoint():
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_model("/nonexistent/checkpoint")


def test_unsupported_backend_fails_before_weights(tmp_path):
    path = _config_only(tmp_path, model_type="llada", d_model=32, n_heads=4, n_layers=1)
    with pytest.raises(ValueError, match="attn_implementation"):
        load_model(path, attn_implementation="flash_attention_2")
    with pytest.raises(ValueError, match="dtype"):
        load_model(path, dtype="float8")


def test_masked_lm_without_tokenizer_fails_before_weights(tmp_path):
    path = _config_only(tmp_path, model_type="bert", vocab_size=128, hidden_size=32)
    with pytest.raises(ValueError, match="tokenizer"):
        load_model(path)


def test_dtype_device_checkpointing_and_tokenizer(llada_dir):
    lm = load_model(llada_dir, dtype="bf16", device="cpu", gradient_checkpointing=True)
    assert lm.dtype == torch.bfloat16 and lm.device == torch.device("cpu")
    blocks = lm.model.model.transformer.blocks
    assert all(block.gradient_checkpointing for block in blocks)
    assert lm.tokenizer is not None and lm.eot_token_id == 3
    assert not lm.model.training
    plain = load_model(llada_dir, dtype=torch.float32)
    assert plain.dtype == torch.float32
    assert not any(block.gradient_checkpointing for block in plain.model.model.transformer.blocks)


def test_explicit_family_overrides_detection(tmp_path):
    lm = build_tiny_masked_lm(0, arch="bert")
    lm.model.save_pretrained(tmp_path)
    lm.tokenizer.save_pretrained(tmp_path)
    loaded = load_model(tmp_path, family="masked_lm", attn_implementation="eager")
    assert loaded.family == "masked_lm" and loaded.mask_format == "2d"
    assert loaded.model.config._attn_implementation == "eager"


def test_dream_tokenizer_with_remote_class_falls_back_to_qwen2(tmp_path):
    """Dream's tokenizer_config names a remote class; we read it as a Qwen2 tokenizer."""
    build_tiny_tokenizer().save_pretrained(tmp_path)
    cfg_path = tmp_path / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["tokenizer_class"] = "DreamTokenizer"
    cfg["auto_map"] = {"AutoTokenizer": ["tokenization_dream.DreamTokenizer", None]}
    cfg_path.write_text(json.dumps(cfg))
    assert load_tokenizer(tmp_path, "llada") is None  # other families: no remote code, no tokenizer
    tok = load_tokenizer(tmp_path, "dream")
    assert type(tok).__name__ == "Qwen2Tokenizer"
    assert tok.mask_token_id == 2 and tok.pad_token_id == 0
