"""The trajectory record on hand-built examples (no model)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dllm_rl.rollout.schedules import uniform_schedule
from dllm_rl.rollout.trajectory import Trajectory

M, PAD = 99, 0


def make_traj() -> Trajectory:
    """Two rows, L=4 in two blocks of 2, one token per step (steps 0,1 in block 0; 2,3 in 1)."""
    schedule = uniform_schedule(4, 2, 4)
    return Trajectory(
        prompt_ids=torch.tensor([[PAD, 7], [8, 9]]),
        prompt_mask=torch.tensor([[0, 1], [1, 1]]),
        completion_ids=torch.tensor([[10, 11, 12, 13], [20, 21, 22, 23]]),
        unmask_step=torch.tensor([[1, 0, 2, 3], [0, 1, 3, 2]], dtype=torch.int16),
        schedule=schedule,
        mask_token_id=M,
        pad_token_id=PAD,
        step_logprobs=torch.tensor([[-0.1, -0.2, -0.3, -0.4], [-1.0, -2.0, -3.0, -4.0]]),
    )


def test_state_before_each_step():
    t = make_traj()
    assert t.state_before(0).tolist() == [[M, M, M, M], [M, M, M, M]]
    assert t.state_before(1).tolist() == [[M, 11, M, M], [20, M, M, M]]
    assert t.state_before(3).tolist() == [[10, 11, 12, M], [20, 21, M, 23]]
    assert torch.equal(t.state_before(4), t.completion_ids)
    with pytest.raises(IndexError):
        t.state_before(5)


def test_model_input_prepends_prompt_and_mask():
    ids, mask = make_traj().model_input(2)
    assert ids.tolist() == [[PAD, 7, 10, 11, M, M], [8, 9, 20, 21, M, M]]
    assert mask.tolist() == [[0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]]


def test_committed_at():
    t = make_traj()
    assert t.committed_at(0).tolist() == [[1], [0]]
    assert t.committed_at(3).tolist() == [[3], [2]]


def test_validate_accepts_a_consistent_record():
    make_traj().validate()


@pytest.mark.parametrize(
    "row, message",
    [
        ([1, 1, 2, 3], "per step"),  # step 1 twice, step 0 never
        ([1, 0, 2, -1], "never committed"),
        ([2, 0, 1, 3], "outside its step's block"),  # position 0 at step 2 (block 1)
    ],
)
def test_validate_catches_broken_records(row, message):
    t = make_traj()
    t.unmask_step[0] = torch.tensor(row, dtype=torch.int16)
    with pytest.raises(AssertionError, match=message):
        t.validate()


def test_validate_catches_a_committed_mask():
    t = make_traj()
    t.completion_ids[1, 2] = M
    with pytest.raises(AssertionError, match="MASK"):
        t.validate()


def test_index_split_concat_roundtrip():
    t = make_traj()
    row = t[1]
    assert row.batch_size == 1 and row.completion_ids.tolist() == [[20, 21, 22, 23]]
    assert t[-1].completion_ids.tolist() == [[20, 21, 22, 23]]
    assert t[torch.tensor([1, 0])].prompt_ids.tolist() == [[8, 9], [PAD, 7]]
    for one in (torch.tensor(1), torch.tensor(-1), np.int64(1)):  # e.g. an argmax over rows
        picked = t[one]
        assert picked.completion_ids.tolist() == [[20, 21, 22, 23]], one
        assert picked.prompt_ids.shape == (1, 2) and picked.unmask_step.shape == (1, 4), one
        picked.validate()
    parts = t.split(1)
    assert [p.batch_size for p in parts] == [1, 1]
    back = Trajectory.concat(parts)
    for name in ("prompt_ids", "prompt_mask", "completion_ids", "unmask_step", "step_logprobs"):
        assert torch.equal(getattr(back, name), getattr(t, name)), name
    back.validate()


def test_concat_left_pads_shorter_prompts():
    t = make_traj()
    short = t[1]
    short.prompt_ids, short.prompt_mask = short.prompt_ids[:, 1:], short.prompt_mask[:, 1:]
    both = Trajectory.concat([short, t[0]])
    assert both.prompt_ids.tolist() == [[PAD, 9], [PAD, 7]]
    assert both.prompt_mask.tolist() == [[0, 1], [0, 1]]


def test_concat_refuses_mixed_schedules():
    t = make_traj()
    other = make_traj()
    other.schedule = uniform_schedule(4, 4, 4)
    with pytest.raises(ValueError, match="different schedules"):
        Trajectory.concat([t, other])


def test_to_device_keeps_everything():
    t = make_traj().to("cpu")
    assert t.device.type == "cpu" and t.step_logprobs is not None and t.schedule.num_steps == 4
