"""wd1's group weights and coupled-GRPO's mask pairs: hand-derived numbers and properties."""

from __future__ import annotations

import math

import pytest
import torch

from dllm_rl.objectives.coupled import coupled_masks, coupled_token_logps
from dllm_rl.objectives.grpo import group_advantages, reduction_totals, token_weights
from dllm_rl.objectives.wd1 import wd1_coefficients, wd1_weights


def test_wd1_weights_hand_example():
    pos, neg = wd1_weights(torch.tensor([-1.0, 1.0, 0.0, 0.0]), 2)
    e = math.e
    assert torch.allclose(pos, torch.tensor([1 / (1 + e * e), e * e / (1 + e * e), 0.5, 0.5]))
    assert torch.allclose(neg, torch.tensor([e * e / (1 + e * e), 1 / (1 + e * e), 0.5, 0.5]))
    assert abs(float(pos[1]) - 0.88080) < 1e-5
    c = wd1_coefficients(torch.tensor([-1.0, 1.0, 0.0, 0.0]), 2)
    assert torch.allclose(c, torch.tensor([-1.52319, 1.52319, 0.0, 0.0]), atol=1e-5)


def test_wd1_weights_sum_to_one_per_group_and_coefficients_to_zero():
    adv = torch.randn(5 * 6, generator=torch.Generator().manual_seed(0))
    for psi in (0.5, 1.0, 3.0):
        pos, neg = wd1_weights(adv, 6, psi)
        assert torch.allclose(pos.view(5, 6).sum(1), torch.ones(5))
        assert torch.allclose(neg.view(5, 6).sum(1), torch.ones(5))
        assert (pos > 0).all() and (neg > 0).all()
        # the larger the advantage, the larger w+ and the smaller w-
        order = adv.view(5, 6).argsort(1)
        assert (pos.view(5, 6).gather(1, order).diff(dim=1) > 0).all()
        assert (neg.view(5, 6).gather(1, order).diff(dim=1) < 0).all()
        c = wd1_coefficients(adv, 6, psi)
        assert c.view(5, 6).sum(1).abs().max() < 1e-5


def test_wd1_sequence_sum_loss_is_the_mean_over_prompts():
    """-sum_tokens w c logp with sequence_sum weights = -1/B sum_groups sum_i (w+ - w-) log pi."""
    adv = torch.tensor([-1.0, 2.0, 0.5, 0.5, 1.0, -3.0])  # B = 3 prompts, G = 2
    logps = -torch.rand(6, 4, generator=torch.Generator().manual_seed(1))
    counted = torch.ones(6, 4, dtype=torch.bool)
    counted[0, 3] = False
    steps = torch.zeros(6, 4, dtype=torch.long)
    w = token_weights(
        counted, steps, "sequence_sum", reduction_totals(counted, steps, 1, "sequence_sum")
    )
    c = wd1_coefficients(adv, 2)
    loss = (w * -c[:, None] * logps).sum()
    pos, neg = wd1_weights(adv, 2)
    seq = (logps * counted).sum(1)
    expected = -((pos - neg) * seq).view(3, 2).sum(1).mean()
    assert torch.allclose(loss, expected, atol=1e-6)


def test_leave_one_out_advantages():
    adv = group_advantages(torch.tensor([1.0, 3.0, 2.0, 4.0, 6.0, 8.0]), 3, "leave_one_out")
    # r_i - mean of the other two: 1 - 2.5, 3 - 1.5, 2 - 2; 4 - 7, 6 - 6, 8 - 5
    assert torch.allclose(adv, torch.tensor([-1.5, 1.5, 0.0, -3.0, 0.0, 3.0]))
    with pytest.raises(ValueError, match="group of one"):
        group_advantages(torch.tensor([1.0, 2.0]), 1, "leave_one_out")


def test_coupled_masks_partition_the_completion():
    first, t = coupled_masks((400, 16), 0.2, 0.8, torch.Generator().manual_seed(0))
    second = ~first
    assert not (first & second).any() and (first | second).all()  # each token in exactly one
    assert ((t >= 0.2) & (t <= 0.8)).all() and t.min() < 0.3 and t.max() > 0.7
    # the first pass masks a fraction t of each row (in expectation)
    frac = first.float().mean(1)
    assert float((frac - t).mean().abs()) < 0.02
    with pytest.raises(ValueError, match="t_min"):
        coupled_masks((2, 3), 0.0, 0.5, torch.Generator())


def test_coupled_token_logps_hand_example():
    first = torch.tensor([[True, False]])
    t = torch.tensor([0.25])
    a = torch.tensor([[-1.0, 99.0]])  # 99: never read (the second pass masked token 2)
    b = torch.tensor([[99.0, -2.0]])
    pair = coupled_token_logps(a, b, first, t)
    assert torch.allclose(pair, torch.tensor([[-2.0, -2.0 / 0.75 / 2]]))
    full = coupled_token_logps(a, b, first, t, torch.tensor([[-0.5, -0.5]]))
    assert torch.allclose(full, torch.tensor([[-2.25, -1.58333]]), atol=1e-5)


def test_coupled_pairs_cut_the_variance_of_a_random_mask_estimate():
    """Per-completion log-likelihood estimates on a tiny model, 64 draws each: the coupled pair
    (every token scored once) has a fraction of the variance of one random mask at the same
    levels (tokens scored with probability t, weighted 1/t), the estimate coupling improves.
    d1's one-step estimate varies far less than either: its only randomness is the prompt mask
    (it is a fixed mean-field approximation, not an unbiased estimate of the ELBO)."""
    from dllm_rl.models.tiny import build_tiny_llada
    from dllm_rl.objectives.logps import draw_prompt_mask, masked_logps, one_step_logps
    from dllm_rl.rollout import encode_prompts

    model = build_tiny_llada(0, init_std=0.3)
    ids, mask = encode_prompts(model, ["What is 2+3?", "Tell me a story.", "Hi"])
    g = torch.Generator().manual_seed(0)
    completion = torch.randint(4, 50, (3, 16), generator=g)  # no special id ([MASK] is 2)
    clean = torch.zeros_like(mask, dtype=torch.bool)

    def scored(masked):
        return masked_logps(model, ids, mask, completion, clean, masked, 1.0)[0]

    def pair():
        first, t = coupled_masks((3, 16), 0.2, 0.8, g)
        return coupled_token_logps(scored(first), scored(~first), first, t).sum(1)

    def single():
        first, t = coupled_masks((3, 16), 0.2, 0.8, g)
        return (scored(first) / t[:, None]).sum(1)  # the same estimand as the pair's

    def one_step():
        masked = draw_prompt_mask(mask, 0.15, g)
        return one_step_logps(model, ids, mask, completion, masked, 1.0)[0].sum(1)

    with torch.no_grad():
        var = {
            f.__name__: torch.stack([f() for _ in range(64)]).var(0)
            for f in (pair, single, one_step)
        }
    print({k: [round(x, 1) for x in v.tolist()] for k, v in var.items()})
    assert (var["pair"] < var["single"] / 2).all()
    assert (var["one_step"] < var["pair"]).all()
