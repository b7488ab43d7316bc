"""The sampler on tiny random LLaDA models: replay, padding invariance, determinism, EOSER, CFG."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dllm_rl.models.adapter import DiffusionLM
from dllm_rl.rollout import SamplerConfig, Trajectory, encode_prompts, generate, generate_text
from dllm_rl.rollout.proposal import (
    commit_logprobs,
    confidence_scores,
    exclude_mask_token,
    propose_tokens,
    reject_early_eos,
    select_commits,
)
from tests.rollout.conftest import PROMPTS, biased


def fresh_logits(lm: DiffusionLM, traj: Trajectory, step: int) -> torch.Tensor:
    """``[B, L, V]`` completion logits of a new forward on the state before ``step``."""
    ids, mask = traj.model_input(step)
    logits = lm.logits(ids, mask)[:, traj.prompt_length :].float()
    return exclude_mask_token(logits, lm.mask_token_id)


REPLAY_CONFIGS = {
    "uniform-blocks-lowconf": SamplerConfig(gen_length=32, block_length=8, steps=16),
    "uniform-entropy-eoser": SamplerConfig(
        gen_length=32,
        block_length=16,
        steps=8,
        remasking="entropy",
        eos_rejection=dict(enabled=True, ids="stop"),
    ),
    "uniform-margin-1tok": SamplerConfig(
        gen_length=32, block_length=8, steps=32, remasking="margin"
    ),
    "ascending-blocks-eoser": SamplerConfig(
        gen_length=32,
        schedule="ascending",
        num_blocks=2,
        eos_rejection=dict(enabled=True, gamma_schedule="power"),
    ),
    "ascending-margin": SamplerConfig(gen_length=32, schedule="ascending", remasking="margin"),
}


@pytest.mark.parametrize("name", list(REPLAY_CONFIGS))
@torch.no_grad()
def test_replay_reproduces_every_step(tiny, prompts, name):
    """At T=0 a fresh forward on state_before(s) gives the committed tokens and positions of s."""
    config = REPLAY_CONFIGS[name]
    lm = biased(tiny, tiny.eos_token_id, 3.0)  # EOS is proposed often enough for EOSER to act
    traj = generate(lm, *prompts, config)
    traj.validate()
    gammas = config.eos_rejection.factors(traj.num_steps)
    eos_ids = torch.tensor(config.eos_rejection.resolve_ids(lm.ids))
    for s in range(traj.num_steps):
        lo, hi = traj.schedule.step_bounds(s)
        logits = fresh_logits(lm, traj, s)[:, lo:hi]  # [B, K, V]
        tokens = logits.argmax(-1)  # [B, K]
        pos = traj.committed_at(s)  # [B, k]
        assert torch.equal(traj.completion_ids.gather(1, pos), tokens.gather(1, pos - lo)), s
        scores = confidence_scores(logits, tokens, config.remasking)
        if gammas is not None:
            scores = reject_early_eos(scores, tokens, eos_ids, gammas[s])
        masked = traj.state_before(s)[:, lo:hi] == lm.mask_token_id
        expected = select_commits(scores, pos.shape[1], masked).sort(dim=1).values + lo
        assert torch.equal(pos, expected), s


def test_replay_random_remasking_tokens(tiny, prompts):
    config = SamplerConfig(gen_length=16, block_length=8, steps=8, remasking="random")
    traj = generate(tiny, *prompts, config, torch.Generator().manual_seed(0))
    traj.validate()
    for s in range(traj.num_steps):
        lo, _ = traj.schedule.step_bounds(s)
        tokens = fresh_logits(tiny, traj, s).argmax(-1)  # [B, L]
        pos = traj.committed_at(s)
        assert torch.equal(traj.completion_ids.gather(1, pos), tokens.gather(1, pos)), s


@pytest.mark.parametrize(
    "config",
    [
        SamplerConfig(gen_length=24, block_length=8, steps=12),
        SamplerConfig(
            gen_length=32,
            schedule="ascending",
            remasking="entropy",
            eos_rejection=dict(enabled=True, gamma_schedule="power"),
        ),
    ],
    ids=["uniform-blocks", "ascending-eoser"],
)
def test_padding_invariance(tiny64, config):
    """A left-padded batch decodes each prompt exactly as that prompt alone (T=0)."""
    ids, mask = encode_prompts(tiny64, PROMPTS)
    batch = generate(tiny64, ids, mask, config)
    for i, text in enumerate(PROMPTS):
        alone = generate(tiny64, *encode_prompts(tiny64, [text]), config)
        assert torch.equal(batch.completion_ids[i], alone.completion_ids[0]), text
        assert torch.equal(batch.unmask_step[i], alone.unmask_step[0]), text
    # Without the attention mask, pad tokens are attended and the short prompt's answer changes.
    unmasked = generate(tiny64, ids, torch.ones_like(mask), config)
    assert not torch.equal(unmasked.completion_ids[1], batch.completion_ids[1])


def test_determinism_under_a_generator(tiny, prompts):
    config = SamplerConfig(
        gen_length=16, steps=8, temperature=1.0, remasking="random", record_logprobs=True
    )
    a = generate(tiny, *prompts, config, torch.Generator().manual_seed(123))
    b = generate(tiny, *prompts, config, torch.Generator().manual_seed(123))
    c = generate(tiny, *prompts, config, torch.Generator().manual_seed(124))
    assert torch.equal(a.completion_ids, b.completion_ids)
    assert torch.equal(a.unmask_step, b.unmask_step)
    assert torch.equal(a.step_logprobs, b.step_logprobs)
    assert not torch.equal(a.completion_ids, c.completion_ids)
    assert not torch.equal(a.unmask_step, c.unmask_step)


@pytest.mark.parametrize("temperature", [1.0, 0.5, 0.0])
@torch.no_grad()
def test_recorded_logprobs_match_a_fresh_forward(tiny, prompts, temperature):
    """What CJ-GRPO relies on: log_softmax(logits/T) on the rebuilt state, at the commits."""
    config = SamplerConfig(
        gen_length=32,
        schedule="ascending",
        num_blocks=2,
        temperature=temperature,
        record_logprobs=True,
        eos_rejection=dict(enabled=True),
    )
    traj = generate(tiny, *prompts, config, torch.Generator().manual_seed(0))
    traj.validate()
    scale = temperature if temperature > 0 else 1.0
    for s in range(traj.num_steps):
        logp = (fresh_logits(tiny, traj, s) / scale).log_softmax(-1)  # [B, L, V]
        pos = traj.committed_at(s)
        want = logp.gather(-1, traj.completion_ids.unsqueeze(-1)).squeeze(-1).gather(1, pos)
        torch.testing.assert_close(traj.step_logprobs.gather(1, pos), want, atol=1e-5, rtol=0)


def test_eos_rejection_delays_eos_without_changing_tokens(tiny, prompts):
    """On an EOS-biased model, EOSER commits EOS later; replay shows the tokens are the proposals."""
    lm = biased(tiny, tiny.eos_token_id, 3.0)
    base = SamplerConfig(gen_length=32, schedule="ascending")
    eoser = SamplerConfig(
        gen_length=32,
        schedule="ascending",
        eos_rejection=dict(enabled=True, gamma_schedule="power"),
    )
    plain, rejected = generate(lm, *prompts, base), generate(lm, *prompts, eoser)
    eos_plain = plain.completion_ids == lm.eos_token_id
    eos_rej = rejected.completion_ids == lm.eos_token_id
    assert eos_plain.any() and eos_rej.any()
    # Step 0 sees the same all-mask state in both runs, so the same proposals; EOSER ranks them
    # last (gamma = 0.04 with S = 5) and commits a non-EOS token instead.
    assert (eos_plain & (plain.unmask_step == 0)).any()
    assert not (eos_rej & (rejected.unmask_step == 0)).any()
    mean_step = lambda t, e: t.unmask_step[e].float().mean()  # noqa: E731
    assert mean_step(rejected, eos_rej) > mean_step(plain, eos_plain)


def test_eos_rejection_with_unit_gamma_is_a_no_op(tiny, prompts):
    lm = biased(tiny, tiny.eos_token_id, 3.0)
    off = SamplerConfig(gen_length=32, steps=16, temperature=1.0)
    unit = SamplerConfig(
        gen_length=32,
        steps=16,
        temperature=1.0,
        eos_rejection=dict(enabled=True, gamma_min=1.0, gamma_max=1.0),
    )
    a = generate(lm, *prompts, off, torch.Generator().manual_seed(5))
    b = generate(lm, *prompts, unit, torch.Generator().manual_seed(5))
    assert torch.equal(a.completion_ids, b.completion_ids)
    assert torch.equal(a.unmask_step, b.unmask_step)


class CountingModel(nn.Module):
    """Records the input of every forward."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner, self.inputs = inner, []

    def forward(self, input_ids, attention_mask=None):
        self.inputs.append(input_ids.clone())
        return self.inner(input_ids=input_ids, attention_mask=attention_mask)


class HandGuided(nn.Module):
    """Classifier-free guidance written out by hand: two separate forwards of B rows."""

    def __init__(self, inner: nn.Module, prompt_mask: torch.Tensor, mask_id: int, w: float):
        super().__init__()
        self.inner, self.prompt_mask, self.mask_id, self.w = inner, prompt_mask, mask_id, w

    def forward(self, input_ids, attention_mask=None):
        p = self.prompt_mask.shape[1]
        uncond = input_ids.clone()
        uncond[:, :p][self.prompt_mask.bool()] = self.mask_id
        c = self.inner(input_ids=input_ids, attention_mask=attention_mask).logits
        u = self.inner(input_ids=uncond, attention_mask=attention_mask).logits
        return u + (self.w + 1) * (c - u)


def test_cfg_zero_is_no_guidance(tiny, prompts):
    counting = DiffusionLM(CountingModel(tiny.model), tiny.ids)
    config = SamplerConfig(gen_length=16, steps=8, temperature=1.0)
    a = generate(counting, *prompts, config, torch.Generator().manual_seed(0))
    b = generate(
        tiny,
        *prompts,
        SamplerConfig(gen_length=16, steps=8, temperature=1.0, cfg_scale=0.0),
        torch.Generator().manual_seed(0),
    )
    assert torch.equal(a.completion_ids, b.completion_ids)
    assert len(counting.model.inputs) == 8 and counting.model.inputs[0].shape[0] == 3


def test_cfg_matches_hand_written_guidance(tiny64):
    ids, mask = encode_prompts(tiny64, PROMPTS)
    counting = DiffusionLM(CountingModel(tiny64.model), tiny64.ids)
    guided = generate(counting, ids, mask, SamplerConfig(gen_length=16, steps=8, cfg_scale=2.0))
    first = counting.model.inputs[0]  # [2B, P+L]: conditional rows, then prompt-masked rows
    assert first.shape[0] == 6
    assert torch.equal(first[3:, :16][mask.bool()], torch.full((30,), tiny64.mask_token_id))
    assert torch.equal(first[3:, :16][~mask.bool()], ids[~mask.bool()])  # padding stays padding
    hand = DiffusionLM(HandGuided(tiny64.model, mask, tiny64.mask_token_id, 2.0), tiny64.ids)
    reference = generate(hand, ids, mask, SamplerConfig(gen_length=16, steps=8))
    assert torch.equal(guided.completion_ids, reference.completion_ids)
    plain = generate(tiny64, ids, mask, SamplerConfig(gen_length=16, steps=8))
    assert not torch.equal(guided.completion_ids, plain.completion_ids)


def test_mask_token_is_never_proposed(tiny, prompts):
    lm = biased(tiny, tiny.mask_token_id, 50.0)  # [MASK] would win every argmax
    traj = generate(lm, *prompts, SamplerConfig(gen_length=16, steps=4, temperature=1.0))
    traj.validate()  # asserts no committed [MASK]


class Exploding(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, attention_mask=None):
        raise RuntimeError("forward was called")


def test_bad_inputs_fail_before_any_forward(tiny):
    lm = DiffusionLM(Exploding(), tiny.ids)
    ids = torch.tensor([[5, 6, 7], [8, 9, 10]])
    config = SamplerConfig(gen_length=8, steps=4)
    right_padded = torch.tensor([[1, 1, 0], [1, 1, 1]])
    with pytest.raises(ValueError, match="left-padded"):
        generate(lm, ids, right_padded, config)
    with pytest.raises(ValueError, match="prompt_mask shape"):
        generate(lm, ids, right_padded[:, :2], config)
    with pytest.raises(ValueError, match=r"\[B, P\]"):
        generate(lm, ids[0], None, config)
    on_meta = DiffusionLM(Exploding().to("meta"), tiny.ids)
    with pytest.raises(ValueError, match="generator is on cpu but the model on meta"):
        generate(on_meta, ids, None, config, torch.Generator())
    with pytest.raises(RuntimeError, match="forward was called"):  # valid input reaches forward
        generate(lm, ids, None, config)


def test_generate_text_left_pads(tiny):
    ids, mask = encode_prompts(tiny, ["ab", "abcd"])
    assert mask.tolist() == [[0, 0, 1, 1], [1, 1, 1, 1]]
    assert ids[0, :2].tolist() == [tiny.ids.pad] * 2
    traj = generate_text(tiny, ["ab", "abcd"], SamplerConfig(gen_length=8, steps=4))
    traj.validate()
    assert traj.completion_ids.shape == (2, 8)
    ids, mask = encode_prompts(tiny, ["hi"], chat_template=True)
    text = tiny.tokenizer.decode(ids[0])
    assert text.startswith("<|startoftext|><|start_header_id|>user") and text.endswith("\n\n")


@pytest.mark.parametrize("cfg_scale", [0.0, 1.0])
@torch.no_grad()
def test_forwards_score_the_current_block_only(tiny, prompts, cfg_scale):
    """The LM head runs on the step's block of K = 8 positions, never on the whole canvas."""
    config = SamplerConfig(gen_length=32, block_length=8, steps=8, cfg_scale=cfg_scale)
    shapes = []
    hook = tiny.model.register_forward_hook(lambda _m, _a, out: shapes.append(out.logits.shape))
    try:
        generate(tiny, *prompts, config)
    finally:
        hook.remove()
    rows = 6 if cfg_scale else 3  # CFG batches the prompt-masked rows with the others
    assert shapes == [(rows, 8, tiny.model.config.vocab_size)] * 8


@torch.no_grad()
def test_chunked_working_memory_gives_the_same_rollout(tiny, prompts, monkeypatch):
    """Row chunks of 1 (noise, float32 copies) change nothing in a sampled rollout (CPU)."""
    config = SamplerConfig(
        gen_length=32,
        schedule="ascending",
        temperature=1.0,
        remasking="margin",
        record_logprobs=True,
    )
    whole = generate(tiny, *prompts, config, torch.Generator().manual_seed(0))
    one_row = tiny.model.config.vocab_size * 8  # bytes of one float64 row: every chunk is a row
    calls = []
    for fn in (propose_tokens, confidence_scores, commit_logprobs):

        def one_row_chunks(*args, _fn=fn, **kwargs):
            calls.append(_fn.__name__)
            return _fn(*args, **kwargs, chunk_bytes=one_row)

        monkeypatch.setattr(f"dllm_rl.rollout.sampler.{fn.__name__}", one_row_chunks)
    chunked = generate(tiny, *prompts, config, torch.Generator().manual_seed(0))
    assert set(calls) == {"propose_tokens", "confidence_scores", "commit_logprobs"}
    assert torch.equal(chunked.completion_ids, whole.completion_ids)
    assert torch.equal(chunked.unmask_step, whole.unmask_step)
    assert torch.equal(chunked.step_logprobs, whole.step_logprobs)
