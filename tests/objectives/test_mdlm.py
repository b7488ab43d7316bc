"""Masked-diffusion SFT loss (LLaDA's recipe) against hand-computed masked cross-entropies."""

from __future__ import annotations

import math

import pytest
import torch

from dllm_rl.models import build_tiny_llada
from dllm_rl.objectives.mdlm import (
    draw_sft_masks,
    masked_cross_entropy,
    mdlm_sft_loss,
    normalize_sft_loss,
)

LN3, LN4 = math.log(3.0), math.log(4.0)


def test_masked_cross_entropy_by_hand():
    # Row 0 (t = 0.5, weight 2): position 0 uniform over 3 tokens, target 1: CE = ln 3;
    # position 1 logits (ln 3, 0, 0), target 0: p = 3/5, CE = ln(5/3); position 2 not masked.
    # Sum 2 (ln 3 + ln 5/3) = 2 ln 5 = 3.2188758.
    # Row 1 (t = 0.25, weight 4): position 0 logits (0, ln 4, 0), target 1: p = 4/6, CE = ln 1.5;
    # sum 4 ln 1.5 = 1.6218604.
    logits = torch.tensor(
        [
            [[0.0, 0.0, 0.0], [LN3, 0.0, 0.0], [9.0, -9.0, 0.0]],
            [[0.0, LN4, 0.0], [5.0, 5.0, 5.0], [1.0, 2.0, 3.0]],
        ]
    )
    targets = torch.tensor([[1, 0, 1], [1, 0, 0]])
    mask = torch.tensor([[True, True, False], [True, False, False]])
    per_row = masked_cross_entropy(logits, targets, mask, torch.tensor([2.0, 4.0]))
    torch.testing.assert_close(per_row, torch.tensor([3.2188758, 1.6218604]))
    lengths, counts = torch.tensor([4, 2]), mask.sum(-1)
    # LLaDA: mean over rows of per_row / L: (3.2188758 / 4 + 1.6218604 / 2) / 2 = 0.8078246.
    loss = normalize_sft_loss(per_row, lengths, counts, "response_length")
    assert float(loss) == pytest.approx(0.8078246, abs=1e-6)
    # Per masked token: (3.2188758 + 1.6218604) / 3 = 1.6135787.
    loss = normalize_sft_loss(per_row, lengths, counts, "masked_tokens")
    assert float(loss) == pytest.approx(1.6135787, abs=1e-6)


@pytest.fixture(scope="module")
def lm():
    return build_tiny_llada(seed=4, d_model=32, n_layers=1, n_heads=2, init_std=0.3)


def _batch():
    prompt_ids = torch.tensor([[0, 40, 41], [42, 43, 44]])
    prompt_mask = torch.tensor([[0, 1, 1], [1, 1, 1]], dtype=torch.bool)
    response_ids = torch.tensor([[50, 51, 0, 0], [52, 53, 54, 0]])  # EOS = 0 ends each
    response_mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.bool)
    return prompt_ids, prompt_mask, response_ids, response_mask


def _manual(lm, batch, masks, t, eos_padding=False):
    """sum over masked i of CE_i / t, from full logits with [MASK] excluded, per row."""
    prompt_ids, prompt_mask, response_ids, response_mask = batch
    p = prompt_ids.shape[1]
    ids = torch.cat([prompt_ids, response_ids], 1)
    attn = torch.cat(
        [prompt_mask, torch.ones_like(response_mask) if eos_padding else response_mask], 1
    )
    noisy = ids.clone()
    noisy[:, p:][masks] = lm.mask_token_id
    with torch.no_grad():
        logits = lm.logits(noisy, attn).float()
    logits[..., lm.mask_token_id] = float("-inf")
    logp = logits.log_softmax(-1)
    rows = []
    for b in range(ids.shape[0]):
        total = 0.0
        for i in masks[b].nonzero().flatten().tolist():
            total += -float(logp[b, p + i, ids[b, p + i]]) / float(t[b])
        rows.append(total)
    return torch.tensor(rows)


def test_wrapper_matches_hand_computed_masked_ce_for_a_fixed_mask(lm):
    batch = _batch()
    masks = torch.tensor([[1, 0, 1, 0], [0, 1, 1, 1]], dtype=torch.bool)
    t = torch.tensor([0.5, 0.75])
    with torch.no_grad():
        out = mdlm_sft_loss(lm, *batch, masks=masks, t=t)
    expected = _manual(lm, batch, masks, t)
    torch.testing.assert_close(out.per_row, expected, atol=1e-4, rtol=0)
    assert out.lengths.tolist() == [3, 4] and out.num_masked.tolist() == [2, 3]
    assert float(out.loss) == pytest.approx(
        float((expected / torch.tensor([3, 4])).mean()), abs=1e-5
    )
    with torch.no_grad():
        per_token = mdlm_sft_loss(lm, *batch, masks=masks, t=t, normalization="masked_tokens")
    assert float(per_token.loss) == pytest.approx(float(expected.sum() / 5), abs=1e-5)


def test_eos_padding_counts_the_padding_as_answer_tokens(lm):
    batch = _batch()
    masks = torch.tensor([[0, 0, 1, 1], [0, 0, 0, 1]], dtype=torch.bool)  # row 0: pad masked
    t = torch.tensor([0.5, 0.5])
    with torch.no_grad():
        off = mdlm_sft_loss(lm, *batch, masks=masks, t=t)
        on = mdlm_sft_loss(lm, *batch, masks=masks, t=t, eos_padding=True)
    assert off.num_masked.tolist() == [1, 1] and off.lengths.tolist() == [3, 4]
    assert on.num_masked.tolist() == [2, 1] and on.lengths.tolist() == [4, 4]
    # The padded position's target is EOS (id 0, as the pad here), attended like a real token.
    torch.testing.assert_close(
        on.per_row, _manual(lm, batch, masks, t, eos_padding=True), atol=1e-4, rtol=0
    )


def test_drawn_masks_never_touch_prompt_or_padding_and_t_in_range():
    response_mask = torch.tensor([[1] * 5 + [0] * 3] * 64, dtype=torch.bool)
    state = torch.get_rng_state()
    masks, t = draw_sft_masks(response_mask, eps=0.1, generator=torch.Generator().manual_seed(0))
    assert torch.equal(torch.get_rng_state(), state)
    assert masks.shape == (64, 8) and not bool(masks[:, 5:].any())
    assert bool((t > 0.1).all()) and bool((t <= 1.0).all())
    # Mask rate follows t: rows with t near 1 mask nearly everything, on average.
    rate = masks[:, :5].float().mean(-1)
    assert abs(float(rate.mean()) - float(t.mean())) < 0.1


def test_drawn_loss_is_reproducible_and_backpropagates(lm):
    batch = _batch()
    policy = build_tiny_llada(seed=4, d_model=32, n_layers=1, n_heads=2, init_std=0.3)
    a = mdlm_sft_loss(policy, *batch, generator=torch.Generator().manual_seed(7))
    b = mdlm_sft_loss(policy, *batch, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a.per_row, b.per_row) and float(a.loss.detach()) > 0
    a.loss.backward()
    assert any(
        p.grad is not None and bool(p.grad.abs().sum() > 0) for p in policy.model.parameters()
    )
    # Nothing masked: a zero loss that still backpropagates.
    none = mdlm_sft_loss(
        policy, *batch, masks=torch.zeros(2, 4, dtype=torch.bool), t=torch.tensor([0.5, 0.5])
    )
    assert float(none.loss.detach()) == 0.0
    none.loss.backward()
