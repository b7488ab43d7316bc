"""Log-prob estimators: the sampler's convention, CJ-GRPO per-step scores, d1's one-step estimate."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from torch import nn

from dllm_rl.models.tiny import build_tiny_llada
from dllm_rl.objectives.logps import (
    draw_prompt_mask,
    one_step_logps,
    token_logps,
    trajectory_step_logps,
)
from dllm_rl.rollout import SamplerConfig, commit_logprobs, encode_prompts, exclude_mask_token
from dllm_rl.rollout.sampler import generate

# init_std 0.3: peaked, varied predictions (at 0.02 every position predicts the same token).
INIT_STD = 0.3
PROMPTS = ["What is 2+3?", "Hi", "Tell me a story."]


@pytest.fixture(scope="module")
def tiny():
    return build_tiny_llada(0, init_std=INIT_STD)


@pytest.fixture(scope="module")
def prompts(tiny):
    """Three left-padded prompts: ``[3, P]`` ids and mask (rows 0 and 1 padded)."""
    return encode_prompts(tiny, PROMPTS)


# ----------------------------------------------------------------------------- token_logps


def test_token_logps_hand_example():
    """V = 3, [MASK] = 2, logits [0, ln 3, 5]. Without [MASK]: p = [1/4, 3/4], so
    log p(1) = ln 3/4 = -0.287682 and H = -(1/4 ln 1/4 + 3/4 ln 3/4) = 0.562335.
    At T = 0.5: logits / T = [0, 2 ln 3] -> p = [1/10, 9/10], log p(0) = ln 1/10."""
    logits = torch.tensor([[0.0, math.log(3.0), 5.0]])
    lp, ent = token_logps(logits, torch.tensor([1]), 1.0, 2, with_entropy=True)
    assert torch.allclose(lp, torch.tensor([math.log(0.75)]), atol=1e-6)
    h = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    assert torch.allclose(ent, torch.tensor([h]), atol=1e-6)
    lp, none = token_logps(logits, torch.tensor([0]), 0.5, 2)
    assert none is None
    assert torch.allclose(lp, torch.tensor([math.log(0.1)]), atol=1e-6)
    assert logits[0, 2] == 5.0  # the caller's logits are untouched


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_token_logps_matches_sampler_bits(temperature):
    """Same logits -> the sampler's commit log-probs (exclude_mask_token, then commit_logprobs),
    bit for bit; gradients reach bf16 logits through the float32 copy."""
    g = torch.Generator().manual_seed(0)
    logits = (3 * torch.randn(2, 5, 11, generator=g)).to(torch.bfloat16)  # [B, K, V]
    tokens = torch.randint(0, 11, (2, 5), generator=g)
    tokens[tokens == 4] = 5  # never score the [MASK] id (4)
    positions = torch.arange(5).expand(2, -1)
    ref = commit_logprobs(exclude_mask_token(logits.clone(), 4), positions, tokens, temperature)
    leaf = logits.clone().requires_grad_(True)
    ours, _ = token_logps(leaf, tokens, temperature, 4)
    assert ours.dtype == torch.float32
    assert torch.equal(ours, ref)
    ours.sum().backward()
    assert leaf.grad is not None and bool(leaf.grad.abs().sum() > 0)
    assert bool((leaf.grad[..., 4] == 0).all())  # [MASK] is outside the distribution


@pytest.mark.parametrize("temperature", [0.0, -1.0])
def test_token_logps_refuses_nonpositive_temperature(temperature):
    with pytest.raises(ValueError, match="temperature > 0"):
        token_logps(torch.zeros(2, 4), torch.zeros(2, dtype=torch.long), temperature, 3)


# ----------------------------------------------------------------------------- CJ-GRPO


class KeepSpy(nn.Module):
    """Records the ``logits_to_keep`` each forward receives."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner, self.kept = inner, []

    def forward(self, input_ids, attention_mask=None, logits_to_keep=None, **kwargs):
        self.kept.append(None if logits_to_keep is None else logits_to_keep.clone())
        return self.inner(input_ids=input_ids, attention_mask=attention_mask,
                          logits_to_keep=logits_to_keep, **kwargs)  # fmt: skip


SCHEDULES = {
    "ascending": dict(schedule="ascending"),  # L = 16: counts 1, 2, 4, 9
    "uniform_blocks": dict(steps=8, block_length=4),  # 4 blocks, 2 steps of 2 tokens each
}


@pytest.mark.parametrize("temperature", [1.0, 0.7])
@pytest.mark.parametrize("schedule", list(SCHEDULES))
def test_trajectory_step_logps_reproduce_rollout(tiny, prompts, schedule, temperature):
    """Every step's log-probs equal the recorded step_logprobs (|diff| < 1e-5, fp32), so the
    importance ratio is 1 on-policy; the LM head runs at the committed positions only (P offset);
    scoring at another temperature would not match (the test can fail)."""
    config = SamplerConfig(
        gen_length=16, temperature=temperature, record_logprobs=True, **SCHEDULES[schedule]
    )
    gen = torch.Generator().manual_seed(1)
    traj = generate(tiny, *prompts, config=config, generator=gen)
    traj.validate()
    spy = replace(tiny, model=KeepSpy(tiny.model))
    seen = torch.zeros_like(traj.completion_ids, dtype=torch.bool)
    for step in range(traj.num_steps):
        with torch.no_grad():
            out = trajectory_step_logps(spy, traj, step, temperature, with_entropy=True)
        k = traj.schedule.counts[step]
        assert out.logps.shape == out.positions.shape == out.entropy.shape == (3, k)
        assert torch.equal(spy.model.kept[-1], out.positions + traj.prompt_length)
        recorded = traj.step_logprobs.gather(1, out.positions)  # [B, k]
        assert (out.logps - recorded).abs().max() < 1e-5
        assert (torch.exp(out.logps - recorded) - 1).abs().max() < 1e-5
        assert bool((out.entropy >= 0).all())
        seen.scatter_(1, out.positions, True)
        if step == 0:
            with torch.no_grad():
                other = trajectory_step_logps(tiny, traj, step, temperature + 0.5)
            assert (other.logps - recorded).abs().max() > 1e-3
    assert bool(seen.all())  # the steps together score every completion token once


def test_trajectory_step_logps_is_differentiable(tiny, prompts):
    """A backward through one step's log-probs reaches the weights."""
    config = SamplerConfig(gen_length=16, schedule="ascending", temperature=1.0)
    traj = generate(tiny, *prompts, config=config, generator=torch.Generator().manual_seed(2))
    model = build_tiny_llada(0, init_std=INIT_STD)  # own copy: grads do not leak into `tiny`
    out = trajectory_step_logps(model, traj, traj.num_steps - 1, 1.0)
    assert out.logps.requires_grad
    out.logps.sum().backward()
    grads = [p.grad for p in model.model.parameters() if p.grad is not None]
    assert grads and sum(float(g.abs().sum()) for g in grads) > 0
    with pytest.raises(ValueError, match="temperature > 0"):
        trajectory_step_logps(model, traj, 0, 0.0)


# ----------------------------------------------------------------------------- d1 prompt mask


def _ragged_mask(b: int, p: int) -> torch.Tensor:
    """``[b, p]`` left-padded mask: row i has ``p - i % p`` real tokens."""
    lengths = p - torch.arange(b) % p  # [b]
    return (torch.arange(p).expand(b, -1) >= (p - lengths).unsqueeze(1)).long()  # [b, p]


def test_draw_prompt_mask_rate_padding_and_rng():
    """p = 0.15 over n real tokens: the masked count is Binomial(n, p); it must lie within
    5 std = 5 sqrt(n p (1 - p)) of n p. Padding is never masked. Same seed -> same mask, two
    draws of one generator differ, and the global RNG state is untouched."""
    prompt_mask = _ragged_mask(64, 48)
    n = int(prompt_mask.sum())
    before = torch.random.get_rng_state()
    masked = draw_prompt_mask(prompt_mask, 0.15, torch.Generator().manual_seed(0))
    assert torch.equal(torch.random.get_rng_state(), before)
    assert masked.dtype == torch.bool and masked.shape == prompt_mask.shape
    assert not bool(masked[prompt_mask == 0].any())
    std = math.sqrt(n * 0.15 * 0.85)
    assert abs(int(masked.sum()) - n * 0.15) < 5 * std
    again = draw_prompt_mask(prompt_mask, 0.15, torch.Generator().manual_seed(0))
    assert torch.equal(masked, again)
    g = torch.Generator().manual_seed(0)
    first, second = draw_prompt_mask(prompt_mask, 0.15, g), draw_prompt_mask(prompt_mask, 0.15, g)
    assert torch.equal(first, masked) and not torch.equal(first, second)
    everything = draw_prompt_mask(prompt_mask, 1.0, g)
    assert torch.equal(everything, prompt_mask.bool())
    assert not bool(draw_prompt_mask(prompt_mask, 0.0, g).any())
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        draw_prompt_mask(prompt_mask, 1.5, g)


# ----------------------------------------------------------------------------- d1 one step


@pytest.mark.parametrize("temperature", [1.0, 0.9])
def test_one_step_logps_equals_full_forward_and_gather(tiny, prompts, temperature):
    """Hand-built: prompt with masked positions -> [MASK], completion all [MASK], one full
    forward of [B, P+L], keep [P, P+L), [MASK] column -inf, log_softmax(. / T), gather."""
    prompt_ids, prompt_mask = prompts
    b, p = prompt_ids.shape
    length = 10
    completion = torch.randint(10, 100, (b, length), generator=torch.Generator().manual_seed(3))
    masked = draw_prompt_mask(prompt_mask, 0.5, torch.Generator().manual_seed(4))
    assert bool(masked.any())
    with torch.no_grad():
        ours, ent = one_step_logps(
            tiny, prompt_ids, prompt_mask, completion, masked, temperature, with_entropy=True
        )
        mask_id = tiny.mask_token_id
        ids = torch.cat(
            [prompt_ids.masked_fill(masked, mask_id), torch.full_like(completion, mask_id)], 1
        )
        attention = torch.cat([prompt_mask, torch.ones_like(completion)], 1)
        full = tiny.logits(ids, attention).float()  # [B, P+L, V]
        window = full[:, p:].clone()
        window[..., mask_id] = float("-inf")
        logp_all = (window / temperature).log_softmax(-1)  # [B, L, V]
        expected = logp_all.gather(-1, completion.unsqueeze(-1)).squeeze(-1)
        probs = logp_all.exp()
        expected_ent = -(probs * logp_all.nan_to_num(neginf=0.0)).sum(-1)
        unmasked, _ = one_step_logps(
            tiny, prompt_ids, prompt_mask, completion, torch.zeros_like(masked), temperature
        )
    assert ours.shape == ent.shape == (b, length)
    assert (ours - expected).abs().max() < 1e-5
    assert (ent - expected_ent).abs().max() < 1e-5
    assert (unmasked - ours).abs().max() > 1e-4  # the prompt mask does reach the model


def test_keeping_mask_in_the_softmax_costs_log_of_one_minus_its_mass():
    """With [MASK] kept, every log-prob is lower by exactly log(1 - p_mask) at that temperature
    (the same softmax, renormalised over one more token)."""
    torch.manual_seed(0)
    logits = torch.randn(3, 5, 7)
    tokens = torch.randint(0, 6, (3, 5))  # never the [MASK] id 6
    for temperature in (1.0, 0.7):
        without, _ = token_logps(logits, tokens, temperature, 6)
        kept, _ = token_logps(logits, tokens, temperature, None)
        p_mask = torch.softmax(logits / temperature, dim=-1)[..., 6]
        torch.testing.assert_close(kept - without, torch.log1p(-p_mask), atol=1e-6, rtol=0)


def test_the_elbo_follows_the_mask_in_softmax_switch():
    from dllm_rl.models.tiny import build_tiny_llada
    from dllm_rl.objectives.elbo import masked_token_logps

    model = build_tiny_llada(0)
    ids = torch.randint(5, 40, (2, 9))
    mask = torch.zeros(2, 9, dtype=torch.bool)
    mask[:, 3:7] = True
    without, valid = masked_token_logps(model, ids, None, mask)
    model.mask_in_softmax = True
    kept, _ = masked_token_logps(model, ids, None, mask)
    noisy = ids.masked_fill(mask, model.mask_token_id)
    with torch.no_grad():
        logits = model.logits(noisy, None).float()[:, 3:7]
    p_mask = torch.softmax(logits, dim=-1)[..., model.mask_token_id]
    torch.testing.assert_close(
        (kept - without)[valid], torch.log1p(-p_mask).flatten(), atol=1e-5, rtol=0
    )
