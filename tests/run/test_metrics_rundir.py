"""The run directory and the metrics logger."""

from __future__ import annotations

import json
import math
import sys
import types

from dllm_rl.run import metrics as metrics_module
from dllm_rl.run.metrics import MetricsLogger, read_metrics
from dllm_rl.run.rundir import create_run_dir, default_output_dir


def test_metrics_rows_are_json_with_nan_as_null(tmp_path):
    log = MetricsLogger(tmp_path, total_steps=2)
    log.log(1, {"loss": 0.5, "reward": math.nan, "grad_norm": math.inf})
    log.samples(1, [{"prompt": "p", "completion": "c"}])
    log.close()
    assert read_metrics(tmp_path / "metrics.jsonl") == [
        {"step": 1, "loss": 0.5, "reward": None, "grad_norm": "inf"}
    ]
    assert json.loads((tmp_path / "samples.jsonl").read_text()) == {
        "step": 1,
        "prompt": "p",
        "completion": "c",
    }


def test_only_the_main_process_writes(tmp_path):
    log = MetricsLogger(tmp_path, total_steps=1, is_main=False)
    log.log(1, {"loss": 1.0})
    log.close()
    assert not (tmp_path / "metrics.jsonl").exists()


def test_wandb_goes_offline_without_an_api_key(tmp_path, monkeypatch):
    calls = {}
    fake = types.SimpleNamespace(
        init=lambda **kw: (
            calls.update(kw) or types.SimpleNamespace(log=lambda *a, **k: None, finish=lambda: None)
        )
    )
    monkeypatch.setitem(sys.modules, "wandb", fake)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setattr(metrics_module, "_has_wandb_key", lambda: False)
    MetricsLogger(tmp_path, 1, report_to="wandb", config={"a": 1}).close()
    assert calls["mode"] == "offline" and calls["config"] == {"a": 1}
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setattr(metrics_module, "_has_wandb_key", lambda: True)
    MetricsLogger(tmp_path, 1, report_to="wandb").close()
    assert calls["mode"] == "online"


def test_run_directory_records_what_ran(tmp_path):
    from dllm_rl.trainers.grpo_config import GRPOConfig

    run = create_run_dir(tmp_path / "r", GRPOConfig(), ["recipe=x", "seed=1"], num_processes=2)
    meta = json.loads((run.root / "meta.json").read_text())
    assert meta["num_processes"] == 2 and meta["packages"]["torch"]
    assert "recipe=x seed=1" in (run.root / "command.txt").read_text()
    assert "num_generations: 4" in (run.root / "config.yaml").read_text()
    assert run.checkpoints.is_dir()
    assert default_output_dir("cj", now=0).startswith("outputs/cj/19")


def test_a_resumed_run_keeps_its_history(tmp_path):
    from dllm_rl.trainers.grpo_config import GRPOConfig

    create_run_dir(tmp_path, GRPOConfig(), ["recipe=x", "max_steps=2"])
    create_run_dir(tmp_path, GRPOConfig(), ["recipe=x", "max_steps=4", "resume_from=latest"])
    lines = (tmp_path / "command.txt").read_text().splitlines()
    assert len(lines) == 2 and lines[1].endswith("resume_from=latest")
    assert (tmp_path / "config.1.yaml").is_file() and (tmp_path / "config.yaml").is_file()
    assert len(json.loads((tmp_path / "meta.json").read_text())["starts"]) == 2
