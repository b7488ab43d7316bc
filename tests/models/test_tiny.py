"""The tiny tokenizer and builders: encodings, ids, determinism, speed."""

from __future__ import annotations

import time

import pytest
import torch

from dllm_rl.models.tiny import (
    TAG_TOKENS,
    build_tiny_bert_tokenizer,
    build_tiny_dream,
    build_tiny_llada,
    build_tiny_masked_lm,
    build_tiny_tokenizer,
)

TEXT = "Q: 12+30=?\n<reasoning>Add: 2+0, then 1+3.</reasoning>\t<answer>42</answer> ~`|{}"


def test_tokenizer_round_trips_text():
    tok = build_tiny_tokenizer()
    ids = tok(TEXT).input_ids
    assert tok.decode(ids) == TEXT
    # one id per character, one per tag: the 4 tags replace 11+12+8+9 = 40 characters by 4 ids
    assert len(ids) == len(TEXT) - sum(len(t) for t in TAG_TOKENS) + 4
    assert all(tok.convert_tokens_to_ids(t) != tok.unk_token_id for t in TAG_TOKENS)
    assert tok.unk_token_id not in ids


def test_tokenizer_special_ids():
    tok = build_tiny_tokenizer()
    assert tok.eos_token == "<|endoftext|>" and tok.pad_token_id == tok.eos_token_id == 0
    assert tok.mask_token == "<|mask|>" and tok.mask_token_id == 2
    assert tok.convert_tokens_to_ids("<|eot_id|>") == 3
    assert len(tok) == 108 and tok.padding_side == "left"
    # special tokens are single ids and disappear with skip_special_tokens
    ids = tok("<|mask|>a<|eot_id|>b<|endoftext|>").input_ids
    assert ids == [2, tok.convert_tokens_to_ids("a"), 3, tok.convert_tokens_to_ids("b"), 0]
    assert tok.decode(ids, skip_special_tokens=True) == "ab"


def test_chat_template():
    tok = build_tiny_tokenizer()
    text = tok.apply_chat_template(
        [{"role": "user", "content": " hi "}], add_generation_prompt=True, tokenize=False
    )
    assert text == (
        "<|startoftext|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )


def test_bert_tokenizer_has_distinct_pad_and_no_eos():
    tok = build_tiny_bert_tokenizer()
    assert (tok.pad_token_id, tok.sep_token_id, tok.mask_token_id) == (0, 3, 4)
    assert tok.eos_token_id is None
    assert tok.decode(tok(TEXT).input_ids) == TEXT


@pytest.mark.parametrize("build", [build_tiny_llada, build_tiny_dream, build_tiny_masked_lm])
def test_builders_are_deterministic_in_the_seed(build):
    rng = torch.get_rng_state()
    a, b, c = build(0), build(0), build(1)
    assert torch.equal(rng, torch.get_rng_state()), "the global RNG must be left untouched"
    sa, sb, sc = a.model.state_dict(), b.model.state_dict(), c.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa)
    ids = torch.tensor([[10, 11, 12, a.mask_token_id]])
    assert torch.equal(a.logits(ids), b.logits(ids))


@pytest.mark.parametrize("build", [build_tiny_llada, build_tiny_dream, build_tiny_masked_lm])
def test_builders_leave_accelerator_rngs_alone(build, monkeypatch):
    """On a GPU machine, building a tiny model must not reseed the global CUDA/MPS generators."""
    reseeded = []
    monkeypatch.setattr(torch.cuda, "manual_seed_all", lambda seed: reseeded.append("cuda"))
    monkeypatch.setattr(torch.mps, "manual_seed", lambda seed: reseeded.append("mps"))
    build(0)
    assert reseeded == []


def test_tiny_llada_defaults_and_speed():
    start = time.perf_counter()
    lm = build_tiny_llada()
    elapsed = time.perf_counter() - start
    assert elapsed < 1.0, f"building the tiny model took {elapsed:.2f}s"
    cfg = lm.model.config
    assert (cfg.d_model, cfg.n_layers, cfg.n_heads, cfg.vocab_size) == (64, 2, 4, 128)
    assert lm.family == "llada" and not lm.shift_logits and lm.tokenizer is not None
    assert (lm.mask_token_id, lm.eos_token_id, lm.pad_token_id, lm.eot_token_id) == (2, 0, 0, 3)
    assert lm.ids.stop_ids == (0, 3)
    assert lm.device == torch.device("cpu") and lm.dtype == torch.float32
    assert not lm.model.training
    assert lm.logits(torch.tensor([[5, 6, 2]])).shape == (1, 3, 128)


def test_overrides_and_dtype():
    lm = build_tiny_llada(3, d_model=32, n_layers=1, n_heads=2, n_kv_heads=1, dtype=torch.float64)
    cfg = lm.model.config
    assert (cfg.d_model, cfg.n_layers, cfg.n_heads, cfg.n_kv_heads) == (32, 1, 2, 1)
    assert lm.dtype == torch.float64
    assert lm.logits(torch.tensor([[5, 6]])).dtype == torch.float64


def test_vocab_smaller_than_tokenizer_is_refused():
    with pytest.raises(ValueError, match="vocab_size=64"):
        build_tiny_llada(vocab_size=64)
