"""SPG's bounds: hand-derived numbers, the block-wise masks, and the sandwich itself
(lower bound <= exact log-likelihood <= upper bound where the exact value can be enumerated)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from dllm_rl.objectives.spg import block_masks, elbo_terms, eubo_terms, sandwich_terms

# The docstrings' example: L = 4, K = 2; draw 1 masks tokens 3, 4, draw 2 masks 2, 3, 4.
SCORED = torch.tensor([[[False, False, True, True], [False, True, True, True]]])
PROBS = torch.tensor([[[1.0, 1.0, 0.5, 0.25], [1.0, 0.8, 0.4, 0.2]]])
COUNTED = torch.ones(1, 4, dtype=torch.bool)


def test_elbo_terms_hand_example():
    v = elbo_terms(PROBS.log(), SCORED, COUNTED)[0]
    expected = [
        0.0,
        0.5 * (4 / 3) * math.log(0.8),
        0.5 * (2 * math.log(0.5) + (4 / 3) * math.log(0.4)),
        0.5 * (2 * math.log(0.25) + (4 / 3) * math.log(0.2)),
    ]
    assert torch.allclose(v, torch.tensor(expected), atol=1e-6)
    assert abs(float(v.sum()) - -3.91202) < 1e-4  # the reference's per-token mean -0.97801 x 4


def test_eubo_terms_hand_example():
    beta = 1.5
    u = eubo_terms(PROBS.log(), SCORED, COUNTED, beta)[0]
    a = [
        0.5 * 0.8**beta / 0.75,
        0.5 * (0.5**beta / 0.5 + 0.4**beta / 0.75),
        0.5 * (0.25**beta / 0.5 + 0.2**beta / 0.75),
    ]
    expected = [0.0] + [(4 / 3) / beta * math.log(x) for x in a]  # token 1 is never masked
    assert torch.allclose(u, torch.tensor(expected), atol=1e-6)
    assert abs(float(u.sum()) - -2.73712) < 1e-4


def test_eubo_gradient_is_finite_where_no_draw_masks_a_token():
    logps = PROBS.log().clone().requires_grad_(True)
    eubo_terms(logps, SCORED, COUNTED, 1.5).sum().backward()
    assert torch.isfinite(logps.grad).all()
    assert logps.grad[0, :, 0].abs().sum() == 0  # token 1: no draw scored it


def test_sandwich_picks_the_bound_by_the_sign_of_the_advantage():
    adv = torch.tensor([1.0, -1.0, 0.0])
    lower = torch.full((3, 2), -3.0)
    upper = torch.full((3, 2), -2.0)
    mix = sandwich_terms(adv, lower, upper, "mix", 0.5)
    assert mix[:, 0].tolist() == [-3.0, -2.5, -3.0]  # A = 0 takes the ELBO (Algorithm 1)
    assert sandwich_terms(adv, lower, upper, "eubo", 0.5)[:, 0].tolist() == [-3.0, -2.0, -3.0]
    assert sandwich_terms(adv, lower, None, "elbo", 0.5)[:, 0].tolist() == [-3.0] * 3
    with pytest.raises(ValueError, match="elbo"):
        sandwich_terms(adv, lower, upper, "upper", 0.5)


def test_block_masks_follow_the_blocks():
    """Blocks of 4 over L = 12, the last two positions outside the loss: each draw masks 1..m
    counted tokens of its chosen block, nothing counted before it (p_mask_clean = 0), all after
    it, and every uncounted position."""
    n, length, k = 64, 12, 3
    counted = torch.ones(n, length, dtype=torch.bool)
    counted[:, -2:] = False
    prompt_mask = torch.ones(n, 5, dtype=torch.long)
    prompt_mask[:, 0] = 0
    m = block_masks(counted, prompt_mask, 4, k, 0.0, torch.Generator().manual_seed(0))
    assert m.masked.shape == (n, k, length) and m.prompt.shape == (n, k, 5)
    assert not m.prompt.any()
    assert m.masked[..., -2:].all()
    assert torch.equal(m.scored, m.masked & counted[:, None, :])
    chosen = set()
    for row in range(n):
        blocks = []
        for d in range(k):
            mask = m.masked[row, d]
            first = int(mask.nonzero()[0])
            b = first // 4
            blocks.append(b)
            assert not mask[: 4 * b].any()
            assert mask[4 * (b + 1) :].all()
            in_block = m.scored[row, d, 4 * b : 4 * (b + 1)]
            assert 1 <= int(in_block.sum()) <= int(counted[row, 4 * b : 4 * (b + 1)].sum())
        assert len(set(blocks)) == 3  # three occupied blocks, three distinct choices
        chosen.add(tuple(blocks))
    assert len(chosen) > 1  # the order is random


def test_block_masks_noise_clean_tokens_and_the_prompt_only():
    counted = torch.ones(200, 8, dtype=torch.bool)
    prompt_mask = torch.ones(200, 6, dtype=torch.long)
    prompt_mask[:, :2] = 0  # left padding is never masked
    m = block_masks(counted, prompt_mask, 4, 1, 0.3, torch.Generator().manual_seed(1))
    assert not m.prompt[..., :2].any()
    rate = m.prompt[..., 2:].float().mean()
    assert 0.25 < float(rate) < 0.35
    late = m.masked[:, 0, 4] & ~m.masked[:, 0, :4].all(dim=1)  # block 1 chosen: block 0 is clean
    noisy = m.masked[late, 0, :4].float().mean()  # ... up to the noise
    assert 0.15 < float(noisy) < 0.45


# ----------------------------------------------------------------------------- the sandwich
L, V = 3, 3


def population_draws(length: int) -> list[tuple[int, ...]]:
    """Every mask of one block (l ~ U{1..L}, a uniform subset of size l), each repeated in
    proportion to its probability: P(S) = 1 / (L C(L, |S|)). For L = 3: the 6 sets of size 1
    and 2 once each, the full set 3 times (9 draws, each 1/9)."""
    draws = []
    total = length * math.lcm(*(math.comb(length, s) for s in range(1, length + 1)))
    for size in range(1, length + 1):
        copies = total // (length * math.comb(length, size))
        for subset in itertools.combinations(range(length), size):
            draws += [subset] * copies
    return draws


def bounds_of(conditional, beta: float) -> tuple[float, float]:
    """(ELBO, EUBO) of one sequence from ``conditional(i, masked_set) -> p(x_i | rest)``,
    with the population of draws (the bounds' expectations over the masks)."""
    draws = population_draws(L)
    scored = torch.zeros(1, len(draws), L, dtype=torch.bool)
    logps = torch.zeros(1, len(draws), L, dtype=torch.float64)
    for d, subset in enumerate(draws):
        for i in subset:
            scored[0, d, i] = True
            logps[0, d, i] = math.log(conditional(i, subset))
    counted = torch.ones(1, L, dtype=torch.bool)
    elbo = float(elbo_terms(logps, scored, counted).double().sum())
    eubo = float(eubo_terms(logps, scored, counted, beta).double().sum())
    return elbo, eubo


def joint_conditional(joint: torch.Tensor, x: tuple[int, ...]):
    """p(x_i | the tokens of x outside ``masked``) under ``joint``, by enumeration."""

    def conditional(i, masked):
        total = hit = 0.0
        for values in itertools.product(range(V), repeat=len(masked)):
            y = list(x)
            for pos, v in zip(masked, values):
                y[pos] = v
            p = float(joint[tuple(y)])
            total += p
            hit += p if y[i] == x[i] else 0.0
        return hit / total

    return conditional


def random_conditional(g: torch.Generator):
    """A random value per (position, masked set), fixed once drawn: no joint behind them."""
    table = {}

    def conditional(i, masked):
        if (i, masked) not in table:
            table[(i, masked)] = float(torch.rand((), generator=g)) ** 2 + 1e-3
        return table[(i, masked)]

    return conditional


def test_population_draws_are_the_mask_distribution():
    draws = population_draws(L)
    assert len(draws) == 9
    assert draws.count((0, 1, 2)) == 3 and draws.count((0,)) == 1 and draws.count((0, 2)) == 1


@pytest.mark.parametrize("beta", [1.0, 1.5, 2.0])
def test_lower_bound_exact_upper_bound_on_an_enumerable_model(beta):
    """A denoiser whose conditionals are those of a joint distribution over 3 tokens of a
    3-letter vocabulary (the model class masked diffusion assumes): the ELBO <= log p(x) <= the
    EUBO for every sequence of 20 random joints, with a visible gap above."""
    gaps = []
    for seed in range(20):
        g = torch.Generator().manual_seed(seed)
        joint = torch.rand((V,) * L, generator=g, dtype=torch.float64) ** 3
        joint /= joint.sum()
        x = tuple(torch.randint(0, V, (L,), generator=g).tolist())

        conditional = joint_conditional(joint, x)
        elbo, eubo = bounds_of(conditional, beta)
        exact = math.log(float(joint[x]))
        # consistent conditionals make every order exact: the ELBO meets log p(x) (float32)
        assert elbo <= exact + 1e-6 and exact <= eubo + 1e-6, (seed, elbo, exact, eubo)
        gaps.append(eubo - exact)
    assert max(gaps) > 0.1


def test_the_elbo_is_below_a_network_s_enumerated_likelihood():
    """Arbitrary conditionals (a random table, as a random network's): log p(x) is the
    probability that the one-token-per-step, random-order sampler writes x, enumerated over the
    3! orders; the ELBO is the mean over orders of their log-probabilities, so it stays below
    (Jensen) on every draw of the table. The EUBO's bound needs conditionals of one joint: here
    it fails on some tables (so the test above can fail)."""
    above = 0
    for seed in range(50):
        g = torch.Generator().manual_seed(seed)
        conditional = random_conditional(g)
        elbo, eubo = bounds_of(conditional, 1.0)
        exact = 0.0
        for order in itertools.permutations(range(L)):
            p = 1.0
            for step, i in enumerate(order):
                p *= conditional(i, tuple(sorted(order[step:])))
            exact += p / math.factorial(L)
        assert elbo <= math.log(exact) + 1e-6
        above += math.log(exact) > eubo
    assert above > 0
