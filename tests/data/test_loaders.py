"""Loaders over the local dataset copies: row counts, columns, answers, errors, hub layouts."""

from __future__ import annotations

import json

import datasets
import pytest

from dllm_rl.data import TASKS, UnknownTaskError, load_task
from dllm_rl.data import registry as registry_module
from dllm_rl.data.code_tasks import mbpp_entry_point, mbpp_row
from dllm_rl.data.countdown import countdown_row
from dllm_rl.data.math_tasks import gsm8k_final_answer, gsm8k_row, math500_row
from dllm_rl.data.sudoku import sudoku_row
from dllm_rl.data.templates import TEMPLATES

datasets.disable_progress_bars()

COUNTS = [
    ("gsm8k", "train", 7473),
    ("gsm8k", "test", 1319),
    ("math500", "test", 500),
    ("countdown", "test", 256),
    ("sudoku", "test", 500),
    ("humaneval", "test", 164),
    ("mbpp", "all", 974),
    ("mbpp", "test", 500),  # task ids 11-510
    ("mbpp", "train", 374),  # 601-974
    ("mbpp", "validation", 90),  # 511-600
    ("mbpp", "prompt", 10),  # 1-10
    ("mbpp_sanitized", "all", 427),
    ("mbpp_sanitized", "test", 257),  # the hub's sanitized split sizes
    ("mbpp_sanitized", "train", 120),
    ("mbpp_sanitized", "validation", 43),
    ("mbpp_sanitized", "prompt", 7),
]


@pytest.mark.parametrize(("name", "split", "rows"), COUNTS)
def test_local_row_counts_and_columns(shared_data, name, split, rows):
    ds = load_task(name, split)
    assert len(ds) == rows
    assert ds.column_names[: len(TASKS[name].columns)] == list(TASKS[name].columns)
    assert ds.column_names[0] == "prompt" and isinstance(ds[0]["prompt"], str)


def test_gsm8k_answers_hand_checked(shared_data):
    train = load_task("gsm8k", "train", limit=1)
    assert train[0]["answer"] == "72"  # Natalia: 48 + 48/2
    test = load_task("gsm8k", "test")
    # Row 0: Janet's ducks, 16 - 3 - 4 = 9 eggs at $2; 201: "#### 114,200"; 489: "#### -10".
    assert [test[i]["answer"] for i in (0, 201, 489, 611)] == ["18", "114200", "-10", "1450000"]
    assert test[0]["solution"].endswith("#### 18")
    assert "Janet" in test[0]["prompt"] and "\\boxed{...}" in test[0]["prompt"]


def test_gsm8k_final_answer_errors_without_mark():
    assert gsm8k_final_answer("so 3.\n####  2,125 ") == "2125"
    with pytest.raises(ValueError, match="####"):
        gsm8k_final_answer("no final line")


def test_math500_columns(shared_data):
    row = load_task("math500", limit=1)[0]
    assert row["answer"] == "\\left( 3, \\frac{\\pi}{2} \\right)"
    assert row["unique_id"] == "test/precalculus/807.json" and row["level"] == 2


def test_countdown_and_sudoku_local(shared_data):
    cd = load_task("countdown", "test", limit=1)[0]
    assert cd["numbers"] == [30, 100, 93] and cd["target"] == 23
    sd = load_task("sudoku", "test", limit=2)
    assert sd[0]["puzzle"] == "3102200002100320" and sd[0]["solution"] == "3142243142131324"
    assert sd[1]["puzzle"].startswith("0140")  # leading zero kept: read as a string


def test_sudoku_row_rejects_other_cell_symbols():
    # The reward reads 16 digits; a '.'-for-empty file must fail when loaded, not mid-run.
    good = {"puzzle": "3102200002100320", "solution": "3142243142131324"}
    assert sudoku_row(good, template="{question}", chat=False)["puzzle"] == good["puzzle"]
    for bad in ({**good, "puzzle": "31.22....21..32."}, {**good, "solution": "3142243142131325"}):
        with pytest.raises(ValueError, match="digits 0-4"):
            sudoku_row(bad, template="{question}", chat=False)


def test_humaneval_record(shared_data):
    row = load_task("humaneval", limit=1)[0]
    assert row["task_id"] == "HumanEval/0" and row["entry_point"] == "has_close_elements"
    assert row["tests"] == ["check(has_close_elements)"]
    assert (
        row["test_setup"].lstrip().startswith("METADATA")
        and "def check(candidate)" in (row["test_setup"])
    )
    assert row["code_prefix"].startswith("from typing import List")
    assert "def has_close_elements" in row["prompt"] and "```python" in row["prompt"]


def test_mbpp_records(shared_data):
    row = load_task("mbpp", "test", limit=1)[0]
    assert row["task_id"] == "11" and row["entry_point"] == "remove_Occ"
    assert row["code_prefix"] is None and len(row["tests"]) == 3
    assert "\r" not in row["reference_code"] and "def remove_Occ" in row["reference_code"]
    assert row["tests"][0] in row["prompt"]  # the first test shows the signature
    sanitized = load_task("mbpp_sanitized", "all")
    with_imports = [r for r in sanitized if r["test_setup"]]
    assert len(with_imports) == 13 and with_imports[0]["test_setup"] == "import math"
    assert all(
        r["entry_point"] and f"def {r['entry_point']}" in r["reference_code"] for r in sanitized
    )


def test_mbpp_entry_point_skips_builtins():
    assert mbpp_entry_point("assert set(similar_elements((3, 4), (4, 5))) == set((4,))") == (
        "similar_elements"
    )
    assert mbpp_entry_point("assert math.isclose(area(2), 12.56, rel_tol=0.01)") == "area"
    assert mbpp_entry_point("assert f(1) == g(2)", "def g(x):\n  return x") == "g"
    assert mbpp_entry_point("assert len([1]) == 1") is None
    assert mbpp_entry_point("not python (") is None


def test_chat_and_templates(shared_data):
    chat = load_task("gsm8k", limit=1, chat=True)[0]["prompt"]
    assert chat[0]["role"] == "user" and "Janet" in chat[0]["content"] and len(chat) == 1
    own = load_task("countdown", limit=1, template="{numbers} -> {target}: {question}")[0]
    assert own["prompt"].startswith("[30, 100, 93] -> 23: Using the numbers")
    plain = load_task("gsm8k", limit=1, template="compact")[0]["prompt"]
    assert plain.startswith("Janet") and plain.endswith("market?")
    assert "\\boxed{...}" in TEMPLATES["math_boxed"].format(question="q")


def test_clear_errors(shared_data, monkeypatch, tmp_path):
    with pytest.raises(UnknownTaskError, match="Did you mean 'gsm8k'") as unknown:
        load_task("gsm8")
    assert str(unknown.value).startswith("unknown task 'gsm8'")
    assert isinstance(unknown.value, KeyError)
    with pytest.raises(ValueError, match=r"no split 'train'.*\['test'\]"):
        load_task("math500", "train")
    with pytest.raises(ValueError, match="math_boxed"):
        load_task("gsm8k", template="math_boxd")
    with pytest.raises(ValueError, match="placeholder 'puzzle'"):
        load_task("gsm8k", limit=1, template="{question} {puzzle}")
    with pytest.raises(ValueError, match="only apply to generated data"):
        load_task("gsm8k", size=3)
    with pytest.raises(ValueError, match="no generator.*countdown"):
        load_task("gsm8k", source="generate")
    monkeypatch.setenv("DLLM_RL_DATA", str(tmp_path))
    with pytest.raises(FileNotFoundError) as err:
        load_task("gsm8k")
    message = str(err.value)
    assert str(tmp_path / "gsm8k" / "test.jsonl") in message
    assert "DLLM_RL_DATA" in message and "source=" in message


def test_explicit_file_and_folder_sources(shared_data):
    by_file = load_task("countdown", source=shared_data / "countdown/countdown_cd3_test.jsonl")
    by_folder = load_task("countdown", source=shared_data / "countdown")
    by_root = load_task("mbpp", "validation", source=str(shared_data))
    assert len(by_file) == len(by_folder) == 256 and len(by_root) == 90


def test_hub_layouts_map_to_the_same_records():
    """The hub's column layouts, faked in memory, through the row functions."""
    kw = {"template": "{question}", "chat": False}
    gsm = gsm8k_row({"question": "q?", "answer": "work\n#### 1,234"}, **kw)
    assert gsm == {"prompt": "q?", "answer": "1234", "solution": "work\n#### 1,234"}
    math = math500_row(
        {
            "problem": "p",
            "solution": "s",
            "answer": "5",
            "subject": "Algebra",
            "level": 3,
            "unique_id": "test/algebra/1.json",
        },
        **kw,
    )
    assert math["answer"] == "5" and math["level"] == 3
    hub_cd = countdown_row({"target": 24, "nums": [2, 3, 4]}, **kw)
    d1_cd = countdown_row({"input": "2,3,4", "output": "24"}, **kw)
    assert hub_cd == d1_cd and hub_cd["numbers"] == [2, 3, 4] and hub_cd["target"] == 24
    full = mbpp_row(
        {
            "task_id": 2,
            "text": "Add.",
            "code": "def add(a, b):\r\n  return a + b",
            "test_list": ["assert add(1, 2) == 3"],
            "test_setup_code": "",
            "challenge_test_list": [],
        },
        **kw,
    )
    sanitized = mbpp_row(
        {
            "source_file": "x",
            "task_id": 2,
            "prompt": "Add.",
            "code": "def add(a, b):\n  return a + b",
            "test_imports": ["import math"],
            "test_list": ["assert add(1, 2) == 3"],
        },
        **kw,
    )
    assert full["reference_code"] == sanitized["reference_code"] == "def add(a, b):\n  return a + b"
    assert full["entry_point"] == sanitized["entry_point"] == "add"
    assert (full["test_setup"], sanitized["test_setup"]) == ("", "import math")


def test_hub_source_goes_through_load_dataset(monkeypatch):
    """source="hub" and hub names reach datasets.load_dataset with the registered config."""
    hub_rows = {
        "Jiayi-Pan/Countdown-Tasks-3to4": [{"target": 6, "nums": [1, 2, 3]}],
        "openai/gsm8k": [{"question": "q", "answer": "w\n#### 1"}],
        "someone/gsm8k-copy": [{"question": "q", "answer": "w\n#### 1"}],
        "google-research-datasets/mbpp": [
            {
                "task_id": 601,
                "text": "t",
                "code": "def f():\r\n  pass",
                "test_list": ["assert f() is None"],
                "test_setup_code": "",
                "challenge_test_list": [],
            }
        ],
    }
    calls = []

    def fake_load(path, config, split):
        calls.append((path, config, split))
        return datasets.Dataset.from_list(hub_rows[path])

    monkeypatch.setattr(registry_module, "load_dataset_path", fake_load)
    countdown = load_task("countdown", "train", source="hub")
    assert countdown[0]["numbers"] == [1, 2, 3] and countdown[0]["target"] == 6
    load_task("gsm8k", source="openai/gsm8k")
    load_task("gsm8k", source="someone/gsm8k-copy")
    mbpp = load_task("mbpp", "all", source="hub")
    assert mbpp[0]["entry_point"] == "f" and mbpp[0]["task_id"] == "601"
    assert calls == [
        ("Jiayi-Pan/Countdown-Tasks-3to4", None, "train"),
        ("openai/gsm8k", "main", "test"),
        ("someone/gsm8k-copy", None, "test"),
        ("google-research-datasets/mbpp", "full", "prompt+test+validation+train"),
    ]


def test_json_array_source(tmp_path):
    rows = [{"question": "q", "answer": "x\n#### 7"}]
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(rows))
    assert load_task("gsm8k", source=path)[0]["answer"] == "7"


# ----------------------------------------------------------------------------- one TaskSpec
def test_every_task_names_rewards_that_resolve():
    from dllm_rl.rewards.registry import resolve_rewards

    for name, spec in TASKS.items():
        assert spec.rewards, name
        resolve_rewards(list(spec.rewards))


@pytest.mark.parametrize("task", sorted(TASKS))
def test_every_task_dry_runs_in_training_and_evaluation(task, capsys, monkeypatch):
    """data.task=X with no rewards listed: the trainer's and the evaluation's dry runs both
    describe its data from one place (``describe_source``) and grade it with the task's own
    rewards (``python -m dllm_rl.eval data.task=math`` failed: no default reward)."""
    from dllm_rl import eval as ev
    from dllm_rl import train

    spec = TASKS[task]
    split = "test" if "test" in spec.splits else spec.splits[0]
    train_split = "train" if "train" in spec.splits else split
    # the tiny recipes' template and generator options belong to their own task
    common = [f"data.task={task}", "rewards=null", "data.template=null", "dry_run=true"]
    assert (
        train.main(
            [
                "recipe=cj_grpo_tiny",
                *common,
                f"data.split={train_split}",
                f"data.eval_split={split}",
                "data.options={}",
                "data.eval_options={}",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert f"data: {task}/{train_split}" in out
    assert f"rewards: {spec.rewards[0]} x 1" in out
    assert ev.main(["recipe=eval_tiny", *common, f"data.split={split}", "data.options={}"]) == 0
    out = capsys.readouterr().out
    assert f"data: {task}/{split}" in out and f"(accuracy: {spec.rewards[0]})" in out
