"""The trajectory viewer shows exactly the states the record rebuilds."""

from __future__ import annotations

import torch

from dllm_rl.rollout import Trajectory, uniform_schedule
from dllm_rl.viz.trajectory import commit_order_histogram, render_unmasking

MASK = 9


def _decode(ids: list[int]) -> str:
    return "".join("abcdefgh\n"[i] for i in ids)


def _trajectory() -> Trajectory:
    # L = 4, two steps of two tokens. Row 0 commits positions 1, 3 first; row 1 positions 0, 1.
    return Trajectory(
        prompt_ids=torch.tensor([[MASK, 0], [1, 2]]),
        prompt_mask=torch.tensor([[0, 1], [1, 1]]),
        completion_ids=torch.tensor([[3, 4, 5, 8], [6, 7, 0, 1]]),
        unmask_step=torch.tensor([[1, 0, 1, 0], [0, 0, 1, 1]], dtype=torch.int16),
        schedule=uniform_schedule(4, 4, 2),
        mask_token_id=MASK,
        pad_token_id=MASK,
    )


def test_render_unmasking_by_hand():
    text = render_unmasking(_trajectory(), _decode, row=0)
    assert text.splitlines() == [
        "prompt: 'a'",  # the left pad is dropped
        "step 0 (+2): ·[e]·[⏎]",
        "step 1 (+2): [d]e[f]⏎",
    ]
    assert (
        render_unmasking(_trajectory(), _decode, row=1).splitlines()[1] == "step 0 (+2): [g][h]··"
    )


def test_render_elides_middle_steps():
    traj = Trajectory(  # L = 6, one token per step, left to right
        prompt_ids=torch.tensor([[0]]),
        prompt_mask=torch.tensor([[1]]),
        completion_ids=torch.tensor([[1, 2, 3, 4, 5, 6]]),
        unmask_step=torch.arange(6, dtype=torch.int16)[None],
        schedule=uniform_schedule(6, 6, 6),
        mask_token_id=MASK,
        pad_token_id=MASK,
    )
    assert render_unmasking(traj, _decode, max_steps=2).splitlines() == [
        "prompt: 'a'",
        "step 0 (+1): [b]·····",
        "...",
        "step 5 (+1): bcdef[g]",
    ]


def test_commit_order_histogram_counts_each_position_once():
    hist = commit_order_histogram(_trajectory())  # [S, L]
    assert hist.tolist() == [[1, 2, 0, 1], [1, 0, 2, 1]]
    assert hist.sum(0).tolist() == [2, 2, 2, 2]  # every position committed once per row
