"""What must never cost a run: preemption (SIGTERM, SIGINT), non-finite losses, a reward that
raises. Every trainer is driven through ``train.main`` on its tiny recipe."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dllm_rl import train
from dllm_rl.rewards.registry import compute_rewards, resolve_rewards
from dllm_rl.run.metrics import read_metrics
from dllm_rl.trainers import common
from tests.trainers.test_resume import RECIPES, crash_after_logging, recipes

ROOT = Path(__file__).resolve().parents[2]
SMALL = ["run.device=cpu", "model.dtype=float32", "eval_steps=0", "run.log_samples=1"]


def run(recipe: str, out: Path, *extra: str) -> int:
    given = {a.split("=")[0] for a in extra}
    base = [a for a in RECIPES[recipe] if a.split("=")[0] not in given]
    return train.main([f"recipe={recipe}", *base, *SMALL, f"output_dir={out}", *extra])


def weights(out: Path, step: int) -> dict[str, torch.Tensor]:
    folder = out / "checkpoints" / f"step-{step:06d}" / "model"
    found = {}
    for f in sorted(folder.glob("*.safetensors")):
        found.update(load_file(str(f)))
    return found


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def inject_nonfinite_loss(monkeypatch, steps: set[int]) -> None:
    """The loss every trainer hands to ``Session.backward`` becomes NaN on ``steps``."""
    backward = common.Session.backward

    def poisoned(self, loss):
        if self.state.step + 1 in steps:
            loss = loss * math.nan
        return backward(self, loss)

    monkeypatch.setattr(common.Session, "backward", poisoned)


def inject_nonfinite_gradient(monkeypatch, steps: set[int]) -> None:
    """A finite loss whose gradient is inf on ``steps`` (one parameter's ``.grad``)."""
    backward = common.Session.backward

    def poisoned(self, loss):
        backward(self, loss)
        if self.state.step + 1 in steps:
            next(p for p in self.trainable() if p.grad is not None).grad.fill_(math.inf)

    monkeypatch.setattr(common.Session, "backward", poisoned)


# ----------------------------------------------------------------------------- non-finite guard
@pytest.mark.parametrize("where", ["loss", "gradient"])
def test_a_nonfinite_step_skips_the_update_and_the_run_goes_on(tmp_path, monkeypatch, where):
    inject = inject_nonfinite_loss if where == "loss" else inject_nonfinite_gradient
    inject(monkeypatch, {2})
    out = tmp_path / "run"
    assert run("cj_grpo_tiny", out, "max_steps=3", "save_steps=1") == 0
    rows = read_metrics(out / "metrics.jsonl")
    assert [r["skipped_updates"] for r in rows] == [0, 2, 2]  # both inner updates of step 2
    assert rows[1]["grad_norm"] in (None, "inf") and math.isfinite(rows[2]["loss"])
    assert same_weights(weights(out, 1), weights(out, 2))  # step 2 changed nothing
    assert not same_weights(weights(out, 2), weights(out, 3))


@pytest.mark.parametrize("recipe", recipes())
def test_too_many_bad_steps_stop_with_the_last_good_state(recipe, tmp_path, monkeypatch, capsys):
    """Steps 2.. give NaN losses; max_bad_steps=1: step 3 is the second bad step in a row."""
    inject_nonfinite_loss(monkeypatch, set(range(2, 10)))
    out = tmp_path / "run"
    code = run(recipe, out, "max_steps=6", "save_steps=1", "run.max_bad_steps=1")
    assert code == common.EXIT_DIVERGED
    err = capsys.readouterr().err
    assert "step 3: 2 steps in a row" in err and "training.lr" in err
    assert "resume_from=latest" in err and str(out) in err
    assert (out / "checkpoints" / "latest").read_text().strip() == "step-000003"
    assert same_weights(weights(out, 1), weights(out, 3))  # the weights of the last good update
    state = json.loads((out / "checkpoints" / "step-000003" / "trainer_state.json").read_text())
    assert state["extra"]["last_good_step"] == 1 and state["extra"]["skipped_updates"] >= 2
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl") if "loss" in r] == [1, 2, 3]


# ----------------------------------------------------------------------------- preemption
def test_sigterm_checkpoints_and_exits_with_the_resume_command(tmp_path):
    """A real ``python -m dllm_rl.train`` job gets SIGTERM mid-run."""
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "dllm_rl.train", "recipe=cj_grpo_tiny", "max_steps=500"]
    cmd += ["save_steps=0", "run.device=cpu", f"output_dir={out}"]
    with open(tmp_path / "stderr", "w") as err:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err)
        try:
            deadline = time.time() + 240
            while time.time() < deadline and proc.poll() is None:
                if (out / "metrics.jsonl").is_file() and (out / "metrics.jsonl").read_text():
                    break
                time.sleep(0.2)
            assert proc.poll() is None, (tmp_path / "stderr").read_text()[-3000:]
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
    stderr = (tmp_path / "stderr").read_text()
    assert proc.returncode == common.EXIT_PREEMPTED, stderr[-3000:]
    assert "resume_from=latest" in stderr and f"output_dir={out}" in stderr
    rows = [r for r in read_metrics(out / "metrics.jsonl") if "loss" in r]  # training rows
    last = rows[-1]["step"]
    assert 1 <= last < 500 and [r["step"] for r in rows] == list(range(1, last + 1))
    latest = (out / "checkpoints" / "latest").read_text().strip()
    assert latest == f"step-{last:06d}"  # the step that was running finished, then the save
    state = json.loads((out / "checkpoints" / latest / "trainer_state.json").read_text())
    assert state["step"] == last


def test_sigint_once_checkpoints_twice_aborts(tmp_path, monkeypatch):
    out = tmp_path / "run"
    with monkeypatch.context() as m:
        crash_after_logging(m, 2, lambda: os.kill(os.getpid(), signal.SIGINT))
        assert run("cj_grpo_tiny", out, "max_steps=4", "save_steps=0") == common.EXIT_PREEMPTED
    assert (out / "checkpoints" / "latest").read_text().strip() == "step-000002"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers put back

    def twice():
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)

    with monkeypatch.context() as m:
        crash_after_logging(m, 3, twice)
        with pytest.raises(KeyboardInterrupt):
            run("cj_grpo_tiny", out, "max_steps=4", "save_steps=0", "resume_from=latest")
    assert (out / "checkpoints" / "latest").read_text().strip() == "step-000002"


# ----------------------------------------------------------------------------- bad rewards
def flaky_reward(prompts, completions, completion_ids=None, **columns):
    """Raises on every other call (a grader bug on some inputs)."""
    flaky_reward.calls = getattr(flaky_reward, "calls", 0) + 1
    if flaky_reward.calls % 2 == 0:
        raise ZeroDivisionError("grader bug")
    return [1.0] * len(completions)


async def async_broken_reward(prompts, completions, completion_ids=None, **columns):
    raise TimeoutError("grading timed out")


def steady_reward(prompts, completions, completion_ids=None, **columns):
    return [0.5] * len(completions)


def test_a_reward_that_raises_is_counted_and_logged(caplog):
    here = "tests.trainers.test_robustness"
    specs = resolve_rewards([f"{here}:steady_reward", f"{here}:async_broken_reward"])
    batch = compute_rewards(specs, prompts=["p"] * 3, completions=["a", "b", "c"])
    assert torch.isnan(batch.values[:, 1]).all() and batch.values[:, 0].tolist() == [0.5] * 3
    assert batch.total.tolist() == [0.5] * 3
    assert batch.metrics[f"rewards/{here}:async_broken_reward/errors"] == 3
    assert batch.metrics[f"rewards/{here}:steady_reward/errors"] == 0
    assert "async_broken_reward" in caplog.text and "grading timed out" in caplog.text


def test_training_survives_a_reward_that_raises(tmp_path, caplog):
    flaky_reward.calls = 0
    out = tmp_path / "run"
    reward = "rewards=[tests.trainers.test_robustness:flaky_reward]"
    assert run("cj_grpo_tiny", out, "max_steps=2", reward) == 0
    rows = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2]
    key = "rewards/tests.trainers.test_robustness:flaky_reward/mean"
    assert rows[0][key] == 1.0 and rows[1][key] is None  # step 2: every value None
    assert "ZeroDivisionError" in caplog.text
