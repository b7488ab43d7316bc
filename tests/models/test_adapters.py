"""Invariants every adapter must meet, for each family and attention backend (see conftest)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers.modeling_layers import GradientCheckpointingLayer

from dllm_rl.models import DiffusionLM, load_model
from dllm_rl.models.load import enable_gradient_checkpointing


def _ids(lm: DiffusionLM, n: int, seed: int = 0) -> torch.Tensor:
    """``[n]`` ordinary character ids (no special token)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(10, 100, (n,), generator=g)


def _left_pad(lm: DiffusionLM, rows: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    n = max(len(r) for r in rows)
    ids = torch.full((len(rows), n), lm.pad_token_id, dtype=torch.long)
    mask = torch.zeros(len(rows), n, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, n - len(r) :] = r
        mask[i, n - len(r) :] = 1
    return ids, mask


@pytest.mark.parametrize("pad", [0, 3])
@torch.no_grad()
def test_first_token_sees_last_token(any_lm, pad):
    """Bidirectional: changing the LAST token changes the scores at the FIRST real position.

    A causal model (or a silent causal fallback when a padding mask is passed) leaves them equal.
    """
    row = _ids(any_lm, 12)
    other = row.clone()
    other[-1] = 10 + (other[-1] - 9) % 90
    ids, mask = _left_pad(any_lm, [torch.cat([torch.zeros(pad, dtype=torch.long) + 99, row])])
    ids2, _ = _left_pad(any_lm, [torch.cat([torch.zeros(pad, dtype=torch.long) + 99, other])])
    mask[:, :pad] = 0
    ids[:, :pad] = ids2[:, :pad] = any_lm.pad_token_id
    # Adapter: position pad+1 is a real query in every family (Dream's is raw row pad).
    a = any_lm.logits(ids, mask)[0, pad + 1]
    b = any_lm.logits(ids2, mask)[0, pad + 1]
    assert (a - b).abs().max() > 1e-4
    # Raw network with a plain 2D padding mask, as a user would call it.
    a = any_lm.model(input_ids=ids, attention_mask=mask).logits[0, pad]
    b = any_lm.model(input_ids=ids2, attention_mask=mask).logits[0, pad]
    assert (a - b).abs().max() > 1e-4


@torch.no_grad()
def test_left_padding_invariance(any_lm):
    """A left-padded batch scores each real token exactly as the row alone does."""
    rows = [_ids(any_lm, 7, seed=1), _ids(any_lm, 20, seed=2)]
    ids, mask = _left_pad(any_lm, rows)
    batch = any_lm.logits(ids, mask)  # [2, 20, V]
    skip = 1 if any_lm.shift_logits else 0  # a shifted row's first score comes from padding
    for i, row in enumerate(rows):
        alone = any_lm.logits(row[None])[0]  # [n, V]
        start = ids.shape[1] - len(row)
        torch.testing.assert_close(batch[i, start + skip :], alone[skip:], atol=1e-5, rtol=1e-5)
    # The check has teeth: attending to the padding would move the short row's scores.
    unmasked = any_lm.logits(ids, torch.ones_like(mask))
    start = ids.shape[1] - len(rows[0])
    assert (unmasked[0, start + skip :] - batch[0, start + skip :]).abs().max() > 1e-4


def _count_calls(module: nn.Module) -> list[int]:
    calls = [0]
    module.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def test_gradient_checkpointing_same_gradients(any_lm):
    """Recomputing activations in backward must not change any gradient."""
    model = any_lm.model.train()
    ids, mask = _left_pad(any_lm, [_ids(any_lm, 6, seed=3), _ids(any_lm, 10, seed=4)])
    target = _ids(any_lm, 10, seed=5)

    def grads() -> dict[str, torch.Tensor]:
        model.zero_grad()
        logp = any_lm.logits(ids, mask).float().log_softmax(-1)  # [2, 10, V]
        loss = -(logp.gather(-1, target.expand(2, -1)[..., None]) * mask[..., None]).sum()
        loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    layer = next(m for m in model.modules() if isinstance(m, GradientCheckpointingLayer))
    inner = next(m for m in layer.modules() if isinstance(m, nn.Linear))
    calls = _count_calls(inner)
    plain = grads()
    assert calls[0] == 1
    enable_gradient_checkpointing(model)
    ckpt = grads()
    assert calls[0] == 3, "the layer was not recomputed in backward: checkpointing is off"
    assert plain.keys() == ckpt.keys() and len(plain) > 0
    for name in plain:
        torch.testing.assert_close(ckpt[name], plain[name], atol=1e-6, rtol=1e-5, msg=name)


@torch.no_grad()
def test_save_load_round_trip(any_lm, tmp_path):
    """save_pretrained -> load_model (family detected) gives identical logits and ids."""
    any_lm.model.save_pretrained(tmp_path)
    any_lm.tokenizer.save_pretrained(tmp_path)
    backend = any_lm.model.config._attn_implementation
    loaded = load_model(tmp_path, attn_implementation=backend)
    assert type(loaded.model) is type(any_lm.model)
    assert (loaded.family, loaded.ids, loaded.shift_logits) == (
        any_lm.family,
        any_lm.ids,
        any_lm.shift_logits,
    )
    assert (loaded.mask_format, loaded.mask_positions) == (
        any_lm.mask_format,
        any_lm.mask_positions,
    )
    assert loaded.model.config._attn_implementation == backend
    ids, mask = _left_pad(any_lm, [_ids(any_lm, 5), _ids(any_lm, 9)])
    assert torch.equal(loaded.logits(ids, mask), any_lm.logits(ids, mask))
    assert (
        loaded.tokenizer("a<answer>1</answer>").input_ids
        == any_lm.tokenizer("a<answer>1</answer>").input_ids
    )


def test_mask_helpers_by_hand():
    from dllm_rl.models.adapter import additive_mask, as_4d_mask, position_ids_from_mask

    pad = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    assert position_ids_from_mask(pad).tolist() == [[0, 0, 0, 1, 2], [0, 1, 2, 3, 4]]
    m4 = as_4d_mask(pad, 5)  # [2, 1, 5, 5]: every query row sees exactly the real keys
    assert m4.shape == (2, 1, 5, 5) and m4.dtype == torch.bool
    assert m4[0, 0].tolist() == [[False, False, True, True, True]] * 5
    assert m4[1].all()
    assert as_4d_mask(torch.ones(2, 5), 5) is None  # no padding: nothing to mask
    assert as_4d_mask(m4, 5) is m4
    with pytest.raises(ValueError, match="expected"):
        as_4d_mask(pad, 4)
    add = additive_mask(m4, torch.float32)
    assert add[0, 0, 0].tolist() == [torch.finfo(torch.float32).min] * 2 + [0.0] * 3


def test_gradient_checkpointing_enable_alias():
    """The transformers API users know (`gradient_checkpointing_enable`) works on our LLaDA."""
    import warnings

    from dllm_rl.models import build_tiny_llada

    model = build_tiny_llada(0).model
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # deprecated alias in transformers >= 5.x
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    assert all(b.gradient_checkpointing for b in model.model.transformer.blocks)


@pytest.mark.filterwarnings("ignore::FutureWarning")  # peft reads a deprecated transformers flag
def test_lora_wraps_llada():
    """peft LoRA on the published module names: same logits at init, grads only on LoRA."""
    from peft import LoraConfig, get_peft_model

    from dllm_rl.models import build_tiny_llada

    lm = build_tiny_llada(0, init_std=0.2)
    ids, mask = torch.tensor([[0, 5, 6, 2], [7, 8, 9, 2]]), torch.tensor([[0, 1, 1, 1], [1] * 4])
    before = lm.logits(ids, mask).detach()
    targets = ["q_proj", "k_proj", "v_proj", "attn_out", "ff_proj", "up_proj", "ff_out"]
    peft_model = get_peft_model(lm.model, LoraConfig(r=4, target_modules=targets))
    wrapped = DiffusionLM(peft_model, lm.ids, tokenizer=lm.tokenizer)
    out = wrapped.logits(ids, mask)
    torch.testing.assert_close(out, before)
    out.square().mean().backward()
    trainable = [n for n, p in peft_model.named_parameters() if p.grad is not None]
    lora = [n for n, _ in peft_model.named_parameters() if "lora_" in n]
    # 7 targets in each of 2 blocks, plus the LM head (transformer.ff_out); A and B each.
    assert len(lora) == 2 * (len(targets) * 2 + 1)
    assert sorted(trainable) == sorted(lora)  # every adapter, the head's included, gets a gradient


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_lora_on_the_llada_head_changes_the_logits():
    """The output head runs as a module, so what wraps or hooks it (LoRA, ZeRO-3) takes effect."""
    from peft import LoraConfig, get_peft_model

    from dllm_rl.models import build_tiny_llada

    lm = build_tiny_llada(0, init_std=0.2)
    ids = torch.tensor([[5, 6, 7, 2]])
    calls = _count_calls(lm.model.model.transformer.ff_out)
    before = lm.logits(ids).detach()
    assert calls[0] == 1
    config = LoraConfig(r=4, target_modules=r"model\.transformer\.ff_out", init_lora_weights=False)
    head_only = DiffusionLM(get_peft_model(lm.model, config), lm.ids)
    assert (head_only.logits(ids) - before).abs().max() > 1e-3


@pytest.mark.parametrize("pad", [0, 4])
@pytest.mark.parametrize("window", [(0, 5), (6, 13), (13, 14)])
@torch.no_grad()
def test_positions_score_a_window(any_lm, pad, window):
    """``positions=slice(a, b)`` is ``[:, a:b]`` of the full scores, and the families that can
    (``keeps_logits``) run their LM head on those b - a positions only.

    Windows starting at 0 take Dream's "position 0 reuses its own row" branch.
    """
    lo, hi = window
    ids, mask = _left_pad(any_lm, [_ids(any_lm, 14 - pad, seed=6), _ids(any_lm, 14, seed=7)])
    mask = mask if pad else None
    heights = []
    any_lm.model.register_forward_hook(lambda _m, _a, out: heights.append(out.logits.shape[1]))
    full = any_lm.logits(ids, mask)  # [2, 14, V]
    part = any_lm.logits(ids, mask, positions=slice(lo, hi))  # [2, hi - lo, V]
    assert part.shape == (2, hi - lo, full.shape[-1])
    # Equal up to the GEMM's rounding: a BLAS may pick another kernel for fewer output rows.
    torch.testing.assert_close(part, full[:, lo:hi], atol=1e-5, rtol=1e-5)
    assert heights == [14, hi - lo if any_lm.keeps_logits else 14]


@pytest.mark.parametrize("pad", [0, 4])
@torch.no_grad()
def test_positions_per_row(any_lm, pad):
    """``positions=[B, K]`` tensor is ``full.gather(1, positions)``; the families that can
    (``keeps_row_logits``) run their LM head on the B * K positions only, the others on the
    window from the smallest to the largest position asked for."""
    ids, mask = _left_pad(any_lm, [_ids(any_lm, 14 - pad, seed=6), _ids(any_lm, 14, seed=7)])
    mask = mask if pad else None
    heights = []
    any_lm.model.register_forward_hook(lambda _m, _a, out: heights.append(out.logits.shape[1]))
    full = any_lm.logits(ids, mask)  # [2, 14, V]
    where = torch.tensor([[13, 0, 7], [5, 9, 6]])  # [2, 3], unsorted, position 0 included
    part = any_lm.logits(ids, mask, positions=where)  # [2, 3, V]
    expected = full.gather(1, where.unsqueeze(-1).expand(-1, -1, full.shape[-1]))
    torch.testing.assert_close(part, expected, atol=1e-5, rtol=1e-5)
    assert heights[1] == (3 if any_lm.keeps_row_logits else 14)  # window 0..13 otherwise
    for bad in (torch.tensor([[0, 14], [1, 2]]), torch.tensor([1, 2]), torch.zeros(2, 0).long()):
        with pytest.raises(ValueError, match="positions"):
            any_lm.logits(ids, mask, positions=bad)


def test_positions_must_be_a_contiguous_window():
    from dllm_rl.models import build_tiny_llada

    lm = build_tiny_llada(0)
    ids = torch.tensor([[5, 6, 7, 8]])
    assert lm.logits(ids, positions=slice(-2, None)).shape[1] == 2  # counted from the end
    for bad in (slice(0, 4, 2), slice(3, 3), 2):
        with pytest.raises(ValueError, match="positions"):
            lm.logits(ids, positions=bad)
