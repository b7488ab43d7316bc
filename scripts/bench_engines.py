#!/usr/bin/env python3
"""Memory and step time per training engine: DDP vs DeepSpeed ZeRO-2 vs ZeRO-3 vs FSDP2.

    python scripts/bench_engines.py --out outputs/bench_engines.json          # ~50M parameters
    python scripts/bench_engines.py --engines ddp zero3 --processes 2 --steps 3

Each engine trains the same full-parameter CJ-GRPO run (``cj_grpo_tiny`` on a tiny LLaDA of
``--d-model`` x ``--layers``, ~50M parameters by default; fp32 AdamW, no reference) for ``--steps``
steps under ``accelerate launch --config_file scripts/accelerate/<engine>.yaml --num_processes
N``, on CPU over gloo when there is no GPU. Every rank reports:

* ``peak_above_start_mb``: the kernel's peak RSS (``VmHWM``, reset through
  ``/proc/self/clear_refs`` just before the run starts, after the imports) minus the RSS then:
  weights, gradients, optimizer state, the engine's buffers and the activations of the run, not
  the interpreter and libraries (checkpoints are not written: training is measured). On CUDA:
  ``max_memory_allocated`` of the rank's device;
* ``step_s``: the median ``time/step_s`` of the steps after the first (warm-up).

The table gives, per engine, the mean over ranks and the step time relative to DDP in the same
run. Expected shape (ZeRO paper): the optimizer state (~2/3 of weights + grads + Adam in fp32)
halves per rank at 2 processes under ZeRO-2, the parameters too under ZeRO-3 and FSDP2; DDP
must come out the largest. CPU step times say little about GPU ones (gloo over shared memory,
no overlap of communication with compute): read the ratios as overheads on this machine only.
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
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CONFIG = {
    "ddp": "multi_gpu.yaml",
    "zero2": "deepspeed_zero2.yaml",
    "zero3": "deepspeed_zero3.yaml",
    "fsdp2": "fsdp2.yaml",
}
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"}
"""glibc: allocations above 128 KiB are mmapped and returned on free, so RSS follows tensors."""


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def worker(report: Path, argv: list[str]) -> int:
    """One rank: reset the peak, run ``train.main(argv)``, write this rank's figures."""
    sys.path.insert(0, str(ROOT))
    import torch

    import dllm_rl.train as train
    from dllm_rl.trainers import common

    if os.environ.get("ACCELERATE_USE_DEEPSPEED") == "true":
        import deepspeed  # noqa: F401  (its import is not the run's memory)
    common.Session.save = lambda self: None  # training is measured, not checkpointing
    cuda = torch.cuda.is_available()
    if cuda:
        start = 0
    else:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # VmHWM := current RSS
        start = _status_kb("VmRSS") * 1024
    code = train.main(argv)
    if cuda:
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = _status_kb("VmHWM") * 1024
    rank = int(os.environ.get("RANK", "0"))
    report.mkdir(parents=True, exist_ok=True)
    payload = {"rank": rank, "peak_above_start_mb": (peak - start) / 2**20, "code": code}
    (report / f"rank-{rank}.json").write_text(json.dumps(payload))
    return code


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_engine(engine: str, args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    out, report = folder / engine / "run", folder / engine / "report"
    recipe = [
        "recipe=cj_grpo_tiny",
        f"model.tiny.d_model={args.d_model}",
        f"model.tiny.n_layers={args.layers}",
        f"model.tiny.n_heads={args.heads}",
        f"model.tiny.mlp_hidden_size={4 * args.d_model}",
        "model.dtype=float32",
        "grpo.beta=0",
        f"max_steps={args.steps}",
        "save_steps=0",
        "eval_steps=0",
        f"output_dir={out}",
        "rewards=[tests.trainers.fixtures:digit_fraction]",
    ]
    if args.device == "cpu":
        recipe.append("run.device=cpu")
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file"]
    cmd += [str(ROOT / "scripts" / "accelerate" / CONFIG[engine])]
    cmd += ["--num_processes", str(args.processes), "--num_machines", "1"]
    cmd += ["--main_process_port", str(free_port()), str(Path(__file__).resolve())]
    cmd += ["--worker", str(report), "--", *recipe]
    env = {**os.environ, **MALLOC_ENV, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{engine} failed:\n{done.stderr[-4000:]}")
    ranks = [json.loads(p.read_text()) for p in sorted(report.glob("rank-*.json"))]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r["time/step_s"] for r in rows if "time/step_s" in r][1:]
    return {
        "engine": engine,
        "processes": args.processes,
        "peak_above_start_mb": [round(r["peak_above_start_mb"], 1) for r in ranks],
        "mean_peak_mb": statistics.mean(r["peak_above_start_mb"] for r in ranks),
        "step_s": statistics.median(steps) if steps else float("nan"),
    }


def count_parameters(args: argparse.Namespace) -> int:
    sys.path.insert(0, str(ROOT))
    from dllm_rl.models.tiny import build_tiny_llada

    lm = build_tiny_llada(
        0, d_model=args.d_model, n_layers=args.layers, n_heads=args.heads,
        mlp_hidden_size=4 * args.d_model,
    )
    return sum(p.numel() for p in lm.model.parameters())


def main() -> int:
    if "--worker" in sys.argv:
        i = sys.argv.index("--worker")
        rest = sys.argv[i + 2 :]
        return worker(Path(sys.argv[i + 1]), rest[1:] if rest[:1] == ["--"] else rest)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engines", nargs="+", default=list(CONFIG), choices=list(CONFIG))
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--d-model", type=int, default=512)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--device", default="cpu", choices=["cpu", "auto"])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if any(e.startswith("zero") for e in args.engines):
        sys.path.insert(0, str(ROOT))
        from scripts.deepspeed_op import build_deepspeed_op

        build_deepspeed_op()
    params = count_parameters(args)
    print(f"tiny LLaDA d_model {args.d_model} x {args.layers} layers: {params / 1e6:.1f}M "
          f"parameters, fp32 AdamW: {16 * params / 2**20:.0f} MiB of weights + grads + state")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for engine in args.engines:
            print(f"running {engine} ...", flush=True)
            results.append(run_engine(engine, args, Path(tmp)))
    base = next((r["step_s"] for r in results if r["engine"] == "ddp"), None)
    print("\n| engine | peak RSS above start per rank (MiB) | step (s) | vs DDP |")
    print("|---|---|---|---|")
    for r in results:
        r["step_vs_ddp"] = r["step_s"] / base if base else None
        ratio = f"{r['step_vs_ddp']:.2f}x" if base else "-"
        ranks = " / ".join(f"{m:.0f}" for m in r["peak_above_start_mb"])
        print(f"| {r['engine']} | {ranks} | {r['step_s']:.2f} | {ratio} |")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        record = {"parameters": params, "args": {k: str(v) for k, v in vars(args).items()}}
        args.out.write_text(json.dumps({**record, "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
