"""Planning puzzles: Countdown and 4x4 Sudoku. Pure functions, no processes.

Model text is never passed to ``eval``: a Countdown expression is parsed with ``ast`` in ``eval``
mode and walked over a whitelist of node types (numbers, + - * /, parentheses), in exact rational
arithmetic.
"""

from __future__ import annotations

import ast
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from fractions import Fraction
from typing import Any

from dllm_rl.rewards.extract import completion_text, tag_content

COUNTDOWN_CORRECT = 1.0
COUNTDOWN_WRONG = 0.1  # an expression was given, but wrong or invalid: it earns format credit
COUNTDOWN_TOLERANCE = 1e-5
MAX_EXPRESSION_CHARS = 200  # bounds parse depth and integer sizes

_OPERATORS = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,  # Fraction / Fraction(0) raises ZeroDivisionError: invalid
}
_NUMBERS_SEPARATOR = re.compile(r"[\s,;]+")
# Decimal digits, operators, parentheses, spaces: no hex, underscores, floats or names reach ast.
_EXPRESSION_CHARS = re.compile(r"[0-9+\-*/() \t\n]*")


class InvalidExpression(ValueError):
    """The answer is not an arithmetic expression over the whitelist."""


def _evaluate(node: ast.AST) -> Fraction:
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        return _OPERATORS[type(node.op)](_evaluate(node.left), _evaluate(node.right))
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return Fraction(node.value)
    raise InvalidExpression(f"{type(node).__name__} is not allowed")


def _constants(node: ast.AST) -> list[int]:
    return [n.value for n in ast.walk(node) if isinstance(n, ast.Constant)]


def _expression_side(answer: str, target: Fraction) -> str:
    """``"(1 + 2) * 3 = 9"`` -> ``"(1 + 2) * 3"``: drop one ``= target`` side if present."""
    answer = answer.replace("\u00d7", "*").replace("\u00f7", "/").strip().rstrip(".").strip()
    if "=" not in answer:
        return answer
    sides = [s.strip() for s in answer.split("=")]
    if len(sides) == 2:
        for expr, result in (sides, sides[::-1]):
            # The length check keeps int() off strings past Python's 4300-digit limit.
            is_integer = len(result) <= MAX_EXPRESSION_CHARS and re.fullmatch(r"-?\d+", result)
            if is_integer and Fraction(int(result)) == target:
                return expr
    raise InvalidExpression("'=' is allowed only as 'expression = target'")


def evaluate_countdown(expression: str, numbers: Sequence[int]) -> Fraction:
    """The exact value of a Countdown expression that uses each of ``numbers`` exactly once.

    >>> evaluate_countdown("(100 - 30) + 93", [30, 100, 93])
    Fraction(163, 1)

    Args:
        expression: integers, ``+ - * /`` and parentheses (no unary minus, no other syntax).
        numbers: the numbers to use, each exactly once.

    Returns:
        The value, as a ``Fraction``.

    Raises:
        InvalidExpression: too long, not parseable, a disallowed construct, the wrong numbers, or
            a division by zero.
    """
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise InvalidExpression(f"longer than {MAX_EXPRESSION_CHARS} characters")
    if not _EXPRESSION_CHARS.fullmatch(expression):
        raise InvalidExpression("only digits, + - * / and parentheses are allowed")
    try:
        tree = ast.parse(expression, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as error:
        raise InvalidExpression(f"not an expression: {error}") from error
    used = _constants(tree)
    if Counter(used) != Counter(numbers):
        raise InvalidExpression(f"uses {sorted(used)}, expected each of {sorted(numbers)} once")
    try:
        return _evaluate(tree)
    except ZeroDivisionError as error:
        raise InvalidExpression("division by zero") from error


def _parse_numbers(numbers: Any) -> list[int]:
    """``[30, 100, 93]``, ``("30", "100")`` or ``"30,100,93"`` -> a list of ints."""
    if isinstance(numbers, str):
        numbers = [n for n in _NUMBERS_SEPARATOR.split(numbers.strip(" []()")) if n]
    if not isinstance(numbers, Iterable):
        raise TypeError(f"countdown numbers must be a list or a string, got {numbers!r}")
    return [int(n) for n in numbers]


def countdown_score(text: str, numbers: Any, target: Any) -> float:
    """The Countdown reward of one completion text (see ``countdown_reward``)."""
    answer = tag_content(text, "answer")
    if not answer:
        return 0.0
    goal = Fraction(int(str(target).strip()))
    try:
        value = evaluate_countdown(_expression_side(answer, goal), _parse_numbers(numbers))
    except InvalidExpression:
        return COUNTDOWN_WRONG
    return COUNTDOWN_CORRECT if abs(value - goal) < COUNTDOWN_TOLERANCE else COUNTDOWN_WRONG


def countdown_reward(
    prompts: Sequence[Any],
    completions: Sequence[Any],
    numbers: Sequence[Any],
    target: Sequence[Any],
    completion_ids: Any = None,
    **kwargs: Any,
) -> list[float]:
    """Countdown: reach ``target`` with ``numbers``, each used once, and + - * / ( ).

    The expression is the content of the last ``<answer>`` block; a trailing ``= target`` is
    accepted (``"(100 - 30) + 93 = 163"``), and so are the symbols x and ÷.

    Args:
        prompts: unused (TRL signature).
        completions: ``[N]`` strings or conversational completions.
        numbers: ``[N]`` number lists, as lists of ints or strings like ``"30,100,93"``.
        target: ``[N]`` targets, ints or numeric strings.
        completion_ids: unused.
        **kwargs: other dataset columns, ignored.

    Returns:
        ``[N]``: 1.0 if the expression is valid and equals the target within 1e-5; 0.1 if an
        expression is given but is wrong or invalid; 0.0 if there is no (non-empty) answer block.
    """
    return [
        countdown_score(completion_text(c), n, t)
        for c, n, t in zip(completions, numbers, target, strict=True)
    ]


SUDOKU_CELLS = 16


def _check_grid(name: str, grid: Any) -> str:
    grid = str(grid).strip()
    if len(grid) != SUDOKU_CELLS or not grid.isdigit():
        raise ValueError(f"sudoku {name} must be {SUDOKU_CELLS} digits ('0' = empty), got {grid!r}")
    return grid


def _solves(grid: str, puzzle: str) -> bool:
    """True when ``grid`` is a complete valid 4x4 Sudoku that keeps every given of ``puzzle``."""
    if len(grid) != SUDOKU_CELLS or any(p not in ("0", g) for p, g in zip(puzzle, grid)):
        return False
    rows = [grid[4 * r : 4 * r + 4] for r in range(4)]
    cols = [grid[c::4] for c in range(4)]
    boxes = [grid[i] + grid[i + 1] + grid[i + 4] + grid[i + 5] for i in (0, 2, 8, 10)]
    return all(sorted(unit) == list("1234") for unit in rows + cols + boxes)


def sudoku_score(text: str, puzzle: Any, solution: Any) -> float | None:
    """The Sudoku reward of one completion text (see ``sudoku_reward``)."""
    puzzle, solution = _check_grid("puzzle", puzzle), _check_grid("solution", solution)
    empty = [i for i, cell in enumerate(puzzle) if cell == "0"]
    if not empty:
        return None
    answer = tag_content(text, "answer")
    if answer is None:
        return 0.0
    digits = re.sub(r"\D", "", answer)[:SUDOKU_CELLS]
    if _solves(digits, puzzle):
        return 1.0  # another valid solution (124 of d1's 500 test puzzles have several)
    correct = sum(1 for i in empty if i < len(digits) and digits[i] == solution[i])
    return correct / len(empty)


def sudoku_reward(
    prompts: Sequence[Any],
    completions: Sequence[Any],
    puzzle: Sequence[Any],
    solution: Sequence[Any],
    completion_ids: Any = None,
    **kwargs: Any,
) -> list[float | None]:
    """4x4 Sudoku: the fraction of the puzzle's empty cells that the answer fills correctly.

    The answer grid is read leniently from the last ``<answer>`` block: its digits in order,
    anything else (spaces, newlines, ``|``, commas) ignored. The first 16 digits are the grid, row
    by row; with fewer than 16 digits the missing trailing cells count as unfilled; digits past the
    16th are ignored. Cells given in the puzzle are not scored. A complete valid grid that keeps
    the puzzle's givens scores 1.0 even where it differs from the stored solution: some published
    puzzles (124 of d1's 500 test puzzles) have more than one solution.

    Args:
        prompts: unused (TRL signature).
        completions: ``[N]`` strings or conversational completions.
        puzzle: ``[N]`` 16-digit strings, row by row, ``'0'`` = empty.
        solution: ``[N]`` 16-digit solved grids.
        completion_ids: unused.
        **kwargs: other dataset columns, ignored.

    Returns:
        ``[N]`` values in [0, 1]: 0.0 without an answer block; ``None`` for a puzzle with no
        empty cell.

    Raises:
        ValueError: a puzzle or solution that is not 16 digits (a data error).
    """
    return [
        sudoku_score(completion_text(c), p, s)
        for c, p, s in zip(completions, puzzle, solution, strict=True)
    ]
