"""Countdown and 4x4 Sudoku rewards, with hand-derived values."""

from __future__ import annotations

import pytest

from dllm_rl.rewards.planning import (
    InvalidExpression,
    countdown_reward,
    evaluate_countdown,
    sudoku_reward,
)

NUMBERS = [30, 100, 93]  # target 163 = 100 - 30 + 93


@pytest.mark.parametrize(
    "answer, expected",
    [
        ("(100 - 30) + 93", 1.0),
        ("100 - 30 + 93", 1.0),
        ("93 + (100 - 30) = 163", 1.0),  # a trailing "= target" is accepted
        ("163 = 93 + 100 - 30", 1.0),
        ("\n  100 + 93 - 30.\n", 1.0),  # whitespace and a final full stop
        ("100 + 93 - 30 = 162", 0.1),  # "=" with anything but the target
        ("100 - 30", 0.1),  # a number unused
        ("100 - 30 + 93 + 30 - 30", 0.1),  # a number used twice
        ("100 - 30 + 93 + 0", 0.1),  # a number not given
        ("100 + 93 - 30.0", 0.1),  # floats are not given numbers
        ("0x64 - 30 + 93", 0.1),  # hex literal is not allowed
        ("100 - 30 + 93 * 1", 0.1),
        ("-30 + 100 + 93", 0.1),  # unary minus is not one of + - * / between numbers
        ("100 - 30 ** 1 + 93", 0.1),  # no powers
        ("100 // 30 + 93", 0.1),  # no floor division
        ("__import__('os').system('true')", 0.1),  # never evaluated
        ("(" * 120 + "100 - 30 + 93" + ")" * 120, 0.1),  # too long
        ("100 - 30 + 93 +", 0.1),  # syntax error
        ("", 0.0),  # empty answer block: no expression
    ],
)
def test_countdown_values(answer, expected):
    completion = f"<reasoning>try things</reasoning><answer>{answer}</answer>"
    assert countdown_reward(None, [completion], numbers=[NUMBERS], target=[163]) == [expected]


def test_countdown_huge_number_is_wrong_not_a_crash():
    # int() refuses strings past 4300 digits: a degenerate completion must score, not raise.
    huge = "1" * 5000
    for answer in (f"100 - 30 + 93 = {huge}", f"{huge} = 100 - 30 + 93"):
        completion = f"<answer>{answer}</answer>"
        assert countdown_reward(None, [completion], numbers=[NUMBERS], target=[163]) == [0.1]


def test_countdown_no_answer_and_column_forms():
    completions = [
        "I would do 100 - 30 + 93",  # no answer block
        "<answer>100 - 30 + 93</answer>",
        "<answer>100 - 30 + 93</answer>",
        [{"role": "assistant", "content": "<answer>(100 - 30) + 93</answer>"}],
    ]
    numbers = [NUMBERS, "30,100,93", "[30, 100, 93]", ("30", "100", "93")]
    target = [163, "163", " 163 ", 163]
    assert countdown_reward(None, completions, numbers=numbers, target=target, extra=[0] * 4) == [
        0.0, 1.0, 1.0, 1.0,
    ]  # fmt: skip


def test_countdown_division_is_exact():
    # 2/3 + 2/3 + 2/3 is exactly 2 in rational arithmetic (floats would give 1.9999999999999998).
    reward = countdown_reward(
        None, ["<answer>2/3 + 2/3 + 2/3</answer>"], numbers=[[2, 3, 2, 3, 2, 3]], target=[2]
    )
    assert reward == [1.0]
    assert countdown_reward(None, ["<answer>8 / (4 - 4)</answer>"], [[8, 4, 4]], [2]) == [0.1]
    with pytest.raises(InvalidExpression, match="division by zero"):
        evaluate_countdown("8 / (4 - 4)", [8, 4, 4])


PUZZLE = "1030040000000000"  # 13 empty cells (given: 1 at 0, 3 at 2, 4 at 5)
SOLUTION = "1234341221434321"


@pytest.mark.parametrize(
    "answer, expected",
    [
        ("1234341221434321", 1.0),
        ("\n1 2 3 4\n3 4 1 2\n2 1 4 3\n4 3 2 1\n", 1.0),  # separators ignored
        ("1234|3412|2143|4321", 1.0),
        ("1234341221434312", 11 / 13),  # last two cells swapped
        ("0000000000000000", 0.0),  # nothing filled
        ("1030040000000000", 0.0),  # the puzzle itself: given cells are not scored
        ("1234", 2 / 13),  # fewer digits: only cells 1 and 3 are filled (both right)
        ("12343412214343219999", 1.0),  # digits past the 16th are ignored
        ("Row 1: 1234 ...", 0.0),  # the row label "1" shifts every digit: none right
    ],
)
def test_sudoku_values(answer, expected):
    completion = f"<reasoning>fill</reasoning><answer>{answer}</answer>"
    values = sudoku_reward(None, [completion], puzzle=[PUZZLE], solution=[SOLUTION])
    assert values == [pytest.approx(expected)]


def test_sudoku_no_answer_full_puzzle_and_bad_data():
    assert sudoku_reward(None, ["1234341221434321"], [PUZZLE], [SOLUTION]) == [0.0]
    assert sudoku_reward(None, ["<answer>1</answer>"], [SOLUTION], [SOLUTION]) == [None]
    with pytest.raises(ValueError, match="16 digits"):
        sudoku_reward(None, ["<answer>1</answer>"], ["10300400"], [SOLUTION])


def test_sudoku_other_valid_solution_scores_one():
    # Both grids are valid and agree on columns 0-1, so the puzzle keeping those has 2 solutions.
    stored, other = "1234341221434321", "1243342121344312"
    puzzle = "1200340021004300"
    assert sudoku_reward(None, [f"<answer>{other}</answer>"], [puzzle], [stored]) == [1.0]
    # The same valid grid scores by cells against a puzzle whose givens it breaks.
    breaks = "1234000000000000"  # givens 3, 4 in cells 2, 3 contradict `other`
    assert sudoku_reward(None, [f"<answer>{other}</answer>"], [breaks], [stored]) == [
        pytest.approx(sum(a == b for a, b in zip(other[4:], stored[4:])) / 12)
    ]
