r"""Format rewards: does the completion lay its answer out the way the prompt asked?

| reward                          | 1.0 when                                                         |
|---------------------------------|------------------------------------------------------------------|
| ``reasoning_format_reward``     | the whole completion is ``<reasoning>...</reasoning>`` then       |
|                                 | ``<answer>...</answer>`` (whitespace around and between allowed,  |
|                                 | no other tags inside, non-empty answer)                          |
| ``soft_reasoning_format_reward``| a ``<reasoning>`` block followed by an ``<answer>`` block appears |
|                                 | anywhere (text around them allowed)                              |
| ``boxed_format_reward``         | the completion has a ``\boxed{...}`` with balanced braces and     |
|                                 | non-empty content                                                |

Otherwise 0.0. Contents may span lines (the strict pattern uses DOTALL; the soft check is plain
string search).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from rewards.extract import completion_text, last_boxed

_STRICT = re.compile(
    r"\s*<reasoning>(?P<reasoning>.*?)</reasoning>\s*<answer>(?P<answer>.*?)</answer>\s*",
    flags=re.DOTALL,
)
_SOFT_TAGS = ("<reasoning>", "</reasoning>", "<answer>", "</answer>")
_TAG = re.compile(r"</?(?:reasoning|answer)>")


def _strict_layout(text: str) -> bool:
    match = _STRICT.fullmatch(text)
    if match is None:
        return False
    reasoning, answer = match.group("reasoning"), match.group("answer")
    return bool(answer.strip()) and not _TAG.search(reasoning) and not _TAG.search(answer)


def _soft_layout(text: str) -> bool:
    # The four tags in order, each found after the previous one ends: what the regex
    # "<reasoning>.*?</reasoning>.*?<answer>.*?</answer>" finds, in linear time (the regex
    # backtracks cubically on a completion repeating "<reasoning></reasoning>").
    position = 0
    for tag in _SOFT_TAGS:
        position = text.find(tag, position)
        if position < 0:
            return False
        position += len(tag)
    return True


def reasoning_format_reward(
    prompts: Sequence[Any], completions: Sequence[Any], completion_ids: Any = None, **kwargs: Any
) -> list[float]:
    """Strict layout: 1.0 if the completion is exactly a reasoning block then an answer block.

    >>> reasoning_format_reward(None, ["<reasoning>\\n2+2\\n</reasoning>\\n<answer>4</answer>"])
    [1.0]

    Args:
        prompts: unused (TRL signature).
        completions: ``[N]`` strings or conversational completions.
        completion_ids: unused.
        **kwargs: dataset columns, ignored.

    Returns:
        ``[N]`` values in {0.0, 1.0}.
    """
    return [1.0 if _strict_layout(completion_text(c)) else 0.0 for c in completions]


def soft_reasoning_format_reward(
    prompts: Sequence[Any], completions: Sequence[Any], completion_ids: Any = None, **kwargs: Any
) -> list[float]:
    """Soft layout: 1.0 if a reasoning block is followed, anywhere later, by an answer block.

    Args:
        prompts: unused (TRL signature).
        completions: ``[N]`` strings or conversational completions.
        completion_ids: unused.
        **kwargs: dataset columns, ignored.

    Returns:
        ``[N]`` values in {0.0, 1.0}.
    """
    return [1.0 if _soft_layout(completion_text(c)) else 0.0 for c in completions]


def boxed_format_reward(
    prompts: Sequence[Any], completions: Sequence[Any], completion_ids: Any = None, **kwargs: Any
) -> list[float]:
    r"""1.0 if the completion puts an answer in ``\boxed{...}`` (balanced braces, not empty).

    Args:
        prompts: unused (TRL signature).
        completions: ``[N]`` strings or conversational completions.
        completion_ids: unused.
        **kwargs: dataset columns, ignored.

    Returns:
        ``[N]`` values in {0.0, 1.0}.
    """
    return [1.0 if last_boxed(completion_text(c)) else 0.0 for c in completions]
