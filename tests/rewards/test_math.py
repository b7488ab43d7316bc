r"""Maths reward: answer extraction, math-verify equivalence, and the worker pool's time limits.

Two pools start in this module (about a second each): one real grader shared by the correctness
tests, and one whose workers run ``_hook_grade``, a grade function that hangs, crashes or raises
on request.
"""

from __future__ import annotations

import os
import time

import pytest

import dllm_rl.rewards.math as rmath
from dllm_rl.rewards.extract import last_boxed, last_number, tag_content
from dllm_rl.rewards.math import MathGrader, extract_answer, math_reward

REASONING = (
    "<reasoning>\nJanet has 16 eggs.\nShe eats 3 and bakes 4.\n16 - 3 - 4 = 9.\n</reasoning>\n"
)


@pytest.fixture(scope="module")
def grader():
    with MathGrader(num_workers=2, timeout_s=10.0) as g:
        yield g


# --- extraction (no processes) ---------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        (REASONING + "<answer>\n9\n</answer>", "9"),
        (r"<answer>so \boxed{\frac{1}{2}} it is</answer>", r"\frac{1}{2}"),
        (r"first \boxed{1}, finally \boxed{\frac{\sqrt{2}}{2}}", r"\frac{\sqrt{2}}{2}"),
        (r"\boxed{3} <answer>4</answer>", "4"),  # the answer block wins over a box outside it
        (r"\boxed{5} and a cut-off \boxed{\frac{1}{", "5"),  # unbalanced box skipped
        ("<answer>7", None),  # an unclosed answer block is no answer
        ("no answer at all: 12", None),
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


def test_extract_helpers():
    assert tag_content("<answer>1</answer> text <answer>\n2\n</answer>") == "2"
    assert tag_content("<answer>1") is None
    assert last_boxed(r"\fbox{x} \boxed {y}") == "y"
    # "\b" in a normal string is a backspace, not a box:
    assert last_boxed("\boxed{1}") is None
    assert last_number("3 + 4 = 7, so 1,007 apples; 3,4") == "4"
    assert last_number("costs -0.5 dollars, and 1,007.") == "1007"


def test_tag_content_reopened_block():
    # An answer block opened twice before it closes: the later opening starts the block.
    assert tag_content("<answer>1<answer>2</answer>") == "2"
    assert tag_content("<answer>\n<answer>\n7\n</answer>") == "7"
    assert tag_content("<answer>1</answer></answer>") == "1"
    assert tag_content("<answer>1</answer> and <answer>2") == "1"


def test_tag_content_is_linear_in_the_text():
    text = "<answer>" * 8000
    start = time.monotonic()
    assert tag_content(text) is None
    assert tag_content(text + "1</answer>") == "1"
    assert time.monotonic() - start < 1.0


def test_last_number_signs():
    assert last_number("pages 12-15") == "15"  # a range, not minus fifteen
    assert last_number("50-4=46, then 46-50") == "50"
    assert last_number("x = -3") == "-3"
    assert last_number("(-3)") == "-3"
    assert last_number("-.5") == "-.5"


def test_last_boxed_escaped_braces_are_literals():
    piecewise = r"f(x) = \left\{ \begin{array}{ll} x & x > 0 \\ 0 & \text{else} \end{array} \right."
    assert last_boxed(rf"\boxed{{1}} so \boxed{{{piecewise}}}") == piecewise
    assert last_boxed(r"\boxed{\{1, 2\}}") == r"\{1, 2\}"
    assert last_boxed(r"\boxed{\}}") == r"\}"
    assert last_boxed(r"\boxed{a \\ {b}}") == r"a \\ {b}"  # "\\" is a line break, then a group


def test_last_boxed_is_linear_in_the_text():
    # A degenerate completion repeating an unclosed box: one pass, not one scan per box.
    text = "\\boxed{" * 6000 + r"\boxed{7}"
    start = time.monotonic()
    assert last_boxed(text) == "7"
    assert last_boxed(text[:-2]) is None
    assert time.monotonic() - start < 2.0


# --- grading with math-verify -----------------------------------------------------------------


@pytest.mark.parametrize(
    "completion, gold, expected",
    [
        (REASONING + "<answer>\n9\n</answer>", "9", 1.0),  # GSM8K: gold is the bare number
        (REASONING + "<answer>\n10\n</answer>", "9", 0.0),
        (REASONING + "<answer>9 dollars</answer>", "9", 1.0),
        ("<answer>1,000</answer>", "1000", 1.0),
        (r"<answer>\boxed{0.5}</answer>", r"\frac{1}{2}", 1.0),
        (r"<answer>\frac{1}{2}</answer>", "0.5", 1.0),
        (r"The answer is \boxed{\dfrac{3}{4}}.", r"\frac{3}{4}", 1.0),
        (r"\boxed{\frac{\sqrt{2}}{2}}", r"\frac{1}{\sqrt{2}}", 1.0),
        (r"\boxed{\left( 3, \frac{\pi}{2} \right)}", r"\left( 3, \frac{\pi}{2} \right)", 1.0),
        (r"\boxed{\text{Evelyn}}", r"\text{Evelyn}", 1.0),
        (r"\boxed{1} at first, but then \boxed{2}", "2", 1.0),
        (r"\boxed{1} at first, but then \boxed{2}", "1", 0.0),
        (r"<answer>\boxed{4}</answer>", r"\boxed{4}", 1.0),  # gold already boxed
        ("<answer>16 eggs, 9 left</answer>", "9", 1.0),  # plain text: the last number
        ("<answer>16 eggs, 9 left</answer>", "16", 0.0),
        ("<answer>The answer is 9, not 16</answer>", "9", 1.0),  # unless "answer is" names one
        ("I think it is 9.", "9", 0.0),  # no answer block, no box: no answer
        ("<answer>\n9", "9", 0.0),  # cut off inside the answer
        ("<answer>9</answer>", "", None),  # gold cannot be parsed
        ("<answer>9</answer>", r"\text{}", None),
        ("no answer", r"\boxed{}", None),
    ],
)
def test_grade(grader, completion, gold, expected):
    assert grader.grade([completion], [gold]) == [expected]


def test_math_reward_conversational_and_columns(grader, monkeypatch):
    monkeypatch.setattr(rmath, "_default_grader", grader)  # reuse the running pool
    completions = [
        [{"role": "assistant", "content": REASONING + r"<answer>\boxed{9}</answer>"}],
        [{"role": "assistant", "content": REASONING + r"<answer>\boxed{8}</answer>"}],
        "<answer>9</answer>",
    ]
    values = math_reward(
        ["q"] * 3, completions, answer=[9, "9", "9"], completion_ids=None, level=[1, 2, 3]
    )
    assert values == [1.0, 0.0, 1.0]
    assert all(type(v) is float for v in values)


def test_length_mismatch(grader):
    with pytest.raises(ValueError, match="2 completions but 1 gold"):
        grader.grade(["a", "b"], ["1"])
    assert grader.grade([], []) == []


# --- the pool: hangs, crashes, replacement ----------------------------------------------------


def _hook_grade(text: str, gold: str) -> float | None:
    """A grade function for the hook grader: misbehaves on request, else exact match."""
    if "HANG" in text:
        time.sleep(60)  # stands for a sympy call that no signal interrupts
    if "CRASH" in text:
        os._exit(3)
    if "RAISE" in text:
        raise ArithmeticError("grading bug")
    if "PID" in text:
        return float(os.getpid())
    return 1.0 if tag_content(text) == gold else 0.0


@pytest.fixture(scope="module")
def hook_grader():
    with MathGrader(num_workers=2, timeout_s=1.0, grade_fn=_hook_grade) as g:
        g.grade(["<answer>1</answer>"], ["1"])  # start the pool outside the timed tests
        yield g


def test_hanging_item_is_killed_and_batch_continues(hook_grader):
    ok = "<answer>1</answer>"
    start = time.monotonic()
    values = hook_grader.grade(["HANG", ok, ok, "<answer>2</answer>", ok], ["1"] * 5)
    elapsed = time.monotonic() - start
    assert values == [0.0, 1.0, 1.0, 0.0, 1.0]
    assert 1.0 <= elapsed < 8.0, elapsed  # killed at the 1 s limit, not after the 60 s sleep


def test_crashing_worker_is_replaced(hook_grader):
    pids_before = set(hook_grader.grade(["PID", "PID"], ["", ""]))
    values = hook_grader.grade(["CRASH", "RAISE", "<answer>1</answer>"], ["1", "1", "1"])
    assert values == [0.0, 0.0, 1.0]
    # Both workers still serve, and one of them is new.
    pids_after = set(hook_grader.grade(["PID", "PID", "PID", "PID"], [""] * 4))
    assert len(pids_after) <= 2 and pids_after != pids_before


def test_worker_that_died_while_idle_is_replaced(hook_grader):
    # A worker killed between batches (the OOM killer, a stray signal) has a broken pipe: the
    # next batch must replace it and grade its item, not fail on sending to it.
    ready = [w for w in hook_grader._workers if w.ready]
    assert ready  # the fixture's warm-up batch readied at least one
    for worker in ready:
        worker.process.kill()
        worker.process.join(timeout=5)
    values = hook_grader.grade(["<answer>1</answer>", "<answer>2</answer>"], ["1", "1"])
    assert values == [1.0, 0.0]
    assert all(w.process.is_alive() for w in hook_grader._workers)


def test_interrupted_batch_leaves_no_stale_items(hook_grader, monkeypatch):
    # Ctrl-C (or any error) mid-batch leaves workers busy with items of that batch; the next
    # batch must not receive their results as its own.
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(rmath, "wait", interrupt)
        with pytest.raises(KeyboardInterrupt):
            hook_grader.grade(["HANG", "<answer>1</answer>"], ["1"] * 2)
    assert hook_grader.grade(["<answer>1</answer>"], ["1"]) == [1.0]


def test_close_and_restart(hook_grader):
    hook_grader.close()
    hook_grader.close()  # idempotent
    assert hook_grader.grade(["<answer>1</answer>"], ["1"]) == [1.0]  # restarts lazily


def test_worker_ends_quietly_when_the_parent_is_gone(monkeypatch):
    # After a trainer crash every worker would print a BrokenPipeError traceback on its next send.
    import multiprocessing

    monkeypatch.setattr(rmath.signal, "signal", lambda *args: None)  # keep this process's Ctrl-C
    parent, child = multiprocessing.Pipe()
    parent.close()
    rmath._worker_main(child, _hook_grade)  # returns instead of raising BrokenPipeError


def _broken_grade(text: str, gold: str) -> float | None:
    raise ImportError("No module named 'math_verify'")  # as in a worker without math-verify


def test_worker_start_failure_is_reported():
    with MathGrader(num_workers=1, grade_fn=_broken_grade) as broken:
        with pytest.raises(RuntimeError, match="failed to start(.|\n)*No module named"):
            broken.grade(["<answer>1</answer>"], ["1"])


def _slow_start_grade(text: str, gold: str) -> float | None:
    time.sleep(60)  # the warm-up call never finishes
    return 1.0


def test_worker_killed_while_starting_is_not_blamed_on_the_main_guard():
    with MathGrader(num_workers=1, grade_fn=_slow_start_grade) as slow:
        slow._ensure_started()
        slow._workers[0].process.kill()
        with pytest.raises(RuntimeError, match="killed by signal 9 while starting"):
            slow.grade(["<answer>1</answer>"], ["1"])


def test_grade_fn_must_be_picklable():
    with pytest.raises(TypeError, match="picklable"):
        MathGrader(grade_fn=lambda text, gold: 1.0)
    with pytest.raises(ValueError, match="timeout_s"):
        MathGrader(timeout_s=0)


# --- the exact-answer reward of the arithmetic demo (no processes) ----------------------------


def test_exact_answer_reward():
    from dllm_rl.rewards.arithmetic import exact_answer_reward

    completions = [
        "<reasoning>17 + 25 = 42</reasoning><answer>42</answer>",
        "<answer>\n42\n</answer>",
        "<answer>The sum is 42.</answer>",  # last number in the block
        "<answer>42.0</answer>",  # an integral decimal reads as the integer
        "<answer>42.5</answer>",
        "<answer>41</answer> but really 42",  # the block wins over text after it
        "17 + 25 = 42",  # no block: the last number of the completion
        "<answer>forty-two</answer>",
        [{"role": "assistant", "content": "<answer>1,042</answer>"}],
    ]
    gold = [42, "42", 42, 42, 42, 42, 42, 42, "1042"]
    assert exact_answer_reward(None, completions, answer=gold, a=[17] * 9) == [
        1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.0, 1.0,
    ]  # fmt: skip
    assert exact_answer_reward(None, ["<answer>1</answer>"], answer=["n/a"]) == [None]
