"""Two CPU processes (gloo, ``torch.distributed.run``) against one, for the likelihood trainers:
the same metrics and weights at the same global batch; a 2-process run stopped and resumed equals
the straight 2-process run; SIGTERM to the launcher checkpoints every rank's state and stops."""

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

from dllm_rl.run.metrics import read_metrics
from dllm_rl.trainers.estimators import ESTIMATORS
from tests.trainers.test_resume import estimator_overrides, final_weights, is_wall_time, recipes

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow

# recipe -> overrides whose global batch splits evenly over 1 and 2 processes
SPLITS = {
    "cj_grpo_tiny": [
        "grpo.generation_batch_size=8",
        "grpo.per_device_batch_size=8",
        "rewards=[tests.trainers.fixtures:digit_fraction]",
        "training.lr=1e-4",  # the tolerances are for this rate (the recipe's 3e-3 amplifies
    ],  # fp32 rounding through Adam's normalisation 30 times more)
    "sft_tiny": ["sft.batch_size=8", "sft.per_device_batch_size=4", "sft.eval_rows=8"],
    "vrpo_tiny": [
        "preference.pairs_per_step=4",
        "preference.per_device_batch_size=2",
        "preference.n_t=2",
        "data.eval_rows=4",
    ],
}
COMMON = ["run.device=cpu", "model.dtype=float32", "save_steps=0", "eval_steps=2"]


def command(recipe: str, out: Path, procs: int, *extra: str) -> list[str]:
    launcher = [sys.executable]
    if procs > 1:
        launcher += ["-m", "torch.distributed.run", f"--nproc_per_node={procs}"]
        launcher += ["--standalone"]  # a free port: parallel runs never collide
    given = {a.split("=")[0] for a in extra}
    base = [a for a in [*SPLITS[recipe], *COMMON] if a.split("=")[0] not in given]
    args = [f"recipe={recipe}", *base, f"output_dir={out}", *extra]
    return [*launcher, "-m", "dllm_rl.train", *args]


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def run(cmd: list[str]) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    return done


def assert_same_rows(a: list[dict], b: list[dict], rel: float = 1e-5) -> None:
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for x, y in zip(a, b):
        for key, value in x.items():
            if is_wall_time(key) or key == "forwards":  # forwards: this process's count
                continue
            if isinstance(value, float) and isinstance(y.get(key), float):
                if math.isnan(value):
                    assert math.isnan(y[key]), key
                else:
                    assert value == pytest.approx(y[key], rel=rel, abs=1e-6), (x["step"], key)
            else:
                assert value == y.get(key), (x["step"], key)


def max_difference(a: dict, b: dict) -> float:
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


@pytest.mark.parametrize("recipe", [p for p in recipes() if p.values[0] != "cj_grpo_tiny"])
def test_two_processes_equal_one_process(recipe, tmp_path):
    """cj_grpo_tiny has this test in tests/test_recipes.py; here the likelihood trainers."""
    assert_two_processes_equal_one(recipe, tmp_path, "max_steps=2")


def assert_two_processes_equal_one(recipe: str, tmp_path: Path, *extra: str) -> None:
    """The same metric rows and (to 1e-6) the same final weights on 2 processes as on 1."""
    run(command(recipe, tmp_path / "one", 1, *extra))
    run(command(recipe, tmp_path / "two", 2, *extra))
    a = read_metrics(tmp_path / "one" / "metrics.jsonl")
    b = read_metrics(tmp_path / "two" / "metrics.jsonl")
    assert_same_rows(a, b)
    diff = max_difference(final_weights(tmp_path / "one"), final_weights(tmp_path / "two"))
    print(f"{recipe} {' '.join(extra)}: 2 processes vs 1, max |weight difference| = {diff:.3g}")
    assert diff < 1e-6


@pytest.mark.parametrize("estimator", [e for e in sorted(ESTIMATORS) if e != "trajectory"])
def test_every_estimator_on_two_processes_equals_one(estimator, tmp_path):
    """The recipe's own estimator (trajectory) has this test in tests/test_recipes.py; every
    other registered estimator, with two inner iterations, here."""
    extra = [f"grpo.estimator={estimator}", "grpo.num_iterations=2", "max_steps=2"]
    extra += estimator_overrides(estimator)
    assert_two_processes_equal_one("cj_grpo_tiny", tmp_path, *extra)


def test_fewer_eval_prompts_than_processes_count_each_prompt_once(tmp_path):
    """2 held-out prompts over 3 processes: the third process has none. It still rolls one out
    (the same work as the others) but adds no row, so the held-out means equal one process's
    (before, it counted prompt 0 twice: the mean of r0, r1, r0)."""
    extra = [
        "max_steps=1",
        "eval_steps=1",
        "eval.prompts=2",
        "grpo.prompts_per_step=3",
        "grpo.generation_batch_size=4",
        "grpo.per_device_batch_size=4",
    ]
    run(command("cj_grpo_tiny", tmp_path / "one", 1, *extra))
    run(command("cj_grpo_tiny", tmp_path / "three", 3, *extra))
    rows = [read_metrics(tmp_path / d / "metrics.jsonl") for d in ("one", "three")]
    evals = [[r for r in rs if "eval/reward" in r] for rs in rows]
    assert [r["step"] for r in evals[0]] == [r["step"] for r in evals[1]] == [0, 1]
    for one, three in zip(*evals):
        for key, value in one.items():
            if key.startswith("eval/"):
                assert three[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key


def test_two_process_stop_and_resume_equals_one_straight_run(tmp_path):
    """GRPO with LoRA dropout, which draws from each rank's own global RNG: 2 steps on 2
    processes, stop, resume on 2 processes to step 4 == 4 straight steps on 2 processes."""
    lora = ["model.lora.enabled=true", "model.lora.r=4", "model.lora.dropout=0.2"]
    run(command("cj_grpo_tiny", tmp_path / "straight", 2, *lora, "max_steps=4"))
    run(command("cj_grpo_tiny", tmp_path / "resumed", 2, *lora, "max_steps=2"))
    more = [*lora, "max_steps=4", "resume_from=latest"]
    run(command("cj_grpo_tiny", tmp_path / "resumed", 2, *more))
    a = read_metrics(tmp_path / "straight" / "metrics.jsonl")
    b = read_metrics(tmp_path / "resumed" / "metrics.jsonl")
    assert_same_rows(a, b, rel=1e-6)
    diff = max_difference(final_weights(tmp_path / "straight"), final_weights(tmp_path / "resumed"))
    print(f"cj_grpo_tiny + LoRA, 2 processes, stop + resume: max |difference| = {diff:.3g}")
    assert diff <= 1e-6
    rng = torch.load(
        tmp_path / "resumed" / "checkpoints" / "step-000004" / "rng.pt", weights_only=False
    )
    assert len(rng["ranks"]) == 2  # every rank's random states
    assert all(isinstance(r["torch_cpu"], torch.Tensor) for r in rng["ranks"])


def test_sigterm_to_the_launcher_checkpoints_and_stops(tmp_path):
    out = tmp_path / "run"
    cmd = command("cj_grpo_tiny", out, 2, "max_steps=500", "eval_steps=0")
    with open(tmp_path / "stderr", "w") as err:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env(), stdout=subprocess.DEVNULL, stderr=err)
        try:
            deadline = time.time() + 300
            while time.time() < deadline and proc.poll() is None:
                if (out / "metrics.jsonl").is_file() and (out / "metrics.jsonl").read_text():
                    break
                time.sleep(0.2)
            assert proc.poll() is None, (tmp_path / "stderr").read_text()[-3000:]
            proc.send_signal(signal.SIGTERM)  # torchrun forwards it to every worker
            proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
    stderr = (tmp_path / "stderr").read_text()
    assert "resume_from=latest" in stderr, stderr[-3000:]
    rows = read_metrics(out / "metrics.jsonl")
    last = rows[-1]["step"]
    latest = (out / "checkpoints" / "latest").read_text().strip()
    assert latest == f"step-{last:06d}"
    state = json.loads((out / "checkpoints" / latest / "trainer_state.json").read_text())
    assert state["step"] == last and last < 500
