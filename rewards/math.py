r"""Maths correctness (GSM8K, MATH-500) with math-verify, graded in worker processes.

Why processes: math-verify's own timeouts use SIGALRM, which works only in the main thread and only
with whole seconds, and a sympy simplification can hang inside C code where no signal reaches it.
So every item is graded in a spawn-started worker under a hard wall-clock limit; a worker that
overruns is killed and replaced, its item scores 0.0, and the rest of the batch carries on.

Why not ``pebble.ProcessPool(...).schedule(fn, timeout=...)``: checked against pebble 5.2.3, it
does the per-item limit well (the initializer's warm-up is not counted; a killed or crashed
worker is replaced: ``TimeoutError``, ``ProcessExpired``). What it lacks is what this pool adds
and its tests pin: a limit on a worker's start (a warm-up that hangs would block ``result()``
forever); a start failure explained (pebble says ``BrokenProcessPool: All workers expired``;
here the message tells a missing ``__main__`` guard, a script read from stdin and a worker killed
by a signal apart, with the fix); workers that end within 0.25 s of a SIGKILLed trainer even in
the middle of an item (an orphan watchdog); and Ctrl-C left to the parent. On pebble these would
be the same code wrapped around another pool, so the pool stays ours.

The answer is read from the completion in this order:

1. the last complete ``<answer>...</answer>`` block: the last ``\boxed{}`` inside it if any, else
   its whole content;
2. otherwise the last ``\boxed{}`` in the completion;
3. otherwise there is no answer, which scores 0.0.

Answer and gold are read the same way: text with LaTeX markers (``\``, ``^``, ``{``, ``$``) is
read as LaTeX; plain text (``72``, ``1,000``, ``72 dollars``, ``x = 5``) is read by
math-verify's plain-text rules: the number after "answer is" or "answer:" if there is one, else
the last number (``18 apples and 3 left`` reads 3), falling back to LaTeX when that finds
nothing. A gold already containing ``\boxed`` or ``$`` delimiters is parsed as written.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import multiprocessing
import os
import pickle
import re
import signal
import sys
import threading
import time
import traceback
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection, wait
from typing import Any

from dllm_rl.rewards.extract import completion_text, last_boxed, tag_content

logger = logging.getLogger(__name__)

GradeFn = Callable[[str, str], "float | None"]
"""``grade_fn(completion_text, gold) -> 1.0 | 0.0 | None``, run inside a worker process."""

_LATEX_MARKERS = ("\\", "^", "{", "$")
_UNESCAPED_DOLLAR = re.compile(r"(?<!\\)\$")


def extract_answer(text: str) -> str | None:
    r"""The final answer of a maths completion (see the module docstring for the order).

    >>> extract_answer(r"<reasoning>...</reasoning><answer>So \boxed{\frac{1}{2}}</answer>")
    '\\frac{1}{2}'

    Args:
        text: the completion text.

    Returns:
        The answer text, or ``None`` when the completion gives none.
    """
    content = tag_content(text, "answer")
    if content is not None:
        boxed = last_boxed(content)
        return boxed if boxed is not None else content
    return last_boxed(text)


MAX_ANSWER_CHARS = 1000
"""A longer final answer scores 0.0 unparsed: no competition answer needs it, and math-verify's
parsing of hostile megabytes runs into its timeout instead of finishing in linear time."""


def _parse(text: str, timeout_s: int) -> list[Any]:
    """math-verify's reading of an answer or gold string; ``[]`` when it finds nothing."""
    from math_verify import parse

    if "\\boxed" in text or _UNESCAPED_DOLLAR.search(text):
        return parse(text, parsing_timeout=timeout_s)
    if not any(marker in text for marker in _LATEX_MARKERS):
        plain = parse(text, extraction_mode="first_match", parsing_timeout=timeout_s)
        if plain:
            return plain
    return parse(f"${text}$", parsing_timeout=timeout_s)


@functools.lru_cache(maxsize=4096)
def _parse_gold(gold: str, timeout_s: int) -> list[Any]:
    # The G completions of a prompt share one gold: parse it once per worker.
    return _parse(gold, timeout_s)


def grade_answer(completion: str, gold: str, soft_timeout_s: int = 3) -> float | None:
    r"""Whether a completion's final answer equals the gold answer. Runs in a worker process.

    Args:
        completion: the completion text.
        gold: the gold answer (``"72"``, ``"\frac{3}{4}"``, ``"\boxed{(3, \frac{\pi}{2})}"``).
        soft_timeout_s: math-verify's own SIGALRM limit, in whole seconds (a float would make
            math-verify silently return an empty parse), for each of the three steps.

    Returns:
        1.0 if equal, 0.0 if not, if the completion has no answer or one longer than
        :data:`MAX_ANSWER_CHARS`; ``None`` if the gold cannot be parsed.
    """
    from math_verify import verify

    timeout_s = max(1, int(soft_timeout_s))
    gold_parsed = _parse_gold(gold.strip(), timeout_s)
    if not gold_parsed:
        return None
    answer = extract_answer(completion)
    if not answer or len(answer) > MAX_ANSWER_CHARS:
        return 0.0
    answer_parsed = _parse(answer, timeout_s)
    if not answer_parsed:
        return 0.0
    return 1.0 if verify(gold_parsed, answer_parsed, timeout_seconds=timeout_s) else 0.0


def _worker_main(conn: Connection, grade_fn: GradeFn, parent_pid: int | None = None) -> None:
    """Worker loop: warm up, say ready, then grade ``(text, gold)`` items until told to stop.

    A watchdog thread ends the worker within ``_ORPHAN_CHECK_S`` of its parent's death (a trainer
    killed with SIGKILL), even in the middle of a long item: a parent-death signal would follow
    the thread that started the worker, not the process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    if parent_pid is not None:
        threading.Thread(
            target=_exit_when_orphaned, args=(parent_pid,), name="orphan-watchdog", daemon=True
        ).start()
    with contextlib.suppress(OSError):  # a broken pipe: the parent is gone, end quietly
        _serve(conn, grade_fn)


_ORPHAN_CHECK_S = 0.25


def _exit_when_orphaned(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(_ORPHAN_CHECK_S)
    os._exit(0)


def _serve(conn: Connection, grade_fn: GradeFn) -> None:
    try:
        grade_fn("<answer>\\boxed{1}</answer>", "1")  # imports and first-call set-up, untimed
    except BaseException:
        conn.send(("error", traceback.format_exc()))
        return
    conn.send(("ready", None))
    while True:
        try:
            message = conn.recv()
        except EOFError:
            return
        if message is None:
            return
        text, gold = message
        try:
            value = grade_fn(text, gold)
            conn.send(("ok", None if value is None else float(value)))
        except Exception as error:  # a grading bug on one item must not stop the batch
            conn.send(("error", f"{type(error).__name__}: {error}"))


class _Worker:
    """One worker process, its pipe, and the item it is grading."""

    def __init__(self, context: Any, grade_fn: GradeFn, start_timeout_s: float) -> None:
        self.conn, child_conn = context.Pipe()
        self.process = context.Process(
            target=_worker_main,
            args=(child_conn, grade_fn, os.getpid()),
            name="math-grader",
            daemon=True,
        )
        self.process.start()
        child_conn.close()
        self.ready = False
        self.item: int | None = None
        self.deadline = time.monotonic() + start_timeout_s

    def send(self, item: int, text: str, gold: str, timeout_s: float) -> None:
        self.item = item
        self.deadline = time.monotonic() + timeout_s
        self.conn.send((text, gold))

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            self.conn.close()
        if self.process.is_alive():
            self.process.kill()
        self.process.join(timeout=5)


def _stop_workers(workers: list[_Worker], owner_pid: int) -> None:
    if os.getpid() != owner_pid:  # a forked child must not kill its parent's workers
        return
    for worker in workers:
        worker.kill()
    workers.clear()


class MathGrader:
    """A pool of spawn-started processes grading maths answers under a hard per-item time limit.

    The pool starts on first use and stops on ``close()``, on leaving a ``with`` block, when the
    grader is garbage-collected, or at interpreter exit; a closed grader restarts if used again.
    One batch is graded at a time (calls from several threads queue up).

    Example:
        >>> with MathGrader() as grader:
        ...     grader.grade([r"<answer>\\boxed{0.5}</answer>"], [r"\\frac{1}{2}"])
        [1.0]

    Args:
        num_workers: worker processes; default ``min(2, cpu count)``.
        timeout_s: hard wall-clock limit per item, in seconds (may be fractional). math-verify's
            own soft limits are set to a third of it, in whole seconds (at least 1).
        grade_fn: ``(completion_text, gold) -> float | None`` run in the workers; it must be
            picklable by reference (a module-level function or a ``functools.partial`` of one).
            Default: ``grade_answer``. Tests inject functions that hang or crash here.
        start_timeout_s: how long a worker may take to start (import and warm up).
    """

    def __init__(
        self,
        num_workers: int | None = None,
        timeout_s: float = 10.0,
        grade_fn: GradeFn | None = None,
        start_timeout_s: float = 120.0,
    ) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        self.num_workers = num_workers or min(2, os.cpu_count() or 1)
        if self.num_workers < 1:
            raise ValueError(f"num_workers must be at least 1, got {num_workers}")
        self.timeout_s = float(timeout_s)
        self.start_timeout_s = float(start_timeout_s)
        if grade_fn is None:
            grade_fn = functools.partial(grade_answer, soft_timeout_s=max(1, int(timeout_s) // 3))
        try:
            pickle.dumps(grade_fn)
        except Exception as error:
            raise TypeError(
                "grade_fn is sent to spawned worker processes, so it must be picklable: use a "
                f"module-level function or a functools.partial of one ({error})"
            ) from error
        self.grade_fn = grade_fn
        self._context = multiprocessing.get_context("spawn")
        self._workers: list[_Worker] = []
        self._owner_pid = -1
        self._finalizer: weakref.finalize | None = None
        self._lock = threading.Lock()

    def __enter__(self) -> MathGrader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the worker processes (idempotent)."""
        with self._lock:
            self._stop_all()

    def grade(self, completions: Sequence[str], golds: Sequence[str]) -> list[float | None]:
        """Grade a batch.

        Args:
            completions: completion texts, ``[N]``.
            golds: gold answers, ``[N]``.

        Returns:
            ``[N]`` values: 1.0 correct, 0.0 wrong, no answer, timed out or crashed, ``None`` when
            the gold cannot be parsed.
        """
        if len(completions) != len(golds):
            raise ValueError(
                f"{len(completions)} completions but {len(golds)} gold answers: need one each"
            )
        if not completions:
            return []
        with self._lock:
            self._ensure_started()
            try:
                return self._grade_batch(completions, golds)
            except BaseException:
                # Ctrl-C or an error mid-batch: workers still busy with this batch's items must
                # not hand their results to the next batch.
                self._stop_all()
                raise

    def _grade_batch(self, completions: Sequence[str], golds: Sequence[str]) -> list[float | None]:
        results: list[float | None] = [0.0] * len(completions)
        pending = deque(range(len(completions)))
        while pending or any(w.item is not None for w in self._workers):
            for worker in self._workers:
                if worker.ready and worker.item is None and pending:
                    i = pending.popleft()
                    try:
                        worker.send(i, completions[i], str(golds[i]), self.timeout_s)
                    except OSError:  # it died while idle: not this item's fault
                        logger.warning(
                            "math grader worker died while idle (exit code %s); replaced it",
                            worker.process.exitcode,
                        )
                        pending.appendleft(i)
                        self._replace(worker)
            active = [w for w in self._workers if w.item is not None or not w.ready]
            wait_s = max(0.0, min(w.deadline for w in active) - time.monotonic())
            readable = wait([w.conn for w in active], timeout=wait_s)
            for worker in active:
                if worker.conn in readable:
                    self._receive(worker, results, completions)
                elif time.monotonic() >= worker.deadline:
                    self._expire(worker, results, completions)
        return results

    def reward(
        self,
        prompts: Sequence[Any],
        completions: Sequence[Any],
        answer: Sequence[Any],
        completion_ids: Any = None,
        **kwargs: Any,
    ) -> list[float | None]:
        """``math_reward`` on this grader (see ``math_reward``)."""
        return self.grade([completion_text(c) for c in completions], [str(a) for a in answer])

    def _ensure_started(self) -> None:
        if self._workers and self._owner_pid == os.getpid():
            return
        if self._finalizer is not None:  # workers of the process we were forked from
            self._finalizer.detach()
        self._owner_pid = os.getpid()
        self._workers = [self._new_worker() for _ in range(self.num_workers)]
        self._finalizer = weakref.finalize(self, _stop_workers, self._workers, self._owner_pid)

    def _new_worker(self) -> _Worker:
        return _Worker(self._context, self.grade_fn, self.start_timeout_s)

    def _replace(self, worker: _Worker) -> None:
        worker.kill()
        self._workers[self._workers.index(worker)] = self._new_worker()

    def _receive(
        self, worker: _Worker, results: list[float | None], completions: Sequence[str]
    ) -> None:
        try:
            kind, payload = worker.conn.recv()
        except (EOFError, OSError):
            if not worker.ready:
                worker.process.join(timeout=5)
                code = worker.process.exitcode
                self._stop_all()
                if code is not None and code < 0:  # not its own doing: the OOM killer, a user
                    raise RuntimeError(
                        f"a math grader worker was killed by signal {-code} while starting (out "
                        "of memory?)"
                    ) from None
                if _main_from_stdin():
                    raise RuntimeError(
                        f"a math grader worker died while starting (exit code {code}): workers "
                        "are spawned and re-import the main script, but this script was read "
                        "from stdin (`python -` or a pipe), which a spawned process cannot "
                        "re-import. Save it to a file and run `python script.py`, keeping the "
                        'grading under `if __name__ == "__main__":`'
                    ) from None
                raise RuntimeError(
                    f"a math grader worker died while starting (exit code {code}). Workers are "
                    "spawned, so they re-import the main script: if it starts grading at import "
                    'time, guard that code with `if __name__ == "__main__":`'
                ) from None
            logger.warning(
                "math grader worker died (exit code %s) on item %d (%r...); scored 0.0 and "
                "replaced the worker",
                worker.process.exitcode,
                worker.item,
                completions[worker.item][-80:],
            )
            results[worker.item] = 0.0
            self._replace(worker)
            return
        if not worker.ready:
            if kind != "ready":
                self._stop_all()
                raise RuntimeError(f"a math grader worker failed to start:\n{payload}")
            worker.ready = True
            return
        if kind == "ok":
            results[worker.item] = payload
        else:
            logger.warning("math grading raised on item %d; scored 0.0: %s", worker.item, payload)
            results[worker.item] = 0.0
        worker.item = None

    def _expire(
        self, worker: _Worker, results: list[float | None], completions: Sequence[str]
    ) -> None:
        if not worker.ready:
            self._stop_all()
            raise RuntimeError(
                f"a math grader worker did not start within {self.start_timeout_s:g} s"
            )
        logger.warning(
            "math grading of item %d (%r...) ran past %g s; killed the worker, scored 0.0",
            worker.item,
            completions[worker.item][-80:],
            self.timeout_s,
        )
        results[worker.item] = 0.0
        self._replace(worker)

    def _stop_all(self) -> None:
        if self._finalizer is not None:
            self._finalizer()
            self._finalizer = None
        self._workers = []


_default_grader: MathGrader | None = None
_default_lock = threading.Lock()


def default_grader() -> MathGrader:
    """The grader shared by ``math_reward`` (created on first use, stopped at exit)."""
    global _default_grader
    with _default_lock:
        if _default_grader is None:
            _default_grader = MathGrader()
        return _default_grader


def math_reward(
    prompts: Sequence[Any],
    completions: Sequence[Any],
    answer: Sequence[Any],
    completion_ids: Any = None,
    **kwargs: Any,
) -> list[float | None]:
    r"""Maths correctness: 1.0 if the final answer equals the gold ``answer``, else 0.0.

    The final answer is the ``\boxed{}`` in (or the content of) the last ``<answer>`` block, or
    else the last ``\boxed{}``; equivalence is math-verify's (``0.5`` equals ``\frac{1}{2}``).
    Graded by the shared ``default_grader()``; see ``MathGrader`` for the time limits.

    Args:
        prompts: unused (TRL signature).
        completions: ``[N]`` strings or conversational completions.
        answer: ``[N]`` gold answers: GSM8K's final number, MATH's answer string.
        completion_ids: unused.
        **kwargs: other dataset columns, ignored.

    Returns:
        ``[N]``: 1.0 / 0.0, or ``None`` where the gold cannot be parsed.
    """
    return default_grader().reward(prompts, completions, answer)


def _main_from_stdin() -> bool:
    """True when the main script has no file a spawned worker could re-import (``python -``)."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    spec = getattr(main, "__spec__", None)
    return spec is None and (path is None or path == "<stdin>")
