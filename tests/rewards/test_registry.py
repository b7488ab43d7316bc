"""Reward registry: the three ways to name a reward, recipe specs, and batch scoring."""

from __future__ import annotations

import asyncio
import importlib.util
import math
import textwrap

import pytest
import torch

from dllm_rl.rewards import format as rformat
from dllm_rl.rewards import planning
from dllm_rl.rewards.registry import (
    BUILTIN_REWARDS,
    RewardSpec,
    UnknownRewardError,
    compute_rewards,
    get_reward,
    resolve_rewards,
)


@pytest.mark.parametrize("name", sorted(BUILTIN_REWARDS))
def test_builtin_names_resolve(name):
    module_name, function = BUILTIN_REWARDS[name].split(":")
    if module_name == "dllm_rl.rewards.code" and importlib.util.find_spec(module_name) is None:
        pytest.skip("dllm_rl.rewards.code is not in this checkout yet")
    assert get_reward(name) is getattr(importlib.import_module(module_name), function)


def test_module_function_names():
    assert get_reward("dllm_rl.rewards.planning:countdown_reward") is planning.countdown_reward
    with pytest.raises(ImportError, match="cannot import module 'no_such_module'"):
        get_reward("no_such_module:f")
    with pytest.raises(ImportError, match="has no 'nope'"):
        get_reward("dllm_rl.rewards.planning:nope")
    with pytest.raises(TypeError, match="not a callable"):
        get_reward("dllm_rl.rewards.registry:BUILTIN_REWARDS")


def test_unknown_name_names_close_matches_and_the_three_ways():
    with pytest.raises(UnknownRewardError) as info:
        get_reward("countdwn")
    message = str(info.value)
    assert "Did you mean 'countdown'?" in message
    assert "built-in name" in message
    assert "'package.module:function'" in message
    assert "'dllm_rl.rewards'" in message


def test_entry_point_plugin(tmp_path, monkeypatch):
    # A fake installed distribution: a module plus dist-info metadata declaring the entry point.
    (tmp_path / "acme_rewards.py").write_text(
        "def shout_reward(prompts, completions, completion_ids=None, **kw):\n"
        "    return [1.0 if c.isupper() else 0.0 for c in completions]\n"
    )
    dist_info = tmp_path / "acme_rewards-0.1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-rewards\nVersion: 0.1\n")
    (dist_info / "entry_points.txt").write_text(
        textwrap.dedent("""\
            [dllm_rl.rewards]
            acme_shout_zq = acme_rewards:shout_reward
        """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    shout = get_reward("acme_shout_zq")
    assert shout(None, ["HI", "hi"]) == [1.0, 0.0]
    # Other installed plugins may be listed too (a user's own): only ours is asserted.
    with pytest.raises(
        UnknownRewardError, match=r"Did you mean 'acme_shout_zq'\?.*installed: [^\n]*acme_shout_zq"
    ):
        get_reward("acme_shuot_zq")


def test_resolve_specs():
    def custom(prompts, completions, **kw):
        return [0.0] * len(completions)

    specs = resolve_rewards(
        [
            "countdown",
            {"name": "reasoning_format", "weight": 0.5},
            {"name": "dllm_rl.rewards.format:boxed_format_reward", "weight": 2},
            custom,
        ]
    )
    assert specs == [
        RewardSpec("countdown", planning.countdown_reward, 1.0),
        RewardSpec("reasoning_format", rformat.reasoning_format_reward, 0.5),
        RewardSpec("dllm_rl.rewards.format:boxed_format_reward", rformat.boxed_format_reward, 2.0),
        RewardSpec("custom", custom, 1.0),
    ]
    assert resolve_rewards("sudoku")[0].fn is planning.sudoku_reward


@pytest.mark.parametrize(
    "specs, error, match",
    [
        ([{"name": "countdown", "wieght": 0.5}], ValueError, "'wieght' \\(did you mean 'weight'"),
        ([{"weight": 0.5}], ValueError, "has no 'name'"),
        ([{"name": "countdown", "weight": "0.5"}], ValueError, "finite number"),
        ([{"name": "countdown", "weight": float("nan")}], ValueError, "finite number"),
        ([{"name": "countdown", "weight": True}], ValueError, "finite number"),
        (["countdown", {"name": "countdown", "weight": 2}], ValueError, "listed twice"),
        ([], ValueError, "no rewards"),
        ([3], TypeError, "a reward spec is"),
        (["mathh"], UnknownRewardError, "Did you mean 'math'"),
    ],
)
def test_resolve_errors(specs, error, match):
    with pytest.raises(error, match=match):
        resolve_rewards(specs)


def _half(prompts, completions, completion_ids=None, **kw):
    return [0.5] * len(completions)


def _sometimes(prompts, completions, completion_ids=None, applies=None, **kw):
    # Not applicable (None) where the column says so.
    return [1.0 if a else None for a in applies]


async def _async_len(prompts, completions, completion_ids=None, **kw):
    await asyncio.sleep(0)
    return [float(len(c)) for c in completions]


def test_compute_rewards_hand_values():
    specs = [
        RewardSpec("half", _half, 2.0),
        RewardSpec("sometimes", _sometimes, 0.5),
        RewardSpec("len", _async_len, 1.0),
    ]
    batch = compute_rewards(
        specs, ["p", "p", "p"], ["a", "bb", "ccc"], applies=[True, False, False], unused=[1, 2, 3]
    )
    assert batch.names == ["half", "sometimes", "len"]
    assert batch.weights == [2.0, 0.5, 1.0]
    nan = math.nan
    expected = torch.tensor([[0.5, 1.0, 1.0], [0.5, nan, 2.0], [0.5, nan, 3.0]])
    torch.testing.assert_close(batch.values, expected, equal_nan=True)  # [N, R]
    # total = 2 * 0.5 + 0.5 * 1.0 + len, the None terms dropped: 2.5, 3.0, 4.0
    torch.testing.assert_close(batch.total, torch.tensor([2.5, 3.0, 4.0]))
    assert batch.metrics["rewards/half/mean"] == pytest.approx(0.5)
    assert batch.metrics["rewards/sometimes/mean"] == pytest.approx(1.0)  # Nones excluded
    assert batch.metrics["rewards/sometimes/std"] == 0.0  # one applicable value
    assert batch.metrics["rewards/len/mean"] == pytest.approx(2.0)
    assert batch.metrics["rewards/len/std"] == pytest.approx(1.0)  # sample std of 1, 2, 3
    assert batch.metrics["reward"] == pytest.approx(9.5 / 3)


def test_compute_rewards_all_none_row_is_zero(caplog):
    batch = compute_rewards([RewardSpec("sometimes", _sometimes)], ["p"], ["a"], applies=[False])
    assert batch.total.tolist() == [0.0]
    assert math.isnan(batch.metrics["rewards/sometimes/mean"])
    assert "no reward applies" in caplog.text


def test_compute_rewards_inside_a_running_event_loop():
    async def main():
        return compute_rewards([RewardSpec("len", _async_len)], ["p"], ["abcd"])

    assert asyncio.run(main()).values.tolist() == [[4.0]]


def test_compute_rewards_bad_returns():
    def short(prompts, completions, **kw):
        return [1.0]

    def text(prompts, completions, **kw):
        return ["yes"] * len(completions)

    with pytest.raises(ValueError, match="reward 'short' returned 1 values for 2 completions"):
        compute_rewards([RewardSpec("short", short)], ["p", "p"], ["a", "b"])
    with pytest.raises(TypeError, match="reward 'text' returned 'yes' at position 0"):
        compute_rewards([RewardSpec("text", text)], ["p"], ["a"])
    with pytest.raises(TypeError, match="reward 'float' returned float, expected a list"):
        compute_rewards([RewardSpec("float", lambda **kw: 1.0)], ["p"], ["a"])


def test_trl_accuracy_reward_plugs_in_unchanged():
    pytest.importorskip("trl")
    pytest.importorskip("math_verify")
    (spec,) = resolve_rewards(["trl.rewards:accuracy_reward"])
    completions = [
        [{"role": "assistant", "content": r"So the answer is \boxed{\frac{1}{3}}."}],
        [{"role": "assistant", "content": r"So the answer is \boxed{\frac{1}{2}}."}],
        [{"role": "assistant", "content": r"So the answer is \boxed{0.5}."}],
    ]
    solution = [r"\frac{1}{3}", r"\frac{1}{3}", r"\frac{1}{2}"]
    batch = compute_rewards([spec], ["q"] * 3, completions, solution=solution, answer=["x"] * 3)
    assert batch.values[:, 0].tolist() == [1.0, 0.0, 1.0]
    assert batch.metrics["rewards/trl.rewards:accuracy_reward/mean"] == pytest.approx(2 / 3)
