"""The per-step maths on hand-derived numbers, and the Gumbel-max sampling distribution."""

from __future__ import annotations

import math

import pytest
import torch

from dllm_rl.rollout.proposal import (
    commit_logprobs,
    confidence_scores,
    exclude_mask_token,
    guided_logits,
    open_positions,
    propose_tokens,
    reject_early_eos,
    row_chunks,
    select_commits,
)

PROBS = torch.tensor([0.5, 0.3, 0.2])
LOGITS = PROBS.log().view(1, 1, 3)  # [B=1, K=1, V=3]


def test_low_confidence_is_the_proposal_probability():
    got = confidence_scores(LOGITS + 7.0, torch.tensor([[1]]), "low_confidence")  # shift-invariant
    assert got.item() == pytest.approx(0.3, abs=1e-6)


def test_margin_is_top1_minus_top2():
    assert confidence_scores(LOGITS, torch.tensor([[2]]), "margin").item() == pytest.approx(0.2)


def test_entropy_score_is_exp_minus_entropy():
    # H = -(0.5 ln 0.5 + 0.3 ln 0.3 + 0.2 ln 0.2) = 1.02965; exp(-H) = 0.357131.
    got = confidence_scores(LOGITS, torch.tensor([[0]]), "entropy").item()
    assert got == pytest.approx(0.357131, abs=1e-5)


def test_entropy_handles_zero_probabilities():
    logits = exclude_mask_token(LOGITS.clone(), 2)  # p = [0.625, 0.375, 0]
    h = -(0.625 * math.log(0.625) + 0.375 * math.log(0.375))
    got = confidence_scores(logits, torch.tensor([[0]]), "entropy").item()
    assert got == pytest.approx(math.exp(-h), abs=1e-6)


def test_random_scores_come_from_the_generator():
    tokens = torch.zeros(2, 5, dtype=torch.long)
    a = confidence_scores(LOGITS, tokens, "random", torch.Generator().manual_seed(1))
    b = confidence_scores(LOGITS, tokens, "random", torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.shape == (2, 5) and bool(((a >= 0) & (a < 1)).all())


def test_eos_scores_are_scaled_and_others_kept():
    scores = torch.tensor([[0.9, 0.5, 0.2]])
    tokens = torch.tensor([[0, 7, 3]])  # EOS=0, a word, EOT=3
    got = reject_early_eos(scores, tokens, torch.tensor([0]), 0.1)
    torch.testing.assert_close(got, torch.tensor([[0.09, 0.5, 0.2]]))
    got = reject_early_eos(scores, tokens, torch.tensor([0, 3]), 0.1)
    torch.testing.assert_close(got, torch.tensor([[0.09, 0.5, 0.02]]))


def test_select_commits_skips_committed_positions():
    scores = torch.tensor([[0.9, 0.1, 0.95, 0.7], [0.0, 0.3, 0.2, 0.1]])
    masked = torch.tensor([[True, True, False, True], [True, True, True, True]])
    got = select_commits(scores, 2, masked).sort(dim=1).values
    assert got.tolist() == [[0, 3], [1, 2]]


def test_guidance_formula():
    # u + (w + 1)(c - u) with w = 1: [0 + 2(1 - 0), 4 + 2(2 - 4)] = [2, 0].
    got = guided_logits(torch.tensor([[[1.0, 2.0]]]), torch.tensor([[[0.0, 4.0]]]), 1.0)
    torch.testing.assert_close(got, torch.tensor([[[2.0, 0.0]]]))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_guidance_leaves_its_inputs_alone(dtype):
    cond, uncond = (
        torch.tensor([[[1.0, 2.0]]], dtype=dtype),
        torch.tensor([[[0.0, 4.0]]], dtype=dtype),
    )
    got = guided_logits(cond, uncond, 1.0)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, torch.tensor([[[2.0, 0.0]]]))
    assert cond.tolist() == [[[1.0, 2.0]]] and uncond.tolist() == [[[0.0, 4.0]]]


def test_commit_logprobs_use_the_temperature():
    logits = LOGITS.expand(1, 2, 3)  # two positions with p = [0.5, 0.3, 0.2]
    pos, tok = torch.tensor([[1]]), torch.tensor([[2]])
    assert commit_logprobs(logits, pos, tok, 1.0).item() == pytest.approx(math.log(0.2))
    assert commit_logprobs(logits, pos, tok, 0.0).item() == pytest.approx(math.log(0.2))
    # T = 0.5 squares the probabilities: 0.04 / (0.25 + 0.09 + 0.04).
    assert commit_logprobs(logits, pos, tok, 0.5).item() == pytest.approx(math.log(0.04 / 0.38))


def test_zero_temperature_is_argmax():
    logits = torch.tensor([[[0.1, 3.0, 2.9], [5.0, -1.0, 0.0]]])
    assert propose_tokens(logits, 0.0).tolist() == [[1, 0]]


# Gumbel-max distribution. Chi-square with V - 1 = 5 degrees of freedom; the 1 - 1e-4 quantile is
# 25.74, so a correct sampler fails a given seed with probability 1e-4.
CHI2_DF5_Q9999 = 25.74
GUMBEL_LOGITS = torch.tensor([2.0, 1.0, 0.0, -1.0, -3.0, 0.5])
DRAWS = 40_000  # smallest expected count: 40000 * p_min (5.5e-4 at T = 0.7) = 22 >= 5


def draw_counts(dtype: torch.dtype, temperature: float, seed: int) -> torch.Tensor:
    logits = GUMBEL_LOGITS.view(1, 1, -1).expand(1, DRAWS, -1)  # [1, n, V]
    gen = torch.Generator().manual_seed(seed)
    tokens = propose_tokens(logits, temperature, gen, noise_dtype=dtype)  # [1, n]
    return torch.bincount(tokens.flatten(), minlength=GUMBEL_LOGITS.numel()).double()


def chi2_goodness(counts: torch.Tensor, probs: torch.Tensor) -> float:
    expected = probs * counts.sum()
    return float(((counts - expected) ** 2 / expected).sum())


def chi2_homogeneity(a: torch.Tensor, b: torch.Tensor) -> float:
    """Two-sample chi-square for equal sample sizes: sum (a - b)^2 / (a + b)."""
    keep = (a + b) > 0
    return float(((a - b)[keep] ** 2 / (a + b)[keep]).sum())


def test_gumbel_float64_and_float32_sample_softmax_over_temperature():
    probs = (GUMBEL_LOGITS.double() / 0.7).softmax(-1)
    c64 = draw_counts(torch.float64, 0.7, seed=0)
    c32 = draw_counts(torch.float32, 0.7, seed=1)
    assert chi2_goodness(c64, probs) < CHI2_DF5_Q9999
    assert chi2_goodness(c32, probs) < CHI2_DF5_Q9999
    assert chi2_homogeneity(c64, c32) < CHI2_DF5_Q9999
    # The test has power: draws at the wrong temperature are rejected by a wide margin.
    wrong = draw_counts(torch.float64, 1.0, seed=2)
    assert chi2_goodness(wrong, probs) > 10 * CHI2_DF5_Q9999
    assert chi2_homogeneity(c64, wrong) > 10 * CHI2_DF5_Q9999


def test_open_positions_lists_masked_positions_in_order():
    m = 9
    block = torch.tensor([[m, 4, m, m, 5], [1, 2, m, 3, m]])
    assert open_positions(block[:1], m, 3).tolist() == [[0, 2, 3]]
    assert open_positions(block[1:], m, 2).tolist() == [[2, 4]]


def test_row_chunks_cover_every_row_once_within_the_budget():
    # 10 rows of 24 bytes in 100 bytes: floor(100 / 24) = 4 rows per chunk -> 4 + 4 + 2.
    got = [(c.start, c.stop) for c in row_chunks(10, 24, 100)]
    assert got == [(0, 4), (4, 8), (8, 10)]
    assert [(c.start, c.stop) for c in row_chunks(3, 500, 100)] == [(0, 1), (1, 2), (2, 3)]
    assert list(row_chunks(0, 24, 100)) == []


def _block_logits(seed: int = 0) -> torch.Tensor:
    """``[B=3, K=7, V=37]`` logits with [MASK] (id 2) excluded; V not a multiple of any SIMD width."""
    logits = 3 * torch.randn(3, 7, 37, generator=torch.Generator().manual_seed(seed))
    return exclude_mask_token(logits, 2)


# Chunks of 1, 2, 5 (cuts rows of the batch in the middle), 20 rows, and everything at once.
CHUNK_ROWS = [1, 2, 5, 20, 21]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("temperature", [1.0, 0.3])
def test_chunked_gumbel_draws_are_the_unchunked_draws(dtype, temperature):
    """CPU: the noise is drawn row by row in memory order, so any chunking gives the same tokens
    and leaves the generator where one ``[B, K, V]`` draw would (later draws are unchanged)."""
    logits = _block_logits()
    row_bytes = 37 * torch.finfo(dtype).bits // 8
    reference = torch.Generator().manual_seed(5)
    noise = torch.rand(logits.shape, generator=reference, dtype=dtype)
    expected = noise.log().neg().log().sub(logits, alpha=1 / temperature).argmin(-1)  # [B, K]
    for rows in CHUNK_ROWS:
        gen = torch.Generator().manual_seed(5)
        got = propose_tokens(logits, temperature, gen, dtype, chunk_bytes=rows * row_bytes)
        assert torch.equal(got, expected), rows
        assert torch.equal(gen.get_state(), reference.get_state()), rows


def test_gumbel_noise_stays_within_the_chunk_budget(monkeypatch):
    logits, sizes, rand = _block_logits(), [], torch.rand

    def recording_rand(shape, **kwargs):
        sizes.append(math.prod(shape) * torch.finfo(kwargs["dtype"]).bits // 8)
        return rand(shape, **kwargs)

    monkeypatch.setattr(torch, "rand", recording_rand)
    propose_tokens(logits, 1.0, torch.Generator().manual_seed(0), chunk_bytes=5 * 37 * 8)
    # 21 rows of 37 float64 in chunks of 5 rows: 5, 5, 5, 5, 1.
    assert sizes == [5 * 37 * 8] * 4 + [37 * 8]


@pytest.mark.parametrize("remasking", ["low_confidence", "entropy", "margin"])
def test_chunked_confidence_is_the_unchunked_confidence(remasking):
    logits = _block_logits(1)
    tokens = propose_tokens(logits, 1.0, torch.Generator().manual_seed(0))  # [3, 7]
    whole = confidence_scores(logits, tokens, remasking, chunk_bytes=2**30)
    for rows in CHUNK_ROWS:
        got = confidence_scores(logits, tokens, remasking, chunk_bytes=rows * 37 * 4)
        assert torch.equal(got, whole), rows
    with pytest.raises(ValueError, match="unknown remasking"):
        confidence_scores(logits, tokens, "lowest_confidence")


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_chunked_commit_logprobs_are_the_unchunked_ones(temperature):
    logits = _block_logits(2)  # [3, 7, 37]
    positions = torch.tensor([[6, 0], [3, 4], [1, 1]])  # [B, k]
    tokens = torch.tensor([[5, 9], [0, 36], [11, 12]])
    rows = logits.gather(1, positions.unsqueeze(-1).expand(-1, -1, 37)) / temperature
    expected = rows.gather(-1, tokens.unsqueeze(-1)).squeeze(-1) - rows.logsumexp(-1)  # [B, k]
    for chunk in (1, 4, 6):
        got = commit_logprobs(logits, positions, tokens, temperature, chunk_bytes=chunk * 37 * 4)
        assert torch.equal(got, expected), chunk
