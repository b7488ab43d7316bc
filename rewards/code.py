"""Code rewards: run a completion's code against the task's tests in the sandbox.

The columns contract (dataset loaders build HumanEval and MBPP records to match it):

- ``tests: list[str]``: independent test snippets (MBPP: each ``assert`` line; HumanEval:
  ``["check(<entry_point>)"]``). The reward is the fraction that pass: a snippet passes when it runs
  to its end without raising.
- ``test_setup: str | None``: code run by the judge before the tests (imports, MBPP's
  ``test_setup_code``, HumanEval's ``def check(candidate): ...`` with its ``METADATA``). Only its
  module-level imports also run in the candidate's process (:func:`setup_imports`), before the
  candidate's code: nothing that holds an expected value ever enters that process.
- ``code_prefix: str | None``: prepended to the extracted code when that code does not itself define
  ``entry_point`` (HumanEval: the prompt, so that a body-only completion works). When the code does
  define it, the prefix is still prepended if it is a complete program on its own (HumanEval's
  prompts are), so that helpers it defines (``poly`` in HumanEval/32) stay available; the
  candidate's later definition wins.
- ``entry_point: str | None``: the function under test.

Two sandboxed programs per completion (``rewards/sandbox/programs/judge.py``): the **servant** runs the
setup's imports, then the candidate code (behind the prefix), in its own interpreter, and answers
requests;
the **judge** runs the trusted code (the prefix when it is a complete program, so that its helpers
are the prompt's and not the candidate's copies, then the setup and each test in its own ``try``)
in a separate sandbox, where the names the tests need from the candidate (the entry point, its
classes, its top-level values) are proxies. Arguments and results cross as plain data through a
safe value codec, so everything that decides the verdict happens where the candidate cannot reach.
What does not count as passing:

- exiting early (``sys.exit``, ``os._exit``, a crash, a timeout): the tests needing the candidate
  fail; a ``SystemExit`` at the candidate's top level is caught and its functions still serve;
- printing or writing fake results, to any descriptor: the verdict is the judge's report;
- objects that compare equal to everything, ``__sub__`` returning 0, ``int``/``str`` subclasses:
  a result that is not plain data stays in the servant and reaches the tests as a handle, whose
  equality is identity and whose truth value is refused;
- patching modules or builtins (``sys.modules["math"] = fake``, ``math.isclose = ...``,
  ``builtins.len = ...``), rewriting the harness's frames or finding it through ``gc``: they
  change the servant's interpreter, not the judge's. A module the candidate imported and the tests
  use without importing is the judge's own import of that module; builtins the candidate shadows
  stay the real ones for the tests (except the entry point).

Known limits: a test that compares the candidate's own objects by ``==`` (rather than their plain
attributes) fails; tests that are slow for the judge count against the same ``timeout_s``; a test
still running at the budget fails, as do the later ones.
"""

from __future__ import annotations

import ast
import functools
import re
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from .extract import completion_text
from .sandbox import SandboxResult, max_concurrency_default, run_linked
from .sandbox.sources import judge_source, servant_source

RewardFunction = Callable[..., list[float | None]]

_OPEN_FENCE = re.compile(r"```[ \t]*(python3?|py)\b[^\n]*\n(.*)\Z", re.DOTALL | re.IGNORECASE)
_FENCE_TAG = re.compile(r"[ \t]*([\w+#.-]*)")
_PYTHON_TAGS = {"python", "python3", "py"}
MAX_COMPLETION_CHARS = 256 * 1024
"""Longer completions are not graded (code reward and format score 0.0): no answer needs them."""


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """Every closed ```` ```tag ```` block as ``(tag, body)``, left to right, in linear time.

    A block opens at a ```` ``` ````, takes the word after it as its tag, starts after the end of
    that line and ends at the next ```` ``` ````. String searches only: the equivalent regex
    rescans to the end of the text from every backtick of a long run without a newline
    (quadratic).
    """
    blocks, position = [], 0
    while True:
        start = text.find("```", position)
        if start < 0:
            return blocks
        newline = text.find("\n", start + 3)
        if newline < 0:  # no later opening has a newline either
            return blocks
        end = text.find("```", newline + 1)
        if end < 0:  # nor a closing fence
            return blocks
        tag = _FENCE_TAG.match(text, start + 3, newline).group(1)
        blocks.append((tag, text[newline + 1 : end]))
        position = end + 3


def extract_code(text: str) -> tuple[str, bool]:
    """The code of a completion, and whether it came from a fenced block.

    Picks the **last** ```` ```python ```` (or ``py``, ``python3``) block: in reasoning-style
    completions earlier blocks are drafts and the answer comes last. Without one, the last untagged
    ```` ``` ```` block; then an unterminated ```` ```python ```` block running to the end (a
    completion cut at the length limit); then the whole text (a base model's bare function body).
    Indentation is kept (a body-only block continues ``code_prefix``). Linear time in the text.

    Args:
        text: the completion text.

    Returns:
        ``(code, fenced)``.
    """
    blocks = [(tag.lower(), body) for tag, body in fenced_blocks(text)]
    for wanted in (_PYTHON_TAGS, {""}):
        chosen = [body for tag, body in blocks if tag in wanted]
        if chosen:
            return _trim(chosen[-1]), True
    rest = text[text.rfind("```") :] if "```" in text else ""
    match = _OPEN_FENCE.match(rest)
    if match:
        return _trim(match.group(2)), True
    return _trim(text), False


def _trim(code: str) -> str:
    """Drop leading blank lines and trailing whitespace, keep the first line's indentation."""
    stripped = code.lstrip(" \t\n")
    first_line = code.rfind("\n", 0, len(code) - len(stripped))  # end of the last blank line
    return code[first_line + 1 :].rstrip()


def defines(code: str, name: str) -> bool:
    """Whether ``code`` defines ``name`` at module level (def, class, assignment, import)."""
    tree = _parse(code)
    if tree is None:
        return (
            re.search(rf"^(async\s+)?def\s+{re.escape(name)}\s*\(", code, re.MULTILINE) is not None
        )
    stack: list[ast.AST] = list(tree.body)
    while stack:  # module-level statements and what they contain, not function or class bodies
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            if node.name == name:
                return True
            continue
        stack.extend(ast.iter_child_nodes(node))
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store) and node.id == name:
            return True
        elif isinstance(node, ast.alias) and (node.asname or node.name) == name:
            return True
    return False


def assemble_candidate(code: str, code_prefix: str | None, entry_point: str | None) -> str:
    """The candidate program: ``code`` behind ``code_prefix`` where the contract says so."""
    if not code_prefix:
        return code
    if entry_point and defines(code, entry_point) and not _parses(code_prefix):
        return code
    return code_prefix + ("" if code_prefix.endswith("\n") else "\n") + code


def _parses(code: str) -> bool:
    return _parse(code) is not None


def _parse(code: str) -> ast.Module | None:
    """``ast.parse``, or ``None`` for code that does not parse (quietly: MBPP's ``"\\d"``)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return ast.parse(code)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            return None


# ------------------------------------------------------------------------------------------------
# The two programs: the servant runs the candidate, the judge runs the tests (rewards/sandbox/programs/).


def build_program(
    code: str,
    test_setup: str | None = None,
    code_prefix: str | None = None,
    entry_point: str | None = None,
) -> str:
    """The servant program: runs the candidate's code, then answers the judge's requests (it
    calls :func:`dllm_rl.rewards.sandbox.sources.servant_source`, the preamble it runs behind)."""
    data = {
        "code": assemble_candidate(code, code_prefix, entry_point),
        "imports": setup_imports(test_setup or ""),
    }
    return f"_servant_main({data!r})\n"


@functools.lru_cache(maxsize=4096)
def setup_imports(test_setup: str) -> str:
    """The module-level imports of ``test_setup``, rebuilt from its syntax tree: all of the setup
    the candidate's process may see (MBPP's ``import math`` that the gold code relies on).

    Nothing else leaves the judge: HumanEval's setup is ``check()`` with every expected value, and
    an MBPP setup builds the tests' inputs. The statements are regenerated (``ast.unparse``), not
    cut from the text, so no comment or literal of the setup comes along. A setup that does not
    parse gives nothing.

    >>> setup_imports("import math\nfrom re import sub as s\nEXPECTED = 42\n")
    'import math\nfrom re import sub as s'
    """
    tree = _parse(test_setup)
    if tree is None:
        return ""
    imports = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
    return "\n".join(ast.unparse(node) for node in imports)


@functools.lru_cache(maxsize=4096)
def free_names(sources: tuple[str, ...]) -> list[str]:
    """Names the sources read but never bind (assignment, import, def, class): what the tests
    need from the candidate. Computed by the caller, so that the judge starts without ``ast``."""
    loaded, bound = set(), set()
    for source in sources:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                tree = ast.parse(source)
            except (SyntaxError, ValueError, RecursionError, MemoryError):
                continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Name):
                (loaded if isinstance(node.ctx, ast.Load) else bound).add(node.id)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                bound.add(node.name)
            elif isinstance(node, ast.alias):
                bound.add((node.asname or node.name).split(".")[0])
    return sorted(loaded - bound)


def build_judge(
    tests: Sequence[str],
    test_setup: str | None = None,
    code_prefix: str | None = None,
    entry_point: str | None = None,
    budget_s: float = 10.0,
) -> str:
    """The judge program: runs the trusted ``code_prefix`` (when it is a complete program),
    ``test_setup`` and ``tests`` against proxies of the candidate's names, and reports (behind
    :func:`dllm_rl.rewards.sandbox.sources.judge_source`)."""
    data = {
        "prefix": code_prefix if code_prefix and _parses(code_prefix) else "",
        "setup": test_setup or "",
        "tests": list(tests),
        "entry_point": entry_point or "",
        "budget_s": float(budget_s),
        "free_names": free_names((test_setup or "", *tests)),
    }
    return f"_judge_main({data!r})\n"


# ------------------------------------------------------------------------------------------------
# Grading and rewards.


@dataclass(frozen=True)
class CodeGrade:
    """The grading of one completion.

    Attributes:
        reward: passed / total (a test the candidate did not answer, because it crashed, exited
            or ran out of time, fails); 0.0 when the judge did not report (it was killed, e.g.
            by a value too large for it) or the completion is too long; ``None`` when there were
            no tests or a sandbox failed.
        passed: tests that passed.
        total: tests run.
        outcome: ``graded``, ``no tests``, ``completion too long``, ``no report (<judge
            outcome>)``, ``malformed report`` or ``sandbox error: ...``.
        candidate_error: the exception the candidate's top level raised, if any.
        setup_error: the exception ``test_setup`` raised, if any (all tests then fail).
        sandbox: the judge's sandbox result, for debugging (``None`` without tests).
        candidate: the candidate's sandbox result (its stdout and stderr), for debugging.
    """

    reward: float | None
    passed: int
    total: int
    outcome: str
    candidate_error: str = ""
    setup_error: str = ""
    sandbox: SandboxResult | None = None
    candidate: SandboxResult | None = None


def grade_code(
    completions: Sequence[Any],
    tests: Sequence[Sequence[str] | None],
    test_setup: Sequence[str | None] | str | None = None,
    code_prefix: Sequence[str | None] | str | None = None,
    entry_point: Sequence[str | None] | str | None = None,
    *,
    timeout_s: float = 10.0,
    memory_mb: int = 1024,
    max_concurrency: int | None = None,
) -> list[CodeGrade]:
    """Grade each completion against its tests (one sandboxed program each, run concurrently).

    Args:
        completions: strings or chat-format completions.
        tests: one list of test snippets per completion (``None``/empty: not applicable).
        test_setup: one per completion, or one string for all.
        code_prefix: one per completion, or one string for all.
        entry_point: one per completion, or one string for all.
        timeout_s: wall-clock budget of each program (candidate and all its tests).
        memory_mb: address-space limit of each program.
        max_concurrency: programs run at once (default: the sandbox's, the CPU count).

    Returns:
        One :class:`CodeGrade` per completion.
    """
    n = len(completions)
    tests = _tests_column(tests, n)
    setups, prefixes, entries = (
        _column(test_setup, n, "test_setup"),
        _column(code_prefix, n, "code_prefix"),
        _column(entry_point, n, "entry_point"),
    )
    grades: list[CodeGrade | None] = [None] * n
    programs, rows = [], []
    for i, completion in enumerate(completions):
        if not tests[i]:
            grades[i] = CodeGrade(None, 0, 0, "no tests")
            continue
        text = completion_text(completion)
        if len(text) > MAX_COMPLETION_CHARS:
            grades[i] = CodeGrade(0.0, 0, len(tests[i]), "completion too long")
            continue
        code, _ = extract_code(text)
        servant = build_program(code, setups[i], prefixes[i], entries[i])
        judge = build_judge(tests[i], setups[i], prefixes[i], entries[i], budget_s=timeout_s)
        programs.append((servant, judge))
        rows.append(i)

    servant_preamble, judge_preamble = servant_source(), judge_source()

    def run(pair: tuple[str, str]) -> tuple[SandboxResult, SandboxResult]:
        # The sandboxes outlive the judge's budget, so that it always reports in time.
        return run_linked(
            *pair,
            timeout_s=timeout_s + 2.0,
            memory_mb=memory_mb,
            program_preamble=servant_preamble,
            judge_preamble=judge_preamble,
        )

    workers = min(len(programs), max_concurrency or max_concurrency_default())
    with ThreadPoolExecutor(max(1, workers), thread_name_prefix="code-reward") as pool:
        results = list(pool.map(run, programs))
    for i, (candidate, judge) in zip(rows, results):
        grades[i] = _grade(candidate, judge, len(tests[i]))
    return grades  # type: ignore[return-value]


def _grade(candidate: SandboxResult, judge: SandboxResult, total: int) -> CodeGrade:
    if judge.error is not None or candidate.error is not None:
        error = judge.error if judge.error is not None else f"candidate: {candidate.error}"
        return CodeGrade(
            None, 0, total, f"sandbox error: {error}", sandbox=judge, candidate=candidate
        )
    if judge.report is None:
        return CodeGrade(
            0.0, 0, total, f"no report ({judge.outcome})", sandbox=judge, candidate=candidate
        )
    bits, candidate_error, setup_error = (judge.report.split("\n", 2) + ["", ""])[:3]
    passed = bits.count("1")
    if len(bits) != total or passed + bits.count("0") != total:  # the judge is ours: a bug
        return CodeGrade(None, 0, total, "malformed report", sandbox=judge, candidate=candidate)
    return CodeGrade(
        passed / total, passed, total, "graded", candidate_error, setup_error, judge, candidate
    )


def _column(value: Any, n: int, name: str) -> list[Any]:
    if value is None or isinstance(value, str):
        return [value] * n
    values = list(value)
    if len(values) != n:
        raise ValueError(f"column {name!r} has {len(values)} values for {n} completions")
    return values


def _tests_column(tests: Any, n: int) -> list[list[str] | None]:
    values = _column(tests, n, "tests")
    for i, row in enumerate(values):
        if isinstance(row, str) or (row is not None and not all(isinstance(t, str) for t in row)):
            raise TypeError(
                f"tests[{i}] must be a list of test snippets (str), one list per completion; "
                f"got {type(row).__name__}"
            )
    return [list(row) if row else None for row in values]


def code_format_score(completion: Any, code_prefix: str | None = None) -> float:
    """1.0: a fenced block that parses (alone or behind ``code_prefix``); 0.5: fenced, does not
    parse; 0.0: no fenced block, or a completion longer than :data:`MAX_COMPLETION_CHARS`."""
    text = completion_text(completion)
    if len(text) > MAX_COMPLETION_CHARS:
        return 0.0
    code, fenced = extract_code(text)
    if not fenced:
        return 0.0
    if _parses(code) or (code_prefix and _parses(assemble_candidate(code, code_prefix, None))):
        return 1.0
    return 0.5


def code_format_reward(
    prompts: Sequence[Any] | None,
    completions: Sequence[Any],
    completion_ids: Any = None,
    code_prefix: Sequence[str | None] | str | None = None,
    **kwargs: Any,
) -> list[float | None]:
    """TRL reward: :func:`code_format_score` of each completion."""
    prefixes = _column(code_prefix, len(completions), "code_prefix")
    return [code_format_score(c, p) for c, p in zip(completions, prefixes)]


def make_code_reward(
    *,
    format_weight: float = 0.0,
    timeout_s: float = 10.0,
    memory_mb: int = 1024,
    max_concurrency: int | None = None,
) -> RewardFunction:
    """A TRL reward: fraction of tests passed, plus ``format_weight`` x :func:`code_format_score`.

    Args:
        format_weight: weight of the format term (0: tests only).
        timeout_s: wall-clock budget of each program.
        memory_mb: address-space limit of each program.
        max_concurrency: programs run at once.

    Returns:
        ``f(prompts, completions, completion_ids=None, *, tests, test_setup=None,
        code_prefix=None, entry_point=None, **ignored) -> list[float | None]``, named
        ``code_reward`` (or ``code_reward_with_format``) for logging.
    """

    def reward(
        prompts: Sequence[Any] | None,
        completions: Sequence[Any],
        tests: Sequence[Sequence[str] | None],
        test_setup: Sequence[str | None] | str | None = None,
        code_prefix: Sequence[str | None] | str | None = None,
        entry_point: Sequence[str | None] | str | None = None,
        completion_ids: Any = None,
        **kwargs: Any,
    ) -> list[float | None]:
        grades = grade_code(
            completions,
            tests,
            test_setup,
            code_prefix,
            entry_point,
            timeout_s=timeout_s,
            memory_mb=memory_mb,
            max_concurrency=max_concurrency,
        )
        if not format_weight:
            return [g.reward for g in grades]
        formats = code_format_reward(prompts, completions, code_prefix=code_prefix)
        return [
            None if g.reward is None else g.reward + format_weight * f
            for g, f in zip(grades, formats)
        ]

    reward.__name__ = reward.__qualname__ = (
        "code_reward_with_format" if format_weight else "code_reward"
    )
    return reward


_default_code_reward = make_code_reward()


def code_reward(
    prompts: Sequence[Any] | None,
    completions: Sequence[Any],
    tests: Sequence[Sequence[str] | None],
    test_setup: Sequence[str | None] | str | None = None,
    code_prefix: Sequence[str | None] | str | None = None,
    entry_point: Sequence[str | None] | str | None = None,
    **kwargs: Any,
) -> list[float | None]:
    """TRL reward: the fraction of each completion's tests that pass (see the module docstring).

    Args:
        prompts: ignored (TRL passes them).
        completions: strings or chat-format completions.
        tests: one list of test snippets per completion.
        test_setup: code run after the candidate, before the tests (per completion).
        code_prefix: prepended to code that does not define ``entry_point`` (per completion).
        entry_point: the function under test (per completion).
        **kwargs: other dataset columns and ``completion_ids``: ignored.

    Returns:
        passed / total per completion (see :class:`CodeGrade`); ``None`` when there are no tests
        or a sandbox failed. Use :func:`make_code_reward` for other limits or
        a format term.
    """
    return _default_code_reward(prompts, completions, tests, test_setup, code_prefix, entry_point)
