"""LLaDA's EOS options (``logits_eos_inf``, ``confidence_eos_eot_inf``) and the sampler's
newcomer-facing checks (prompt types, context length, field-named setting errors)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dllm_rl.models.adapter import DiffusionLM, SpecialIds
from dllm_rl.models.tiny import build_tiny_llada
from dllm_rl.rollout import EosRejection, SamplerConfig, generate, generate_text
from dllm_rl.rollout.proposal import exclude_tokens, rank_last

V, MASK, EOS, EOT, PAD, WORD = 16, 15, 1, 2, 0, 7
IDS = SpecialIds(mask=MASK, eos=EOS, pad=PAD, eot=EOT)


class FixedLogits(nn.Module):
    """Logits that ignore the input: the first half of the completion proposes a stop token
    (EOS at even positions, EOT at odd ones) with probability ~1, the rest WORD with ~0.6."""

    def __init__(self, prompt_length: int, gen_length: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))
        n = prompt_length + gen_length
        table = torch.zeros(n, V)
        for i in range(gen_length):
            row = table[prompt_length + i]
            if i < gen_length // 2:
                row[EOS if i % 2 == 0 else EOT] = 20.0
            else:
                row[WORD] = 3.0
        self.table = table

    def forward(self, input_ids, attention_mask=None, **kwargs):
        return self.table.expand(input_ids.shape[0], -1, -1).clone()


def fixed_model(p: int = 2, length: int = 8) -> tuple[DiffusionLM, torch.Tensor]:
    return DiffusionLM(FixedLogits(p, length), IDS), torch.full((3, p), 9)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_logits_eos_inf_never_proposes_eos(temperature):
    lm, prompt = fixed_model()
    off = SamplerConfig(gen_length=8, steps=8, temperature=temperature)
    on = SamplerConfig(gen_length=8, steps=8, temperature=temperature, logits_eos_inf=True)
    g = torch.Generator().manual_seed(0)
    assert (generate(lm, prompt, None, off, g).completion_ids == EOS).any()
    traj = generate(lm, prompt, None, on, torch.Generator().manual_seed(0))
    assert not (traj.completion_ids == EOS).any()
    assert (traj.completion_ids == EOT).any()  # EOT is not touched by this option


@pytest.mark.parametrize("temperature", [0.0, 1.0])
@pytest.mark.parametrize("schedule", ["uniform", "ascending"])
def test_confidence_eos_eot_inf_ranks_stop_ids_last_at_any_temperature(temperature, schedule):
    """Off: the confident stop proposals (first half) are committed first. On: every WORD
    position is committed before any stop token, at T = 0 and T > 0 alike (the reference code
    reaches EOT only at T = 0)."""
    lm, prompt = fixed_model()
    steps = 8 if schedule == "uniform" else None
    kw = dict(gen_length=8, steps=steps, schedule=schedule, temperature=temperature)
    off = generate(lm, prompt, None, SamplerConfig(**kw), torch.Generator().manual_seed(0))
    on = generate(
        lm,
        prompt,
        None,
        SamplerConfig(**kw, confidence_eos_eot_inf=True),
        torch.Generator().manual_seed(0),
    )
    for traj, stops_first in ((off, True), (on, False)):
        stop = (traj.completion_ids == EOS) | (traj.completion_ids == EOT)  # [B, L]
        assert stop.any() and (~stop).any()
        last_stop = traj.unmask_step.masked_fill(~stop, -1).amax(1)
        first_stop = traj.unmask_step.masked_fill(~stop, 99).amin(1)
        last_word = traj.unmask_step.masked_fill(stop, -1).amax(1)
        first_word = traj.unmask_step.masked_fill(stop, 99).amin(1)
        if stops_first:
            assert (first_stop <= first_word).all()
        else:  # every word before (or with, in the last forced step) the first stop token
            assert (last_word <= first_stop).all() and (last_stop >= last_word).all()


def test_options_off_are_the_default_path():
    tiny = build_tiny_llada(0, init_std=0.3)
    kw = dict(gen_length=16, steps=8, temperature=1.0, record_logprobs=True)
    a = generate_text(tiny, ["12+34=", "hi"], SamplerConfig(**kw), torch.Generator().manual_seed(3))
    b = generate_text(
        tiny,
        ["12+34=", "hi"],
        SamplerConfig(**kw, logits_eos_inf=False, confidence_eos_eot_inf=False),
        torch.Generator().manual_seed(3),
    )
    assert torch.equal(a.completion_ids, b.completion_ids)
    assert torch.equal(a.unmask_step, b.unmask_step)
    assert torch.equal(a.step_logprobs, b.step_logprobs)


def test_pure_functions():
    logits = torch.zeros(1, 2, 4)
    exclude_tokens(logits, torch.tensor([1, 3]))
    assert torch.isinf(logits[..., [1, 3]]).all() and (logits[..., [0, 2]] == 0).all()
    scores = torch.tensor([[0.9, 0.5, 0.1]])
    tokens = torch.tensor([[1, 5, 2]])
    out = rank_last(scores, tokens, torch.tensor([1, 2]))
    assert out[0, 1] == 0.5 and torch.isinf(out[0, [0, 2]]).all()


# ----------------------------------------------------------------------------- newcomer checks
def test_generate_text_rejects_a_string_and_an_empty_list():
    tiny = build_tiny_llada(0)
    cfg = SamplerConfig(gen_length=4, steps=2)
    with pytest.raises(TypeError, match=r"one string '12\+34='.*Pass \[prompt\]"):
        generate_text(tiny, "12+34=", cfg)
    with pytest.raises(ValueError, match="prompts is empty"):
        generate_text(tiny, [], cfg)
    with pytest.raises(TypeError, match=r"prompts\[1\] is a int"):
        generate_text(tiny, ["a", 3], cfg)


class Exploding(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.weight, self.config = nn.Parameter(torch.zeros(1)), config

    def forward(self, *args, **kwargs):
        raise RuntimeError("forward was called")


def test_prompt_longer_than_the_context_fails_before_any_forward():
    tiny = build_tiny_llada(0, max_sequence_length=64)
    lm = DiffusionLM(Exploding(tiny.model.config), tiny.ids, tokenizer=tiny.tokenizer)
    with pytest.raises(ValueError, match=r"= 72 tokens exceeds the model's context of 64"):
        generate(lm, torch.full((1, 56), 9), None, SamplerConfig(gen_length=16, steps=4))
    with pytest.raises(RuntimeError, match="forward was called"):  # 48 + 16 fits
        generate(lm, torch.full((1, 48), 9), None, SamplerConfig(gen_length=16, steps=4))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(gen_length="32"), r"gen_length\n  Input should be a valid integer"),
        (dict(gen_length=32.0), r"gen_length\n  Input should be a valid integer"),
        (dict(steps=True), r"steps\n  Input should be a valid integer"),
        (dict(temperature="hot"), r"temperature\n  Input should be a valid number"),
        (dict(gen_lenght=32), r"gen_lenght\n  Unexpected keyword argument"),
        (dict(schedule="ascend"), r"Input should be 'uniform' or 'ascending'"),
        (dict(remasking="low_conf"), r"Input should be 'low_confidence', 'random'"),
    ],
)
def test_sampler_settings_name_the_field(kwargs, message):
    """Python callers get pydantic's check of the one schema (recipes get the same through the
    config, plus close matches for a misspelled key: tests/run/test_cli.py)."""
    with pytest.raises(ValueError, match=message):
        SamplerConfig(**kwargs)


def test_eos_rejection_names_its_fields():
    with pytest.raises(ValueError, match=r"gamma\n  Unexpected keyword argument"):
        EosRejection(gamma=0.5)
    with pytest.raises(ValueError, match="Input should be 'linear' or 'power'"):
        EosRejection(gamma_schedule="powr")
    with pytest.raises(ValueError, match=r"Input should be 'eos' or 'stop'"):
        EosRejection(ids=["x"])
    assert EosRejection(ids=[5, 7]).ids == (5, 7)  # a YAML list of ids
    with pytest.raises(ValueError, match=r"eos_rejection.gamma\n  Unexpected keyword"):
        SamplerConfig(eos_rejection={"gamma": 0.5})  # via the mapping form too
