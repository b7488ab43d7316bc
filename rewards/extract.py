"""Turning completions into text, and pulling answers out of text."""

from __future__ import annotations

from typing import Any


def completion_text(completion: Any) -> str:
    """The text of one completion.

    Args:
        completion: a string, or a conversational completion
            ``[{"role": "assistant", "content": ...}, ...]`` (TRL's format); the contents of the
            messages are joined.

    Returns:
        The completion as plain text.
    """
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        return str(completion.get("content", ""))
    if isinstance(completion, (list, tuple)):
        return "".join(completion_text(m) for m in completion)
    raise TypeError(
        f"a completion must be a string or a list of chat messages, got {type(completion).__name__}"
    )
