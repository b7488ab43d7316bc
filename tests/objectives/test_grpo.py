"""Unit tests of the GRPO maths: every expected number is derived by hand in the docstring."""

from __future__ import annotations

import math

import pytest
import torch

from dllm_rl.objectives.grpo import (
    REDUCTIONS,
    clipped_surrogate,
    counted_positions,
    group_advantages,
    k3_kl,
    reduction_totals,
    token_weights,
)
from dllm_rl.rollout.schedules import ascending_schedule, uniform_schedule

# ----------------------------------------------------------------------------- advantages


def test_advantages_none_centres_each_group():
    """G = 2, r = [1, 3, 2, 2]: group means [2, 2] -> A = [-1, 1, 0, 0]."""
    a = group_advantages(torch.tensor([1.0, 3.0, 2.0, 2.0]), 2, "none")
    assert torch.allclose(a, torch.tensor([-1.0, 1.0, 0.0, 0.0]))


def test_advantages_group_scale():
    """G = 3, r = [0, 1, 2, 5, 5, 5].

    Group 1: mean 1, centred [-1, 0, 1], unbiased std sqrt((1 + 0 + 1) / 2) = 1 ->
    A = [-1, 0, 1] / 1.0001. Group 2: centred 0, std 0 -> A = 0 / 1e-4 = 0.
    """
    a = group_advantages(torch.tensor([0.0, 1.0, 2.0, 5.0, 5.0, 5.0]), 3, "group")
    expected = torch.tensor([-1 / 1.0001, 0.0, 1 / 1.0001, 0.0, 0.0, 0.0])
    assert torch.allclose(a, expected, atol=1e-7)


def test_advantages_batch_scale():
    """G = 2, r = [1, 3, 2, 2]: A = [-1, 1, 0, 0]; batch mean 2, unbiased std
    sqrt((1 + 1 + 0 + 0) / 3) = sqrt(2/3) = 0.816497 -> A / 0.816597."""
    a = group_advantages(torch.tensor([1.0, 3.0, 2.0, 2.0]), 2, "batch")
    d = math.sqrt(2 / 3) + 1e-4
    assert torch.allclose(a, torch.tensor([-1 / d, 1 / d, 0.0, 0.0]), atol=1e-6)


def test_advantages_group_differs_from_batch():
    """Groups of different spread: r = [0, 2, 0, 20]. Group stds sqrt(2) and sqrt(200): "group"
    gives |A| = 1/sqrt(2) ~ 0.7071 in both groups; "batch" (std of all four) does not."""
    r = torch.tensor([0.0, 2.0, 0.0, 20.0])
    g = group_advantages(r, 2, "group")
    assert torch.allclose(g.abs(), torch.full((4,), 1 / math.sqrt(2)), atol=1e-4)
    b = group_advantages(r, 2, "batch")
    assert not torch.allclose(b.abs()[:2], b.abs()[2:])


def test_advantages_errors():
    with pytest.raises(ValueError, match="num_generations=4"):
        group_advantages(torch.zeros(6), 4, "group")
    with pytest.raises(ValueError, match="unknown"):
        group_advantages(torch.zeros(4), 2, "std")
    with pytest.raises(ValueError, match="num_generations >= 2"):
        group_advantages(torch.zeros(4), 1, "group")


# ----------------------------------------------------------------------------- surrogate


def test_clipped_surrogate_numbers_and_flags():
    """eps_low = 0.2, eps_high = 0.28 (DAPO's clip-higher); four tokens, r = exp(logp - old):

    1. r = 2,   A = +1: min(2, 1.28) = 1.28 -> loss -1.28, high clipped.
    2. r = 0.5, A = -1: min(-0.5, -0.8) = -0.8 -> loss 0.8, low clipped.
    3. r = 2,   A = -1: min(-2, -1.28) = -2 -> loss 2, not clipped (pessimistic side).
    4. r = 1.1, A = +2: inside [0.8, 1.28]: min(2.2, 2.2) -> loss -2.2, not clipped.
    """
    old = torch.zeros(4)
    logps = torch.log(torch.tensor([2.0, 0.5, 2.0, 1.1]))
    adv = torch.tensor([1.0, -1.0, -1.0, 2.0])
    t = clipped_surrogate(logps, old, adv, 0.2, 0.28)
    assert torch.allclose(t.loss, torch.tensor([-1.28, 0.8, 2.0, -2.2]), atol=1e-6)
    assert torch.allclose(t.ratio, torch.tensor([2.0, 0.5, 2.0, 1.1]), atol=1e-6)
    assert t.is_high_clipped.tolist() == [True, False, False, False]
    assert t.is_low_clipped.tolist() == [False, True, False, False]
    assert t.is_region_clipped.tolist() == [True, True, False, False]


def test_clipped_surrogate_gradient_and_broadcast():
    """On-policy (r = 1) the gradient of the loss w.r.t. logp is -A (d r / d logp = r = 1); a
    clipped token (r = 2, A = 1, eps 0.2) gets zero gradient. Per-sequence advantages [N, 1]
    broadcast over [N, L]."""
    logps = torch.tensor([[0.0, math.log(2.0)], [0.0, 0.0]], requires_grad=True)
    adv = torch.tensor([[1.0], [-3.0]])  # [N, 1]
    t = clipped_surrogate(logps, torch.zeros(2, 2), adv, 0.2, 0.2)
    assert t.loss.shape == (2, 2)
    t.loss.sum().backward()
    assert torch.allclose(logps.grad, torch.tensor([[-1.0, 0.0], [3.0, 3.0]]))


def test_k3_kl():
    """k3 = e^d - d - 1 with d = ref - logp: d = 0 -> 0; d = log 2 -> 2 - log 2 - 1 = 0.306853;
    d = -1 -> e^-1 + 1 - 1 = 0.367879."""
    logps = torch.tensor([-1.0, -2.0, -0.5])
    ref = torch.tensor([-1.0, -2.0 + math.log(2.0), -1.5])
    kl = k3_kl(logps, ref)
    assert torch.allclose(kl, torch.tensor([0.0, 1 - math.log(2.0), math.exp(-1.0)]), atol=1e-6)
    x = torch.randn(5, 7, generator=torch.Generator().manual_seed(0))
    assert torch.equal(k3_kl(x, x), torch.zeros(5, 7))


# ----------------------------------------------------------------------------- counted


def test_counted_positions():
    """Stop ids {0, 3}: row [5, 0, 7, 0] counts up to the first 0 (index 1); row [5, 6, 3, 0]
    up to the EOT 3 (index 2); row [5, 6, 7, 8] has no stop -> every position."""
    ids = torch.tensor([[5, 0, 7, 0], [5, 6, 3, 0], [5, 6, 7, 8]])
    c = counted_positions(ids, (0, 3), "until_eos")
    assert c.tolist() == [
        [True, True, False, False],
        [True, True, True, False],
        [True, True, True, True],
    ]
    assert bool(counted_positions(ids, (0, 3), "all").all())
    with pytest.raises(ValueError, match="unknown"):
        counted_positions(ids, (0,), "until_stop")


# ----------------------------------------------------------------------------- reductions

# N = 2, L = 3, S = 2.
COUNTED = torch.tensor([[True, True, False], [True, False, False]])
STEPS = torch.tensor([[0, 1, 1], [1, 0, 0]])


def test_reduction_totals_hand_example():
    """Counted tokens: (0,0) at step 0, (0,1) and (1,0) at step 1 -> token_mean [3],
    step_mean [1, 2], sequence_mean [2] (two sequences). All float64."""
    tok = reduction_totals(COUNTED, STEPS, 2, "token_mean")
    step = reduction_totals(COUNTED, STEPS, 2, "step_mean")
    seq = reduction_totals(COUNTED, STEPS, 2, "sequence_mean")
    assert tok.tolist() == [3.0] and step.tolist() == [1.0, 2.0] and seq.tolist() == [2.0]
    assert tok.dtype == step.dtype == seq.dtype == torch.float64


def test_token_weights_hand_example():
    """token_mean: 1/3 on each counted token. sequence_mean: row 0 has 2 counted tokens ->
    1/2 / 2 = 1/4 each, row 1 has 1 -> 1/1 / 2 = 1/2. step_mean: c = [1, 2], S_eff = 2 ->
    step-0 token 1/(1*2) = 1/2, step-1 tokens 1/(2*2) = 1/4. Each sums to 1."""
    expected = {
        "token_mean": [[1 / 3, 1 / 3, 0.0], [1 / 3, 0.0, 0.0]],
        "sequence_mean": [[1 / 4, 1 / 4, 0.0], [1 / 2, 0.0, 0.0]],
        "step_mean": [[1 / 2, 1 / 4, 0.0], [1 / 4, 0.0, 0.0]],
    }
    for reduction, want in expected.items():
        totals = reduction_totals(COUNTED, STEPS, 2, reduction)
        w = token_weights(COUNTED, STEPS, reduction, totals)
        assert w.dtype == torch.float32
        assert torch.allclose(w, torch.tensor(want)), reduction


def test_step_mean_skips_steps_without_counted_tokens():
    """S = 3 but nothing counted at step 2: totals [1, 2, 0], S_eff = 2, the same weights as
    with S = 2 (a step with no counted token does not dilute the mean)."""
    totals = reduction_totals(COUNTED, STEPS, 3, "step_mean")
    assert totals.tolist() == [1.0, 2.0, 0.0]
    w = token_weights(COUNTED, STEPS, "step_mean", totals)
    assert torch.allclose(w, torch.tensor([[1 / 2, 1 / 4, 0.0], [1 / 4, 0.0, 0.0]]))


def _schedule_steps(schedule, n: int, seed: int) -> torch.Tensor:
    """``[n, L]`` unmask steps obeying ``schedule``: each row a random order inside each block."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(n):
        row = torch.empty(schedule.gen_length, dtype=torch.long)
        for b, (lo, hi) in enumerate(schedule.block_bounds):
            steps = [s for s in range(schedule.num_steps) if schedule.step_block[s] == b]
            labels = torch.cat(
                [torch.full((schedule.counts[s],), s, dtype=torch.long) for s in steps]
            )
            row[lo:hi] = labels[torch.randperm(hi - lo, generator=g)]
        rows.append(row)
    return torch.stack(rows)  # [n, L]


def test_reductions_agree_with_equal_step_counts():
    """Uniform schedule, L = 12, 4 steps of 3 tokens, every position counted, N = 5: token_mean is
    1/60 per token; sequence_mean 1/12 / 5 = 1/60; step_mean 1/(c_s * S) = 1/(15 * 4) = 1/60;
    sequence_sum (a sum over each sequence's tokens) 1/5 = L x 1/60."""
    schedule = uniform_schedule(12, 6, 4)
    assert set(schedule.counts) == {3}
    steps = _schedule_steps(schedule, 5, seed=0)
    counted = torch.ones(5, 12, dtype=torch.bool)
    for r in REDUCTIONS:
        w = token_weights(counted, steps, r, reduction_totals(counted, steps, 4, r))
        expected = 1 / 5 if r == "sequence_sum" else 1 / 60
        assert torch.allclose(w, torch.full((5, 12), expected)), r


def test_step_mean_equals_per_sample_form():
    """Ascending schedule (L = 16: counts 1, 2, 4, 9) and any data: the batch step mean equals the
    per-sample form of CJ-GRPO eq. 11, (1/N) sum_i (1/S) sum_s mean_{tokens of i at s} loss,
    because every row commits the same c_s tokens at s (global count N c_s)."""
    schedule = ascending_schedule(16)
    n, s = 6, schedule.num_steps
    steps = _schedule_steps(schedule, n, seed=1)
    loss = torch.randn(n, 16, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    counted = torch.ones(n, 16, dtype=torch.bool)
    totals = reduction_totals(counted, steps, s, "step_mean")
    ours = (token_weights(counted, steps, "step_mean", totals).double() * loss).sum()
    per_sample = torch.stack(
        [torch.stack([loss[i][steps[i] == t].mean() for t in range(s)]).mean() for i in range(n)]
    ).mean()
    assert torch.allclose(ours, per_sample, atol=1e-6)
    # Not a tautology: token_mean weighs the 9-token step 9 times more than the 1-token step.
    tok = token_weights(
        counted, steps, "token_mean", reduction_totals(counted, steps, s, "token_mean")
    )
    assert not torch.allclose((tok.double() * loss).sum(), per_sample, atol=1e-3)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_micro_batches_with_global_totals_match_the_whole_batch(reduction):
    """Split N = 7 rows (until_eos counting, ragged) into micro-batches of 3, 1, 3; sum each
    micro-batch's totals; the weights computed per micro-batch with those global totals are, row
    for row, the whole batch's weights, and the micro-batch losses add up to the batch loss."""
    schedule = ascending_schedule(16)
    n, s = 7, schedule.num_steps
    steps = _schedule_steps(schedule, n, seed=3)
    ids = torch.randint(0, 6, (n, 16), generator=torch.Generator().manual_seed(4))
    counted = counted_positions(ids, (0,), "until_eos")
    assert 0 < int(counted.sum()) < n * 16  # ragged: the test can tell reductions apart
    whole = token_weights(counted, steps, reduction, reduction_totals(counted, steps, s, reduction))
    parts = [slice(0, 3), slice(3, 4), slice(4, 7)]
    totals = sum(reduction_totals(counted[p], steps[p], s, reduction) for p in parts)
    split = torch.cat([token_weights(counted[p], steps[p], reduction, totals) for p in parts])
    assert torch.allclose(split, whole, atol=1e-7)
    # means sum to 1; sequence_sum to the mean counted length (each sequence's sum, averaged)
    total = counted.sum() / n if reduction == "sequence_sum" else torch.tensor(1.0)
    assert torch.allclose(whole.sum(), total.float(), atol=1e-6)
    # Local totals would be wrong: the first micro-batch alone would sum to 1 by itself.
    local = token_weights(
        counted[:3], steps[:3], reduction, reduction_totals(counted[:3], steps[:3], s, reduction)
    )
    assert not torch.allclose(local, whole[:3])


def test_reduction_errors():
    with pytest.raises(ValueError, match="unknown"):
        reduction_totals(COUNTED, STEPS, 2, "mean")
    with pytest.raises(ValueError, match="bool"):
        reduction_totals(COUNTED.long(), STEPS, 2, "token_mean")
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        reduction_totals(COUNTED, STEPS, 1, "step_mean")
