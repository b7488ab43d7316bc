"""4x4 Sudoku: the row function, a small solver, and a generator of puzzles with a unique solution.

Grids are 16-character strings, row by row, ``0`` for an empty cell (d1's format). d1's training
file comes from a source without a license, so training puzzles are generated here instead.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Collection
from typing import Any

from dllm_rl.data.templates import render_prompt

SIZE = 4
BOX = 2
CELLS = SIZE * SIZE
# For each cell, the other cells in its row, column or box.
_PEERS: list[tuple[int, ...]] = [
    tuple(
        j
        for j in range(CELLS)
        if j != i
        and (
            j // SIZE == i // SIZE
            or j % SIZE == i % SIZE
            or (j // SIZE // BOX, j % SIZE // BOX) == (i // SIZE // BOX, i % SIZE // BOX)
        )
    )
    for i in range(CELLS)
]


def sudoku_question(puzzle: str) -> str:
    rows = "\n".join(puzzle[r * SIZE : (r + 1) * SIZE] for r in range(SIZE))
    return (
        "Solve this 4x4 Sudoku. Fill each empty cell (shown as 0) with a digit from 1 to 4 so "
        "that every row, every column and every 2x2 box contains 1, 2, 3 and 4 exactly once. "
        f"The grid, row by row:\n{rows}"
    )


def sudoku_row(row: dict[str, Any], *, template: str, chat: bool) -> dict[str, Any]:
    """Sudoku (d1's CSV ``Puzzle``/``Solution``, or ``puzzle``/``solution``) -> ``prompt``,
    ``puzzle`` and ``solution`` as 16-character strings."""
    puzzle = str(row["Puzzle"] if "Puzzle" in row else row["puzzle"]).strip()
    solution = str(row["Solution"] if "Solution" in row else row["solution"]).strip()
    if len(puzzle) != CELLS or len(solution) != CELLS:
        raise ValueError(
            f"a 4x4 Sudoku row needs 16-character puzzle and solution strings, got {puzzle!r} and "
            f"{solution!r} (read the CSV columns as strings so leading zeros are kept)"
        )
    if set(puzzle) - set("01234") or set(solution) - set("1234"):
        # Checked here, not first by the reward in the middle of a run.
        raise ValueError(
            f"a 4x4 Sudoku puzzle holds digits 0-4 ('0' = empty cell, not '.') and its solution "
            f"digits 1-4, got {puzzle!r} and {solution!r}"
        )
    return {
        "prompt": render_prompt(template, chat, sudoku_question(puzzle), puzzle=puzzle),
        "puzzle": puzzle,
        "solution": solution,
    }


def solve_sudoku(puzzle: str, limit: int = 2) -> list[str]:
    """Up to ``limit`` solutions of ``puzzle`` (backtracking; instant at 4x4).

    ``len(solve_sudoku(p)) == 1`` means the solution is unique.
    """
    grid = [int(c) for c in puzzle]
    found: list[str] = []

    def fill() -> None:
        empty = next((i for i, v in enumerate(grid) if v == 0), None)
        if empty is None:
            found.append("".join(map(str, grid)))
            return
        taken = {grid[j] for j in _PEERS[empty]}
        for digit in range(1, SIZE + 1):
            if digit not in taken:
                grid[empty] = digit
                fill()
                grid[empty] = 0
                if len(found) >= limit:
                    return

    if all(grid[i] == 0 or grid[i] not in {grid[j] for j in _PEERS[i]} for i in range(CELLS)):
        fill()
    return found


@functools.cache
def all_grids() -> tuple[str, ...]:
    """Every valid 4x4 grid (288), in lexicographic order.

    Permuting one base pattern (relabelling, row/column swaps, transpose) reaches only 192 of
    them: 4x4 grids fall into two classes under those symmetries. So draw from the full list.
    """
    return tuple(solve_sudoku("0" * CELLS, limit=10_000))


def random_solution(rng: random.Random) -> str:
    """A valid grid drawn uniformly from all 288."""
    return rng.choice(all_grids())


def generate_sudoku(
    n: int,
    seed: int | str = 0,
    *,
    num_blanks: int | tuple[int, int] = 8,
    exclude: Collection[str] = (),
) -> list[dict[str, str]]:
    """``n`` distinct 4x4 puzzles, each with exactly one solution.

    Draws a random valid grid, then blanks cells in random order, keeping a blank only while the
    solution stays unique, until the wanted number of blanks; retries with a new grid when the
    order leads to a dead end.

    Args:
        n: number of puzzles.
        seed: seed of the ``random.Random`` that draws everything.
        num_blanks: blanks per puzzle, or an inclusive ``(low, high)`` range drawn per puzzle;
            at most 12 (a unique 4x4 puzzle needs at least 4 clues). d1's test set has 8.
        exclude: puzzles to avoid (e.g. a test set).

    Returns:
        Rows ``{"puzzle": str, "solution": str}``.
    """
    low, high = (num_blanks, num_blanks) if isinstance(num_blanks, int) else num_blanks
    if not 0 <= low <= high <= CELLS - 4:
        raise ValueError(
            f"num_blanks must lie in [0, 12] (a unique 4x4 puzzle keeps at least 4 clues), "
            f"got {num_blanks}"
        )
    rng = random.Random(seed)
    seen: set[str] = set()
    rows: list[dict[str, str]] = []
    while len(rows) < n:
        blanks = rng.randint(low, high)
        for _ in range(10_000):
            solution = random_solution(rng)
            puzzle = _blank_cells(rng, solution, blanks)
            if puzzle is not None and puzzle not in seen and puzzle not in exclude:
                break
        else:
            raise RuntimeError(f"could not make a new unique puzzle with {blanks} blanks")
        seen.add(puzzle)
        rows.append({"puzzle": puzzle, "solution": solution})
    return rows


def _blank_cells(rng: random.Random, solution: str, blanks: int) -> str | None:
    grid = list(solution)
    removed = 0
    for cell in rng.sample(range(CELLS), CELLS):
        if removed == blanks:
            break
        grid[cell] = "0"
        if len(solve_sudoku("".join(grid))) == 1:
            removed += 1
        else:
            grid[cell] = solution[cell]
    return "".join(grid) if removed == blanks else None
