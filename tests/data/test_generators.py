"""Generated tasks: determinism, validity checked independently of the generators, disjoint
splits."""

from __future__ import annotations

import ast
import itertools
import operator
from fractions import Fraction

import datasets
import pytest

from dllm_rl.data import load_task
from dllm_rl.data.addition import generate_addition
from dllm_rl.data.countdown import generate_countdown, solve_countdown
from dllm_rl.data.sudoku import all_grids, generate_sudoku, solve_sudoku

datasets.disable_progress_bars()

_OPS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
}


def exact_value(expression: str) -> tuple[Fraction, list[int]]:
    """An independent evaluator: Fraction arithmetic over the expression's syntax tree."""
    leaves: list[int] = []

    def ev(node):
        if isinstance(node, ast.Constant):
            leaves.append(node.value)
            return Fraction(node.value)
        return _OPS[type(node.op)](ev(node.left), ev(node.right))

    return ev(ast.parse(expression, mode="eval").body), leaves


def valid_grids() -> set[str]:
    """Every valid 4x4 grid by brute force over row permutations (no solver involved)."""
    perms = list(itertools.permutations("1234"))
    grids = set()
    for rows in itertools.product(perms, repeat=4):
        cols_ok = all(len({row[c] for row in rows}) == 4 for c in range(4))
        boxes_ok = all(
            len({rows[r][c] for r in (br, br + 1) for c in (bc, bc + 1)}) == 4
            for br in (0, 2)
            for bc in (0, 2)
        )
        if cols_ok and boxes_ok:
            grids.add("".join("".join(row) for row in rows))
    return grids


VALID = valid_grids()


def test_countdown_generator_is_deterministic_and_correct():
    rows = generate_countdown(300, seed=7)
    assert rows == generate_countdown(300, seed=7)
    assert rows != generate_countdown(300, seed=8)
    assert {len(r["numbers"]) for r in rows} == {3, 4}
    assert len({(tuple(sorted(r["numbers"])), r["target"]) for r in rows}) == 300
    for r in rows:
        value, used = exact_value(r["solution"])
        assert value == r["target"] and sorted(used) == sorted(r["numbers"])
        assert 1 <= r["target"] <= 100 and all(1 <= x <= 100 for x in r["numbers"])


def test_countdown_generator_rejects_non_positive_numbers():
    # Intermediates are kept positive integers; a 0 among the numbers used to divide by zero.
    for number_range in [(0, 0), (0, 5), (-3, 5), (9, 2)]:
        with pytest.raises(ValueError, match="number_range"):
            generate_countdown(20, number_range=number_range)


def test_countdown_solver():
    for numbers, target in [([30, 100, 93], 23), ([4, 6, 9], 7), ([2, 3, 7, 11], 1)]:
        expression = solve_countdown(numbers, target)
        value, used = exact_value(expression)
        assert value == target and sorted(used) == sorted(numbers)
    assert solve_countdown([1, 1, 1], 100) is None
    # Needs a fractional intermediate: 8 / (3 - 8/3) = 24.
    value, _ = exact_value(solve_countdown([3, 3, 8, 8], 24))
    assert value == 24


def test_sudoku_generator_unique_and_valid():
    assert set(all_grids()) == VALID and len(VALID) == 288
    rows = generate_sudoku(200, seed=3, num_blanks=(6, 12))
    assert rows == generate_sudoku(200, seed=3, num_blanks=(6, 12))
    for r in rows:
        assert r["solution"] in VALID
        assert all(p in ("0", s) for p, s in zip(r["puzzle"], r["solution"]))
        completions = [g for g in VALID if all(p in ("0", c) for p, c in zip(r["puzzle"], g))]
        assert completions == [r["solution"]]  # unique, checked without the solver
    assert {r["puzzle"].count("0") for r in rows} == set(range(6, 13))
    with pytest.raises(ValueError, match="at least 4 clues"):
        generate_sudoku(1, num_blanks=13)


def test_sudoku_solver_counts_solutions():
    assert solve_sudoku("3102200002100320") == ["3142243142131324"]
    assert len(solve_sudoku("0" * 16, limit=5)) == 5
    assert solve_sudoku("1100" + "0" * 12) == []  # contradictory clues


def test_addition_generator():
    rows = generate_addition(100, seed=1, digits=3)
    assert rows == generate_addition(100, seed=1, digits=3)
    assert all(100 <= r["a"] <= 999 and 100 <= r["b"] <= 999 for r in rows)
    with pytest.raises(ValueError, match="only 100"):
        generate_addition(101, digits=1)


def test_load_generated_tasks():
    add = load_task("addition", "train", size=50)
    assert add[0]["prompt"] == f"{add[0]['a']}+{add[0]['b']}=" and len(add[0]["prompt"]) <= 6
    assert all(int(r["answer"]) == r["a"] + r["b"] for r in add)
    assert load_task("addition", "train", size=50)["prompt"] == add["prompt"]
    assert load_task("addition", "train", size=50, seed=1)["prompt"] != add["prompt"]
    assert load_task("addition", "train", size=50, limit=10)["prompt"] == add["prompt"][:10]
    cd = load_task("countdown", "train", size=20, num_numbers=4)
    assert cd.column_names == ["prompt", "numbers", "target", "solution"]
    assert all(len(n) == 4 for n in cd["numbers"])
    sd = load_task("sudoku", "train", size=20, num_blanks=10)
    assert all(p.count("0") == 10 for p in sd["puzzle"])
    with pytest.raises(ValueError, match="num_blanks"):
        load_task("sudoku", "train", size=2, num_blank=10)


def test_generated_splits_are_disjoint():
    train = load_task("addition", "train", digits=1, size=80)
    test = load_task("addition", "test", digits=1, size=5)
    assert not set(train["prompt"]) & set(test["prompt"])
    cd_train = load_task("countdown", "train", size=300, num_numbers=3)
    cd_test = load_task("countdown", "test", source="generate", size=100, num_numbers=3)
    key = lambda ds: {(tuple(sorted(n)), t) for n, t in zip(ds["numbers"], ds["target"])}  # noqa: E731
    assert not key(cd_train) & key(cd_test)


def test_generated_train_avoids_the_local_test_set(monkeypatch, tmp_path):
    monkeypatch.setenv("DLLM_RL_DATA", str(tmp_path))  # no local test file yet
    before = load_task("sudoku", "train", size=50)
    (tmp_path / "sudoku").mkdir()
    held_out = before.select(range(5))
    lines = ["Puzzle,Solution"] + [f"{r['puzzle']},{r['solution']}" for r in held_out]
    (tmp_path / "sudoku" / "4x4_test_sudoku.csv").write_text("\n".join(lines) + "\n")
    after = load_task("sudoku", "train", size=50)
    assert len(after) == 50 and not set(after["puzzle"]) & set(held_out["puzzle"])
    assert set(before["puzzle"][5:]) <= set(after["puzzle"])
