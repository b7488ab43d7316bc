"""Preference data: TRL's format (plain, conversational, implicit prompt), truncation, collation,
and the loaders (local HH-RLHF slice, any file or datasets path)."""

from __future__ import annotations

import json

import pytest
import torch

from dllm_rl.data.formatting import is_conversational, truncate_pair
from dllm_rl.data.preference import (
    PREFERENCE_COLUMNS,
    collate_preference,
    format_preference_row,
    load_preference,
    tokenize_preference,
    tokenize_preference_row,
)
from dllm_rl.models.tiny import build_tiny_tokenizer


@pytest.fixture(scope="module")
def tok():
    return build_tiny_tokenizer()


def _ids(tok, text):
    return list(tok(text, add_special_tokens=False).input_ids)


def test_plain_row_tokenizes_with_eos(tok):
    ex = tokenize_preference_row({"prompt": "2+2=", "chosen": "4", "rejected": "22"}, tok)
    assert list(ex.prompt_ids) == _ids(tok, "2+2=")
    assert list(ex.chosen_ids) == _ids(tok, "4") + [tok.eos_token_id]
    assert list(ex.rejected_ids) == _ids(tok, "22") + [tok.eos_token_id]
    assert not ex.truncated


def test_conversational_row_uses_the_chat_template(tok):
    row = {
        "prompt": [{"role": "user", "content": "hi"}],
        "chosen": [{"role": "assistant", "content": "yo"}],
        "rejected": [{"role": "assistant", "content": "no"}],
    }
    assert is_conversational(row)
    text = format_preference_row(row, tok)
    assert text["prompt"] == (
        "<|startoftext|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    assert text["chosen"] == "yo<|eot_id|>" and text["rejected"] == "no<|eot_id|>"
    ex = tokenize_preference_row(row, tok)
    assert ex.prompt_ids[0] == tok.bos_token_id  # the template's BOS, not added twice
    assert tok.decode(ex.chosen_ids) == "yo<|eot_id|><|endoftext|>"


def test_implicit_prompt_is_extracted(tok):
    dialogue = [{"role": "user", "content": "hi"}]
    row = {
        "chosen": [*dialogue, {"role": "assistant", "content": "yo"}],
        "rejected": [*dialogue, {"role": "assistant", "content": "no"}],
    }
    explicit = {
        "prompt": dialogue,
        "chosen": [{"role": "assistant", "content": "yo"}],
        "rejected": [{"role": "assistant", "content": "no"}],
    }
    assert tokenize_preference_row(row, tok) == tokenize_preference_row(explicit, tok)
    plain = {"chosen": "Human: hi Assistant: yo", "rejected": "Human: hi Assistant: no"}
    assert format_preference_row(plain, tok) == {
        "prompt": "Human: hi Assistant:",
        "chosen": " yo",
        "rejected": " no",
    }


def test_truncation_keeps_prompt_end_and_response_start_and_is_counted(tok):
    # Prompt of 6 tokens cut to its last 4; responses cut to max_length - 4 = 3 tokens.
    prompt, responses, cut = truncate_pair([1, 2, 3, 4, 5, 6], [[7, 8], [9, 10, 11, 12]], 4, 7)
    assert prompt == [3, 4, 5, 6] and responses == [[7, 8], [9, 10, 11]] and cut
    assert truncate_pair([1, 2], [[3]], 4, 7) == ([1, 2], [[3]], False)
    # A prompt reaching max_length keeps max_length - 1 tokens: one response token survives.
    assert truncate_pair([1, 2, 3, 4], [[5, 6]], None, 3) == ([3, 4], [[5]], True)
    rows = [
        {"prompt": "abcdef", "chosen": "g", "rejected": "h"},  # prompt cut
        {"prompt": "ab", "chosen": "ghijk", "rejected": "h"},  # chosen cut (loses its EOS)
        {"prompt": "ab", "chosen": "g", "rejected": "h"},  # fits
    ]
    examples, stats = tokenize_preference(rows, tok, max_prompt_length=4, max_length=6)
    assert (stats.rows, stats.truncated) == (3, 2)
    assert [e.truncated for e in examples] == [True, True, False]
    assert tok.decode(examples[0].prompt_ids) == "cdef"
    assert tok.decode(examples[1].chosen_ids) == "ghij"  # 6 - 2 prompt tokens, no EOS
    assert tok.decode(examples[1].rejected_ids) == "h<|endoftext|>"


def test_collate_pads_prompts_left_and_responses_right(tok):
    rows = [
        {"prompt": "1+1=", "chosen": "2", "rejected": "11"},
        {"prompt": "10+1=", "chosen": "11", "rejected": "101"},
    ]
    examples, _ = tokenize_preference(rows, tok)
    batch = collate_preference(examples, tok.pad_token_id)
    assert batch.prompt_ids.shape == (2, 5) and batch.chosen_ids.shape == (2, 4)
    assert batch.prompt_mask.tolist() == [[False, True, True, True, True], [True] * 5]
    assert batch.chosen_lengths.tolist() == [2, 3] and batch.rejected_lengths.tolist() == [3, 4]
    assert batch.chosen_mask[0].tolist() == [True, True, False, False]
    assert tok.decode(batch.rejected_ids[1][batch.rejected_mask[1]]) == "101<|endoftext|>"
    assert len(batch) == 2 and batch.to("cpu").prompt_ids.dtype == torch.long
    wide = collate_preference(examples, tok.pad_token_id, response_length=6)
    assert wide.chosen_ids.shape == (2, 6)


def test_local_hh_rlhf_slice(shared_data, tok):
    rows = load_preference("hh_rlhf")
    assert len(rows) == 2307 and tuple(rows.column_names[:3]) == PREFERENCE_COLUMNS
    assert rows[0]["prompt"].endswith("\n\nAssistant:")
    assert rows[0]["chosen"].startswith(" ")
    # The upstream file: implicit prompts, extracted to the same first row.
    raw = load_preference("hh_rlhf_raw", limit=3)
    assert raw[0]["prompt"] == rows[0]["prompt"] and raw[0]["chosen"] == rows[0]["chosen"]
    examples, stats = tokenize_preference(
        rows.select(range(20)), tok, max_prompt_length=64, max_length=128
    )
    assert stats.rows == 20 and 0 < stats.truncated <= 20
    assert all(len(e.prompt_ids) + len(e.chosen_ids) <= 128 for e in examples)


def test_any_file_or_datasets_path(tmp_path):
    rows = [
        {
            "chosen": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
            "rejected": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "b"}],
            "score": 1,
        },
    ]
    path = tmp_path / "prefs.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    ds = load_preference(path)
    assert ds.column_names[:3] == list(PREFERENCE_COLUMNS) and "score" in ds.column_names
    assert ds[0]["prompt"] == [{"role": "user", "content": "q"}]
    assert ds[0]["chosen"] == [{"role": "assistant", "content": "a"}]
    # A folder goes through datasets.load_dataset (here its json builder).
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "train.jsonl").write_text(json.dumps({"prompt": "p", "chosen": "c", "rejected": "r"}))
    assert load_preference(folder, split="train")[0] == {
        "prompt": "p",
        "chosen": "c",
        "rejected": "r",
    }
    with pytest.raises(ValueError, match="rejected"):
        bad = tmp_path / "bad.jsonl"
        bad.write_text(json.dumps({"prompt": "p", "chosen": "c"}))
        load_preference(bad)
