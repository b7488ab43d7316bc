"""Row functions for the maths tasks: GSM8K, MATH-500 and the MATH training set.

Each takes one source row (local file or hub layout; they agree for these datasets) and returns
the record the math reward reads: ``prompt``, ``answer`` and ``solution``.
"""

from __future__ import annotations

from typing import Any

from dllm_rl.data.templates import render_prompt

GSM8K_ANSWER_MARK = "####"


def gsm8k_final_answer(solution: str) -> str:
    """The final number of a GSM8K worked solution: the text after ``#### ``, commas removed.

    >>> gsm8k_final_answer("... so she has 3 + 4 = <<3+4=7>>7 apples.\\n#### 1,007")
    '1007'
    """
    if GSM8K_ANSWER_MARK not in solution:
        raise ValueError(f"GSM8K solution has no {GSM8K_ANSWER_MARK!r} line: {solution[-80:]!r}")
    return solution.rsplit(GSM8K_ANSWER_MARK, 1)[1].strip().replace(",", "")


def gsm8k_row(row: dict[str, Any], *, template: str, chat: bool) -> dict[str, Any]:
    """GSM8K (``question``, ``answer`` = worked solution) -> ``prompt``, ``answer``, ``solution``."""
    return {
        "prompt": render_prompt(template, chat, row["question"]),
        "answer": gsm8k_final_answer(row["answer"]),
        "solution": row["answer"],
    }


def math500_row(row: dict[str, Any], *, template: str, chat: bool) -> dict[str, Any]:
    """MATH-500 (``problem``, ``solution``, ``answer``, ...) -> ``prompt``, ``answer``,
    ``solution``, plus ``unique_id``, ``subject`` and ``level`` for per-subject evaluation."""
    return {
        "prompt": render_prompt(template, chat, row["problem"]),
        "answer": str(row["answer"]),
        "solution": row["solution"],
        "unique_id": str(row.get("unique_id", "")),
        "subject": str(row.get("subject", "")),
        "level": int(row.get("level") or 0),
    }


def math_row(row: dict[str, Any], *, template: str, chat: bool) -> dict[str, Any]:
    """MATH (Hendrycks et al. 2021; ``problem``, ``solution``, ``level``, ``type``) -> ``prompt``,
    ``answer`` (the last ``\\boxed{}`` of the solution), ``solution``, ``subject``, ``level``.

    Raises:
        ValueError: a solution without a ``\\boxed{}`` answer.
    """
    from dllm_rl.rewards.extract import last_boxed

    answer = row.get("answer") or last_boxed(row["solution"])
    if answer is None:
        raise ValueError(f"MATH solution has no \\boxed{{}} answer: {row['solution'][-80:]!r}")
    level = str(row.get("level") or "0").removeprefix("Level ")
    return {
        "prompt": render_prompt(template, chat, row["problem"]),
        "answer": str(answer),
        "solution": row["solution"],
        "subject": str(row.get("type") or row.get("subject") or ""),
        "level": int(level) if level.isdigit() else 0,
    }
