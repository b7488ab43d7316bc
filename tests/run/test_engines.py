"""Every engine, 2 CPU processes over gloo through ``accelerate launch``, against one process at the
same global batch: DDP (multi_gpu.yaml), DeepSpeed ZeRO-2 and ZeRO-3 (with CPU offload too) and
FSDP2 (fsdp2.yaml) give the metric rows and weights of the 1-process run; processes with different
work (one rank's groups all at zero advantage) finish instead of hanging; the consolidated
checkpoint loads in a fresh process; a ZeRO-3 run stopped and resumed equals the straight run.

The comparisons use a reward that gives nonzero gradients (``grad_norm > 0`` is asserted in every
compared row: equal zeros would prove nothing). Each launch compiles nothing: DeepSpeed's one op
is built once (``deepspeed_op`` fixture, or ``.ci/run`` before the suite).
"""

from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dllm_rl.models.tiny import build_tiny_llada
from dllm_rl.run.metrics import read_metrics
from tests.run.test_distributed import COMMON, SPLITS, assert_same_rows, max_difference
from tests.trainers.test_resume import final_weights

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "scripts" / "accelerate"
CONFIG = {
    "ddp": "multi_gpu.yaml",
    "zero2": "deepspeed_zero2.yaml",
    "zero3": "deepspeed_zero3.yaml",
    "zero3_offload": "deepspeed_zero3_offload.yaml",
    "fsdp2": "fsdp2.yaml",
}
WEIGHT_TOLERANCE = {"ddp": 1e-6, "zero2": 1e-6, "fsdp2": 1e-6, "zero3": 1e-5, "zero3_offload": 1e-5}
WEIGHT_TOLERANCE["zero3_live"] = WEIGHT_TOLERANCE["zero3"]
TIMEOUT = 420  # seconds per launch: a hang fails the test instead of the suite

pytestmark = [pytest.mark.slow, pytest.mark.skipif(sys.platform != "linux", reason="gloo, linux")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def arguments(recipe: str, out: Path, *extra: str) -> list[str]:
    given = {a.split("=")[0] for a in extra}
    base = [a for a in [*SPLITS[recipe], *COMMON] if a.split("=")[0] not in given]
    return [f"recipe={recipe}", *base, f"output_dir={out}", *extra]


def launch(engine: str, recipe: str, out: Path, *extra: str) -> subprocess.CompletedProcess:
    """``accelerate launch --config_file <engine>.yaml --num_processes 2 dllm_rl/train.py``."""
    if engine.startswith("zero"):
        require_deepspeed()
    if engine == "zero3_live":  # a user's own DeepSpeed JSON: ZeRO-3, 1M live parameters
        from scripts.bench_engines import live_config

        config = live_config(out.parent / f"{out.name}-config")
    else:
        config = CONFIGS / CONFIG[engine]
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file"]
    cmd += [str(config), "--num_processes", "2", "--num_machines", "1"]
    cmd += ["--main_process_port", str(free_port()), "dllm_rl/train.py"]
    cmd += arguments(recipe, out, *extra)
    done = subprocess.run(cmd, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr[-6000:]
    assert f"engine: {engine.split('_')[0]}" in done.stderr, done.stderr[-3000:]
    return done


def single(recipe: str, out: Path, *extra: str) -> None:
    cmd = [sys.executable, "-m", "dllm_rl.train", *arguments(recipe, out, *extra)]
    done = subprocess.run(cmd, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    """1-process runs, each made once per module: ``baseline(recipe, *extra) -> folder``."""
    made: dict[tuple[str, ...], Path] = {}

    def get(recipe: str, *extra: str) -> Path:
        key = (recipe, *extra)
        if key not in made:
            out = tmp_path_factory.mktemp("one")
            single(recipe, out, *extra)
            made[key] = out
        return made[key]

    return get


_OP_READY: list[bool] = []


def require_deepspeed() -> None:
    """Skip without DeepSpeed (CI, which sets ``DLLM_RL_REQUIRE_DEEPSPEED=1``, fails instead);
    build its CPU communication op once per session (the first build takes ~75 s of CPU; a stale
    lock left by a killed build would make every later start wait forever)."""
    if os.environ.get("DLLM_RL_REQUIRE_DEEPSPEED") != "1":
        pytest.importorskip("deepspeed")
    if not _OP_READY:
        from scripts.deepspeed_op import build_deepspeed_op

        build_deepspeed_op()
        _OP_READY.append(True)


def compare(one: Path, two: Path, engine: str) -> tuple[float, float]:
    a = read_metrics(one / "metrics.jsonl")
    b = read_metrics(two / "metrics.jsonl")
    trained = [r for r in a if "grad_norm" in r]
    assert trained and all(r["grad_norm"] > 0 for r in trained), "no gradient: proves nothing"
    assert_same_rows(a, b)
    rel = max(
        abs(x[k] - y[k]) / max(abs(x[k]), 1e-12)
        for x, y in zip(a, b)
        for k in ("loss", "reward", "grad_norm", "kl", "ratio_mean")
        if isinstance(x.get(k), float) and math.isfinite(x[k])
    )
    diff = max_difference(final_weights(one), final_weights(two))
    print(f"{engine}: max |weights 2 - 1 process| = {diff:.3g}, max rel metric diff = {rel:.3g}")
    assert diff < WEIGHT_TOLERANCE[engine]
    return diff, rel


# ----------------------------------------------------------------------------- equal to 1 process
@pytest.mark.parametrize("engine", ["ddp", "zero2", "zero3", "fsdp2"])
def test_cj_grpo_on_two_processes_equals_one(engine, baseline, tmp_path):
    """Full-parameter CJ-GRPO with a frozen reference (beta 0.04), 2 steps x mu = 2."""
    extra = ["max_steps=2", "eval_steps=0"]
    launch(engine, "cj_grpo_tiny", tmp_path, *extra)
    compare(baseline("cj_grpo_tiny", *extra), tmp_path, engine)


def test_zero3_releasing_parameters_between_forwards_equals_one_process(baseline, tmp_path):
    """ZeRO-3 with stage3_max_live_parameters = 1M (below the model: the parameter coordinator
    releases and prefetches between forwards, as at 8B with the 1e9 default): rollouts,
    evaluation and the frozen reference's no-grad passes with the full parameters gathered do
    not leave parameters in flight, and the run equals one process."""
    extra = ["max_steps=2", "eval_steps=2"]
    launch("zero3_live", "cj_grpo_tiny", tmp_path / "run", *extra)
    compare(baseline("cj_grpo_tiny", *extra), tmp_path / "run", "zero3_live")


def test_one_step_estimator_under_zero2_equals_one_process(baseline, tmp_path):
    extra = ["max_steps=2", "eval_steps=0", "grpo.estimator=one_step"]
    launch("zero2", "cj_grpo_tiny", tmp_path, *extra)
    compare(baseline("cj_grpo_tiny", *extra), tmp_path, "zero2")


def test_coupled_estimator_under_zero3_equals_one_process(baseline, tmp_path):
    """A new estimator on sharded parameters: coupled-GRPO (3 forwards per call, old and
    reference passes under the gathered full parameters, mu = 2) under ZeRO-3 equals one
    process."""
    extra = ["max_steps=2", "eval_steps=0", "grpo.estimator=coupled", "grpo.num_iterations=2"]
    launch("zero3", "cj_grpo_tiny", tmp_path, *extra)
    compare(baseline("cj_grpo_tiny", *extra), tmp_path, "zero3")


@pytest.mark.parametrize("recipe", ["sft_tiny", "vrpo_tiny"])
def test_likelihood_trainers_under_zero3_equal_one_process(recipe, baseline, tmp_path):
    extra = ["max_steps=2", "eval_steps=2"]
    launch("zero3", recipe, tmp_path, *extra)
    compare(baseline(recipe, *extra), tmp_path, "zero3")


# ----------------------------------------------------------------------------- different work
@pytest.mark.parametrize("engine", ["ddp", "zero2", "zero3", "fsdp2"])
def test_processes_with_different_work_finish(engine, tmp_path):
    """Rank 1's groups all have zero advantage: under skip_zero_advantage (beta = 0) it trains no
    row while rank 0 trains its own; the padding keeps the forward/backward counts equal (unequal
    counts hang ZeRO-3/FSDP2 and crash ZeRO-2)."""
    extra = ["max_steps=1", "eval_steps=0", "rewards=[tests.trainers.fixtures:digits_on_rank_zero]"]
    launch(engine, "cj_grpo_tiny", tmp_path, *extra, "grpo.beta=0", "grpo.num_iterations=1")
    (row,) = read_metrics(tmp_path / "metrics.jsonl")
    assert 0 < row["trained_fraction"] <= 0.5 and row["grad_norm"] > 0


# ----------------------------------------------------------------------------- checkpoints
@pytest.mark.parametrize("engine", ["zero3", "fsdp2"])
def test_the_consolidated_checkpoint_loads_in_a_fresh_process(engine, baseline, tmp_path):
    """model/ of a sharded run is an ordinary save_pretrained folder: load_model reads it in
    one process and it holds the trained weights (those of the 1-process run, not the start)."""
    extra = ["max_steps=2", "eval_steps=0", "grpo.beta=0"]
    launch(engine, "cj_grpo_tiny", tmp_path, *extra)
    one = baseline("cj_grpo_tiny", *extra)
    latest = (tmp_path / "checkpoints" / "latest").read_text().strip()
    code = (
        "import sys, torch; from dllm_rl.models.load import load_model\n"
        f"lm = load_model({str(tmp_path / 'checkpoints' / latest / 'model')!r})\n"
        f"torch.save(lm.model.state_dict(), {str(tmp_path / 'loaded.pt')!r})\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env(), check=True, timeout=300)
    loaded = torch.load(tmp_path / "loaded.pt")
    trained = final_weights(one)
    start = build_tiny_llada(0, d_model=64, n_layers=2, n_heads=4).model.state_dict()
    assert set(trained) <= set(loaded)
    diff = max(float((loaded[k] - trained[k]).abs().max()) for k in trained)
    moved = max(float((loaded[k] - start[k]).abs().max()) for k in trained)
    assert diff < WEIGHT_TOLERANCE[engine], diff
    assert moved > 20 * WEIGHT_TOLERANCE[engine], moved  # trained weights, not the start
    assert (tmp_path / "checkpoints" / latest / "engine").is_dir()  # the sharded state beside it
    assert not (tmp_path / "checkpoints" / latest / "optimizer.pt").exists()


def test_zero3_offload_lora_stop_and_resume_equals_the_straight_run(tmp_path):
    """LoRA (reference = disabled adapters, dropout drawing from each rank's RNG) under ZeRO-3
    with CPU offload: 2 steps, stop, resume to 3 == 3 straight steps; the adapter in model/
    loads with PeftModel.from_pretrained."""
    lora = ["model.lora.enabled=true", "model.lora.r=4", "model.lora.dropout=0.1", "eval_steps=0"]
    launch("zero3_offload", "cj_grpo_tiny", tmp_path / "straight", *lora, "max_steps=3")
    launch("zero3_offload", "cj_grpo_tiny", tmp_path / "resumed", *lora, "max_steps=2")
    launch(
        "zero3_offload",
        "cj_grpo_tiny",
        tmp_path / "resumed",
        *lora,
        "max_steps=3",
        "resume_from=latest",
    )
    a = read_metrics(tmp_path / "straight" / "metrics.jsonl")
    b = read_metrics(tmp_path / "resumed" / "metrics.jsonl")
    assert all(r["grad_norm"] > 0 for r in a if "grad_norm" in r)
    assert_same_rows(a, b, rel=1e-6)
    diff = max_difference(final_weights(tmp_path / "straight"), final_weights(tmp_path / "resumed"))
    print(f"zero3 offload + LoRA, stop + resume: max |difference| = {diff:.3g}")
    assert diff <= 1e-6
    adapter = tmp_path / "resumed" / "checkpoints" / "step-000003" / "model"
    assert (adapter / "adapter_config.json").is_file()
    assert "lora_A" in " ".join(final_weights(tmp_path / "resumed"))


def test_a_sharded_checkpoint_refuses_another_engine(tmp_path, baseline):
    """The partitioned optimizer state only resumes under the engine and process count that
    wrote it: a 1-process resume of a ZeRO-2 checkpoint says so, with exit code 2."""
    launch("zero2", "cj_grpo_tiny", tmp_path, "max_steps=1", "eval_steps=0")
    cmd = [sys.executable, "-m", "dllm_rl.train"]
    cmd += arguments("cj_grpo_tiny", tmp_path, "max_steps=2", "resume_from=latest")
    done = subprocess.run(cmd, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "zero2 engine on 2 process(es)" in done.stderr


@pytest.mark.parametrize("engine", ["zero2", "zero3", "fsdp2"])
def test_a_nonfinite_step_is_skipped_on_every_rank(engine, tmp_path):
    """Step 2's rewards are infinite, so its losses are NaN: both inner updates of step 2 are
    skipped on both ranks (the engine sees a NaN gradient norm; nobody hangs), its weights equal
    step 1's, and step 3 trains again."""
    extra = ["max_steps=3", "save_steps=1", "eval_steps=0", "grpo.beta=0"]
    launch(
        engine,
        "cj_grpo_tiny",
        tmp_path,
        *extra,
        "rewards=[tests.trainers.fixtures:inf_on_second_call]",
    )
    rows = [r for r in read_metrics(tmp_path / "metrics.jsonl") if "skipped_updates" in r]
    assert [r["skipped_updates"] for r in rows] == [0, 2, 2]
    assert rows[0]["grad_norm"] > 0 and rows[2]["grad_norm"] > 0

    def weights(step: int) -> dict:
        folder = tmp_path / "checkpoints" / f"step-{step:06d}" / "model"
        from safetensors.torch import load_file

        return {k: v for f in sorted(folder.glob("*.safetensors")) for k, v in load_file(f).items()}

    assert max_difference(weights(1), weights(2)) == 0.0
    assert max_difference(weights(2), weights(3)) > 0.0
