"""A start never overwrites a finished run: a second run into the same ``output_dir`` without
``resume_from`` is refused (exit 2, with both ways out) and leaves every file as it was;
``run.overwrite=true`` replaces it; an ``output_dir`` that is a file is refused."""

from __future__ import annotations

from dllm_rl import train
from dllm_rl.run.metrics import read_metrics

ARGS = ["recipe=cj_grpo_tiny", "eval_steps=0", "run.device=cpu"]


def snapshot(out):
    return {
        str(p.relative_to(out)): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.is_file() and p.name != "training.png"
    }


def test_a_second_run_into_a_finished_run_is_refused_and_changes_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    assert train.main([*ARGS, f"output_dir={out}", "max_steps=2"]) == 0
    before = snapshot(out)
    capsys.readouterr()
    assert train.main([*ARGS, f"output_dir={out}", "max_steps=3"]) == 2
    err = capsys.readouterr().err
    assert "already holds a run (2 metric row(s), checkpoints up to step-000002)" in err
    assert "resume_from=latest" in err and "run.overwrite=true" in err
    assert len(err.strip().splitlines()) == 1, err  # one line, no traceback
    assert snapshot(out) == before


def test_overwrite_replaces_the_run(tmp_path):
    out = tmp_path / "run"
    assert train.main([*ARGS, f"output_dir={out}", "max_steps=3"]) == 0
    assert train.main([*ARGS, f"output_dir={out}", "max_steps=2", "run.overwrite=true"]) == 0
    steps = [r["step"] for r in read_metrics(out / "metrics.jsonl") if "loss" in r]
    assert steps == [1, 2]
    assert (out / "checkpoints" / "latest").read_text().strip() == "step-000002"
    assert not (out / "checkpoints" / "step-000003").exists()
    assert not list(out.glob("config.*.yaml"))  # no history of the replaced run


def test_resume_into_the_run_is_still_allowed(tmp_path):
    out = tmp_path / "run"
    assert train.main([*ARGS, f"output_dir={out}", "max_steps=2"]) == 0
    assert train.main([*ARGS, f"output_dir={out}", "max_steps=3", "resume_from=latest"]) == 0
    steps = [r["step"] for r in read_metrics(out / "metrics.jsonl") if "loss" in r]
    assert steps == [1, 2, 3]


def test_an_output_dir_that_is_a_file_is_refused(tmp_path, capsys):
    path = tmp_path / "notes.txt"
    path.write_text("mine")
    assert train.main([*ARGS, f"output_dir={path}", "max_steps=1"]) == 2
    assert "is a file" in capsys.readouterr().err
    assert path.read_text() == "mine"
