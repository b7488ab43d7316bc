"""Row functions for the code tasks: HumanEval and MBPP (full and sanitized).

Records carry what the code reward needs: ``tests`` (statements that raise on failure),
``test_setup`` (run before the tests), ``code_prefix`` (prepended when a completion gives only a
body), ``entry_point`` and the gold code for reference. The code itself is never run here.
"""

from __future__ import annotations

import ast
import builtins
import warnings
from typing import Any

from dllm_rl.data.templates import render_prompt

# MBPP's official split by task id (the upstream README; the hub uses the same ranges).
MBPP_SPLITS: dict[str, range] = {
    "prompt": range(1, 11),
    "test": range(11, 511),
    "validation": range(511, 601),
    "train": range(601, 1001),
}


def humaneval_row(row: dict[str, Any], *, template: str, chat: bool) -> dict[str, Any]:
    """HumanEval (``task_id``, ``prompt``, ``entry_point``, ``canonical_solution``, ``test``)."""
    prefix = row["prompt"]
    question = (
        "Complete the following Python function. Write the whole function, including its "
        f"signature.\n\n```python\n{prefix.rstrip()}\n```"
    )
    return {
        "prompt": render_prompt(template, chat, question),
        "code_prefix": prefix,
        "test_setup": row["test"],
        "tests": [f"check({row['entry_point']})"],
        "entry_point": row["entry_point"],
        "task_id": str(row["task_id"]),
        "canonical_solution": row["canonical_solution"],
    }


def mbpp_row(row: dict[str, Any], *, template: str, chat: bool) -> dict[str, Any]:
    """MBPP, full (``text``, ``test_setup_code``, ``challenge_test_list``) or sanitized
    (``prompt``, ``test_imports``) layout -> the code record.

    The prompt is the statement plus the first test, which shows the expected signature.
    """
    statement = row["text"] if "text" in row else row["prompt"]
    tests = list(row["test_list"])
    if "test_setup_code" in row:
        setup = row["test_setup_code"] or ""
    else:
        setup = "\n".join(row.get("test_imports") or [])
    code = row["code"].replace("\r\n", "\n")
    question = (
        f"{statement.strip()}\nYour code should pass this test, which shows the expected "
        f"function name and arguments:\n{tests[0]}"
    )
    return {
        "prompt": render_prompt(template, chat, question),
        "tests": tests,
        "test_setup": setup,
        "code_prefix": None,
        "entry_point": mbpp_entry_point(tests[0], code),
        "task_id": str(row["task_id"]),
        "reference_code": code,
    }


def in_mbpp_split(row: dict[str, Any], split: str) -> bool:
    """Whether an MBPP row belongs to ``split`` by its task id (``"all"`` keeps every row)."""
    return split == "all" or int(row["task_id"]) in MBPP_SPLITS[split]


def mbpp_entry_point(test: str, reference_code: str | None = None) -> str | None:
    """The function an MBPP test calls: the first called name that the reference code defines,
    else the first called name that is not a builtin, else ``None``.

    >>> mbpp_entry_point("assert set(similar_elements((3, 4), (4, 5))) == set((4,))")
    'similar_elements'
    """
    tree = _parse(test)
    if tree is None:
        return None
    funcs = [
        node.func
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
    ]
    # ast.walk is breadth-first; take the calls in the order they appear in the text.
    funcs.sort(key=lambda func: (func.lineno, func.col_offset))
    called = list(dict.fromkeys(func.id for func in funcs))
    defined = _defined_names(reference_code) if reference_code else set()
    for name in called:
        if name in defined:
            return name
    for name in called:
        if not hasattr(builtins, name):
            return name
    return None


def _parse(code: str) -> ast.Module | None:
    with warnings.catch_warnings():  # MBPP code has "\d"-style escapes in plain strings
        warnings.simplefilter("ignore")
        try:
            return ast.parse(code)
        except SyntaxError:
            return None


def _defined_names(code: str) -> set[str]:
    tree = _parse(code)
    if tree is None:
        return set()
    return {
        node.name
        for node in tree.body
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
    }
