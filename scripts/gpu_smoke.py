#!/usr/bin/env python3
"""GPU smoke check, at most ~8 minutes on one 80 GB GPU: the ``gpu``-marked tests, then 2 steps of
CJ-GRPO on a random-weight model of LLaDA-8B's shape (d_model 4096, 32 layers, 32 heads, MLP
12288; the tiny character vocabulary, so no download) with LoRA + gradient checkpointing + bf16,
plain and under single-GPU DeepSpeed ZeRO-3. Prints one JSON object: per run, the peak GPU memory
(``max_memory_allocated``), the step time and the rollout tokens/s.

    python scripts/gpu_smoke.py                      # on the GPU machine
    python scripts/gpu_smoke.py --cpu-check          # the same path, a small shape, on CPU

Each run is a real ``dllm_rl/train.py`` start (``python -m dllm_rl.train`` for plain,
``accelerate launch --config_file scripts/accelerate/deepspeed_zero3.yaml --num_processes 1``
for ZeRO-3) through ``scripts/bench_engines.py``'s worker, which measures memory around it and
writes no checkpoint (a 6.4B-parameter save is not what is being checked).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "scripts" / "bench_engines.py"
SHAPE_8B = {"d_model": 4096, "n_layers": 32, "n_heads": 32, "mlp_hidden_size": 12288}
SHAPE_CPU = {"d_model": 64, "n_layers": 2, "n_heads": 4, "mlp_hidden_size": 128}


def recipe(shape: dict[str, int], out: Path, cpu: bool) -> list[str]:
    args = ["recipe=cj_grpo_tiny", f"output_dir={out}", "max_steps=2", "eval_steps=0"]
    args += [f"model.tiny.{k}={v}" for k, v in shape.items()]
    args += ["model.lora.enabled=true", "model.lora.r=16", "model.gradient_checkpointing=true"]
    args += ["rollout.gen_length=64", "grpo.prompts_per_step=2", "grpo.num_generations=4"]
    args += ["grpo.per_device_batch_size=4", "grpo.generation_batch_size=8", "save_steps=0"]
    args += ["rewards=[tests.trainers.fixtures:digit_fraction]"]
    args += ["run.device=cpu", "model.dtype=float32"] if cpu else ["model.dtype=bfloat16"]
    return args


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(engine: str, shape: dict[str, int], folder: Path, cpu: bool) -> dict:
    out, report = folder / engine / "run", folder / engine / "report"
    worker = [str(BENCH), "--worker", str(report), "--", *recipe(shape, out, cpu)]
    if engine == "plain":
        cmd = [sys.executable, *worker]
    else:
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file"]
        cmd += [str(ROOT / "scripts" / "accelerate" / "deepspeed_zero3.yaml")]
        cmd += ["--num_processes", "1", "--num_machines", "1"]
        cmd += ["--main_process_port", str(free_port()), *worker]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        return {"engine": engine, "ok": False, "error": done.stderr[-3000:], "wall_s": wall}
    (rank,) = [json.loads(p.read_text()) for p in report.glob("rank-*.json")]
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "time/step_s" in r]
    completions = 2 * 4
    rollout_tps = [completions * 64 / r["time/rollout_s"] for r in rows]
    return {
        "engine": engine,
        "ok": True,
        "peak_memory_gib": rank["peak_above_start_mb"] / 1024,
        "step_s": [round(r["time/step_s"], 3) for r in rows],
        "rollout_tokens_per_s": round(statistics.median(rollout_tps), 1),
        "grad_norm": [r["grad_norm"] for r in rows],
        "wall_s": round(wall, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu-check", action="store_true", help="small shape, on CPU")
    parser.add_argument("--skip-tests", action="store_true", help="no gpu-marked tests")
    args = parser.parse_args()
    result: dict = {}
    if not args.cpu_check:
        import torch

        if not torch.cuda.is_available():
            print("error: no CUDA device (use --cpu-check to run the path on CPU)", file=sys.stderr)
            return 2
        result["device"] = torch.cuda.get_device_name(0)
    if not args.skip_tests and not args.cpu_check:
        tests = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        result["gpu_tests"] = {"code": tests.returncode, "tail": tests.stdout[-600:]}
    from scripts.deepspeed_op import build_deepspeed_op

    if args.cpu_check:
        build_deepspeed_op()
    shape = SHAPE_CPU if args.cpu_check else SHAPE_8B
    result["shape"] = shape
    with tempfile.TemporaryDirectory() as tmp:
        result["runs"] = [run(e, shape, Path(tmp), args.cpu_check) for e in ("plain", "zero3")]
    print(json.dumps(result, indent=2))
    return 0 if all(r["ok"] for r in result["runs"]) else 1


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
