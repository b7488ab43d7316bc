"""Preference data for DPO/VRPO: TRL's ``prompt`` / ``chosen`` / ``rejected`` format, tokenized.

    rows = load_preference("hh_rlhf", limit=256)              # the local HH-RLHF slice
    rows = load_preference("trl-lib/ultrafeedback_binarized", split="train")  # any datasets name
    examples, stats = tokenize_preference(rows, tokenizer, max_prompt_length=256, max_length=512)
    batch = collate_preference(examples[:8], tokenizer.pad_token_id)   # PreferenceBatch

Rows are plain strings or conversational message lists; rows with only ``chosen`` and
``rejected`` dialogues get their shared prefix as the prompt (TRL's implicit prompt), and
conversational rows go through the tokenizer's chat template (:mod:`dllm_rl.data.formatting`).
Each response ends with the tokenizer's EOS, which counts as a response token (it is what the
model learns to stop with), unless truncation cut it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import torch

from dllm_rl.data.formatting import (
    TokenizeStats,
    apply_chat_template,
    encode,
    extract_prompt,
    left_pad,
    right_pad,
    truncate_pair,
)
from dllm_rl.data.paths import DATA_ENV, data_dir
from dllm_rl.data.sources import load_dataset_path, read_local_file
from dllm_rl.run.errors import DataError

PREFERENCE_COLUMNS = ("prompt", "chosen", "rejected")

# Named local preference sets: name -> file under the data folder.
PREFERENCE_DATASETS: dict[str, str] = {
    # Anthropic HH-RLHF harmless-base test, split into prompt / chosen / rejected (2307 rows).
    "hh_rlhf": "hh_rlhf/harmless-base_test.prompt_chosen_rejected.jsonl",
    # The same upstream file as published: full chosen / rejected dialogues (implicit prompt).
    "hh_rlhf_raw": "hh_rlhf/harmless-base_test.jsonl.gz",
}


def addition_echo_pairs(n: int = 400, seed: int = 0, digits: int = 3) -> list[dict[str, str]]:
    """Generated pairs a tiny model can learn from in a few steps: the prompt is an addition
    (``"123+456="``), the chosen response its sum (``"579"``), the rejected one an echo of the
    question (``"123+456"``). The preference (answer, do not repeat the question) is visible in
    the characters, so held-out accuracy rises within the ``vrpo_tiny`` budget; the arithmetic
    itself is not learnt there."""
    from dllm_rl.data.addition import generate_addition

    pairs = []
    for row in generate_addition(n, seed, digits=digits):
        a, b = row["a"], row["b"]
        pairs.append({"prompt": f"{a}+{b}=", "chosen": str(a + b), "rejected": f"{a}+{b}"})
    return pairs


GENERATED_PREFERENCES: dict[str, Callable[[], list[dict[str, str]]]] = {
    "addition_echo": addition_echo_pairs,
}
"""Preference sets made on the fly (no file), by name."""


def load_preference(
    name_or_path: str | Path = "hh_rlhf",
    split: str = "train",
    *,
    config: str | None = None,
    limit: int | None = None,
) -> datasets.Dataset:
    """Preference rows with ``prompt``, ``chosen`` and ``rejected`` (plain or conversational).

    Args:
        name_or_path: a key of :data:`GENERATED_PREFERENCES` (made on the fly) or of
            :data:`PREFERENCE_DATASETS` (one local file each; ``split`` does not apply), a local file (.jsonl/.json/.csv/.parquet, optionally .gz), or a
            ``datasets.load_dataset`` name or folder with those columns (or only ``chosen`` and
            ``rejected``).
        split: the split of a ``datasets`` name or folder.
        config: the ``datasets`` config name, if any.
        limit: keep the first ``limit`` rows.

    Returns:
        A ``datasets.Dataset`` whose first columns are ``prompt``, ``chosen``, ``rejected``.
    """
    key = str(name_or_path)
    if key in GENERATED_PREFERENCES:
        raw = datasets.Dataset.from_list(GENERATED_PREFERENCES[key]())
    elif key in PREFERENCE_DATASETS:
        path = data_dir() / PREFERENCE_DATASETS[key]
        if not path.is_file():
            raise FileNotFoundError(
                f"preference set {key!r}: no local copy at {path}. Set {DATA_ENV} to the folder "
                "of local dataset copies, or pass a file or datasets path."
            )
        raw = read_local_file(path)
    elif Path(key).expanduser().is_file():
        raw = read_local_file(Path(key).expanduser())
    else:
        raw = load_dataset_path(key, config, split)
    if limit is not None:
        raw = raw.select(range(min(limit, len(raw))))
    missing = {"chosen", "rejected"} - set(raw.column_names)
    if missing:
        raise DataError(
            f"preference data {key!r} lacks column(s) {sorted(missing)}; it has "
            f"{raw.column_names}. Expected TRL's preference format: prompt (optional), chosen, "
            "rejected."
        )
    check_preference_rows(raw, key)
    if "prompt" not in raw.column_names or not _prompt_matches(raw[0]):
        raw = raw.map(extract_prompt, desc=f"{key}: implicit prompt")
    rest = [c for c in raw.column_names if c not in PREFERENCE_COLUMNS]
    return raw.select_columns([*PREFERENCE_COLUMNS, *rest])


def _response_ok(value: Any) -> bool:
    """A response is text (possibly blank: real preference sets have some) or a non-empty list
    of chat messages."""
    if isinstance(value, str):
        return True
    return isinstance(value, list) and bool(value) and all(isinstance(m, dict) for m in value)


def check_preference_rows(raw: datasets.Dataset, source: str) -> None:
    """Every row has a usable ``chosen`` and ``rejected`` (and a text or chat ``prompt`` when
    the column exists).

    Raises:
        DataError: with the source, the row (1-based, in file order), the column and what was
            found instead of text or chat messages.
    """
    for column in ("chosen", "rejected"):
        for number, value in enumerate(raw[column], start=1):
            if not _response_ok(value):
                found = "nothing" if value is None else f"{type(value).__name__} {value!r:.60}"
                raise DataError(
                    f"preference data {source!r}, row {number}: column {column!r} holds {found}; "
                    "expected text or a list of chat messages"
                )


def _prompt_matches(row: dict[str, Any]) -> bool:
    # A plain prompt beside conversational responses (or the reverse) is not the real prompt.
    return extract_prompt(row) is row


@dataclass(frozen=True)
class PreferenceExample:
    """One tokenized pair.

    Attributes:
        prompt_ids: the prompt's token ids (chat-templated when conversational).
        chosen_ids: the chosen response's ids, EOS included (unless truncated away).
        rejected_ids: the rejected response's ids, EOS included (unless truncated away).
        truncated: the prompt or a response was cut.
    """

    prompt_ids: tuple[int, ...]
    chosen_ids: tuple[int, ...]
    rejected_ids: tuple[int, ...]
    truncated: bool = False


def format_preference_row(row: dict[str, Any], tokenizer: Any) -> dict[str, str]:
    """A preference row as text: implicit prompt extracted, chat template applied.

    Returns:
        ``{"prompt": str, "chosen": str, "rejected": str}``.
    """
    row = extract_prompt({k: row[k] for k in PREFERENCE_COLUMNS if k in row})
    row = apply_chat_template(row, tokenizer)
    return {k: row[k] for k in PREFERENCE_COLUMNS}


def tokenize_preference_row(
    row: dict[str, Any],
    tokenizer: Any,
    *,
    max_prompt_length: int | None = None,
    max_length: int | None = None,
    add_eos: bool = True,
) -> PreferenceExample:
    """Format, tokenize and truncate one pair (see :func:`dllm_rl.data.formatting.truncate_pair`).

    Args:
        row: ``prompt`` (optional), ``chosen``, ``rejected``; plain or conversational.
        tokenizer: a transformers tokenizer (with a chat template for conversational rows).
        max_prompt_length: the prompt keeps its last this many tokens.
        max_length: prompt + each response is at most this many tokens.
        add_eos: end each response with ``tokenizer.eos_token_id``.

    Returns:
        :class:`PreferenceExample`.
    """
    text = format_preference_row(row, tokenizer)
    eos = [tokenizer.eos_token_id] if add_eos else []
    prompt, (chosen, rejected), cut = truncate_pair(
        encode(tokenizer, text["prompt"]),
        [encode(tokenizer, text["chosen"]) + eos, encode(tokenizer, text["rejected"]) + eos],
        max_prompt_length,
        max_length,
    )
    return PreferenceExample(tuple(prompt), tuple(chosen), tuple(rejected), cut)


def tokenize_preference(
    rows: Iterable[dict[str, Any]],
    tokenizer: Any,
    *,
    max_prompt_length: int | None = None,
    max_length: int | None = None,
    add_eos: bool = True,
) -> tuple[list[PreferenceExample], TokenizeStats]:
    """:func:`tokenize_preference_row` over a dataset; also counts the truncated rows."""
    examples = [
        tokenize_preference_row(
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
class PreferenceBatch:
    """B tokenized pairs as tensors; chosen and rejected share one response width L.

    Attributes:
        prompt_ids: ``[B, P]`` long, left-padded with the pad id.
        prompt_mask: ``[B, P]`` bool, True on real prompt tokens.
        chosen_ids: ``[B, L]`` long, right-padded.
        chosen_mask: ``[B, L]`` bool, True on real chosen tokens (EOS included).
        rejected_ids: ``[B, L]`` long, right-padded.
        rejected_mask: ``[B, L]`` bool.
    """

    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    chosen_ids: torch.Tensor
    chosen_mask: torch.Tensor
    rejected_ids: torch.Tensor
    rejected_mask: torch.Tensor

    def __len__(self) -> int:
        return self.prompt_ids.shape[0]

    @property
    def chosen_lengths(self) -> torch.Tensor:
        """``[B]`` long real lengths L_w."""
        return self.chosen_mask.sum(dim=-1)

    @property
    def rejected_lengths(self) -> torch.Tensor:
        """``[B]`` long real lengths L_l."""
        return self.rejected_mask.sum(dim=-1)

    def to(self, device: torch.device | str) -> PreferenceBatch:
        return PreferenceBatch(*(getattr(self, f).to(device) for f in self.__dataclass_fields__))


def collate_preference(
    examples: list[PreferenceExample], pad_token_id: int, response_length: int | None = None
) -> PreferenceBatch:
    """Stack pairs: prompts left-padded, both responses right-padded to one width.

    Args:
        examples: tokenized pairs.
        pad_token_id: the pad id (LLaDA: its EOS; the masks, not the id, tell padding apart).
        response_length: a fixed width L (default: the longest chosen or rejected response).

    Returns:
        :class:`PreferenceBatch`.
    """
    if not examples:
        raise ValueError("cannot collate an empty list of preference examples")
    width = response_length or max(max(len(e.chosen_ids), len(e.rejected_ids)) for e in examples)
    prompt_ids, prompt_mask = left_pad([e.prompt_ids for e in examples], pad_token_id)
    chosen_ids, chosen_mask = right_pad([e.chosen_ids for e in examples], pad_token_id, width)
    rejected_ids, rejected_mask = right_pad([e.rejected_ids for e in examples], pad_token_id, width)
    return PreferenceBatch(
        prompt_ids, prompt_mask, chosen_ids, chosen_mask, rejected_ids, rejected_mask
    )
