"""Prompt/response data for masked-diffusion SFT, tokenized with a response mask.

    rows = load_sft("gsm8k", "train")                   # GSM8K worked solutions
    rows = load_sft("addition", "train", size=2000)     # the CPU demo's task, answers zero-padded
    rows = load_sft("HuggingFaceH4/no_robots", "train") # any `messages` (or prompt/completion) set
    examples, stats = tokenize_sft(rows, tokenizer, max_length=512)
    batch = collate_sft(examples[:16], tokenizer.pad_token_id)       # SFTBatch

Rows have ``prompt`` and ``response``, plain text or conversational (TRL's prompt/completion
format). A conversational prompt with a plain response renders the response as the assistant's
turn; ``messages`` rows split before their last assistant message. Each response ends with EOS
(a response token: LLaDA learns to stop from it).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import torch

from dllm_rl.data.formatting import (
    TokenizeStats,
    apply_chat_template,
    encode,
    is_conversational,
    left_pad,
    right_pad,
    truncate_pair,
)
from dllm_rl.data.registry import load_task
from dllm_rl.data.sources import load_dataset_path, read_local_file
from dllm_rl.run.errors import DataError

SFT_COLUMNS = ("prompt", "response")

# Task name -> the load_task column that holds the training response.
SFT_TASKS: dict[str, str] = {"gsm8k": "solution", "math500": "solution", "addition": "answer"}


def load_sft(
    name_or_path: str | Path,
    split: str = "train",
    *,
    template: str | None = None,
    chat: bool = False,
    limit: int | None = None,
    seed: int = 0,
    zero_pad: bool = True,
    config: str | None = None,
    **options: Any,
) -> datasets.Dataset:
    """SFT rows with ``prompt`` and ``response``.

    Args:
        name_or_path: a key of :data:`SFT_TASKS` (loaded with :func:`load_task`, the response is
            that task's worked solution or answer), a local file, or a ``datasets`` name or folder
            with ``messages``, ``prompt``/``completion`` or ``prompt``/``response`` columns.
        split: the split to read.
        template, chat, limit, seed, **options: passed to :func:`load_task` for task names
            (``size``, ``digits`` for addition); ``limit`` also applies to other sources.
        zero_pad: addition only: write every answer with the same number of digits (the largest
            sum's, e.g. ``"046"`` for 2-digit operands), so all answers have one length.
        config: the ``datasets`` config name for other sources.

    Returns:
        A ``datasets.Dataset`` whose first columns are ``prompt`` and ``response``.
    """
    key = str(name_or_path)
    if key in SFT_TASKS:
        rows = load_task(
            key, split, template=template, chat=chat, limit=limit, seed=seed, **options
        )
        column = SFT_TASKS[key]
        width = _sum_width(options.get("digits", 2)) if key == "addition" and zero_pad else 0
        rows = rows.map(lambda r: {"response": str(r[column]).zfill(width)}, desc="sft rows")
    else:
        path = Path(key).expanduser()
        rows = read_local_file(path) if path.is_file() else load_dataset_path(key, config, split)
        if limit is not None:
            rows = rows.select(range(min(limit, len(rows))))
        rows = rows.map(
            _to_prompt_response, with_indices=True, fn_kwargs={"source": key}, desc="sft rows"
        )
    rest = [c for c in rows.column_names if c not in SFT_COLUMNS]
    return rows.select_columns([*SFT_COLUMNS, *rest])


def _sum_width(digits: int | tuple[int, int]) -> int:
    high = digits if isinstance(digits, int) else max(digits)
    return high + 1  # the sum of two d-digit numbers has at most d + 1 digits


def _to_prompt_response(row: dict[str, Any], index: int, source: str) -> dict[str, Any]:
    if "messages" in row and row["messages"] is not None:
        messages = row["messages"]
        last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=None)
        if last is None or last == 0:
            raise DataError(
                f"SFT data {source!r}, row {index + 1}: a messages row needs an assistant "
                "message after the first turn"
            )
        return {"prompt": messages[:last], "response": [messages[last]]}
    for response in ("response", "completion"):
        if row.get("prompt") is not None and row.get(response) is not None:
            return {"prompt": row["prompt"], "response": row[response]}
    present = sorted(k for k, v in row.items() if v is not None)
    raise DataError(
        f"SFT data {source!r}, row {index + 1}: expected 'messages', 'prompt'+'completion' or "
        f"'prompt'+'response'; the row has {present}"
    )


@dataclass(frozen=True)
class SFTExample:
    """One tokenized prompt/response pair.

    Attributes:
        prompt_ids: the prompt's ids (chat-templated when conversational).
        response_ids: the response's ids, EOS included (unless truncated away).
        truncated: the prompt or the response was cut.
    """

    prompt_ids: tuple[int, ...]
    response_ids: tuple[int, ...]
    truncated: bool = False


def format_sft_row(row: dict[str, Any], tokenizer: Any) -> dict[str, str]:
    """A prompt/response row as text; conversational rows through the chat template.

    Returns:
        ``{"prompt": str, "response": str}``.
    """
    prompt, response = row["prompt"], row["response"]
    if is_conversational({"prompt": prompt}):
        if isinstance(response, str):
            response = [{"role": "assistant", "content": response}]
        text = apply_chat_template({"prompt": prompt, "completion": response}, tokenizer)
        return {"prompt": text["prompt"], "response": text["completion"]}
    if not isinstance(response, str):
        raise ValueError("a plain-text prompt needs a plain-text response")
    return {"prompt": prompt, "response": response}


def tokenize_sft_row(
    row: dict[str, Any],
    tokenizer: Any,
    *,
    max_prompt_length: int | None = None,
    max_length: int | None = None,
    add_eos: bool = True,
) -> SFTExample:
    """Format, tokenize and truncate one row (the prompt keeps its end, the response its start)."""
    text = format_sft_row(row, tokenizer)
    eos = [tokenizer.eos_token_id] if add_eos else []
    prompt, (response,), cut = truncate_pair(
        encode(tokenizer, text["prompt"]),
        [encode(tokenizer, text["response"]) + eos],
        max_prompt_length,
        max_length,
    )
    return SFTExample(tuple(prompt), tuple(response), cut)


def tokenize_sft(
    rows: Iterable[dict[str, Any]],
    tokenizer: Any,
    *,
    max_prompt_length: int | None = None,
    max_length: int | None = None,
    add_eos: bool = True,
) -> tuple[list[SFTExample], TokenizeStats]:
    """:func:`tokenize_sft_row` over a dataset; also counts the truncated rows."""
    examples = [
        tokenize_sft_row(
            row,
            tokenizer,
            max_prompt_length=max_prompt_length,
            max_length=max_length,
            add_eos=add_eos,
        )
        for row in rows
    ]
    return examples, TokenizeStats(len(examples), sum(e.truncated for e in examples))


@dataclass(frozen=True)
class SFTBatch:
    """B tokenized rows as tensors.

    Attributes:
        prompt_ids: ``[B, P]`` long, left-padded with the pad id.
        prompt_mask: ``[B, P]`` bool, True on real prompt tokens.
        response_ids: ``[B, L]`` long, right-padded.
        response_mask: ``[B, L]`` bool, True on real response tokens (EOS included); with
            ``mdlm_sft_loss(..., eos_padding=True)`` the padding becomes EOS targets too.
    """

    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    response_ids: torch.Tensor
    response_mask: torch.Tensor

    def __len__(self) -> int:
        return self.prompt_ids.shape[0]

    def to(self, device: torch.device | str) -> SFTBatch:
        return SFTBatch(*(getattr(self, f).to(device) for f in self.__dataclass_fields__))


def collate_sft(
    examples: list[SFTExample], pad_token_id: int, response_length: int | None = None
) -> SFTBatch:
    """Stack rows: prompts left-padded, responses right-padded to ``response_length`` (default:
    the longest; a fixed width is LLaDA's EOS-padded layout when the pad id is EOS)."""
    if not examples:
        raise ValueError("cannot collate an empty list of SFT examples")
    prompt_ids, prompt_mask = left_pad([e.prompt_ids for e in examples], pad_token_id)
    response_ids, response_mask = right_pad(
        [e.response_ids for e in examples], pad_token_id, response_length
    )
    return SFTBatch(prompt_ids, prompt_mask, response_ids, response_mask)
