r"""Format rewards. Multi-line contents must match (DOTALL), and ``\boxed`` needs raw strings."""

from __future__ import annotations

import time

import pytest

from dllm_rl.rewards.format import (
    boxed_format_reward,
    reasoning_format_reward,
    soft_reasoning_format_reward,
)

MULTILINE = "<reasoning>\nStep 1: 2 + 2 = 4.\nStep 2: done.\n</reasoning>\n<answer>\n4\n</answer>\n"


@pytest.mark.parametrize(
    "text, strict, soft",
    [
        (MULTILINE, 1.0, 1.0),
        ("<reasoning>r</reasoning><answer>4</answer>", 1.0, 1.0),
        ("  <reasoning>r</reasoning>\n\n<answer>4</answer>  ", 1.0, 1.0),  # outer whitespace
        ("Sure! " + MULTILINE, 0.0, 1.0),  # text before: soft only
        (MULTILINE + "Hope this helps.", 0.0, 1.0),  # text after: soft only
        ("<reasoning>r</reasoning> so <answer>4</answer>", 0.0, 1.0),  # text between
        ("<reasoning>r</reasoning><answer>4</answer><answer>5</answer>", 0.0, 1.0),  # 2 answers
        ("<reasoning>r <answer>4</answer></reasoning><answer>4</answer>", 0.0, 1.0),  # nested
        ("<reasoning>r</reasoning><answer> \n </answer>", 0.0, 1.0),  # empty answer
        ("<answer>4</answer><reasoning>r</reasoning>", 0.0, 0.0),  # wrong order
        ("<answer>4</answer>", 0.0, 0.0),
        ("<reasoning>r</reasoning>\n<answer>4", 0.0, 0.0),  # cut off
        ("4", 0.0, 0.0),
    ],
)
def test_reasoning_format(text, strict, soft):
    assert reasoning_format_reward(None, [text]) == [strict]
    assert soft_reasoning_format_reward(None, [text]) == [soft]


def test_soft_format_is_fast_on_degenerate_repetition():
    # The regex form backtracked cubically here: seconds for one 9,000-character completion.
    text = "<reasoning></reasoning>" * 400
    start = time.monotonic()
    assert soft_reasoning_format_reward(None, [text, text + "<answer>4</answer>"]) == [0.0, 1.0]
    assert time.monotonic() - start < 1.0


def test_reasoning_format_conversational_and_extra_columns():
    completions = [[{"role": "assistant", "content": MULTILINE}], "nope"]
    assert reasoning_format_reward(["p", "p"], completions, answer=["4", "4"]) == [1.0, 0.0]


def test_boxed_format():
    completions = [
        r"so the answer is \boxed{\frac{1}{2}}.",
        "\\boxed{7}",  # escaped backslash: a real box
        "\boxed{7}",  # "\b" is a backspace: no box
        r"\boxed{}",  # empty box
        r"\boxed{\frac{1}{2}",  # braces never close
        r"\fbox{3}",
        "no box, just 3",
    ]
    assert "\boxed{7}"[0] == "\x08"
    assert boxed_format_reward(None, completions) == [1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
