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

Otherwise 0.0. Contents may span lines. Every check is a string search, linear in the completion
(a policy that learns to write megabytes must not stall the trainer).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from dllm_rl.rewards.extract import completion_text, last_boxed

_OPEN_REASONING, _CLOSE_REASONING = "<reasoning>", "</reasoning>"
_OPEN_ANSWER, _CLOSE_ANSWER = "<answer>", "</answer>"
_SOFT_TAGS = (_OPEN_REASONING, _CLOSE_REASONING, _OPEN_ANSWER, _CLOSE_ANSWER)
_TAG = re.compile(r"</?(?:reasoning|answer)>")


def _strict_layout(text: str) -> bool:
    r"""``\s*<reasoning>R</reasoning>\s*<answer>A</answer>\s*`` with no tag in R or A and A not
    blank, decided with string searches in linear time (the same test as a full match of that
    pattern with lazy groups, which backtracks quadratically on long completions: 38 s at
    160 kB).

    With no tag allowed inside R, R must end at the first ``</reasoning>``; with none inside A,
    A runs to the ``</answer>`` that closes the text.
    """
    body = text.strip()
    if not (body.startswith(_OPEN_REASONING) and body.endswith(_CLOSE_ANSWER)):
        return False
    end = body.find(_CLOSE_REASONING, len(_OPEN_REASONING))
    if end < 0:
        return False
    reasoning = body[len(_OPEN_REASONING) : end]
    rest = body[end + len(_CLOSE_REASONING) :].lstrip()
    if not rest.startswith(_OPEN_ANSWER) or len(rest) < len(_OPEN_ANSWER) + len(_CLOSE_ANSWER):
        return False
    answer = rest[len(_OPEN_ANSWER) : len(rest) - len(_CLOSE_ANSWER)]
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
