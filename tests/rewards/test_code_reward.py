"""The code reward: extraction, program assembly, strict asserts, scoring, and HumanEval gold."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from dllm_rl.rewards.code import (
    build_program,
    code_format_reward,
    code_reward,
    extract_code,
    grade_code,
    make_code_reward,
)

pytestmark = [
    pytest.mark.skipif(sys.platform != "linux", reason="the sandbox needs Linux"),
    pytest.mark.timeout(180),
]

ADD_TESTS = ["assert add(1, 2) == 3", "assert add(-1, -2) == -3"]


def fenced(code: str) -> str:
    return f"Here is my solution.\n```python\n{code}\n```\nDone."


# ------------------------------------------------------------------------------------------------
# Extraction and assembly (no sandbox).


def test_extract_code_prefers_the_last_python_block() -> None:
    text = "draft:\n```python\nx = 1\n```\nshell:\n```bash\nls\n```\nfinal:\n```py\nx = 2\n```\n"
    assert extract_code(text) == ("x = 2", True)


def test_extract_code_fallbacks() -> None:
    assert extract_code("```\nuntagged = 1\n```") == ("untagged = 1", True)
    assert extract_code("cut off:\n```python\ndef f():\n    return") == (
        "def f():\n    return",
        True,
    )
    # A bare body keeps its indentation, to continue the prompt's signature.
    assert extract_code("\n    return x + 1\n") == ("    return x + 1", False)


def test_build_program_uses_the_prefix_per_the_contract() -> None:
    prefix = 'def helper():\n    return 1\n\ndef f(x):\n    """Doc."""\n'
    body = build_program("    return x + helper()", code_prefix=prefix, entry_point="f")
    assert repr(prefix + "    return x + helper()") in body
    # Full function: the prefix parses on its own, so it stays (helpers remain defined) ...
    full = build_program("def f(x):\n    return 2", code_prefix=prefix, entry_point="f")
    assert repr(prefix + "def f(x):\n    return 2") in full
    # ... unless it is not a complete program, when only the candidate's code runs.
    cut = "def f(x):\n"
    only = build_program("def f(x):\n    return 2", code_prefix=cut, entry_point="f")
    assert repr("def f(x):\n    return 2") in only and repr(cut + "def f") not in only


def test_code_format_reward() -> None:
    completions = [fenced("def f():\n    return 1"), fenced("def f(:"), "def f(): return 1"]
    assert code_format_reward(None, completions) == [1.0, 0.5, 0.0]
    # A body-only block parses behind its prefix.
    body = fenced("    return 1")
    assert code_format_reward(None, [body], code_prefix=["def f():\n"]) == [1.0]


def test_column_errors_are_actionable() -> None:
    with pytest.raises(TypeError, match="one list per completion"):
        code_reward(None, ["x"], tests=["assert True"])
    with pytest.raises(ValueError, match="2 values for 1 completions"):
        code_reward(None, ["x"], tests=[["assert True"]], entry_point=["f", "g"])


# ------------------------------------------------------------------------------------------------
# Scoring in the sandbox. One batch for the ordinary cases keeps the file fast.


def test_scores_fraction_of_tests_passed() -> None:
    completions = [
        fenced("def add(a, b):\n    return a + b"),  # correct
        fenced("def add(a, b):\n    return a + b if a > 0 else 0"),  # half
        fenced("def add(a, b)\n    return a + b"),  # syntax error
        [{"role": "assistant", "content": fenced("def add(a, b):\n    return a + b")}],  # chat
        "def add(a, b):\n    return a + b\n",  # no fence: the raw text
        fenced("def add(a, b):\n    return a + b"),  # no tests: not applicable
    ]
    tests = [ADD_TESTS] * 5 + [[]]
    rewards = code_reward(
        ["p"] * 6,
        completions,
        tests=tests,
        completion_ids=[[1]] * 6,
        unknown_column=list(range(6)),  # extra dataset columns are ignored
        trainer_state=None,
    )
    assert rewards == [1.0, 0.5, 0.0, 1.0, 1.0, None]


def test_test_setup_and_independent_snippets() -> None:
    completions = [fenced("def area(r):\n    return round(math.pi * r * r, 2)")]
    tests = [["assert area(1) == SMALL", "assert area(2) == 0", "raise RuntimeError", "area(1)"]]
    # The setup's imports reach the candidate (MBPP's gold code uses them); nothing else does.
    setup = "import math\nSMALL = 3.14"
    grades = grade_code(completions, tests, test_setup=setup)
    assert (grades[0].reward, grades[0].passed, grades[0].total) == (0.5, 2, 4)
    peeking = fenced("def area(r):\n    return SMALL")  # a setup value is the judge's alone
    assert grade_code([peeking], tests, test_setup=setup)[0].reward == 0.0
    # The candidate's top level raising (here after defining the function) does not stop the tests.
    raising = fenced("def add(a, b):\n    return a + b\nraise ValueError('demo')")
    grades = grade_code([raising], [ADD_TESTS])
    assert (grades[0].reward, grades[0].candidate_error) == (1.0, "ValueError")
    setup_broken = grade_code(completions, tests, test_setup="import does_not_exist")
    assert setup_broken[0].reward == 0.0 and setup_broken[0].setup_error == "ModuleNotFoundError"


def test_plain_values_still_compare_normally() -> None:
    code = (
        "from collections import Counter, OrderedDict\n"
        "def f(x):\n"
        "    return {'l': [x, (x, 2.5)], 's': {x}, 'c': Counter('aab'), 'n': None, 'b': True}\n"
    )
    tests = [
        "assert f(1) == {'l': [1, (1, 2.5)], 's': {1}, 'c': {'a': 2, 'b': 1}, 'n': None, 'b': 1}",
        "assert f(1)['l'][0] != 2",
        "assert 0 < f(1)['l'][1][1] < 3",
        "assert 1 in f(1)['s'] and f(1)['n'] is None",
        "assert not f(1)['n']",
        "assert abs(f(1)['l'][1][1] - 2.5) < 1e-9",
        "assert f(1)['b'] if True else False",
        "assert all(v == 1 for v in [f(1)['l'][0]])",
        "import re\nassert re.match('[a-z]+', 'abc') and not re.match('x', 'y')",
        "assert bytearray(b'x') == b'x' and range(2) == range(0, 2)",
    ]
    assert code_reward(None, [fenced(code)], tests=[tests]) == [1.0]


def test_cheats_score_zero() -> None:
    cheats = {
        "sys.exit": "import sys\ndef add(a, b):\n    return 0\nsys.exit(0)",
        "os._exit": "import os\ndef add(a, b):\n    return 0\nos._exit(0)",
        "always equal": (
            "class R:\n    __eq__ = lambda s, o: True\n    __ne__ = lambda s, o: False\n"
            "    __bool__ = lambda s: True\n    __hash__ = lambda s: 0\n"
            "def add(a, b):\n    return R()"
        ),
        "int subclass": "class R(int):\n    __eq__ = lambda s, o: True\n"
        "def add(a, b):\n    return R(0)",
        "fake output": "import os\ndef add(a, b):\n    return 0\nprint('2/2 passed')\n"
        "for fd in range(3, 40):\n    try:\n        os.write(fd, b'11\\n')\n"
        "    except OSError:\n        pass\nos._exit(0)",
        "shadowed builtins": "import builtins\nbuiltins.abs = lambda x: 3\n"
        "def abs(x):\n    return 3\ndef add(a, b):\n    return -100",
        "timeout": "def add(a, b):\n    while True:\n        pass",
    }
    tests = ADD_TESTS + ["assert abs(add(1, 2)) == 3"]
    reward = make_code_reward(timeout_s=2.0)
    rewards = reward(None, [fenced(c) for c in cheats.values()], tests=[tests] * len(cheats))
    assert dict(zip(cheats, rewards)) == dict.fromkeys(cheats, 0.0)


@pytest.mark.parametrize("fork_server", ["1", "0"])
def test_infrastructure_failure_gives_none(monkeypatch: pytest.MonkeyPatch, fork_server) -> None:
    from dllm_rl.rewards.sandbox import zygote as sandbox_zygote

    monkeypatch.setenv("DLLM_RL_SANDBOX_FORKSERVER", fork_server)
    monkeypatch.setattr(sandbox_zygote, "_SERVERS", {})  # a fork server starts afresh
    monkeypatch.setattr(sys, "executable", "/nonexistent/python")
    grades = grade_code([fenced("def add(a, b):\n    return a + b")], [ADD_TESTS])
    assert grades[0].reward is None and grades[0].outcome.startswith("sandbox error")


def test_format_weight_adds_the_format_term() -> None:
    reward = make_code_reward(format_weight=0.5)
    assert reward.__name__ == "code_reward_with_format"
    completions = [fenced("def add(a, b):\n    return a + b"), "def add(a, b):\n    return a + b"]
    assert reward(None, completions, tests=[ADD_TESTS] * 2) == [1.5, 1.0]


# ------------------------------------------------------------------------------------------------
# HumanEval: gold solutions pass, mismatched ones fail.


def _humaneval(shared_data: Path, n: int) -> list[dict]:
    path = shared_data / "humaneval" / "HumanEval.jsonl"
    if not path.exists():
        pytest.skip(f"{path} not found")
    with path.open() as f:
        return [json.loads(line) for line, _ in zip(f, range(n))]


def _columns(rows: list[dict]) -> dict:
    return {
        "code_prefix": [r["prompt"] for r in rows],
        "test_setup": [r["test"] for r in rows],
        "tests": [[f"check({r['entry_point']})"] for r in rows],
        "entry_point": [r["entry_point"] for r in rows],
    }


def test_humaneval_canonical_solutions_score_one(shared_data: Path) -> None:
    rows = _humaneval(shared_data, 10)
    bodies = [r["canonical_solution"] for r in rows]  # body only: completes the prompt
    full = [fenced(r["prompt"] + r["canonical_solution"]) for r in rows]  # whole function
    mismatched = bodies[1:] + bodies[:1]  # each task gets its neighbour's solution
    columns = {k: v * 3 for k, v in _columns(rows).items()}
    rewards = code_reward(["p"] * 30, bodies + full + mismatched, **columns)
    assert rewards[:20] == [1.0] * 20
    assert rewards[20:] == [0.0] * 10
