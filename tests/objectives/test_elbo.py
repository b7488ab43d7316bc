"""ELBO estimates (LLaDA 1.5, App. A): unbiasedness against exact enumeration, variance, shared
draws (antithetic), precomputed references, allocation ordering, stratified l."""

from __future__ import annotations

import copy
import itertools
import math

import pytest
import torch
from torch import nn

from dllm_rl.models import build_tiny_llada
from dllm_rl.models.adapter import DiffusionLM, SpecialIds
from dllm_rl.objectives.dpo import dpo_loss, preference_scores
from dllm_rl.objectives.elbo import (
    ElboDraws,
    draw_elbo_masks,
    estimate_elbo,
    masked_positions,
    reference_draws,
    score_elbo,
    stratified_levels,
)

EPS = 1e-3


@pytest.fixture(scope="module")
def lm() -> DiffusionLM:
    # A large init std gives peaky, position-dependent predictions: a non-trivial ELBO.
    return build_tiny_llada(seed=3, d_model=32, n_layers=1, n_heads=2, init_std=0.4)


def _pair_batch():
    """One left-padded prompt, one response of L = 4 real tokens plus one pad."""
    prompt_ids = torch.tensor([[0, 40, 41]])  # [1, P=3], the first is padding
    prompt_mask = torch.tensor([[0, 1, 1]], dtype=torch.bool)
    response_ids = torch.tensor([[50, 51, 52, 0, 0]])  # [1, 5]: 3 tokens, EOS, pad
    response_mask = torch.tensor([[1, 1, 1, 1, 0]], dtype=torch.bool)
    return prompt_ids, prompt_mask, response_ids, response_mask


def _masked_logp_full(lm, prompt_ids, prompt_mask, response_ids, response_mask, subset):
    """Sum of log p(y_i | masked) over ``subset``, through full [N, V] logits (independent of the
    positions path under test)."""
    p = prompt_ids.shape[1]
    ids = torch.cat([prompt_ids, response_ids], dim=1)  # [1, N]
    attn = torch.cat([prompt_mask, response_mask], dim=1)  # [1, N]
    noisy = ids.clone()
    for i in subset:
        noisy[0, p + i] = lm.mask_token_id
    with torch.no_grad():
        logits = lm.logits(noisy, attn).float()  # [1, N, V]
    logits[..., lm.mask_token_id] = float("-inf")
    logp = logits.log_softmax(-1)[0]  # [N, V]
    return sum(float(logp[p + i, ids[0, p + i]]) for i in subset)


def _exact_elbos(lm, batch):
    """Exact expectations of both forms by enumerating every mask of the L = 4 real tokens.

    "L/l": P(S) = (1/L) / C(L, |S|), value (L / |S|) f(S).
    "1/t": E_t[p^(k-1) (1-p)^(L-k)] with p = (1-eps) t + eps, t ~ U(0, 1]:
        (1 / (1 - eps)) * int_eps^1 p^(k-1) (1-p)^(L-k) dp
        = (1 / (1 - eps)) * sum_j C(L-k, j) (-1)^j (1 - eps^(k+j)) / (k + j).
    """
    length = int(batch[3].sum())
    exact_ll = exact_t = 0.0
    for k in range(1, length + 1):
        weight_t = sum(
            math.comb(length - k, j) * (-1) ** j * (1 - EPS ** (k + j)) / (k + j)
            for j in range(length - k + 1)
        ) / (1 - EPS)
        for subset in itertools.combinations(range(length), k):
            f = _masked_logp_full(lm, *batch, subset)
            exact_ll += f * (length / k) / length / math.comb(length, k)
            exact_t += f * weight_t
    return exact_ll, exact_t


def test_both_forms_are_unbiased_and_l_over_l_has_the_smaller_variance(lm):
    batch = _pair_batch()
    exact_ll, exact_t = _exact_elbos(lm, batch)
    # With eps -> 0 both forms bound the same likelihood; with eps = 1e-3 they differ slightly.
    assert exact_ll == pytest.approx(exact_t, rel=0.01)
    n = 4000
    results = {}
    for form, exact in (("L/l", exact_ll), ("1/t", exact_t)):
        g = torch.Generator().manual_seed(11)
        with torch.no_grad():
            draws, est = estimate_elbo(lm, *batch, n_t=n, form=form, eps=EPS, generator=g)
        values = est.per_draw[0]  # [M]
        se = float(values.std()) / math.sqrt(n)
        assert abs(float(values.mean()) - exact) < 4 * se, (form, float(values.mean()), exact, se)
        results[form] = (values, draws)
    # The test can fail: dropping the weight (a plain sum of masked log-probs) is far off.
    values, draws = results["L/l"]
    unweighted = values / draws.weights[0]
    assert abs(float(unweighted.mean()) - exact_ll) > 20 * float(unweighted.std()) / math.sqrt(n)
    assert results["L/l"][0].var() < results["1/t"][0].var()


def test_score_matches_full_logits_and_chunking(lm):
    batch = _pair_batch()
    g = torch.Generator().manual_seed(0)
    draws = draw_elbo_masks(batch[3], n_t=3, n_yt=2, generator=g)
    with torch.no_grad():
        whole = score_elbo(lm, *batch, draws).per_draw  # [1, 6]
        chunked = score_elbo(lm, *batch, draws, max_tokens_per_forward=8).per_draw  # 1 row each
    for m in range(6):
        subset = draws.masks[0, m].nonzero().flatten().tolist()
        expected = float(draws.weights[0, m]) * _masked_logp_full(lm, *batch, subset)
        assert float(whole[0, m]) == pytest.approx(expected, abs=1e-4)
    torch.testing.assert_close(chunked, whole, atol=1e-5, rtol=0)


def test_draws_mask_exactly_l_real_tokens_and_keep_global_rng():
    response_mask = torch.tensor([[1] * 7 + [0] * 3, [1] * 10, [1] + [0] * 9], dtype=torch.bool)
    state = torch.get_rng_state()
    g = torch.Generator().manual_seed(5)
    draws = draw_elbo_masks(response_mask, n_t=6, n_yt=3, generator=g)
    assert torch.equal(torch.get_rng_state(), state)
    assert draws.masks.shape == (3, 18, 10) and draws.weights.shape == (3, 18)
    assert not bool((draws.masks & ~response_mask[:, None, :]).any())  # padding never masked
    counts = draws.masks.sum(-1)  # [B, M]
    lengths = torch.tensor([7, 10, 1])
    assert bool((counts >= 1).all()) and bool((counts <= lengths[:, None]).all())
    torch.testing.assert_close(draws.weights, lengths[:, None] / counts.float())
    # n_yt masks of one timestep share l; the same seed reproduces the draws.
    assert bool((counts.view(3, 6, 3) == counts.view(3, 6, 3)[..., :1]).all())
    again = draw_elbo_masks(response_mask, 6, 3, generator=torch.Generator().manual_seed(5))
    assert torch.equal(again.masks, draws.masks) and torch.equal(again.weights, draws.weights)
    t_draws = draw_elbo_masks(response_mask, 6, 1, form="1/t", eps=EPS, generator=g)
    assert not bool((t_draws.masks & ~response_mask[:, None, :]).any())
    assert bool((t_draws.weights >= 1.0).all()) and bool((t_draws.weights <= 1 / EPS).all())


def test_antithetic_with_equal_models_gives_zero_score_for_every_draw(lm):
    prompt_ids, prompt_mask, response_ids, response_mask = _pair_batch()
    chosen, chosen_mask = response_ids, response_mask
    rejected = torch.tensor([[53, 54, 0, 0, 0]])
    rejected_mask = torch.tensor([[1, 1, 1, 0, 0]], dtype=torch.bool)
    reference = copy.deepcopy(lm)
    g = torch.Generator().manual_seed(1)
    draws_w = draw_elbo_masks(chosen_mask, 8, 1, generator=g)
    draws_l = draw_elbo_masks(rejected_mask, 8, 1, generator=g)
    with torch.no_grad():
        pw = score_elbo(lm, prompt_ids, prompt_mask, chosen, chosen_mask, draws_w).per_draw
        pl = score_elbo(lm, prompt_ids, prompt_mask, rejected, rejected_mask, draws_l).per_draw
        rw = score_elbo(reference, prompt_ids, prompt_mask, chosen, chosen_mask, draws_w).per_draw
        rl = score_elbo(reference, prompt_ids, prompt_mask, rejected, rejected_mask, draws_l)
        s = preference_scores(pw, pl, rw, rl.per_draw, beta=0.2)  # [1, 8]
        assert torch.equal(s, torch.zeros_like(s))
        # Without shared draws the same models give a non-zero, noisy score.
        fresh = reference_draws(draws_w, chosen_mask, antithetic=False, generator=g)
        rw_off = score_elbo(reference, prompt_ids, prompt_mask, chosen, chosen_mask, fresh)
        s_off = preference_scores(pw, pl, rw_off.per_draw, rl.per_draw, beta=0.2)
    assert reference_draws(draws_w, chosen_mask, antithetic=True) is draws_w
    assert float(s_off.abs().max()) > 0.1


def test_gradient_reaches_the_policy_only(lm):
    policy = copy.deepcopy(lm)
    policy.model.train()
    reference = copy.deepcopy(lm)
    prompt_ids, prompt_mask, response_ids, response_mask = _pair_batch()
    g = torch.Generator().manual_seed(2)
    draws = draw_elbo_masks(response_mask, 4, 1, generator=g)
    pol = score_elbo(policy, prompt_ids, prompt_mask, response_ids, response_mask, draws).elbo
    with torch.no_grad():
        ref = score_elbo(reference, prompt_ids, prompt_mask, response_ids, response_mask, draws)
    assert not ref.elbo.requires_grad
    out = dpo_loss(pol, pol.detach() - 1.0, ref.elbo, ref.elbo, beta=0.2)
    out.loss.backward()
    grads = [p.grad for p in policy.model.parameters()]
    assert all(gr is not None for gr in grads) and sum(float(gr.abs().sum()) for gr in grads) > 0
    assert all(p.grad is None for p in reference.model.parameters())


def test_precomputed_reference_equals_on_the_fly(lm):
    prompt_ids = torch.tensor([[0, 0, 40], [41, 42, 43], [0, 44, 45]])
    prompt_mask = prompt_ids != 0
    response_ids = torch.tensor([[50, 51, 0, 0], [52, 53, 54, 0], [55, 0, 0, 0]])
    response_mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1], [1, 1, 0, 0]], dtype=torch.bool)
    draws = draw_elbo_masks(response_mask, 4, 2, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        # Precomputed: one example at a time, one draw per forward, stored with its draws.
        stored = []
        for i in range(3):
            sub = draws.select(slice(i, i + 1))
            est = score_elbo(
                lm,
                prompt_ids[i : i + 1],
                prompt_mask[i : i + 1],
                response_ids[i : i + 1],
                response_mask[i : i + 1],
                sub,
                max_tokens_per_forward=7,
            )
            stored.append((sub, est.per_draw))
        reused = ElboDraws.cat([s for s, _ in stored])
        precomputed = torch.cat([v for _, v in stored])  # [B, M]
        on_the_fly = score_elbo(lm, prompt_ids, prompt_mask, response_ids, response_mask, reused)
    assert torch.equal(reused.masks, draws.masks)
    torch.testing.assert_close(precomputed, on_the_fly.per_draw, atol=1e-5, rtol=0)


class _CountStub(nn.Module):
    """log p of the (single) target token falls with the number of masked tokens c, plus a tiny
    position term: the value of a draw depends almost only on l (between-timestep variance)."""

    vocab, mask_id, target = 8, 1, 5

    def __init__(self) -> None:
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, input_ids, attention_mask=None, logits_to_keep=None, **kwargs):
        c = (input_ids == self.mask_id).sum(-1).float()  # [R]
        keep = logits_to_keep  # [R, K]
        logits = torch.zeros(*keep.shape, self.vocab)  # [R, K, V]
        logits[..., self.target] = 3.0 - 1.0 * c[:, None] + 0.05 * (keep % 2)
        return logits


def test_allocation_ordering_on_a_stub_where_timesteps_dominate():
    stub = DiffusionLM(
        _CountStub(), SpecialIds(mask=1, eos=0, pad=0), keeps_logits=True, keeps_row_logits=True
    )
    r, length = 3000, 8  # R independent repeats of one response, as R rows
    prompt_ids = torch.full((r, 2), 6)
    response_ids = torch.full((r, length), _CountStub.target)
    response_mask = torch.ones(r, length, dtype=torch.bool)
    var = {}
    for n_t, n_yt in ((1, 1), (1, 4), (2, 2), (4, 1), (8, 1)):
        g = torch.Generator().manual_seed(100 * n_t + n_yt)
        with torch.no_grad():
            _, est = estimate_elbo(
                stub, prompt_ids, None, response_ids, response_mask, n_t=n_t, n_yt=n_yt, generator=g
            )
        var[n_t, n_yt] = float(est.elbo.var())
    # Proposition 1: Var = V_between / n_t + V_within / (n_t n_yt), with V_within ~ 0 here.
    assert 3.3 < var[1, 4] / var[4, 1] < 4.7
    assert 6.6 < var[1, 1] / var[8, 1] < 9.5
    assert var[1, 4] > var[2, 2] > var[4, 1]
    assert var[1, 1] / var[1, 4] < 1.2  # more masks per timestep barely help


def test_stratified_levels_cover_one_to_l():
    # Hand example: L = 10, n = 4, k = 9: floor(j * 10 / 4) = 0, 2, 5, 7 -> 9, 11, 14, 16
    # wrapped into [1, 10] -> 9, 1, 4, 6.
    levels = stratified_levels(torch.tensor([9]), torch.tensor([10]), 4)
    assert levels.tolist() == [[9, 1, 4, 6]]
    for length in (1, 5, 7, 12):
        ks = torch.arange(1, length + 1)  # every offset
        lengths = torch.full_like(ks, length)
        # n = L: every draw is a permutation of 1..L.
        full = stratified_levels(ks, lengths, length)  # [L, L]
        assert bool((full.sort(-1).values == torch.arange(1, length + 1)).all())
        # n < L: each draw j runs over all of 1..L as k does (so each is uniform, unbiased).
        n = max(1, length // 2)
        part = stratified_levels(ks, lengths, n)  # [L, n]
        for j in range(n):
            assert sorted(part[:, j].tolist()) == list(range(1, length + 1))
    # Through the sampler: n_t = L gives every count 1..L exactly once per response.
    mask = torch.ones(4, 6, dtype=torch.bool)
    draws = draw_elbo_masks(mask, 6, 1, stratified=True, generator=torch.Generator().manual_seed(0))
    assert bool((draws.masks.sum(-1).sort(-1).values == torch.arange(1, 7)).all())
    # The 1/t form stratifies t: t_j = frac(u + j / n_t), so the sorted t are 1 / n_t apart.
    t_draws = draw_elbo_masks(
        mask, 4, 1, form="1/t", stratified=True, eps=EPS, generator=torch.Generator().manual_seed(1)
    )
    t = ((1.0 / t_draws.weights.double()) - EPS) / (1 - EPS)  # [B, 4]
    gaps = t.sort(-1).values.diff(dim=-1)
    torch.testing.assert_close(gaps, torch.full_like(gaps, 0.25), atol=1e-6, rtol=0)


def test_masked_positions_pads_with_valid_dummies():
    mask = torch.tensor([[0, 1, 0, 1], [0, 0, 0, 0], [1, 1, 1, 0]], dtype=torch.bool)
    positions, valid = masked_positions(mask)
    assert positions.shape == (3, 3)
    assert positions[0, :2].tolist() == [1, 3] and positions[2].tolist() == [0, 1, 2]
    assert valid.tolist() == [[True, True, False], [False] * 3, [True] * 3]
    assert bool(((positions >= 0) & (positions < 4)).all())
