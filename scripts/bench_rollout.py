#!/usr/bin/env python3
"""Rollout benchmark: decoding cost of step schedules on random-weight LLaDA shapes.

    python scripts/bench_rollout.py --preset tiny --gen-length 256 --batch-size 16 --out FILE.json
    python scripts/bench_rollout.py --preset llada-8b --device cuda --dtype bfloat16 --repeats 3
    python scripts/bench_rollout.py --preset tiny --vocab-size 32768 --batch-size 8 --gen-length 128

For each sampler configuration (d1's uniform setting, ascending step size, ascending + EOS early
rejection) it decodes one batch and records ``steps``, ``nfe_per_sample`` (model forwards each
sample went through), ``tokens_per_s`` (completion tokens per second), ``wall_s``,
``peak_mem_mb`` (CUDA: peak allocated since the configuration started; CPU: the process's peak
RSS so far, warm-up and earlier configurations included) and ``forward_share`` (fraction of the
wall time spent inside model forwards, timed with device synchronisation). What is left after the
forwards is the sampler's own overhead. A large ``--vocab-size`` on the tiny preset makes the
sampler's ``[B, K, V]`` working memory, not the weights, dominate the peak, as at 8B scale.

Random weights make the timings representative (the work per step does not depend on the
weights) but not the texts, which are noise.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a plain checkout

from dllm_rl.devices import pick_device  # noqa: E402
from dllm_rl.models.adapter import DiffusionLM  # noqa: E402
from dllm_rl.rollout import EosRejection, SamplerConfig, generate  # noqa: E402

# Benchmark sizes of the tiny model: larger than the test model (d_model 64, 2 layers) so that a
# step costs what a forward costs, small enough for ~1 minute on 2 CPU cores at batch 16, L=256.
TINY_BENCH = dict(d_model=128, n_layers=2, n_heads=4)
# LLaDA paper (Nie et al. 2025), Table 5: the 1B ablation model and LLaDA 8B.
LLADA_SHAPES = {
    "llada-1b": dict(d_model=2048, n_layers=22, n_heads=32, n_kv_heads=4, mlp_hidden_size=5634),
    "llada-8b": dict(d_model=4096, n_layers=32, n_heads=32, n_kv_heads=32, mlp_hidden_size=12288),
}
PRESETS = ("tiny", *LLADA_SHAPES)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def build_model(
    preset: str, device: torch.device, dtype: torch.dtype, vocab_size: int | None = None
) -> DiffusionLM:
    """A random-weight model of the preset's shape on ``device`` (``vocab_size``: tiny only)."""
    if preset == "tiny":
        from dllm_rl.models.tiny import TINY_VOCAB_SIZE, build_tiny_llada

        vocab = vocab_size or TINY_VOCAB_SIZE
        return _to(build_tiny_llada(seed=0, dtype=dtype, vocab_size=vocab, **TINY_BENCH), device)
    from dllm_rl.models.llada import LLaDAConfig, LLaDAModelLM, llada_adapter

    config = LLaDAConfig(**LLADA_SHAPES[preset], vocab_size=126464, embedding_size=126464)
    # Built directly on the device and in the target dtype: building in fp32 and casting would
    # need 32 GB + 16 GB of device memory at 8B, more than a 40 or 48 GB card has.
    # The weights are random and unseeded: only their shapes matter for timing.
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = LLaDAModelLM(config).eval()
    finally:
        torch.set_default_dtype(previous)
    return llada_adapter(model)


def _to(lm: DiffusionLM, device: torch.device) -> DiffusionLM:
    lm.model.to(device)
    return lm


def bench_configs(gen_length: int, temperature: float) -> dict[str, SamplerConfig]:
    """d1's setting (uniform, L/2 steps, blocks of 32), ASS in one block, ASS + power EOSER."""
    block = 32 if gen_length % 32 == 0 else gen_length
    common = dict(gen_length=gen_length, temperature=temperature)
    return {
        "uniform (d1)": SamplerConfig(steps=gen_length // 2, block_length=block, **common),
        "ascending": SamplerConfig(schedule="ascending", **common),
        "ascending+eoser": SamplerConfig(
            schedule="ascending",
            eos_rejection=EosRejection(enabled=True, gamma_schedule="power"),
            **common,
        ),
    }


def random_prompts(
    lm: DiffusionLM, batch: int, length: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded random prompts of lengths in [length/2, length]: ``[B, P]`` ids and mask."""
    low, high = (7, 104) if lm.tokenizer is not None else (1000, 100_000)  # characters / words
    ids = torch.randint(low, high, (batch, length), generator=generator)
    real = torch.randint(length // 2, length + 1, (batch,), generator=generator)  # [B]
    mask = (torch.arange(length) >= (length - real)[:, None]).long()  # [B, P] left padding
    ids = torch.where(mask.bool(), ids, lm.ids.pad)
    return ids.to(lm.device), mask.to(lm.device)


@dataclass
class ForwardTimer:
    """Wraps ``lm.logits`` to count forwards (per sample) and time them."""

    lm: DiffusionLM
    batch: int
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    sample_forwards: float = 0.0

    def __post_init__(self) -> None:
        self.inner = self.lm.logits
        self.cuda = self.lm.device.type == "cuda"
        self.lm.logits = self  # instance attribute shadows the method

    def __call__(self, input_ids: torch.Tensor, *args, **kwargs):
        self._sync()
        start, cpu_start = time.perf_counter(), time.process_time()
        out = self.inner(input_ids, *args, **kwargs)  # attention_mask, positions
        self._sync()
        self.seconds += time.perf_counter() - start
        self.cpu_seconds += time.process_time() - cpu_start
        self.sample_forwards += input_ids.shape[0] / self.batch  # a CFG call counts twice
        return out

    def _sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def reset(self) -> None:
        self.seconds, self.cpu_seconds, self.sample_forwards = 0.0, 0.0, 0.0


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def run_config(
    timer: ForwardTimer,
    prompts: tuple[torch.Tensor, torch.Tensor],
    config: SamplerConfig,
    repeats: int,
) -> dict:
    """Decode the batch ``repeats`` times; report the median run."""
    lm, device = timer.lm, timer.lm.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    runs = []
    for r in range(repeats):
        generator = torch.Generator(device=device).manual_seed(r)
        timer.reset()
        if device.type == "cuda":
            torch.cuda.synchronize()
        start, cpu_start = time.perf_counter(), time.process_time()
        traj = generate(lm, *prompts, config, generator)
        if device.type == "cuda":
            torch.cuda.synchronize()
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        runs.append((wall, timer.seconds, timer.sample_forwards, cpu, timer.cpu_seconds))
    traj.validate()
    wall, forward, nfe, cpu, forward_cpu = sorted(runs)[len(runs) // 2]
    batch, length = traj.completion_ids.shape
    return {
        "schedule": config.schedule,
        "steps": config.plan.num_steps,
        "num_blocks": config.plan.num_blocks,
        "eos_rejection": config.eos_rejection.enabled,
        "nfe_per_sample": nfe,
        "tokens_per_s": batch * length / wall,
        "wall_s": wall,
        "forward_s": forward,
        "forward_share": forward / wall,
        # Host CPU time of the process (all threads): on a shared CPU it is less sensitive to
        # other jobs than wall time.
        "cpu_s": cpu,
        "forward_share_cpu": forward_cpu / cpu if cpu > 0 else float("nan"),
        "peak_mem_mb": peak_memory_mb(device),
        "wall_s_all": [r[0] for r in runs],
        "wall_s_spread": statistics.pstdev([r[0] for r in runs]) if len(runs) > 1 else 0.0,
    }


def print_table(results: dict[str, dict]) -> None:
    cols = ("steps", "nfe_per_sample", "tokens_per_s", "wall_s", "forward_share")
    cols += ("forward_share_cpu", "peak_mem_mb")
    head = f"{'config':<18}" + "".join(f"{c:>18}" for c in cols)
    print(head, "-" * len(head), sep="\n")
    for name, row in results.items():
        cells = "".join(
            f"{row[c]:>18.3f}" if isinstance(row[c], float) else f"{row[c]:>18}" for c in cols
        )
        print(f"{name:<18}{cells}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=PRESETS, default="tiny")
    parser.add_argument("--gen-length", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument(
        "--prompt-length", type=int, default=32, help="longest prompt (left-padded)"
    )
    parser.add_argument(
        "--vocab-size",
        type=int,
        default=None,
        help="tiny preset only: vocabulary size (default 128), e.g. 126464 to see the cost of "
        "LLaDA's vocabulary on the sampler's working memory without an 8B model",
    )
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps, npu")
    parser.add_argument(
        "--dtype", choices=DTYPES, default=None, help="default: fp32 CPU, bf16 else"
    )
    parser.add_argument("--repeats", type=int, default=1, help="runs per configuration (median)")
    parser.add_argument("--configs", default=None, help="comma-separated subset of the configs")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.vocab_size is not None and args.preset != "tiny":
        raise SystemExit(
            f"--vocab-size applies to the tiny preset only; {args.preset} has LLaDA's 126464"
        )
    device = pick_device(args.device)
    dtype = DTYPES[args.dtype or ("float32" if device.type == "cpu" else "bfloat16")]
    configs = bench_configs(args.gen_length, args.temperature)
    if args.configs:
        wanted = [c.strip() for c in args.configs.split(",")]
        unknown = [c for c in wanted if c not in configs]
        if unknown:
            raise SystemExit(f"unknown configs {unknown}; choose from {list(configs)}")
        configs = {c: configs[c] for c in wanted}
    lm = build_model(args.preset, device, dtype, args.vocab_size)
    prompts = random_prompts(
        lm, args.batch_size, args.prompt_length, torch.Generator().manual_seed(0)
    )
    timer = ForwardTimer(lm, args.batch_size)
    warmup = SamplerConfig(gen_length=args.gen_length, schedule="ascending")
    generate(lm, *prompts, warmup, torch.Generator(device=device).manual_seed(0))  # kernels, caches
    results = {}
    for name, config in tqdm(configs.items(), desc=f"bench {args.preset}", unit="config"):
        results[name] = run_config(timer, prompts, config, args.repeats)
    print_table(results)
    report = {
        "preset": args.preset,
        "model_overrides": TINY_BENCH if args.preset == "tiny" else LLADA_SHAPES[args.preset],
        "device": str(device),
        "dtype": str(dtype).removeprefix("torch."),
        "vocab_size": lm.model.get_input_embeddings().num_embeddings,
        "batch_size": args.batch_size,
        "gen_length": args.gen_length,
        "prompt_length": args.prompt_length,
        "temperature": args.temperature,
        "repeats": args.repeats,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "host": platform.node(),
        "results": results,
    }
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
