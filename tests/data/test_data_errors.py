"""Data errors name the file, the line or row, the column and what was expected, and the dry run
finds them (it reads local files row by row, as the run will), before any model loads."""

from __future__ import annotations

import json

import pytest

from dllm_rl import train
from dllm_rl.data.preference import load_preference
from dllm_rl.data.sources import read_local_file
from dllm_rl.run.errors import DataError

PAIR = {"prompt": "Hi?", "chosen": "Hello.", "rejected": "Go away."}


def write_jsonl(path, rows, bad_line: int | None = None):
    lines = [json.dumps(r) for r in rows]
    if bad_line is not None:
        lines[bad_line - 1] = '{"prompt": "x", "chosen": '  # cut off mid-object
    path.write_text("\n".join(lines) + "\n")
    return path


def test_bad_json_names_the_file_line_and_column(tmp_path):
    path = write_jsonl(tmp_path / "pairs.jsonl", [PAIR] * 12, bad_line=11)
    with pytest.raises(DataError, match=r"pairs\.jsonl, line 11, column 27: not valid JSON"):
        read_local_file(path)


def test_a_line_that_is_not_an_object_and_an_empty_file(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text(json.dumps(PAIR) + "\n[1, 2]\n")
    with pytest.raises(DataError, match=r"a\.jsonl, line 2: expected a JSON object, got list"):
        read_local_file(path)
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(DataError, match="holds no rows"):
        read_local_file(tmp_path / "empty.jsonl")


def test_a_pair_missing_rejected_names_the_row(tmp_path):
    rows = [PAIR, PAIR, {"prompt": "Hi?", "chosen": "Hello."}, PAIR]
    path = write_jsonl(tmp_path / "pairs.jsonl", rows)
    with pytest.raises(DataError, match=r"row 3: column 'rejected' holds nothing; expected"):
        load_preference(str(path))


def run(args, monkeypatch):
    import dllm_rl.models.tiny as tiny

    def no_loading(*a, **k):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(tiny, "build_tiny_llada", no_loading)
    return train.main(["recipe=vrpo_tiny", "run.device=cpu", *args])


@pytest.mark.parametrize("dry_run", [True, False])
def test_the_run_and_its_dry_run_stop_on_a_bad_row_before_loading(
    tmp_path, monkeypatch, capsys, dry_run
):
    rows = [PAIR] * 5 + [{"prompt": "Hi?", "chosen": 5, "rejected": "No."}] + [PAIR] * 4
    path = write_jsonl(tmp_path / "pairs.jsonl", rows)
    out = tmp_path / "run"
    args = [f"data.dataset={path}", "data.eval_rows=2", f"output_dir={out}", f"dry_run={dry_run}"]
    assert run(args, monkeypatch) == 2
    err = capsys.readouterr().err
    assert "row 6: column 'chosen' holds int 5 where row 1 holds str" in err and str(path) in err
    assert not out.exists()


def test_eval_rows_beyond_the_file_is_an_error(tmp_path, monkeypatch, capsys):
    path = write_jsonl(tmp_path / "pairs.jsonl", [PAIR] * 10)
    assert run([f"data.dataset={path}", "data.eval_rows=64", "dry_run=true"], monkeypatch) == 2
    assert "data.eval_rows=64 holds out every row" in capsys.readouterr().err


def test_the_dry_run_reports_the_rows_it_read(tmp_path, monkeypatch, capsys):
    path = write_jsonl(tmp_path / "pairs.jsonl", [PAIR] * 10)
    assert run([f"data.dataset={path}", "data.eval_rows=2", "dry_run=true"], monkeypatch) == 0
    assert "8 pairs to train on, 2 held out" in capsys.readouterr().out


def test_the_rl_dry_run_reads_a_local_task_file(tmp_path, capsys):
    good = {"question": "1+1?", "answer": "2\n#### 2"}
    path = write_jsonl(tmp_path / "gsm.jsonl", [good] * 3)
    args = ["recipe=cj_grpo_gsm8k", f"data.source={path}", "eval_steps=0", "dry_run=true"]
    assert train.main(args) == 0
    assert f"from {path}: 3 rows" in capsys.readouterr().out
    write_jsonl(path, [good, {"question": "1+1?", "answer": "2"}, good])  # no "#### 2" line
    assert train.main(args) == 2
    assert "gsm8k/train, row 2: GSM8K solution has no '####' line" in capsys.readouterr().err
    write_jsonl(path, [{"prompt": "1+1?", "answer": "2\n#### 2"}] * 2)  # another column name
    assert train.main(args) == 2
    assert "gsm8k/train, row 1: no column 'question'" in capsys.readouterr().err
    write_jsonl(path, [good] * 12, bad_line=11)
    assert train.main(args) == 2
    assert "gsm.jsonl, line 11, column 27: not valid JSON" in capsys.readouterr().err


def test_the_sft_dry_run_reads_a_local_file_and_names_a_bad_row(tmp_path, capsys):
    rows = [{"prompt": "1+1=", "completion": "2"}] * 3
    path = write_jsonl(tmp_path / "sft.jsonl", rows)
    args = ["recipe=sft_tiny", f"data.dataset={path}", "eval_steps=0", "dry_run=true"]
    assert train.main(args) == 0
    assert f"{path}: 3 rows" in capsys.readouterr().out
    write_jsonl(path, [rows[0], {"prompt": "1+2=", "answer": "3"}, rows[0]])
    assert train.main(args) == 2
    err = capsys.readouterr().err
    assert "row 2: expected 'messages', 'prompt'+'completion' or 'prompt'+'response'" in err
