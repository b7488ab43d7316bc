"""TRL's data format, behind one module, and the token helpers preference and SFT data share.

Our preference and prompt/completion formats are TRL's by construction: detection of
conversational rows, implicit-prompt extraction and chat templating are TRL's public
``trl.data_utils`` functions, imported here and nowhere else (TRL is imported on first use; it
takes seconds). Rows are plain strings or conversational message lists
(``[{"role": ..., "content": ...}]``):

    {"prompt": "2+2=", "chosen": "4", "rejected": "5"}                         # plain
    {"prompt": [{"role": "user", ...}], "chosen": [{"role": "assistant", ...}], ...}
    {"chosen": [user, assistant], "rejected": [user, assistant]}                # implicit prompt

Token helpers: prompts keep their end when truncated (the latest turns and the assistant header
are what the response depends on) and are left-padded; responses keep their start and are
right-padded, so the response always begins at the same column.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch


def _trl() -> Any:
    import trl.data_utils  # noqa: PLC0415 - slow import, on first use only

    return trl.data_utils


def is_conversational(example: dict[str, Any]) -> bool:
    """True when the row's text columns are message lists (``trl.data_utils.is_conversational``)."""
    return _trl().is_conversational(example)


def extract_prompt(example: dict[str, Any]) -> dict[str, Any]:
    """Split the shared prefix of ``chosen`` and ``rejected`` off as ``prompt`` when the row has
    no prompt of its own (``trl.data_utils.maybe_extract_prompt``); other rows pass unchanged."""
    return _trl().maybe_extract_prompt(example)


def apply_chat_template(example: dict[str, Any], tokenizer: Any) -> dict[str, Any]:
    """Render conversational columns to text with the tokenizer's chat template
    (``trl.data_utils.maybe_apply_chat_template``: the prompt ends with the generation prompt,
    each response with the end-of-turn token); plain rows pass unchanged."""
    return _trl().maybe_apply_chat_template(example, tokenizer)


@dataclass(frozen=True)
class TokenizeStats:
    """What tokenization did to a dataset (logged by the trainers).

    Attributes:
        rows: rows tokenized.
        truncated: rows in which the prompt or a response was cut.
    """

    rows: int
    truncated: int


def encode(tokenizer: Any, text: str) -> list[int]:
    """Token ids of already formatted text: no special tokens added (a chat template has put in
    its own), special tokens written in the text recognised."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def truncate_pair(
    prompt: list[int],
    responses: Sequence[list[int]],
    max_prompt_length: int | None,
    max_length: int | None,
) -> tuple[list[int], list[list[int]], bool]:
    """Truncate a prompt and its responses.

    The prompt keeps its last ``max_prompt_length`` tokens; then each response keeps its first
    ``max_length - len(prompt)`` tokens (a cut response loses its EOS: it did not end there). When
    the prompt alone reaches ``max_length`` it keeps its last ``max_length - 1`` tokens, so every
    response keeps at least one.

    Returns:
        ``(prompt, responses, truncated)``.
    """
    cut = False
    if max_prompt_length is not None and len(prompt) > max_prompt_length:
        prompt, cut = prompt[len(prompt) - max_prompt_length :], True
    if max_length is not None:
        if max_length < 2:
            raise ValueError(
                f"max_length must be >= 2 (a prompt token and a response token), got {max_length}"
            )
        if len(prompt) >= max_length:
            prompt, cut = prompt[len(prompt) - (max_length - 1) :], True
        budget = max_length - len(prompt)
        kept = []
        for response in responses:
            cut = cut or len(response) > budget
            kept.append(response[:budget])
        responses = kept
    return prompt, [list(r) for r in responses], cut


def left_pad(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``ids [B, P]`` long left-padded with ``pad_id`` and ``mask [B, P]`` bool (True = real)."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)  # [B, P]
    mask = torch.zeros(len(seqs), width, dtype=torch.bool)  # [B, P]
    for i, s in enumerate(seqs):
        if s:
            ids[i, width - len(s) :] = torch.tensor(s, dtype=torch.long)
            mask[i, width - len(s) :] = True
    return ids, mask


def right_pad(
    seqs: Sequence[Sequence[int]], pad_id: int, length: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``ids [B, L]`` long right-padded with ``pad_id`` to ``length`` (default: the longest) and
    ``mask [B, L]`` bool (True = real)."""
    width = max(len(s) for s in seqs) if length is None else length
    if any(len(s) > width for s in seqs):
        raise ValueError(f"a sequence is longer than length={width}; truncate first")
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)  # [B, L]
    mask = torch.zeros(len(seqs), width, dtype=torch.bool)  # [B, L]
    for i, s in enumerate(seqs):
        if s:
            ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
            mask[i, : len(s)] = True
    return ids, mask
