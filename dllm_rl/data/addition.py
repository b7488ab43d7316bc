"""Multi-digit addition, the CPU demo's task: prompts like ``"12+34="``, answers like ``"46"``.

Short enough for a char-level tokenizer and a tiny model; the default ``compact`` template adds
no instructions.
"""

from __future__ import annotations

import random
from collections.abc import Collection
from typing import Any

from dllm_rl.data.templates import render_prompt


def addition_row(row: dict[str, Any], *, template: str, chat: bool) -> dict[str, Any]:
    """``a``, ``b`` -> ``prompt`` (``"a+b="`` through the template), ``answer`` (the sum as a
    string), and ``a``, ``b``."""
    a, b = int(row["a"]), int(row["b"])
    return {
        "prompt": render_prompt(template, chat, f"{a}+{b}=", a=a, b=b),
        "answer": str(a + b),
        "a": a,
        "b": b,
    }


def generate_addition(
    n: int,
    seed: int | str = 0,
    *,
    digits: int | tuple[int, int] = 2,
    exclude: Collection[tuple[int, int]] = (),
) -> list[dict[str, int]]:
    """``n`` distinct pairs of operands with the given number of digits.

    Args:
        n: number of problems.
        seed: seed of the ``random.Random`` that draws everything.
        digits: digits per operand, or an inclusive ``(low, high)`` range drawn per operand.
        exclude: ``(a, b)`` pairs to avoid (e.g. a test set).

    Returns:
        Rows ``{"a": int, "b": int}``.
    """
    low, high = (digits, digits) if isinstance(digits, int) else digits
    if not 1 <= low <= high:
        raise ValueError(f"digits must be >= 1 (an int or a (low, high) range), got {digits}")
    per_operand = sum(10 if d == 1 else 9 * 10 ** (d - 1) for d in range(low, high + 1))
    available = per_operand**2
    if n > available:
        raise ValueError(
            f"asked for {n} distinct additions but {digits}-digit operands allow only "
            f"{available}; use more digits or fewer examples"
        )
    rng = random.Random(seed)

    def operand() -> int:
        d = rng.randint(low, high)
        return rng.randint(10 ** (d - 1) if d > 1 else 0, 10**d - 1)

    seen: set[tuple[int, int]] = set()
    rows: list[dict[str, int]] = []
    for _attempt in range(100 * n + 10_000):
        if len(rows) == n:
            return rows
        pair = (operand(), operand())
        if pair not in seen and pair not in exclude:
            seen.add(pair)
            rows.append({"a": pair[0], "b": pair[1]})
    if len(rows) < n:
        raise RuntimeError(
            f"only {len(rows)} of {n} distinct {digits}-digit additions found (the rest are "
            "excluded); use more digits or fewer examples"
        )
    return rows
