#!/usr/bin/env python3
"""RL training-step benchmark: cost and memory of one GRPO step per estimator and schedule.

    python scripts/bench_train.py --preset tiny --out FILE.json
    python scripts/bench_train.py --preset llada-8b --device cuda --dtype bfloat16 --out FILE.json
    python scripts/bench_train.py --preset quick                      # seconds; the test's setting

Each configuration runs one full :meth:`GRPOTrainer.step` (rollout, reference pass, ``mu``
updates) in a fresh subprocess, on a random-weight model and random prompts with a random reward:

* ``trajectory ass``: CJ-GRPO, ascending step sizes, S = floor(log2 L) steps (8 at L = 256),
  backward per step;
* ``trajectory 1-step``: CJ-GRPO, one decoding step (uniform, S = 1), the memory floor;
* ``trajectory all-graphs``: as ``trajectory ass`` with ``steps_per_backward = S``: all S graphs
  held until one backward, as the CJ-GRPO reference code does;
* ``one_step d1``: d1's diffu-GRPO on d1's rollout (uniform, L/2 steps, blocks of 32);
* ``spg d1``, ``wd1 d1``, ``coupled d1``: SPG (mixture bound, 2 block-wise draws), wd1 and
  coupled-GRPO (with the fully masked pass) on the same rollout; SPG and wd1 have no KL term, so
  they run with beta 0 whatever ``--beta`` says (no reference pass).

``peak_mem_mb`` is the peak of the training phase (from the rollout's return to the end of the
step: reference pass, forwards, backwards, optimizer steps) above the memory held when it starts
(``baseline_mem_mb``: weights, optimizer state, the rollout buffer). CUDA: ``max_memory_allocated``
after ``reset_peak_memory_stats``. CPU: the kernel's peak RSS (``VmHWM``, reset through
``/proc/self/clear_refs``; a thread sampling ``VmRSS`` where that is refused) minus ``VmRSS`` at the
start; the subprocess runs with a fixed glibc mmap threshold so that freed tensors go back to the
kernel instead of hiding in malloc's free lists. The optimizer state is allocated before the
baseline (a zero-gradient AdamW step, which leaves the weights unchanged), so the figure is the
step's working memory: activations, gradients and transients.

``forwards_per_step`` is the trainer's own count (``metrics["forwards"]``, batch forwards);
``reference_forwards_per_step`` is S(3 + mu), what the CJ-GRPO reference code spends at the same
settings (S rollout, S old log-probs, S reference, mu x S policy). Timings are the trainer's
(``time/train_s`` includes the reference pass). Random weights make timings and memory
representative, not the texts or rewards.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a plain checkout
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_rollout's shapes and builder

from bench_rollout import DTYPES, LLADA_SHAPES  # noqa: E402
from bench_rollout import build_model as build_llada  # noqa: E402

from dllm_rl.devices import pick_device  # noqa: E402
from dllm_rl.models.adapter import DiffusionLM  # noqa: E402
from dllm_rl.rewards.registry import RewardBatch  # noqa: E402
from dllm_rl.rollout.config import SamplerConfig  # noqa: E402
from dllm_rl.rollout.worker import RolloutBatch, first_stop_lengths, generate_chunks  # noqa: E402
from dllm_rl.run.build import apply_lora, build_optimizer, make_reference  # noqa: E402
from dllm_rl.run.cli import build_config  # noqa: E402
from dllm_rl.run.rundir import RunDir  # noqa: E402
from dllm_rl.trainers.common import Session  # noqa: E402
from dllm_rl.trainers.grpo import GRPOTrainer  # noqa: E402
from dllm_rl.trainers.grpo_config import GRPOConfig  # noqa: E402

# Tiny shapes: wide enough that the saved activations of one training forward (8 completions x
# (32 + 256) positions x 2 layers) are ~100 MB, far above the weights (~0.5 M parameters), and
# small enough that d1's 128-step rollout stays within a minute on 2 CPU cores.
TINY_SHAPES = {
    "quick": dict(d_model=32, n_layers=1, n_heads=2),
    "tiny": dict(d_model=128, n_layers=2, n_heads=4, mlp_hidden_size=512),
}
PRESETS = (*TINY_SHAPES, *LLADA_SHAPES)
# Per-preset defaults of the batch: prompts x G completions, L, P.
DEFAULTS = {
    "quick": dict(prompts=2, num_generations=2, gen_length=16, prompt_length=8),
    "tiny": dict(prompts=2, num_generations=4, gen_length=256, prompt_length=32),
    "llada-1b": dict(prompts=2, num_generations=4, gen_length=256, prompt_length=64),
    "llada-8b": dict(prompts=1, num_generations=4, gen_length=256, prompt_length=64),
}
CONFIGS = (
    "trajectory ass",
    "trajectory 1-step",
    "trajectory all-graphs",
    "one_step d1",
    "spg d1",
    "wd1 d1",
    "coupled d1",
)
# glibc: serve every allocation above 128 KiB with mmap and never raise that threshold, so a freed
# tensor leaves the RSS at once (the dynamic threshold would recycle it in the heap).
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"}


# ----------------------------------------------------------------------------- configurations
def configuration(name: str, gen_length: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``rollout`` and ``grpo`` sections of one configuration (on top of :func:`grpo_config`)."""
    ass = dict(schedule="ascending")
    s_ass = SamplerConfig(gen_length=gen_length, schedule="ascending").plan.num_steps  # log2 L
    if name == "trajectory ass":
        return ass, dict(estimator="trajectory", steps_per_backward=1)
    if name == "trajectory 1-step":
        return dict(schedule="uniform", steps=1), dict(estimator="trajectory", steps_per_backward=1)
    if name == "trajectory all-graphs":
        return ass, dict(estimator="trajectory", steps_per_backward=s_ass)
    block = 32 if gen_length % 32 == 0 else gen_length
    d1_rollout = dict(
        schedule="uniform", steps=gen_length // 2, block_length=block, temperature=0.9
    )
    if name == "one_step d1":
        return d1_rollout, dict(estimator="one_step", p_mask_prompt=0.15)
    if name == "spg d1":
        spg = dict(bound="mix", num_t=2, eubo_beta=1.5, mix_weight=0.5)
        return d1_rollout, dict(estimator="spg", spg=spg, beta=0.0, loss_type="token_mean")
    if name == "wd1 d1":
        return d1_rollout, dict(estimator="wd1", beta=0.0, loss_type="sequence_sum")
    if name == "coupled d1":
        return d1_rollout, dict(estimator="coupled", coupled=dict(full_mask=True))
    raise SystemExit(f"unknown configuration {name!r}; choose from {list(CONFIGS)}")


def grpo_config(args: argparse.Namespace, name: str) -> GRPOConfig:
    """The validated :class:`GRPOConfig` of configuration ``name`` at the benchmark's sizes."""
    rollout, grpo = configuration(name, args.gen_length)
    batch = args.prompts * args.num_generations
    data = {
        "run": {"seed": args.seed, "max_steps": 1},
        "model": {"lora": {"enabled": args.lora}},
        "rewards": ["random"],  # not resolved: the synthetic worker draws the rewards
        "rollout": {"gen_length": args.gen_length, "temperature": 1.0, **rollout},
        "grpo": {
            "prompts_per_step": args.prompts,
            "num_generations": args.num_generations,
            "per_device_batch_size": args.micro_batch or batch,
            "generation_batch_size": args.generation_batch or batch,
            "num_iterations": args.num_iterations,
            "beta": args.beta,
            "epsilon": 0.2,
            "scale_rewards": "group",
            "loss_type": "step_mean",
            "loss_positions": "all",
            **grpo,
        },
    }
    config = build_config(GRPOConfig, data)
    config.check_batch(1)
    return config


# ----------------------------------------------------------------------------- the rollout side
@dataclass
class SyntheticWorker:
    """:class:`~dllm_rl.rollout.worker.RolloutWorker`'s interface on random prompt ids.

    Every record's ``prompt`` is its token ids (``[P]``, no padding); the reward of
    each completion is uniform noise from a seeded generator: the benchmark needs non-zero
    advantages, not meaningful ones. Works for models without a tokenizer (the LLaDA presets).
    """

    model: DiffusionLM
    generation_batch_size: int
    seed: int = 0
    truncated_prompts: int = 0  # the worker interface's count; random ids are never truncated

    def prompt_tokens(self, prompts: list[Any]) -> list[list[int]]:
        return [list(p) for p in prompts]

    @torch.no_grad()
    def rollout(
        self, records, num_generations, sampler, chunk_generator, group_offset=0, prompt_width=None
    ) -> RolloutBatch:
        g, device = num_generations, self.model.device
        ids = torch.stack([torch.as_tensor(r["prompt"]) for r in records]).repeat_interleave(g, 0)
        mask = torch.ones_like(ids)  # [N, P]
        self.model.model.eval()
        _sync(device)
        start = time.perf_counter()
        trajectory, chunks = generate_chunks(
            self.model,
            ids,
            mask,
            sampler,
            chunk_generator,
            self.generation_batch_size,
            group_offset * g,
        )
        _sync(device)
        rollout_s = time.perf_counter() - start
        n = len(ids)
        reward = torch.rand(n, 1, generator=torch.Generator().manual_seed(self.seed))  # [N, 1]
        lengths = first_stop_lengths(trajectory.completion_ids, self.model.ids.stop_ids)
        return RolloutBatch(
            trajectory,
            torch.arange(len(records)).repeat_interleave(g) + group_offset,
            [""] * n,
            [""] * n,
            lengths.cpu(),
            RewardBatch(["random"], [1.0], reward, reward[:, 0].clone()),
            rollout_s,
            0.0,
            chunks * sampler.plan.num_steps,
        )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ----------------------------------------------------------------------------- memory
def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


class PhaseMemory:
    """Peak memory of a phase above the memory held when it starts, in MiB (see the docstring)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.base = 0
        self._sampler: threading.Thread | None = None
        self._peak = 0
        self._stop = threading.Event()
        self.method = "cuda max_memory_allocated" if device.type == "cuda" else "VmHWM"

    def start(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # reset VmHWM to the current RSS
            # Read after the reset: VmHWM >= every later VmRSS, so the peak is never below it.
            self.base = _status_kb("VmRSS") * 1024
        except OSError:
            self.base = _status_kb("VmRSS") * 1024
            self.method = "VmRSS sampled every 2 ms"
            self._peak, self._stop = self.base, threading.Event()
            self._sampler = threading.Thread(target=self._sample, daemon=True)
            self._sampler.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            self._peak = max(self._peak, _status_kb("VmRSS") * 1024)

    def stop(self) -> tuple[float, float]:
        """``(peak above the start, memory at the start)`` in MiB."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        elif self._sampler is not None:
            self._stop.set()
            self._sampler.join()
            self._sampler = None
            peak = max(self._peak, _status_kb("VmRSS") * 1024)
        else:
            peak = _status_kb("VmHWM") * 1024
        # The kernel's RSS counters lag by up to a few hundred KiB (per-thread batching), so a
        # phase that allocated nothing can read slightly below its start: report that as 0.
        return max(0.0, peak - self.base) / 2**20, self.base / 2**20


# ----------------------------------------------------------------------------- one configuration
def build_policy(
    args: argparse.Namespace, device: torch.device, dtype: torch.dtype, config: GRPOConfig
) -> DiffusionLM:
    if args.preset in TINY_SHAPES:
        from dllm_rl.models.tiny import build_tiny_llada

        lm = build_tiny_llada(seed=0, dtype=dtype, **TINY_SHAPES[args.preset])
        lm.model.to(device)
    else:
        lm = build_llada(args.preset, device, dtype)
    if config.model.lora.enabled:
        lm.model = apply_lora(lm.model, config.model, lm.family)
    return lm


def warm_up(session: Session, canvas: int) -> None:
    """One forward/backward (kernels, thread pools) and a zero-gradient AdamW step, so that the
    optimizer state exists before the baseline; with zero gradients AdamW moves no weight."""
    lm = session.policy
    ids = torch.full((2, canvas), lm.ids.mask, dtype=torch.long, device=lm.device)
    lm.model.train()
    lm.logits(
        ids, positions=torch.zeros(2, 1, dtype=torch.long, device=lm.device)
    ).float().sum().backward()
    for p in session.trainable():
        p.grad = torch.zeros_like(p)
    session.optimizer.step()
    session.optimizer.zero_grad(set_to_none=True)
    lm.model.eval()


def run_configuration(args: argparse.Namespace, name: str) -> dict[str, Any]:
    """One training step of configuration ``name`` in this process; its record."""
    device = pick_device(args.device)
    dtype = DTYPES[args.dtype or ("float32" if device.type == "cpu" else "bfloat16")]
    config = grpo_config(args, name)
    g = config.grpo
    policy = build_policy(args, device, dtype, config)
    optimizer, scheduler = build_optimizer(policy.model, config.training, g.num_iterations)
    process = SimpleNamespace(process_index=0, num_processes=1, is_main_process=True, device=device)
    session = Session(process, policy, optimizer, scheduler, RunDir(Path(args.run_dir)), config)
    draw = torch.Generator().manual_seed(args.seed)
    low, high = (7, 104) if policy.tokenizer is not None else (1000, 100_000)  # chars / words
    shape = (args.prompts, args.prompt_length)
    records = [{"prompt": row} for row in torch.randint(low, high, shape, generator=draw).tolist()]
    worker = SyntheticWorker(policy, g.generation_batch_size, args.seed)
    trainer = GRPOTrainer(
        config,
        session,
        worker,
        config.check_batch(1),
        records,
        reference=make_reference(policy, g.beta > 0),
    )
    warm_up(session, args.prompt_length + args.gen_length)

    memory = PhaseMemory(device)
    phases: dict[str, tuple[float, float]] = {}
    rollout = trainer.rollout

    def timed_rollout(step: int, indices: list[int]) -> RolloutBatch:
        batch = rollout(step, indices)
        phases["rollout"] = memory.stop()
        memory.start()  # the training phase starts when the rollout returns
        return batch

    trainer.rollout = timed_rollout  # instance attribute shadows the method
    sampler: SamplerConfig = config.rollout
    s, mu, traj = sampler.plan.num_steps, g.num_iterations, g.estimator == "trajectory"
    record: dict[str, Any] = {
        "configuration": name,
        "estimator": g.estimator,
        "schedule": sampler.schedule,
        "steps": s,
        "block_length": sampler.block_length or sampler.gen_length,
        # trajectory: one backward per decoding step (None: one_step has a single forward)
        "per_step_backward": g.steps_per_backward == 1 if traj else None,
        "steps_per_backward": g.steps_per_backward if traj else None,
        "gen_length": sampler.gen_length,
        "batch": args.prompts * args.num_generations,
    }
    memory.start()
    cpu_start = time.process_time()
    try:
        metrics, batch = trainer.step(1, list(range(args.prompts)))
    except torch.OutOfMemoryError as e:  # all graphs held at 8B: the reference code's failure
        return {**record, "oom": True, "error": str(e).splitlines()[0]}
    peak, base = memory.stop()
    cpu_s = time.process_time() - cpu_start
    record.update(
        {
            "forwards_per_step": metrics["forwards"],
            "rollout_forwards": batch.forwards,
            "reference_forwards_per_step": s * (3 + mu) if traj else None,
            "rollout_s": metrics["time/rollout_s"],
            "reference_s": metrics["time/reference_s"],
            "train_s": metrics["time/train_s"],
            "step_s": metrics["time/step_s"],
            # CPU time of the process over the step (all threads): on a shared CPU it moves
            # less with the other jobs than the wall times above.
            "step_cpu_s": cpu_s,
            "peak_mem_mb": peak,
            "baseline_mem_mb": base,
            "rollout_peak_mem_mb": phases["rollout"][0],
            "memory_method": memory.method,
            "tokens_per_s": metrics["tokens_per_s"],
            "num_iterations": mu,
            "beta": g.beta,
            "per_device_batch_size": g.per_device_batch_size,
            "generation_batch_size": g.generation_batch_size,
            "loss": metrics["loss"],
            "grad_norm": metrics["grad_norm"],
        }
    )
    return record


# ----------------------------------------------------------------------------- the driver
def run_isolated(argv: list[str], name: str) -> dict[str, Any]:
    """``name`` in a fresh Python process (its own memory baseline and peak); its record."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "record.json"
        command = [
            sys.executable,
            str(Path(__file__).resolve()),
            *argv,
            "--child",
            name,
            "--child-out",
            str(out),
        ]
        start = time.perf_counter()
        proc = subprocess.run(
            command, env={**os.environ, **MALLOC_ENV}, capture_output=True, text=True
        )
        wall = time.perf_counter() - start
        if proc.returncode != 0 or not out.is_file():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
            return {"configuration": name, "error": f"exit {proc.returncode}: " + " | ".join(tail)}
        return {**json.loads(out.read_text()), "process_wall_s": wall}


def print_table(records: list[dict[str, Any]]) -> None:
    cols = (
        "steps",
        "beta",
        "forwards_per_step",
        "reference_forwards_per_step",
        "rollout_s",
        "train_s",
        "peak_mem_mb",
        "tokens_per_s",
    )
    head = f"{'configuration':<24}" + "".join(f"{c.replace('_per_step', ''):>20}" for c in cols)
    print(head, "-" * len(head), sep="\n")
    for row in records:
        if "error" in row:
            print(f"{row['configuration']:<24}{row['error']}")
            continue
        cells = "".join(
            f"{row[c]:>20.3f}" if isinstance(row[c], float) else f"{row[c]!s:>20}" for c in cols
        )
        print(f"{row['configuration']:<24}{cells}")


def ratios(records: list[dict[str, Any]]) -> dict[str, float | None]:
    """Peak memory S steps vs 1 step (per-step backward) and all graphs vs per-step; step time
    CJ-GRPO + ASS vs d1's setting."""
    peak = "peak_mem_mb"
    return {
        "peak_ass_over_1_step": _ratio(records, peak, "trajectory ass", "trajectory 1-step"),
        "peak_all_graphs_over_ass": _ratio(
            records, peak, "trajectory all-graphs", "trajectory ass"
        ),
        "step_s_ass_over_d1": _ratio(records, "step_s", "trajectory ass", "one_step d1"),
        "step_cpu_s_ass_over_d1": _ratio(records, "step_cpu_s", "trajectory ass", "one_step d1"),
    }


def _ratio(records: list[dict[str, Any]], key: str, a: str, b: str) -> float | None:
    by = {r["configuration"]: r.get(key) for r in records}
    x, y = by.get(a), by.get(b)
    return x / y if x and y else None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=PRESETS, default="tiny")
    parser.add_argument("--prompts", type=int, default=None, help="prompts per step")
    parser.add_argument("--num-generations", type=int, default=None, help="G per prompt")
    parser.add_argument("--gen-length", type=int, default=None, help="L")
    parser.add_argument("--prompt-length", type=int, default=None, help="P (no padding)")
    parser.add_argument("--num-iterations", type=int, default=1, help="mu")
    parser.add_argument("--beta", type=float, default=0.04, help="KL weight (0: no reference)")
    parser.add_argument(
        "--micro-batch", type=int, default=None, help="per_device_batch_size (default: the batch)"
    )
    parser.add_argument(
        "--generation-batch", type=int, default=None, help="generation_batch_size (default: all)"
    )
    parser.add_argument(
        "--lora",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="LoRA r 128 / alpha 64 (default: on for the LLaDA presets, off for the tiny ones)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps, npu")
    parser.add_argument(
        "--dtype", choices=DTYPES, default=None, help="default: fp32 CPU, bf16 else"
    )
    parser.add_argument("--configs", default=None, help=f"comma-separated subset of {CONFIGS}")
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="run every configuration in this process (faster; memory figures not isolated)",
    )
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child-out", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for key, value in DEFAULTS[args.preset].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.lora is None:
        args.lora = args.preset in LLADA_SHAPES
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child is not None:  # one configuration, inside its own process
        with tempfile.TemporaryDirectory() as tmp:
            args.run_dir = tmp
            record = run_configuration(args, args.child)
        args.child_out.write_text(json.dumps(record) + "\n")
        return record
    names = list(CONFIGS)
    if args.configs:
        names = [c.strip() for c in args.configs.split(",")]
        unknown = [c for c in names if c not in CONFIGS]
        if unknown:
            raise SystemExit(f"unknown configs {unknown}; choose from {list(CONFIGS)}")
    for name in names:
        grpo_config(args, name)  # a bad size fails here, before any process starts
    device = pick_device(args.device)
    records = []
    for name in names:
        if args.in_process:
            with tempfile.TemporaryDirectory() as tmp:
                args.run_dir = tmp
                records.append(run_configuration(args, name))
        else:
            records.append(run_isolated(argv, name))
        print(f"done: {name}", file=sys.stderr, flush=True)
    print_table(records)
    summary = ratios(records)
    print(json.dumps(summary, indent=2))
    report = {
        "preset": args.preset,
        "model_overrides": TINY_SHAPES.get(args.preset) or LLADA_SHAPES[args.preset],
        "device": str(device),
        "dtype": args.dtype or ("float32" if device.type == "cpu" else "bfloat16"),
        "lora": args.lora,
        "prompts": args.prompts,
        "num_generations": args.num_generations,
        "gen_length": args.gen_length,
        "prompt_length": args.prompt_length,
        "isolated": not args.in_process,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "host": platform.node(),
        "load_average": os.getloadavg(),  # timings on a shared CPU move with the other jobs
        "summary": summary,
        "results": records,
    }
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
