"""Rewards run in the trainer's process on text a policy is trained to exploit: each pure reward
of the registry grades hostile completions in linear time. For every reward and every hostile
pattern (long runs of the delimiters its parser looks for, nested and unclosed tags, huge
numbers), the time at 1 MB (wall clock: maths and code grade in other processes) is compared
with the time at 100 kB: linear work gives ~10x,
quadratic ~100x; the test allows 30x (and passes outright below 50 ms at 1 MB, where a ratio of
two timer readings is noise). The two rewards that were quadratic before are pinned with the
inputs that showed it (reasoning_format: 38 s at 160 kB; exact_answer: 5 s at 200k digits).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from dllm_rl.rewards.registry import get_reward

SMALL, LARGE = 100_000, 1_000_000
RATIO = 30.0
FAST_ENOUGH_S = 0.05


def fill(unit: str, size: int, head: str = "", tail: str = "") -> str:
    """``head + unit * k + tail`` of about ``size`` characters."""
    return head + unit * max(1, (size - len(head) - len(tail)) // len(unit)) + tail


# pattern name -> size -> completion
PATTERNS: dict[str, Callable[[int], str]] = {
    "reasoning_run": lambda n: fill("<reasoning></reasoning>", n),
    "reasoning_open": lambda n: fill("<reasoning>", n, tail="</answer>"),
    "strict_near_miss": lambda n: fill(
        "a</reasoning> ", n, head="<reasoning>", tail="<answer>4</answer>x"
    ),
    "answer_run": lambda n: fill("<answer>", n, head="<reasoning>r</reasoning>", tail="</answer>"),
    "whitespace": lambda n: fill(" \n\t", n, head="<reasoning>", tail="<answer>"),
    "digits": lambda n: fill("9", n, head="<answer>", tail="</answer>"),
    "thousands": lambda n: fill("1,", n, head="<answer>", tail="0</answer>"),
    "decimals": lambda n: fill("0", n, head="<answer>4.", tail="1</answer>"),
    "minus_digits": lambda n: fill("-9", n),
    "boxed_open": lambda n: fill("\\boxed{", n),
    "braces": lambda n: fill("{", n, head="\\boxed", tail="}" * 10),
    "boxed_spaces": lambda n: fill(" ", n, head="\\boxed"),
    "fences": lambda n: fill("```python\n", n),
    "expression": lambda n: fill("(1+", n, head="<answer>", tail="1</answer>"),
}

COLUMNS = {
    "exact_answer": {"answer": ["42"]},
    "reasoning_format": {},
    "soft_reasoning_format": {},
    "boxed_format": {},
    "countdown": {"numbers": [[1, 2, 3]], "target": ["6"]},
    "sudoku": {
        "puzzle": ["1234341221434321".replace("1", "0", 2)],
        "solution": ["1234341221434321"],
    },
    "code_format": {},
    "digit_credit": {"answer": ["42"]},
    "math": {"answer": ["42"]},
    "code": {"tests": [["assert f(1) == 2"]], "entry_point": ["f"]},
}


def seconds(reward: Callable, text: str, columns: dict) -> float:
    """Best of three wall-clock readings: the maths and code rewards work in other processes
    (math-verify workers, sandboxes), so the trainer's own CPU time would not see them."""
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        reward(prompts=[""], completions=[text], **columns)
        best = min(best, time.perf_counter() - start)
    return best


def test_every_registered_reward_is_checked():
    from dllm_rl.rewards.registry import BUILTIN_REWARDS

    assert set(COLUMNS) == set(BUILTIN_REWARDS)


@pytest.mark.parametrize("pattern", sorted(PATTERNS))
@pytest.mark.parametrize("name", sorted(COLUMNS))
def test_reward_is_linear_on_hostile_input(name, pattern):
    reward, columns = get_reward(name), COLUMNS[name]
    small = seconds(reward, PATTERNS[pattern](SMALL), columns)
    large = seconds(reward, PATTERNS[pattern](LARGE), columns)
    if large < FAST_ENOUGH_S:
        return
    assert large / max(small, 1e-4) < RATIO, f"{name} on {pattern}: {small:.4f} s -> {large:.3f} s"


def test_the_inputs_that_were_quadratic_are_graded_fast_and_right():
    strict = get_reward("reasoning_format")
    text = "<reasoning>" + "a</reasoning> " * 11_000 + "<answer>4</answer>x"  # 160 kB
    start = time.process_time()
    assert strict(prompts=[""], completions=[text]) == [0.0]
    assert time.process_time() - start < 1.0  # was 38 s
    exact = get_reward("exact_answer")
    huge = "<answer>" + "7" * 1_000_000 + "</answer>"
    start = time.process_time()
    assert exact(prompts=[""], completions=[huge, huge + " 0"], answer=["7" * 1_000_000, "7"]) == [
        1.0,
        0.0,
    ]
    assert time.process_time() - start < 1.0  # was > 120 s
    assert exact(prompts=[""], completions=["1e999999999"], answer=["1"]) == [0.0]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("<reasoning>\n2+2\n</reasoning>\n<answer>4</answer>", 1.0),
        ("  <reasoning>r</reasoning><answer> 4 </answer>\n", 1.0),
        ("<reasoning>r</reasoning>\n<answer> </answer>", 0.0),  # blank answer
        ("<reasoning>r</reasoning>x<answer>4</answer>", 0.0),  # text between the blocks
        ("<reasoning>r</reasoning><answer>4</answer>x", 0.0),  # text after
        ("<reasoning>a<answer>b</reasoning><answer>4</answer>", 0.0),  # tag inside reasoning
        ("<reasoning>r</reasoning><answer>4</answer></answer>", 0.0),  # tag inside the answer
        ("<reasoning></answer>", 0.0),
        ("<reasoning>r</reasoning><answer></answer>", 0.0),
    ],
)
def test_strict_layout_keeps_its_meaning(text, expected):
    assert get_reward("reasoning_format")(prompts=[""], completions=[text]) == [expected]


@pytest.mark.parametrize(
    "answer, gold, expected",
    [
        ("42", "42", 1.0),
        ("1,007", "1007", 1.0),
        ("42.0", "42", 1.0),
        ("-0042.000", "-42", 1.0),
        ("42.5", "42", 0.0),
        ("-0", "0", 1.0),
        ("1000", "1e3", 1.0),  # an exponent gold reads through Decimal
        ("7", "1e999999999", None),  # a gold that is no integer we accept: no reward
    ],
)
def test_exact_answer_keeps_its_meaning(answer, gold, expected):
    completion = f"<answer>{answer}</answer>"
    assert get_reward("exact_answer")(prompts=[""], completions=[completion], answer=[gold]) == [
        expected
    ]


@pytest.mark.parametrize(
    "answer, gold, expected",
    [
        ("579", "579", 1.0),
        ("0579", "579", 1.0),  # zero-padded: the same integer
        ("0679", "579", (0.25 + 2.0) / 3 / 2),  # read as 679: two digits right, one wrong
        ("x79", "579", (2 * 1.0) / 3 / 2),  # 'x' earns nothing; 7 and 9 are digits and right
        ("", "579", 0.0),
    ],
)
def test_digit_credit_reads_past_leading_zeros(answer, gold, expected):
    reward = get_reward("digit_credit")
    completion = f"<answer>{answer}</answer>"
    (score,) = reward(prompts=[""], completions=[completion], answer=[gold])
    assert score == pytest.approx(expected)
