"""Rewards a random-weight tiny model can improve on (for trainer tests)."""

from __future__ import annotations

from dllm_rl.rewards.extract import completion_text


def digit_fraction(prompts, completions, completion_ids=None, **columns):
    """Fraction of the completion's characters that are digits (0.0 for an empty one)."""
    texts = [completion_text(c) for c in completions]
    return [sum(ch.isdigit() for ch in t) / len(t) if t else 0.0 for t in texts]


def letter_fraction(prompts, completions, completion_ids=None, letter=None, **columns):
    """Fraction of the completion's characters equal to the row's ``letter`` column."""
    texts = [completion_text(c) for c in completions]
    return [t.count(x) / len(t) if t else 0.0 for t, x in zip(texts, letter)]


def constant(prompts, completions, completion_ids=None, **columns):
    """1.0 for every completion: every group's advantages are zero."""
    return [1.0] * len(completions)


def digits_on_rank_zero(prompts, completions, completion_ids=None, **columns):
    """:func:`digit_fraction` on process 0, a constant elsewhere: every other process's groups
    have zero advantage, so under ``skip_zero_advantage`` the processes train different row
    counts (the padding of :func:`dllm_rl.trainers.common.run_calls` must keep them in step)."""
    import os

    if os.environ.get("RANK", "0") == "0":
        return digit_fraction(prompts, completions)
    return constant(prompts, completions)


def one_short(prompts, completions, completion_ids=None, **columns):
    """A broken reward: one value too few."""
    return [0.0] * (len(completions) - 1)


def text_valued(prompts, completions, completion_ids=None, **columns):
    """A broken reward: text instead of numbers."""
    return ["good"] * len(completions)


_CALLS = {"n": 0}


def inf_on_second_call(prompts, completions, completion_ids=None, **columns):
    """:func:`digit_fraction`, but +inf for every completion on this process's second call (the
    second RL step without evaluation): advantages, then losses, are NaN on every process."""
    _CALLS["n"] += 1
    if _CALLS["n"] == 2:
        return [float("inf")] * len(completions)
    return digit_fraction(prompts, completions)
