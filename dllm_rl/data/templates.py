"""Prompt templates, kept as data.

A template is a string with a ``{question}`` placeholder (the task's question text, built by its
loader). Task-specific fields may be used too where a loader provides them (``{numbers}`` and
``{target}`` for Countdown, ``{puzzle}`` for Sudoku, ``{a}`` and ``{b}`` for addition). Loaders
take either one of the names below or a template string of your own::

    load_task("gsm8k", template="reasoning")                  # a name from TEMPLATES
    load_task("gsm8k", template="Q: {question}\\nA:")          # your own string

The reasoning format is the one the rewards grade: ``<reasoning>...</reasoning>`` then
``<answer>...</answer>``; for maths the final answer goes in ``\\boxed{}`` inside the answer.
"""

from __future__ import annotations

import difflib
import string

_FORMAT = (
    "Respond in the following format:\n<reasoning>\n...\n</reasoning>\n<answer>\n...\n</answer>"
)

TEMPLATES: dict[str, str] = {
    # The question, then the two-part format; the answer part holds the bare answer.
    "reasoning": (
        "{question}\n\n"
        "Think step by step inside <reasoning> tags, then give only the final answer inside "
        "<answer> tags. " + _FORMAT
    ),
    # Maths (GSM8K, MATH-500): the final answer in \boxed{} inside the answer tags.
    "math_boxed": (
        "{question}\n\n"
        "Think step by step inside <reasoning> tags, then give the final answer inside "
        "<answer> tags, written as \\boxed{{...}}. " + _FORMAT
    ),
    "countdown": (
        "{question}\n\n"
        "Think step by step inside <reasoning> tags, then give only the equation (for example "
        "(1 + 2) * 3) inside <answer> tags, without '=' or the result. " + _FORMAT
    ),
    "sudoku": (
        "{question}\n\n"
        "Think step by step inside <reasoning> tags, then give the solved grid inside <answer> "
        "tags as 16 digits, row by row, with no spaces. " + _FORMAT
    ),
    "code": (
        "{question}\n\n"
        "Think step by step inside <reasoning> tags, then give the complete Python code inside "
        "<answer> tags, in one ```python fenced block. " + _FORMAT
    ),
    # The question alone: no instructions, for tiny models and char-level tokenizers.
    "compact": "{question}",
}

# The template each task uses when none is given.
DEFAULT_TEMPLATE: dict[str, str] = {
    "gsm8k": "math_boxed",
    "math500": "math_boxed",
    "math": "math_boxed",
    "countdown": "countdown",
    "sudoku": "sudoku",
    "humaneval": "code",
    "mbpp": "code",
    "mbpp_sanitized": "code",
    "addition": "compact",
}


def resolve_template(template: str | None, task: str) -> str:
    """The template string for ``template``: a name from :data:`TEMPLATES`, a template string, or
    ``None`` for the task's default.

    Raises:
        ValueError: a string that is neither a known name nor contains ``{question}``.
    """
    if template is None:
        return TEMPLATES[DEFAULT_TEMPLATE[task]]
    if template in TEMPLATES:
        return TEMPLATES[template]
    fields = {name for _, name, _, _ in string.Formatter().parse(template) if name}
    if "question" not in fields:
        close = difflib.get_close_matches(template, TEMPLATES, n=3)
        hint = f" Did you mean {close}?" if close else ""
        raise ValueError(
            f"template {template!r} is neither a template name ({sorted(TEMPLATES)}) nor a "
            f"string with a {{question}} placeholder.{hint}"
        )
    return template


def render_prompt(template: str, chat: bool, question: str, **fields: object) -> str | list[dict]:
    """Fill ``template`` and wrap it as one user message when ``chat`` is true.

    Args:
        template: a template string (see :func:`resolve_template`).
        chat: return ``[{"role": "user", "content": text}]`` for the tokenizer's chat template
            instead of plain text.
        question: the task's question text.
        **fields: extra placeholders the task offers.

    Returns:
        The prompt text, or a one-message conversation.
    """
    try:
        text = template.format(question=question, **fields)
    except (KeyError, IndexError) as err:
        offered = ["question", *fields]
        raise ValueError(
            f"template uses placeholder {err} that this task does not offer; offered: {offered}. "
            "Write literal braces as {{ and }}."
        ) from None
    return [{"role": "user", "content": text}] if chat else text
