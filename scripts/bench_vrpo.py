#!/usr/bin/env python3
"""VRPO step benchmark: step time, peak memory and ELBO throughput per ELBO budget.

    python scripts/bench_vrpo.py --out FILE.json                # tiny preset, n = 1, 4, 8
    python scripts/bench_vrpo.py --budgets 1,8 --steps 2 --out FILE.json

Each budget (n = n_t draws per response, n_yt = 1, antithetic) runs in a fresh subprocess: a
tiny random-weight LLaDA, real HH-RLHF pairs (truncated to ``--max-length`` characters: the tiny
tokenizer is character-level), one warm-up step, then ``--steps`` measured steps of the real
:class:`~dllm_rl.trainers.preference.PreferenceTrainer`. The n draws of every response are one
batched forward (chosen and rejected together), so memory grows with n while the number of
forwards does not. ``peak_mem_mb`` is the peak RSS of the measured steps above the RSS at their
start (see ``bench_train.PhaseMemory``); ``elbo_tokens_per_s`` counts the masked copies of the
response tokens scored by the policy per second of step time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

SHAPE = {"d_model": 128, "n_layers": 2, "n_heads": 4, "mlp_hidden_size": 512}


def run_budget(args: argparse.Namespace) -> dict[str, Any]:
    """The measured steps of one budget, in this process."""
    import torch
    from bench_train import PhaseMemory

    from dllm_rl.run.cli import build_config
    from dllm_rl.trainers.preference import build_trainer
    from dllm_rl.trainers.preference_config import PreferenceConfig

    torch.set_num_threads(args.threads)
    config = build_config(
        PreferenceConfig,
        {
            "algorithm": "vrpo",
            "run": {"max_steps": args.steps + 1, "output_dir": args.run_dir, "device": "cpu"},
            "model": {"name_or_path": "tiny", "tiny": SHAPE},
            "data": {
                "dataset": "hh_rlhf",
                "limit": 8 * (args.steps + 1) * args.pairs,
                "max_prompt_length": args.max_length // 2,
                "max_length": args.max_length,
            },
            "preference": {
                "pairs_per_step": args.pairs,
                "per_device_batch_size": args.pairs,
                "n_t": args.budget,
                "n_yt": 1,
                "antithetic": True,
                "sft_weight": 0.05,
            },
        },
    )
    trainer = build_trainer(config, "bench", [])
    pairs = list(range(args.pairs))
    trainer.step(1, pairs)  # warm-up: kernels, optimizer state
    memory = PhaseMemory(torch.device("cpu"))
    memory.start()
    rows = [
        trainer.step(2 + i, [(2 + i) * args.pairs + j for j in pairs]) for i in range(args.steps)
    ]
    peak, base = memory.stop()
    return {
        "n_t": args.budget,
        "n_yt": 1,
        "antithetic": True,
        "pairs_per_step": args.pairs,
        "step_s": statistics.median(r["time/step_s"] for r in rows),
        "elbo_tokens_per_s": statistics.median(r["elbo_tokens_per_s"] for r in rows),
        "peak_mem_mb": peak,
        "baseline_mem_mb": base,
        "memory_method": memory.method,
        "steps": args.steps,
    }


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", default="1,4,8", help="comma-separated n_t values")
    parser.add_argument("--pairs", type=int, default=8, help="pairs per step")
    parser.add_argument("--steps", type=int, default=3, help="measured steps per budget")
    parser.add_argument("--max-length", type=int, default=128, help="prompt + response tokens")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None, help="write the records as JSON here")
    parser.add_argument("--budget", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--run-dir", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.budget is not None:  # the subprocess of one budget
        print(json.dumps(run_budget(args)))
        return []
    from bench_train import MALLOC_ENV

    records = []
    for budget in (int(b) for b in args.budgets.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [
                sys.executable,
                __file__,
                "--budget",
                str(budget),
                "--run-dir",
                tmp,
                "--pairs",
                str(args.pairs),
                "--steps",
                str(args.steps),
                "--max-length",
                str(args.max_length),
                "--threads",
                str(args.threads),
            ]
            env = {**os.environ, **MALLOC_ENV}
            done = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if done.returncode != 0:
                raise RuntimeError(f"budget {budget} failed:\n{done.stderr[-3000:]}")
            records.append(json.loads(done.stdout.strip().splitlines()[-1]))
        r = records[-1]
        print(
            f"n = {r['n_t']:>2} x 1: step {r['step_s']:.2f} s, peak {r['peak_mem_mb']:.1f} MiB, "
            f"ELBO {r['elbo_tokens_per_s']:.0f} tokens/s",
            flush=True,
        )
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(records, indent=2) + "\n")
    return records


if __name__ == "__main__":
    main()
