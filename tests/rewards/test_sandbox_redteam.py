"""The red-team suites of issues 10 and 17, and direct pins of each finding of the reviews.

The suite (``tests/attacks/redteam.py``) runs once per module; each of its cases is one test. The
other tests pin a finding each with the smallest program that showed it: before the fix, every
one of them failed (a reward of 1.0 or ``None``, a connection, a descriptor, a process or a
folder left behind, minutes of regex).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

import pytest

from dllm_rl.rewards.code import code_format_score, extract_code, fenced_blocks, grade_code
from dllm_rl.rewards.sandbox import run_program
from dllm_rl.rewards.sandbox.isolation import WORKDIR_PREFIX, sweep_stale
from tests.attacks.redteam import run_redteam_suite

pytestmark = [
    pytest.mark.skipif(sys.platform != "linux", reason="the sandbox needs Linux"),
    pytest.mark.timeout(240),
]


@pytest.fixture(scope="module")
def redteam() -> dict[str, dict]:
    return {row["case"]: row for row in run_redteam_suite(timeout_s=1.5)}


CASES = [
    "fake_math_module",
    "patched_math_isclose",
    "frame_rewrites_tests",
    "gc_forged_report",
    "always_equal_and_arithmetic",
    "exit_before_tests",
    "unix_socket_outside_tmp",
    "hidden_files",
    "quadratic_extraction_1mb",
    "result_pipe_overflow",
    "result_pipe_overflow_reward",
    "root_opened_fds",
    "trainer_sigkill",
    "probe_and_replay_check",
    "always_true_contains",
    "stop_iteration_ends_map",
    "servant_named_modules",
    "candidate_len_and_eq",
    "report_channel_flood",
    *(
        f"{case}[{mode}]"
        for mode in ("no-namespaces", "no-namespaces-no-uid")
        for case in ("setsid_daemon", "dev_shm_write", "signal_outside", "unix_socket")
    ),
    *(
        f"memory_of_all_processes[{mode}]"
        for mode in ("full", "no-namespaces", "no-namespaces-no-uid")
    ),
]


def test_the_suite_runs_every_case(redteam: dict[str, dict]) -> None:
    assert sorted(redteam) == sorted(CASES)
    for row in redteam.values():
        assert sorted(row) == ["case", "contained", "expected", "finding", "observed", "wall_s"]


@pytest.mark.parametrize("case", CASES)
def test_redteam_case_is_contained(redteam: dict[str, dict], case: str) -> None:
    row = redteam[case]
    if row["contained"] is None:  # the layer does not exist here, and the sandbox says so
        pytest.skip(f"{case}: {row['observed']}")
    assert row["contained"] is True, f"{case}: expected {row['expected']}; {row['observed']}"


# ------------------------------------------------------------------------------------------------
# Finding 3: linear extraction.


def test_a_megabyte_of_backticks_is_extracted_and_graded_within_a_second() -> None:
    text = "`" * 2**20
    start = time.perf_counter()
    assert extract_code(text) == (text, False)
    assert code_format_score(text) == 0.0
    assert extract_code("```python\n" + "`" * 2**20)[1] is True
    (grade,) = grade_code([text], [["assert True"]])
    assert time.perf_counter() - start < 1.0
    assert grade.reward == 0.0 and grade.outcome == "completion too long"


def test_fenced_blocks_match_the_fence_regex_they_replace() -> None:
    import random
    import re

    fence = re.compile(r"```[ \t]*([\w+#.-]*)[^\n]*\n(.*?)```", re.DOTALL)
    rng = random.Random(0)
    alphabet = ["`", "``", "```", "\n", " ", "python", "py x", "a", "\t", "-"]
    for _ in range(3000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 25)))
        assert fenced_blocks(text) == fence.findall(text), repr(text)


# ------------------------------------------------------------------------------------------------
# Finding 1: what the out-of-process judge must still support.


def test_judge_supports_classes_callbacks_mutation_and_exceptions() -> None:
    code = (
        "class Node:\n"
        "    def __init__(self, v):\n        self.v, self.left = v, None\n"
        "def depth(n):\n    return 0 if n is None else 1 + depth(n.left)\n"
        "def apply(f, xs):\n    return [f(x) for x in xs]\n"
        "def sort_in_place(xs):\n    xs.sort()\n"
        "def gen(n):\n    return (i * i for i in range(n))\n"
        "def fail(x):\n    raise ValueError(x)\n"
        "def mixed():\n    return (1, 2.5, 'a', b'b', {1: [2]}, {3}, frozenset(), 1j, None, True)\n"
    )
    tests = [
        "assert depth(root) == 2",
        "assert apply(lambda x: x + 1, [1, 2]) == [2, 3]",
        "xs = [3, 1, 2]\nsort_in_place(xs)\nassert xs == [1, 2, 3]",
        "assert list(gen(3)) == [0, 1, 4]",
        "try:\n    fail(1)\n    assert False\nexcept ValueError:\n    pass",
        "assert mixed() == (1, 2.5, 'a', b'b', {1: [2]}, {3}, frozenset(), 1j, None, True)",
        "import math\nassert math.isclose(apply(float, [1])[0], 1.0)",
        "assert apply(lambda n: 7**n, [6000])[0] == 7**6000",  # past the JSON digit limit
    ]
    setup = "root = Node(1)\nroot.left = Node(2)\n"
    (grade,) = grade_code([f"```python\n{code}```"], [tests], setup)
    assert (grade.passed, grade.total) == (len(tests), len(tests)), grade


def test_the_verdict_is_the_judges_even_if_the_candidate_forges_everything() -> None:
    forge = (
        "import os, sys\n"
        "def add(a, b):\n    return 0\n"
        "for fd in range(3, 64):\n"
        "    try:\n        os.write(fd, b'11\\n\\n\\n' * 1000)\n"
        "    except OSError:\n        pass\n"
        "sys.modules['math'].isclose = lambda *a, **k: True\n"
    )
    tests = ["assert add(1, 2) == 3", "import math\nassert math.isclose(add(1, 2), 3)"]
    (grade,) = grade_code([f"```python\n{forge}```"], [tests])
    assert grade.reward == 0.0 and grade.outcome == "graded"


# ------------------------------------------------------------------------------------------------
# Findings 4, 5, 2: descriptors and what is in view.


def test_flooding_every_descriptor_is_the_programs_fault_not_an_error() -> None:
    source = (
        "import os\nfor fd in range(3, 64):\n    try:\n"
        "        os.write(fd, b'x' * 5 * 2**20)\n    except OSError:\n        pass\n"
        "raise SystemExit(1)\n"
    )
    result = run_program(source, timeout_s=20)
    assert result.error is None and result.exit_code == 1 and result.report is None
    assert result.report_overflow


def test_no_descriptor_opened_with_privileges_survives() -> None:
    result = run_program("import os\nprint(sorted(os.listdir('/proc/self/fd')))", timeout_s=20)
    fds = sorted(int(fd) for fd in eval(result.stdout))
    # stdin, stdout, stderr, the report pipe and the descriptor listdir itself opens
    assert len(fds) == 5 and fds[:3] == [0, 1, 2], fds


def test_isolation_layers_are_reported() -> None:
    layers = run_program("", timeout_s=20).isolation
    if os.geteuid() == 0:
        assert {"minimal-root", "private-tmp", "seccomp-no-unix-sockets"} <= set(layers), layers


# ------------------------------------------------------------------------------------------------
# Findings 6 and 7: leftovers and forced degraded modes.


def test_start_up_sweep_removes_only_folders_of_dead_owners() -> None:
    base = tempfile.gettempdir()
    dead = tempfile.mkdtemp(prefix=f"{WORKDIR_PREFIX}999999999.1-", dir=base)
    live_tag = (
        f"{os.getpid()}.{open(f'/proc/{os.getpid()}/stat').read().rsplit(')', 1)[1].split()[19]}"
    )
    live = tempfile.mkdtemp(prefix=f"{WORKDIR_PREFIX}{live_tag}-", dir=base)
    other = tempfile.mkdtemp(prefix="dllm-rl-sandboxed-not-ours-", dir=base)
    try:
        sweep_stale(force=True)
        assert not os.path.exists(dead)
        assert os.path.isdir(live) and os.path.isdir(other)
    finally:
        for path in (dead, live, other):
            if os.path.isdir(path):
                os.rmdir(path)


def test_degraded_modes_are_forced_by_environment_variables(monkeypatch) -> None:
    monkeypatch.setenv("DLLM_RL_SANDBOX_NAMESPACES", "0")
    monkeypatch.setenv("DLLM_RL_SANDBOX_DROP_UID", "0")
    result = run_program("print('ok')", timeout_s=20)
    assert result.error is None and result.stdout == "ok\n"
    assert not {"net", "pid", "mount"} & set(result.isolation)
    assert not any(layer.startswith("uid=") for layer in result.isolation)


def test_modules_the_tests_take_from_the_candidate_are_the_judges_own() -> None:
    code = (
        "import math, sys, types\n"
        "import math as m\n"
        "math.isclose = lambda *a, **k: True\n"  # patched in the candidate's interpreter only
        "fake = types.ModuleType('fake_stdlib')\n"
        "fake.__name__ = 'os'\n"
        "def f(x):\n    return 3.0\n"
    )
    tests = ["assert math.isclose(f(4), 2.0)", "assert math.isclose(f(4), 3.0)"]
    (grade,) = grade_code([f"```python\n{code}```"], [tests])
    assert (grade.passed, grade.total) == (1, 2), grade
    # Only a standard module of the tests' own name: an alias (m for math) or a module that
    # calls itself os is not imported for them.
    aliased = ["assert m.isclose(f(4), 3.0)", "assert fake.sep == '/'"]
    (grade,) = grade_code([f"```python\n{code}```"], [aliased])
    assert (grade.passed, grade.total) == (0, 2), grade


def test_a_candidate_that_hangs_fails_the_tests_left_and_the_judge_still_reports() -> None:
    code = "def f(x):\n    while x == 2:\n        pass\n    return x\n"
    tests = ["assert f(1) == 1", "assert f(2) == 2", "assert f(3) == 3"]
    start = time.monotonic()
    (grade,) = grade_code([f"```python\n{code}```"], [tests], timeout_s=2.0)
    assert grade.outcome == "graded" and grade.passed == 1 and grade.total == 3, grade
    assert time.monotonic() - start < 2.0 + 6.0
