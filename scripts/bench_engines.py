#!/usr/bin/env python3
"""Memory and step time per training engine: DDP vs DeepSpeed ZeRO-2 vs ZeRO-3 vs FSDP2.

    python scripts/bench_engines.py --out outputs/bench_engines.json          # ~50M parameters
    python scripts/bench_engines.py --engines ddp zero3 --processes 2 --steps 3

Each engine trains the same full-parameter CJ-GRPO run (``cj_grpo_tiny`` on a tiny LLaDA of
``--d-model`` x ``--layers``, ~50M parameters by default; fp32 AdamW, no reference) for ``--steps``
steps under ``accelerate launch --config_file scripts/accelerate/<engine>.yaml --num_processes
N``, on CPU over gloo when there is no GPU. Every rank reports:

* ``tensors``: the bytes of every live CPU tensor after the first step (the garbage collector's
  view: exactly what the engine keeps, without allocator slack or DeepSpeed's shared-memory
  communication workspace; CUDA: ``memory_allocated``);
* memory above the rank's RSS after the imports (not the interpreter and libraries; no
  checkpoint is written: training is measured): ``held`` after the first step (weights,
  gradients, optimizer state, engine buffers), ``peak`` of the later steps (the kernel's
  ``VmHWM``, reset through ``/proc/self/clear_refs`` after step 1: the steady state plus
  activations and gathers), and ``setup_peak`` (model build, wrapping, step 1: the engine's
  set-up copies). On CUDA the same from ``memory_allocated`` / ``max_memory_allocated``;
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
sys.path.insert(0, str(ROOT / "scripts"))
from bench_train import MALLOC_ENV, _status_kb  # noqa: E402  (glibc settings, /proc readings)

CONFIG = {
    "ddp": "multi_gpu.yaml",
    "zero2": "deepspeed_zero2.yaml",
    "zero3": "deepspeed_zero3.yaml",
    "zero3-live1m": None,  # written by live_config(): a user's own DeepSpeed JSON
    "fsdp2": "fsdp2.yaml",
}
LIVE = 1_000_000
"""``stage3_max_live_parameters`` of ``zero3-live1m``. DeepSpeed's default (1e9) keeps every
gathered parameter of a model under 1e9 elements alive after its forward, so at 50M parameters
ZeRO-3 holds them all; at 8B the cap binds. This configuration shows the sharded steady state."""


def live_config(folder: Path) -> Path:
    """An accelerate config pointing at a DeepSpeed JSON file (ZeRO-3, 1M live parameters)."""
    ds = {
        "train_micro_batch_size_per_gpu": "auto",
        "gradient_accumulation_steps": 1,
        "zero_optimization": {
            "stage": 3,
            "offload_optimizer": {"device": "none"},
            "offload_param": {"device": "none"},
            "stage3_max_live_parameters": LIVE,
            "stage3_max_reuse_distance": LIVE,
        },
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ds.json").write_text(json.dumps(ds))
    yaml = (ROOT / "scripts" / "accelerate" / "deepspeed_zero3.yaml").read_text()
    lines = [x for x in yaml.splitlines() if not x.startswith(("  ", "mixed_precision"))]
    text = "\n".join(lines).replace(
        "deepspeed_config:", f"deepspeed_config:\n  deepspeed_config_file: {folder / 'ds.json'}"
    )
    (folder / "accelerate.yaml").write_text(text + "\n")
    return folder / "accelerate.yaml"


def _reset_peak() -> int:
    """Reset ``VmHWM`` to the current RSS; returns that RSS in bytes."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _status_kb("VmRSS") * 1024


def live_tensor_bytes() -> int:
    """Bytes of every distinct storage of a live CPU tensor (the garbage collector's view): what
    the engine holds, without the allocator's slack or communication workspaces."""
    import gc

    import torch

    storages: dict[int, int] = {}
    for obj in gc.get_objects():
        if isinstance(obj, torch.Tensor) and obj.device.type == "cpu":
            try:
                storage = obj.untyped_storage()
                storages[storage.data_ptr()] = storage.nbytes()
            except RuntimeError:  # a freed storage (FSDP2's resharded parameters): nothing held
                continue
    return sum(storages.values())


def worker(report: Path, argv: list[str]) -> int:
    """One rank: run ``train.main(argv)`` and write this rank's memory figures (bytes above the
    RSS after the imports): ``held`` after the first step (weights, gradients, optimizer state,
    engine buffers), ``peak`` of the later steps, ``setup_peak`` up to the end of step 1."""
    sys.path.insert(0, str(ROOT))
    import torch

    import dllm_rl.train as train
    from dllm_rl.trainers import common, grpo

    if os.environ.get("ACCELERATE_USE_DEEPSPEED") == "true":
        import deepspeed  # noqa: F401  (its import is not the run's memory)
    common.Session.save = lambda self: None  # training is measured, not checkpointing
    cuda = torch.cuda.is_available()
    figures: dict[str, float] = {}
    start = 0 if cuda else _reset_peak()
    step = grpo.GRPOTrainer.step

    def measured(self, n, indices):
        if n == 2:  # after the first step: what stays, and the setup's peak
            if cuda:
                figures["held"] = torch.cuda.memory_allocated()
                figures["setup_peak"] = torch.cuda.max_memory_allocated()
                torch.cuda.reset_peak_memory_stats()
            else:
                figures["setup_peak"] = _status_kb("VmHWM") * 1024
                figures["held"] = _reset_peak()
            figures["tensors"] = start + live_tensor_bytes()
        return step(self, n, indices)

    grpo.GRPOTrainer.step = measured
    code = train.main(argv)
    peak = torch.cuda.max_memory_allocated() if cuda else _status_kb("VmHWM") * 1024
    rank = int(os.environ.get("RANK", "0"))
    report.mkdir(parents=True, exist_ok=True)
    mib = {k: (v - start) / 2**20 for k, v in {**figures, "peak": peak}.items()}
    (report / f"rank-{rank}.json").write_text(json.dumps({"rank": rank, "code": code, **mib}))
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
        "grpo.generation_batch_size=8",
        "grpo.per_device_batch_size=8",
        f"max_steps={args.steps}",
        "save_steps=0",
        "eval_steps=0",
        f"output_dir={out}",
        "rewards=[tests.trainers.fixtures:digit_fraction]",
    ]
    if args.device == "cpu":
        recipe.append("run.device=cpu")
    config = CONFIG[engine]
    path = (
        live_config(folder / engine) if config is None else ROOT / "scripts" / "accelerate" / config
    )
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(path)]
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
        **{
            f"{k}_mb": [round(r[k], 1) for r in ranks if k in r]
            for k in ("tensors", "held", "peak", "setup_peak")
        },
        "step_s": statistics.median(steps) if steps else float("nan"),
    }


def count_parameters(args: argparse.Namespace) -> int:
    sys.path.insert(0, str(ROOT))
    from dllm_rl.models.tiny import build_tiny_llada

    lm = build_tiny_llada(
        0,
        d_model=args.d_model,
        n_layers=args.layers,
        n_heads=args.heads,
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
    print(
        f"tiny LLaDA d_model {args.d_model} x {args.layers} layers: {params / 1e6:.1f}M "
        f"parameters, fp32 AdamW: {16 * params / 2**20:.0f} MiB of weights + grads + state"
    )
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for engine in args.engines:
            print(f"running {engine} ...", flush=True)
            results.append(run_engine(engine, args, Path(tmp)))
    base = next((r["step_s"] for r in results if r["engine"] == "ddp"), None)
    print("\nMiB per rank (rank 0 / rank 1); RSS figures above the RSS after the imports:")
    print(
        "| engine | live tensors after step 1 | RSS held after step 1 | peak of steps 2+ "
        "| peak of setup + step 1 | step (s) | vs DDP |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in results:
        r["step_vs_ddp"] = r["step_s"] / base if base else None
        ratio = f"{r['step_vs_ddp']:.2f}x" if base else "-"
        keys = ("tensors", "held", "peak", "setup_peak")
        cells = [" / ".join(f"{m:.0f}" for m in r[f"{k}_mb"]) or "-" for k in keys]
        print(f"| {r['engine']} | {' | '.join(cells)} | {r['step_s']:.2f} | {ratio} |")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        record = {"parameters": params, "args": {k: str(v) for k, v in vars(args).items()}}
        args.out.write_text(json.dumps({**record, "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
