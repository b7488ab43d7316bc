"""Turning completions into text, and pulling answers out of text."""

from __future__ import annotations

import re
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


# A number with optional thousands separators ("1,007") and decimals; "3,4" is two numbers. A
# minus right after a digit is subtraction or a range ("12-15"), not a sign.
_NUMBER = re.compile(r"(?:(?<!\d)-)?(?:(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)")
_BOXED_COMMANDS = ("\\boxed", "\\fbox")
_BRACE_OR_ESCAPE = re.compile(r"\\.|[{}]", flags=re.DOTALL)  # "\{", "\}", "\\" are not braces


def tag_content(text: str, tag: str = "answer") -> str | None:
    """The content of the last complete ``<tag>...</tag>`` block, stripped.

    Content may span several lines. An opening tag without its closing tag does not count (a
    completion cut off inside its answer has no answer); of two openings before one closing tag,
    the later one starts the block (``<answer>1<answer>2</answer>`` gives ``2``).

    Args:
        text: the completion text.
        tag: the tag name, without angle brackets.

    Returns:
        The stripped content, or ``None`` when the text has no complete block.
    """
    # With string searches, not a regex: a completion repeating an unclosed opening tag would
    # make a non-greedy regex scan to the end from each one (quadratic).
    opening, closing = f"<{tag}>", f"</{tag}>"
    last_closing = text.rfind(closing)
    start = text.rfind(opening, 0, last_closing) if last_closing >= 0 else -1
    if start < 0:
        return None
    start += len(opening)
    return text[start : text.find(closing, start)].strip()


def last_boxed(text: str) -> str | None:
    r"""The content of the last ``\boxed{...}`` (or ``\fbox{...}``) whose braces balance.

    Nested braces are followed, so ``\boxed{\frac{1}{2}}`` gives ``\frac{1}{2}``; escaped braces
    (``\{``, ``\}``) are literals, so ``\boxed{\left\{ ... \right.}`` is one box. A box whose
    braces never close (a truncated completion) is skipped in favour of an earlier complete one.

    Args:
        text: the completion text.

    Returns:
        The stripped content, or ``None`` when the text has no complete box.
    """
    starts = sorted(
        m.end() for cmd in _BOXED_COMMANDS for m in re.finditer(re.escape(cmd) + r"\s*\{", text)
    )
    if not starts:
        return None
    # Match every brace in one pass (a degenerate completion can hold thousands of open boxes:
    # scanning to the end from each would be quadratic). An escaped brace is a literal.
    closing: dict[int, int] = {}  # position of a "{" -> position of its "}"
    open_braces: list[int] = []
    for match in _BRACE_OR_ESCAPE.finditer(text):
        if match.group() == "{":
            open_braces.append(match.start())
        elif match.group() == "}" and open_braces:
            closing[open_braces.pop()] = match.start()
    for start in reversed(starts):
        end = closing.get(start - 1)
        if end is not None:
            return text[start:end].strip()
    return None


def last_number(text: str) -> str | None:
    """The last number written in the text, thousands separators removed.

    >>> last_number("3 + 4 = 7, so 1,007 apples.")
    '1007'

    Args:
        text: any text.

    Returns:
        The number as a string (``"-12"``, ``"0.5"``), or ``None`` when the text has none.
    """
    matches = _NUMBER.findall(text)
    return matches[-1].replace(",", "") if matches else None
