"""Countdown: reach a target from a few numbers with + - * /, each number used exactly once.

A generator of puzzles with a reference solution (the original training set,
``Jiayi-Pan/Countdown-Tasks-3to4``, is hub-only), a small brute-force solver for puzzles without
one (d1's test file), and the row function for every layout (d1 file, hub, generated). Answers
are graded by ``dllm_rl.rewards.planning.evaluate_countdown``.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Sequence
from fractions import Fraction
from itertools import permutations
from typing import Any

from dllm_rl.data.templates import render_prompt

OPS = "+-*/"


def countdown_question(numbers: Sequence[int], target: int) -> str:
    return (
        f"Using the numbers {list(numbers)}, create an equation that equals {target}. "
        "You may use +, -, * and /, and must use each number exactly once."
    )


def countdown_row(row: dict[str, Any], *, template: str, chat: bool) -> dict[str, Any]:
    """Countdown in any layout -> ``prompt``, ``numbers`` (list[int]), ``target`` (int), and
    ``solution`` (a reference expression) when the source has one.

    Layouts: d1's file (``input`` "30,100,93", ``output`` "23"), the hub's
    ``Jiayi-Pan/Countdown-Tasks-3to4`` (``nums``, ``target``), and generated rows (``numbers``,
    ``target``, ``solution``).
    """
    if "input" in row:
        numbers = [int(x) for x in str(row["input"]).split(",")]
        target = int(row["output"])
    else:
        numbers = [int(x) for x in (row["numbers"] if "numbers" in row else row["nums"])]
        target = int(row["target"])
    record = {
        "prompt": render_prompt(
            template, chat, countdown_question(numbers, target), numbers=numbers, target=target
        ),
        "numbers": numbers,
        "target": target,
    }
    if "solution" in row:
        record["solution"] = row["solution"]
    return record


def solve_countdown(numbers: Sequence[int], target: int) -> str | None:
    """An expression that uses each number once and equals ``target`` exactly, or ``None``.

    Exhaustive search over pairs and operators (exact fractions); instant for 3-4 numbers.
    """
    items = [(Fraction(x), str(x)) for x in numbers]
    found = _search(items, Fraction(target))
    return _strip_outer(found) if found is not None else None


def _search(items: list[tuple[Fraction, str]], target: Fraction) -> str | None:
    if len(items) == 1:
        return items[0][1] if items[0][0] == target else None
    for i, j in permutations(range(len(items)), 2):
        (a, ea), (b, eb) = items[i], items[j]
        rest = [item for k, item in enumerate(items) if k not in (i, j)]
        for op in OPS:
            if op in "+*" and i > j:  # commutative: one order is enough
                continue
            value = _apply(a, op, b)
            if value is None:
                continue
            found = _search([*rest, (value, f"({ea} {op} {eb})")], target)
            if found is not None:
                return found
    return None


def _apply(a: Fraction, op: str, b: Fraction) -> Fraction | None:
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    return a / b if b != 0 else None


def _strip_outer(expression: str) -> str:
    # Our expressions are fully parenthesised binary operations: the outermost pair is redundant.
    if expression.startswith("(") and expression.endswith(")"):
        return expression[1:-1]
    return expression


def generate_countdown(
    n: int,
    seed: int | str = 0,
    *,
    num_numbers: int | Sequence[int] = (3, 4),
    number_range: tuple[int, int] = (1, 100),
    target_range: tuple[int, int] = (1, 100),
    exclude: Collection[tuple[tuple[int, ...], int]] = (),
) -> list[dict[str, Any]]:
    """``n`` distinct Countdown puzzles, each reachable by its reference ``solution``.

    Draws the numbers, combines random pairs with random operators until one value is left
    (every intermediate a positive integer), and keeps the puzzle when that value lies inside
    ``target_range`` and the puzzle is new.

    Args:
        n: number of puzzles.
        seed: seed of the ``random.Random`` that draws everything.
        num_numbers: how many numbers per puzzle (an int, or choices drawn uniformly).
        number_range: inclusive range of the numbers.
        target_range: inclusive range of the targets (positive integers).
        exclude: puzzles to avoid, as ``(tuple(sorted(numbers)), target)`` (e.g. a test set).

    Returns:
        Rows ``{"numbers": list[int], "target": int, "solution": str}``.
    """
    counts = [num_numbers] if isinstance(num_numbers, int) else list(num_numbers)
    lo, hi = target_range
    if lo < 1 or hi < lo or min(counts) < 2 or not 1 <= number_range[0] <= number_range[1]:
        raise ValueError(
            f"need target_range and number_range of positive integers (got {target_range} and "
            f"{number_range}) and at least 2 numbers per puzzle (got {num_numbers})"
        )
    rng = random.Random(seed)
    seen: set[tuple[tuple[int, ...], int]] = set()
    rows: list[dict[str, Any]] = []
    attempts = 0
    while len(rows) < n:
        count = rng.choice(counts)  # drawn once per puzzle, so the mix of sizes stays as asked
        while True:
            attempts += 1
            if attempts > 1000 * n + 10_000:
                raise RuntimeError(
                    f"only {len(rows)} of {n} Countdown puzzles after {attempts} draws; widen "
                    f"target_range={target_range} or number_range={number_range}"
                )
            numbers = [rng.randint(*number_range) for _ in range(count)]
            value, expression = _random_expression(rng, numbers)
            key = (tuple(sorted(numbers)), value)
            if lo <= value <= hi and key not in seen and key not in exclude:
                break
        seen.add(key)
        rows.append({"numbers": numbers, "target": value, "solution": expression})
    return rows


def _random_expression(rng: random.Random, numbers: list[int]) -> tuple[int, str]:
    # Combine random pairs, keeping every intermediate a positive integer (the classic Countdown
    # rule), so reference solutions read naturally; the graders accept any exact expression.
    pool = [(x, str(x)) for x in numbers]
    while len(pool) > 1:
        i, j = rng.sample(range(len(pool)), 2)
        (a, ea), (b, eb) = pool[i], pool[j]
        if a < b:
            (a, ea), (b, eb) = (b, eb), (a, ea)
        ops = ["+", "*"] + (["-"] if a > b else []) + (["/"] if a % b == 0 else [])
        op = rng.choice(ops)
        value = {"+": a + b, "-": a - b, "*": a * b, "/": a // b if b else 0}[op]
        pool = [item for k, item in enumerate(pool) if k not in (i, j)]
        pool.append((value, f"({ea} {op} {eb})"))
    return pool[0][0], _strip_outer(pool[0][1])
