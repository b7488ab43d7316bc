"""Checkpoints: a SIGKILL mid-save leaves the previous one loadable and ``latest`` on it, stale
temporary folders go at the next save, ``save_total_limit`` keeps the newest N, and a resumed
run's metric files lose the rows logged after the checkpoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from dllm_rl.run.checkpoint import (
    LATEST,
    TrainerState,
    list_checkpoints,
    load_checkpoint,
    load_rng,
    resolve_checkpoint,
    save_checkpoint,
)
from dllm_rl.run.metrics import read_metrics, rows_up_to, truncate_after

ROOT = Path(__file__).resolve().parents[2]


class Tiny(torch.nn.Module):
    """A model with the ``save_pretrained`` the checkpoint code calls."""

    def __init__(self, value: float = 0.0) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.full((4, 4), value))

    def save_pretrained(self, folder: str) -> None:
        save_file(
            {k: v.detach().contiguous() for k, v in self.state_dict().items()},
            f"{folder}/model.safetensors",
        )


def parts(value: float):
    model = Tiny(value)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    model.w.grad = torch.ones_like(model.w)
    optimizer.step()
    scheduler.step()
    return model, optimizer, scheduler


def save(root: Path, step: int, **kwargs) -> Path:
    model, optimizer, scheduler = parts(float(step))
    return save_checkpoint(
        root,
        TrainerState(step, step * 10),
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        **kwargs,
    )


def save_steps_then_hang(root: str) -> None:
    """Subprocess body: save step 1, then step 2, which pauses right after its model files are
    written into the temporary folder (so the test can kill the process mid-save)."""
    from dllm_rl.run import checkpoint

    write_model = checkpoint.save_model

    def write_then_pause(model, folder, *args, **kwargs):
        write_model(model, folder, *args, **kwargs)
        if folder.parent.name.endswith("000002"):
            print("pausing inside the save of step 2", file=sys.stderr, flush=True)
            time.sleep(120)

    checkpoint.save_model = write_then_pause
    save(Path(root), 1)
    save(Path(root), 2)


def test_sigkill_during_save_keeps_the_previous_checkpoint(tmp_path):
    root = tmp_path / "checkpoints"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    code = f"from tests.run.test_checkpoint import save_steps_then_hang; save_steps_then_hang({str(root)!r})"
    proc = subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        line = proc.stderr.readline()  # printed inside save_checkpoint, model files written
        assert "pausing inside the save of step 2" in line, line
        assert (root / ".tmp-step-000002" / "model" / "model.safetensors").is_file()
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert (root / LATEST).read_text().strip() == "step-000001"
    path = resolve_checkpoint("latest", root)
    model, optimizer, scheduler = parts(0.0)
    state = load_checkpoint(path, model=model, optimizer=optimizer, scheduler=scheduler)
    assert state.step == 1 and state.data_position == 10
    assert torch.equal(model.w, parts(1.0)[0].w)
    assert [p.name for p in list_checkpoints(root)] == ["step-000001"]

    save(root, 3)  # the next save sweeps the half-written folder
    assert not [p for p in root.iterdir() if p.name.startswith(".")]
    assert (root / LATEST).read_text().strip() == "step-000003"


def test_save_total_limit_keeps_the_newest(tmp_path):
    root = tmp_path / "checkpoints"
    for step in range(1, 6):
        save(root, step, save_total_limit=2)
    assert [p.name for p in list_checkpoints(root)] == ["step-000004", "step-000005"]
    assert resolve_checkpoint("latest", root).name == "step-000005"


def test_latest_is_never_pruned_and_a_step_saved_again_is_replaced(tmp_path):
    """A run resumed from an older checkpoint saves steps below an abandoned branch's."""
    root = tmp_path / "checkpoints"
    for step in (2, 4, 6):
        save(root, step)
    save(root, 3, save_total_limit=2)  # the newest two are 4 and 6, but latest is 3: kept too
    assert {p.name for p in list_checkpoints(root)} == {"step-000003", "step-000004", "step-000006"}
    assert resolve_checkpoint("latest", root).name == "step-000003"
    save(root, 6)  # the new branch reaches 6: replaced in place
    model, optimizer, scheduler = parts(0.0)
    state = load_checkpoint(
        root / "step-000006", model=model, optimizer=optimizer, scheduler=scheduler
    )
    assert state.step == 6 and not (root / ".old-step-000006").exists()


def test_random_states_of_every_process_round_trip(tmp_path):
    root = tmp_path / "checkpoints"
    g = torch.Generator().manual_seed(5)
    torch.rand(3, generator=g)
    ranks = [
        {"torch_cpu": torch.random.get_rng_state(), "generators": {"g": g.get_state()}},
        {"torch_cpu": torch.random.get_rng_state(), "generators": {}},
    ]
    path = save(root, 1, rng={"ranks": ranks})
    assert torch.equal(load_rng(path, 0)["generators"]["g"], g.get_state())
    assert load_rng(path, 1)["generators"] == {}
    assert load_rng(path, 7)["generators"].keys() == {"g"}  # more processes now: rank 0's


def test_metric_history_is_cut_at_the_checkpoint(tmp_path):
    path = tmp_path / "metrics.jsonl"
    rows = [{"step": s, "loss": s / 10} for s in range(1, 6)] + [{"step": 3, "eval/x": 1.0}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 6, "lo')  # killed
    assert len(rows_up_to(path, 3)) == 4
    assert truncate_after(path, 3) == 3  # steps 4, 5 and the half-written line
    assert [r["step"] for r in read_metrics(path)] == [1, 2, 3, 3]
    assert truncate_after(path, 3) == 0
    saved = save(tmp_path / "checkpoints", 2, metrics_file=path)
    assert [r["step"] for r in read_metrics(saved / "metrics.jsonl")] == [1, 2]


def test_a_resumed_run_continues_its_wandb_run(tmp_path, monkeypatch):
    import wandb

    from dllm_rl.run import metrics

    calls = []
    monkeypatch.setattr(wandb, "init", lambda **kwargs: calls.append(kwargs))
    monkeypatch.setenv("WANDB_MODE", "offline")
    metrics._start_wandb("p", tmp_path, {})
    metrics._start_wandb("p", tmp_path, {})  # the resumed run, same directory
    assert calls[0]["id"] == calls[1]["id"] and calls[1]["resume"] == "allow"
    (tmp_path / "other").mkdir()
    metrics._start_wandb("p", tmp_path / "other", {})  # another run directory: another run
    assert calls[2]["id"] != calls[0]["id"]
