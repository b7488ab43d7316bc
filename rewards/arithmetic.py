"""Exact integer answers, for the tiny arithmetic demo task: no maths engine, no processes."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

from dllm_rl.rewards.extract import completion_text, last_number, tag_content

_PLAIN_NUMBER = re.compile(r"([+-]?)(\d*)(?:\.(\d*))?")
MAX_EXPONENT_CHARS = 64
"""Longest text read through ``Decimal`` (exponent forms such as ``"1e3"``): converting a huge
``Decimal`` to ``int`` is quadratic in its digits, so longer ones are not integers here."""


def _as_integer(text: str | None) -> str | None:
    """``"42"``, ``"1,007"``, ``"-0042.000"`` -> the integer's canonical digits (``"42"``,
    ``"1007"``, ``"-42"``); anything else -> ``None``.

    Plain numbers are compared as canonical digit strings, never converted (linear time on a
    200k-digit answer; ``int(Decimal(...))`` took 5 s there and minutes at 1M digits). Exponent
    forms (``"1e3"``) go through ``Decimal`` up to :data:`MAX_EXPONENT_CHARS` characters.
    """
    if text is None:
        return None
    body = text.strip().replace(",", "")
    match = _PLAIN_NUMBER.fullmatch(body)
    if match is not None:
        sign, whole, fraction = match.groups()
        if not whole and not fraction:
            return None  # "", "-", "."
        if fraction and fraction.strip("0"):
            return None  # "42.5"
        digits = whole.lstrip("0") or "0"
        return ("-" if sign == "-" and digits != "0" else "") + digits
    if len(body) > MAX_EXPONENT_CHARS:
        return None
    try:
        value = Decimal(body)
    except InvalidOperation:
        return None
    if not value.is_finite() or value.adjusted() > MAX_EXPONENT_CHARS:
        return None  # "inf", or "1e999999999": an integer of a billion digits
    if value != value.to_integral_value():
        return None
    return str(int(value))


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
    return _grade(completions, answer, _exact_score)


def _answer_text(completion: Any) -> str:
    """The last ``<answer>`` block's content, or the whole completion without one."""
    text = completion_text(completion)
    content = tag_content(text, "answer")
    return text if content is None else content


def _grade(
    completions: Sequence[Any], answer: Sequence[Any], score: Callable[[str, str], float]
) -> list[float | None]:
    """``score(answer text, gold digits)`` per completion; ``None`` where the gold is not an
    integer."""
    rewards: list[float | None] = []
    for completion, gold in zip(completions, answer, strict=True):
        digits = _as_integer(str(gold))
        rewards.append(None if digits is None else score(_answer_text(completion), digits))
    return rewards


def _exact_score(text: str, gold: str) -> float:
    return 1.0 if _as_integer(last_number(text)) == gold else 0.0


def digit_credit_score(text: str, gold: str) -> float:
    """1.0 for the exact answer; otherwise partial credit in [0, 0.5) on the answer's span (the
    first ``len(gold)`` characters of the answer text after its leading zeros): a quarter for
    each character that is a digit, three quarters for each that is the gold digit, averaged
    over the span.

    >>> digit_credit_score("0679", "579")  # 6 is a digit; 7 and 9 are right: (0.25 + 2) / 3 / 2
    0.375

    Args:
        text: the answer text (:func:`_answer_text`).
        gold: the gold integer's canonical digits (:func:`_as_integer`).
    """
    if _exact_score(text, gold):
        return 1.0
    body = text.lstrip()
    span = (body.lstrip("0") or body)[: len(gold)]  # 0579 reads as 579, as the exact score does
    credit = sum(0.25 * ch.isdigit() + 0.75 * (ch == g) for ch, g in zip(span, gold))
    return 0.5 * credit / len(gold)


def digit_credit_reward(
    prompts: Sequence[Any],
    completions: Sequence[Any],
    answer: Sequence[Any],
    completion_ids: Any = None,
    **kwargs: Any,
) -> list[float | None]:
    """Exact integer answers with partial credit, for tiny models that start from noise.

    1.0 when the completion's answer (as :func:`exact_answer_reward` reads it) equals the gold;
    otherwise up to 0.5 for how close its first characters come to the gold's digits
    (:func:`digit_credit_score`): writing digits where the answer goes already earns some, the
    right digit in the right place more. A random model scores ~0.02 and can climb.

    Args:
        prompts: unused (TRL signature).
        completions: ``[N]`` strings or conversational completions.
        answer: ``[N]`` gold integers (``int`` or numeric strings).
        completion_ids: unused.
        **kwargs: other dataset columns, ignored.

    Returns:
        ``[N]`` values in [0, 1], or ``None`` where the gold is not an integer.
    """
    return _grade(completions, answer, digit_credit_score)
