"""Step schedules and EOS-rejection factors against hand-derived tables."""

from __future__ import annotations

import pytest
import torch

from dllm_rl.rollout.config import EosRejection, SamplerConfig
from dllm_rl.rollout.schedules import (
    Schedule,
    ascending_counts,
    ascending_schedule,
    eos_gamma_factors,
    split_evenly,
    uniform_schedule,
)


def test_split_evenly_gives_remainder_to_first_steps():
    # 10 = 3 + 3 + 2 + 2: floor(10/4) = 2 each, 10 mod 4 = 2 extra tokens on steps 0 and 1.
    assert split_evenly(10, 4) == [3, 3, 2, 2]
    assert split_evenly(32, 4) == [8, 8, 8, 8]
    assert split_evenly(7, 7) == [1] * 7


def test_uniform_d1_setting():
    # d1: L=256, 128 steps, block 32 -> 8 blocks x 16 steps, 2 tokens per step.
    s = uniform_schedule(256, 32, 128)
    assert s.num_steps == 128 and s.num_blocks == 8
    assert set(s.counts) == {2}
    assert s.step_block[:17] == (0,) * 16 + (1,)
    assert s.step_bounds(16) == (32, 64)
    assert s.block_bounds[-1] == (224, 256)


def test_uniform_blocks_repeat_the_quota():
    # L=20, block 10, 8 steps -> 4 steps per block of 10 masks: [3, 3, 2, 2] twice.
    s = uniform_schedule(20, 10, 8)
    assert s.counts == (3, 3, 2, 2, 3, 3, 2, 2)
    assert s.step_block == (0, 0, 0, 0, 1, 1, 1, 1)
    assert s.block_bounds == ((0, 10), (10, 20))


@pytest.mark.parametrize(
    "length, expected",
    [
        (128, [1, 2, 4, 8, 16, 32, 65]),  # 7 steps; 128 - 63 = 65
        (256, [1, 2, 4, 8, 16, 32, 64, 129]),  # 8 steps; 256 - 127 = 129
        (200, [1, 2, 4, 8, 16, 32, 137]),  # floor(log2 200) = 7; 200 - 63 = 137
        (2, [2]),  # one step commits everything
        (3, [3]),
        (4, [1, 3]),
    ],
)
def test_ascending_counts(length, expected):
    assert ascending_counts(length) == expected


def test_ascending_blocks_are_geometric_from_the_right():
    # L=128, 4 blocks: the last 3 steps (16, 32, 65) are blocks; the first holds 1+2+4+8 = 15.
    s = ascending_schedule(128, num_blocks=4)
    sizes = [end - start for start, end in s.block_bounds]
    assert sizes == [15, 16, 32, 65]
    assert s.counts == (1, 2, 4, 8, 16, 32, 65)
    assert s.step_block == (0, 0, 0, 0, 1, 2, 3)


def test_open_before_counts_masks_left_in_the_block():
    s = uniform_schedule(20, 10, 8)  # [3, 3, 2, 2] per block of 10
    assert [s.open_before(t) for t in range(8)] == [10, 7, 4, 2, 10, 7, 4, 2]
    a = ascending_schedule(128, num_blocks=4)  # block 0: steps 0-3 over 15 positions
    assert [a.open_before(t) for t in range(7)] == [15, 14, 12, 8, 16, 32, 65]


def test_ascending_one_block_is_full_diffusion():
    s = ascending_schedule(256)
    assert s.block_bounds == ((0, 256),) and set(s.step_block) == {0}


def test_power_gamma_table():
    # g_min + (g_max - g_min)(2^(s+1) - 1)/2^7, g = 0.01, 1: e.g. s=0: 0.01 + 0.99/128 = 0.0177.
    got = eos_gamma_factors(7, 0.01, 1.0, "power")
    assert [round(g, 3) for g in got] == [0.018, 0.033, 0.064, 0.126, 0.250, 0.497, 0.992]


def test_linear_gamma_table():
    # 0.01 + 0.99 * s / 4 for s = 0..4.
    got = eos_gamma_factors(5, 0.01, 1.0, "linear")
    assert got == pytest.approx([0.01, 0.2575, 0.505, 0.7525, 1.0])
    assert eos_gamma_factors(1, 0.01, 1.0, "linear") == (1.0,)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(gen_length=100, block_length=32), "not a multiple of block_length"),
        (dict(gen_length=64, block_length=32, steps=3), "cannot be split evenly over 2 blocks"),
        (dict(gen_length=64, steps=128), "more steps than tokens"),
        (dict(gen_length=64, remasking="low_conf"), "Input should be 'low_confidence', 'random'"),
        (dict(gen_length=64, schedule="log"), "Input should be 'uniform' or 'ascending'"),
        (dict(gen_length=64, temperature=-0.5), "temperature must be >= 0"),
        (dict(gen_length=64, cfg_scale=-1.0), "cfg_scale must be >= 0"),
        (dict(gen_length=128, schedule="ascending", steps=64), "floor\\(log2 gen_length\\) = 7"),
        (dict(gen_length=128, schedule="ascending", block_length=32), "set num_blocks instead"),
        (dict(gen_length=128, schedule="ascending", num_blocks=8), "num_blocks\\s+must be in"),
        (dict(gen_length=64, eos_rejection=dict(gamma_schedule="cosine")), "gamma_schedule"),
        (dict(gen_length=64, eos_rejection=dict(gamma_min=0.5, gamma_max=0.1)), "gamma_min"),
        (dict(gen_length=64, eos_rejection=dict(ids="eod")), "Input should be 'eos' or 'stop'"),
        (dict(gen_length=2**15), "32768 steps; .* int16, so at most 32767"),
    ],
)
def test_invalid_settings_raise_actionable_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SamplerConfig(**kwargs)


def test_config_resolves_schedules():
    assert SamplerConfig(gen_length=256, steps=128, block_length=32).plan == uniform_schedule(
        256, 32, 128
    )
    assert SamplerConfig(gen_length=64, num_blocks=2, steps=8).plan.block_bounds == (
        (0, 32),
        (32, 64),
    )
    assert SamplerConfig(gen_length=64).plan.counts == (1,) * 64
    assert SamplerConfig(gen_length=256, schedule="ascending").plan.num_steps == 8
    cfg = SamplerConfig(gen_length=8, eos_rejection={"enabled": True, "ids": [5, 6]})
    assert cfg.eos_rejection == EosRejection(enabled=True, ids=(5, 6))


def test_inconsistent_schedule_record_is_rejected():
    with pytest.raises(ValueError, match="block 0 has 4 positions but commits 3"):
        Schedule("custom", counts=(2, 1), step_block=(0, 0), block_bounds=((0, 4),))
    with pytest.raises(ValueError, match="in order"):
        Schedule("custom", counts=(2, 2), step_block=(1, 0), block_bounds=((0, 2), (2, 4)))


def test_step_limit_keeps_int16_unmask_steps_exact():
    """S = 32767 is the most an int16 ``unmask_step`` records: ``state_before(S)`` compares with S."""
    from dllm_rl.rollout.schedules import MAX_STEPS
    from dllm_rl.rollout.trajectory import Trajectory

    assert MAX_STEPS == torch.iinfo(torch.int16).max
    schedule = uniform_schedule(MAX_STEPS, MAX_STEPS, MAX_STEPS)
    ids = torch.arange(MAX_STEPS)[None] % 5 + 1  # [1, L]
    traj = Trajectory(
        prompt_ids=torch.tensor([[1]]),
        prompt_mask=torch.tensor([[1]]),
        completion_ids=ids,
        unmask_step=torch.arange(MAX_STEPS, dtype=torch.int16)[None],
        schedule=schedule,
        mask_token_id=0,
        pad_token_id=0,
    )
    assert torch.equal(traj.state_before(MAX_STEPS), ids)
    assert int((traj.state_before(MAX_STEPS - 1) == 0).sum()) == 1
