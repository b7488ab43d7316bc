"""Nothing that holds an expected value ever enters the candidate's process (issue 17).

For each code dataset, a candidate searches the whole of what its process can reach (every object
``gc`` tracks and what they hold, every frame's locals and globals and code constants, the
modules, the program text, the environment, argv and every open descriptor), at its top level
and again when the judge first calls it, and prints it all. The test then looks, in that dump,
for each expected value of the row's tests (every literal that is not an argument of a call to
the candidate). A value
counts as leaked when it is in the dump but not in the dump of the same candidate graded with no
tests at all (what any interpreter holds), nor in the row's inputs, prompt or candidate code.

The control shows the search finds a leak when there is one: the same rows with the whole setup
run in the candidate's process (as before this issue) leak HumanEval's expected values.
"""

from __future__ import annotations

import ast
import builtins
import json
import re
import sys
from pathlib import Path

import pytest

from dllm_rl.rewards.code import assemble_candidate, build_judge, build_program
from dllm_rl.rewards.sandbox import run_linked
from dllm_rl.rewards.sandbox.sources import judge_source, servant_source

pytestmark = [
    pytest.mark.skipif(sys.platform != "linux", reason="the sandbox needs Linux"),
    pytest.mark.timeout(300),
]

MARK = "@@memory@@"
DUMP = """
import gc, json, os, sys, types

def _dump(when):
    out, seen = set(), set()
    seen.update((id(out), id(seen)))  # not its own bookkeeping

    def walk(obj, depth=0):
        if depth > 4 or id(obj) in seen:
            return
        seen.add(id(obj))
        kind = type(obj)
        if kind is str:
            out.add(obj)
        elif kind in (bytes, bytearray):
            out.add(bytes(obj).decode("latin-1"))
        elif kind in (int, float, complex):
            out.add(repr(obj))
        elif kind in (list, tuple, set, frozenset, dict):
            items = list(obj.items()) if kind is dict else list(obj)
            flat = [x for pair in items for x in pair] if kind is dict else items
            if len(flat) < 2000 and all(type(x) in (str, int, float, bool, type(None)) for x in flat):
                out.add(repr(obj))
            for x in flat:
                walk(x, depth + 1)
        elif kind is types.CodeType:
            walk(obj.co_consts, depth + 1)
            walk(obj.co_names, depth + 1)
        elif kind is types.FunctionType:
            walk(obj.__code__, depth + 1)
            walk(obj.__defaults__, depth + 1)
            walk(obj.__globals__, depth + 1)
        elif kind is types.ModuleType:
            walk(vars(obj), depth + 1)
        elif kind is types.FrameType:
            walk(obj.f_locals, depth + 1)
            walk(obj.f_globals, depth + 1)
            walk(obj.f_code, depth + 1)
        elif hasattr(obj, "__dict__"):
            try:
                walk(vars(obj), depth + 1)
            except TypeError:
                pass

    for obj in gc.get_objects():
        walk(obj)
    frame = sys._getframe()
    while frame is not None:
        walk(frame)
        frame = frame.f_back
    for module in list(sys.modules.values()):
        walk(module)
    out.update(f"{k}={v}" for k, v in os.environ.items())
    out.update(sys.argv)
    out.update(getattr(sys, "orig_argv", []))
    for name in ("cmdline", "environ"):
        try:
            with open(f"/proc/self/{name}", "rb") as f:
                out.add(f.read().decode("latin-1"))
        except OSError:
            pass
    for fd in os.listdir("/proc/self/fd"):
        try:
            out.add(os.readlink(f"/proc/self/fd/{fd}"))
            # Pipes are read at the first call, when the judge waits for the answer (at the top
            # level, reading would take the judge's first message).
            if int(fd) > 2 and (when == "first call" or not os.readlink(f"/proc/self/fd/{fd}").startswith("pipe:")):
                os.set_blocking(int(fd), False)
                out.add(os.read(int(fd), 1 << 20).decode("latin-1"))
        except (OSError, ValueError):
            pass
    print("MARK" + json.dumps(sorted(out)), flush=True)

_dump("top level")

def ENTRY(*args, **kwargs):
    if not _calls:
        _calls.append(1)
        _dump("first call")
    return None

_calls = []

class Node:  # MBPP 367's setup builds its input trees with the candidate's Node
    def __init__(self, data):
        self.data, self.left, self.right = data, None, None
""".replace("MARK", MARK)


def _dump(row: dict, setup_in_servant: bool, with_tests: bool = True) -> set[str]:
    """What the candidate's process could reach, graded against ``row`` (or against nothing)."""
    code = DUMP.replace("ENTRY", row["entry_point"])
    tests = row["tests"] if with_tests else [f"{row['entry_point']}()"]
    setup = row["test_setup"] if with_tests else None
    servant = build_program(code, setup, row["code_prefix"], row["entry_point"])
    if setup_in_servant:  # the control: the whole setup runs in the candidate's process
        candidate = assemble_candidate(code, row["code_prefix"], row["entry_point"])
        servant = f"_servant_main({ {'code': candidate, 'imports': setup or ''}!r})\n"
    judge = build_judge(tests, setup, row["code_prefix"], row["entry_point"], budget_s=20.0)
    program, judged = run_linked(
        servant,
        judge,
        timeout_s=30.0,
        max_output_bytes=64 * 2**20,
        program_preamble=servant_source(),
        judge_preamble=judge_source(),
    )
    assert program.error is None and judged.error is None, (program.error, judged.error)
    assert not program.stdout_truncated
    dumps = [line[len(MARK) :] for line in program.stdout.split("\n") if line.startswith(MARK)]
    assert len(dumps) == 2, program.stderr[-2000:]  # the top level and the first call
    return {text for dump in dumps for text in json.loads(dump)}


def _literal(node: ast.AST):
    try:
        return ast.literal_eval(node)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return _NOT_LITERAL


_NOT_LITERAL = object()


def _inputs_and_expected(row: dict) -> tuple[list[ast.AST], list[ast.AST]]:
    """The arguments of calls to the candidate's names (inputs), and the other maximal literals
    of the setup and tests outside method calls (the expected values, ``math.isclose``'s
    arguments included; ``rng.randint(-10, 10)`` is neither)."""
    inputs, expected = [], []
    sources = [row["test_setup"] or "", *row["tests"]]
    trees = [ast.parse(source) for source in sources]
    defined = {
        node.name
        for tree in trees
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.ClassDef))
    }

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name) and not (
                func.id in defined or hasattr(builtins, func.id)
            ):
                inputs.extend([*node.args, *(k.value for k in node.keywords)])
                return
            if isinstance(func, ast.Attribute) and func.attr != "isclose":
                return  # rng.randint(-10, 10), copy.deepcopy(x): neither input nor answer
        if not isinstance(node, ast.Name) and _literal(node) is not _NOT_LITERAL:
            expected.append(node)
            return
        for child in ast.iter_child_nodes(node):
            visit(child)

    for tree in trees:
        visit(tree)
    return inputs, expected


def expected_values(row: dict) -> set[str]:
    """The expected values of the row's setup and tests as text (strings as themselves, other
    values by ``repr``), three characters or longer."""
    values = set()
    for node in _inputs_and_expected(row)[1]:
        value = _literal(node)
        text = value if isinstance(value, str) else repr(value)
        if len(text) >= 3:
            values.add(text)
    return values


def legitimate_text(row: dict) -> str:
    """What the candidate may see: its prompt, its code, the inputs it is called with."""
    inputs = []
    for node in _inputs_and_expected(row)[0]:
        inputs.append(ast.unparse(node))
        value = _literal(node)
        if value is not _NOT_LITERAL:
            inputs.append(value if isinstance(value, str) else repr(value))
    prompt = row["prompt"] if isinstance(row["prompt"], str) else json.dumps(row["prompt"])
    return "\n".join([prompt, row["code_prefix"] or "", DUMP, *inputs])


def leaked(row: dict, setup_in_servant: bool = False) -> set[str]:
    found = _dump(row, setup_in_servant)
    baseline = _dump(row, False, with_tests=False)
    legitimate = legitimate_text(row)
    blob, base_blob = "\n".join(found), "\n".join(baseline)

    def holds(text: str, value: str) -> bool:  # as a whole token: 77777 is not in 1404777772
        return re.search(rf"(?<![\w.]){re.escape(value)}(?![\w.])", text) is not None

    return {
        value
        for value in expected_values(row)
        if holds(blob, value) and not holds(base_blob, value) and value not in legitimate
    }


def _rows(shared_data: Path, task: str, ids: list[str]) -> list[dict]:
    from dllm_rl.data import load_task

    try:
        data = load_task(task, "test", source=shared_data)
    except Exception as exc:  # no local copy here
        pytest.skip(f"{task}: {exc}")
    rows = [row for row in data.to_list() if row["task_id"] in ids]
    assert len(rows) == len(ids)
    return rows


USER_ROW = {  # a user's dataset: constants and a helper in the setup, plain asserts
    "prompt": "Write triple(x).",
    "tests": ["assert triple(7) == EXPECTED_7", "assert check_triple(triple)"],
    "test_setup": (
        "import math\nEXPECTED_7 = 77777\n"
        "def check_triple(f):\n    return f(12345) == 37035 and f(-3) == -9\n"
    ),
    "code_prefix": None,
    "entry_point": "triple",
}
DATASETS = {
    "humaneval": ["HumanEval/2", "HumanEval/12", "HumanEval/27", "HumanEval/29", "HumanEval/32"],
    "mbpp": ["11", "12", "367"],  # 367 builds its inputs in test_setup_code
    "mbpp_sanitized": ["82", "85", "98"],  # these import math in test_imports
}


@pytest.mark.parametrize("task", sorted(DATASETS))
def test_no_expected_value_reaches_the_candidate(shared_data: Path, task: str) -> None:
    rows = _rows(shared_data, task, DATASETS[task])
    checked = 0
    for row in rows:
        checked += len(expected_values(row))
        assert leaked(row) == set(), row["task_id"]
    assert checked >= 5  # the search had values to look for


def test_no_expected_value_of_a_user_dataset_reaches_the_candidate() -> None:
    assert expected_values(USER_ROW) == {"77777", "37035"}
    assert leaked(USER_ROW) == set()


def test_the_search_finds_values_when_the_setup_runs_in_the_candidate(shared_data: Path) -> None:
    assert leaked(USER_ROW, setup_in_servant=True) == {"77777", "37035"}
    rows = _rows(shared_data, "humaneval", DATASETS["humaneval"][:3])
    for row in rows:
        assert leaked(row, setup_in_servant=True), row["task_id"]
