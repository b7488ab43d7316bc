"""Exact integer answers, for the tiny arithmetic demo task: no maths engine, no processes."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

from rewards.extract import completion_text, last_number, tag_content


def _as_integer(text: str | None) -> int | None:
    """``"42"``, ``"1,007"``, ``"42.0"`` -> the integer; anything else -> ``None``."""
    if text is None:
        return None
    try:
        value = Decimal(text.strip().replace(",", ""))
    except InvalidOperation:
        return None
    return int(value) if value.is_finite() and value == value.to_integral_value() else None


def exact_answer_reward(
    prompts: Sequence[Any],
    completions: Sequence[Any],
    answer: Sequence[Any],
    completion_ids: Any = None,
    **kwargs: Any,
) -> list[float | None]:
    """1.0 if the completion's integer answer equals the gold ``answer``, else 0.0.

    The answer is the last number inside the last ``<answer>...</answer>`` block, or, when the
    completion has no such block, the last number in the whole completion (``"42"``, ``"1,007"``
    and ``"42.0"`` all read as integers; ``"42.5"`` matches no integer).

    Args:
        prompts: unused (TRL signature).
        completions: ``[N]`` strings or conversational completions.
        answer: ``[N]`` gold integers (``int`` or numeric strings).
        completion_ids: unused.
        **kwargs: other dataset columns, ignored.

    Returns:
        ``[N]``: 1.0 / 0.0, or ``None`` where the gold is not an integer.
    """
    rewards: list[float | None] = []
    for completion, gold in zip(completions, answer, strict=True):
        gold_value = _as_integer(str(gold))
        if gold_value is None:
            rewards.append(None)
            continue
        text = completion_text(completion)
        content = tag_content(text, "answer")
        predicted = _as_integer(last_number(text if content is None else content))
        rewards.append(1.0 if predicted == gold_value else 0.0)
    return rewards
