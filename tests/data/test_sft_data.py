"""SFT data: prompt/response rows (GSM8K worked solutions, addition, messages datasets),
tokenized with a response mask."""

from __future__ import annotations

import json

import pytest

from dllm_rl.data.sft import collate_sft, format_sft_row, load_sft, tokenize_sft, tokenize_sft_row
from dllm_rl.models.tiny import build_tiny_tokenizer


@pytest.fixture(scope="module")
def tok():
    return build_tiny_tokenizer()


def test_gsm8k_rows_train_on_the_worked_solution(shared_data):
    rows = load_sft("gsm8k", "train", limit=4, template="compact")
    assert rows.column_names[:2] == ["prompt", "response"]
    assert rows[0]["response"] == rows[0]["solution"] and "####" in rows[0]["response"]
    assert rows[0]["prompt"].startswith("Natalia sold clips")


def test_addition_answers_are_zero_padded_and_tokenize(tok):
    rows = load_sft("addition", "train", size=50)
    assert all(len(r["response"]) == 3 for r in rows)  # 2-digit operands: sums up to 198
    assert all(int(r["response"]) == r["a"] + r["b"] for r in rows)
    assert len(load_sft("addition", "train", size=5, digits=3)[0]["response"]) == 4
    assert load_sft("addition", "train", size=5, zero_pad=False)[0]["response"] == rows[0]["answer"]
    examples, stats = tokenize_sft(rows, tok)
    assert stats.truncated == 0
    batch = collate_sft(examples[:8], tok.pad_token_id)
    # Every answer: 3 digits + EOS, so the batch has no padding and a full response mask.
    assert batch.response_ids.shape == (8, 4) and bool(batch.response_mask.all())
    assert (batch.response_ids[:, -1] == tok.eos_token_id).all()
    first = rows[0]
    assert tok.decode(examples[0].prompt_ids) == first["prompt"]
    assert tok.decode(examples[0].response_ids) == first["response"] + "<|endoftext|>"


def test_chat_prompt_with_plain_response(tok):
    row = {"prompt": [{"role": "user", "content": "1+2="}], "response": "003"}
    text = format_sft_row(row, tok)
    assert text["prompt"].endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")
    assert text["response"] == "003<|eot_id|>"


def test_messages_dataset_splits_before_the_last_assistant_turn(tmp_path, tok):
    messages = [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"},
        {"role": "user", "content": "c"},
        {"role": "assistant", "content": "d"},
    ]
    path = tmp_path / "chat.jsonl"
    path.write_text(json.dumps({"messages": messages}) + "\n")
    rows = load_sft(path)
    assert rows[0]["prompt"] == messages[:3] and rows[0]["response"] == messages[3:]
    ex = tokenize_sft_row(rows[0], tok)
    assert tok.decode(ex.response_ids) == "d<|eot_id|><|endoftext|>"
    assert tok.decode(ex.prompt_ids).count("<|eot_id|>") == 3
    completion = tmp_path / "pc.jsonl"
    completion.write_text(json.dumps({"prompt": "x", "completion": "y"}) + "\n")
    assert load_sft(completion)[0]["response"] == "y"


def test_truncation_and_response_mask(tok):
    rows = [{"prompt": "abcdef", "response": "ghij"}, {"prompt": "a", "response": "b"}]
    examples, stats = tokenize_sft(rows, tok, max_prompt_length=3, max_length=6)
    assert (stats.rows, stats.truncated) == (2, 1)
    assert tok.decode(examples[0].prompt_ids) == "def"
    assert tok.decode(examples[0].response_ids) == "ghi"  # 6 - 3: the EOS is cut too
    batch = collate_sft(examples, tok.pad_token_id, response_length=4)
    assert batch.response_mask.tolist() == [[True, True, True, False], [True, True, False, False]]
    assert batch.prompt_mask.tolist() == [[True] * 3, [False, False, True]]
