"""What an evaluation produces: one row per completion (``samples.jsonl``), each process's counters,
and the typed record written as ``results.json``.

``python -m dllm_rl.eval`` (:mod:`dllm_rl.eval`) runs the prompts; this module turns what it
gathered into the outputs.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dllm_rl.eval_config import EvalRecipe
from dllm_rl.rollout.config import SamplerConfig
from dllm_rl.run.build import ModelSource
from dllm_rl.run.cli import to_yaml


def nfe(s: SamplerConfig) -> int:
    """Network forwards per completion (two per step under classifier-free guidance)."""
    return s.plan.num_steps * (2 if s.cfg_scale > 0 else 1)


@dataclass
class ShardStats:
    """One process's counters (summed over processes by the main one)."""

    samples: int = 0
    correct: int = 0
    generate_s: float = 0.0
    grade_s: float = 0.0
    canvas_tokens: int = 0  # N x L positions decoded
    completion_tokens: int = 0  # tokens up to and including the first stop id
    forwards: int = 0


def sample_rows(
    batch: Any,
    tokenizer: Any,
    first_index: int,
    num_generations: int,
    accuracy_col: int,
    num_steps: int,
) -> list[dict[str, Any]]:
    """One JSON row per completion of a :class:`RolloutBatch` (index = global prompt index)."""
    traj = batch.trajectory
    ids = traj.completion_ids.cpu().tolist()  # [N, L]
    steps = traj.unmask_step.cpu().tolist()  # [N, L]
    logps = None if traj.step_logprobs is None else traj.step_logprobs.cpu().tolist()
    values = batch.rewards.values.tolist()  # [N, R]
    names = batch.rewards.names
    rows = []
    for i in range(len(batch)):
        reward_values = {n: (None if math.isnan(v) else v) for n, v in zip(names, values[i])}
        acc = values[i][accuracy_col]
        extra = {
            k: v[i]
            for k, v in batch.columns.items()
            if isinstance(v[i], (str, int, float)) and len(str(v[i])) <= 2000
        }
        rows.append(
            {
                "index": first_index + i // num_generations,
                "generation": i % num_generations,
                "prompt": batch.prompts[i],
                "completion": batch.completions[i],
                "reward": float(batch.rewards.total[i]),
                "rewards": reward_values,
                "correct": bool(not math.isnan(acc) and acc >= 1.0),
                "length": int(batch.lengths[i]),
                "num_steps": num_steps,
                "completion_ids": ids[i],
                "unmask_step": steps[i],
                "step_logprobs": None if logps is None else [round(x, 4) for x in logps[i]],
                "tokens": [tokenizer.decode([t]) for t in ids[i]],
                "columns": extra,
            }
        )
    return rows


@dataclass(frozen=True)
class Timing:
    """Wall times of one evaluation, in seconds."""

    wall_s: float  # the whole call
    load_s: float  # before the first prompt: the model, data and rewards
    eval_s: float  # the prompts


@dataclass
class EvalResults:
    """``results.json``: accuracy, per-reward means, the sampler's settings, throughput.

    The field names are the file's keys (scripts and tests read them).
    """

    recipe: str
    model: str
    model_source: str
    task: str
    split: str
    prompts: int
    num_generations: int
    samples: int
    accuracy: float
    accuracy_reward: str
    rewards: dict[str, float | None]
    reward: float
    mean_length: float
    sampler: dict[str, Any]
    seed: int
    processes: int
    wall_s: float
    load_s: float
    eval_s: float
    generate_s: float
    grade_s: float
    grading_share: float
    samples_per_s: float | None
    tokens_per_s: float | None
    completion_tokens_per_s: float | None
    forwards: int
    output_dir: str | None = field(default=None)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def summarize(
    recipe: EvalRecipe,
    name: str,
    source: ModelSource,
    sampler: SamplerConfig,
    rows: list[dict[str, Any]],
    shards: list[ShardStats],
    accuracy_reward: str,
    timing: Timing,
) -> EvalResults:
    """The record of one evaluation from its gathered rows and every process's counters."""
    total = ShardStats(
        **{f.name: sum(getattr(s, f.name) for s in shards) for f in dataclasses.fields(ShardStats)}
    )
    means = {}
    for reward in rows[0]["rewards"]:
        vals = [r["rewards"][reward] for r in rows if r["rewards"][reward] is not None]
        means[reward] = sum(vals) / len(vals) if vals else None
    busy = total.generate_s + total.grade_s
    eval_s = timing.eval_s

    def per_second(count: float) -> float | None:
        return count / eval_s if eval_s else None

    return EvalResults(
        recipe=name,
        model=recipe.model.name_or_path,
        model_source=source.describe,
        task=recipe.data.task,
        split=recipe.data.split,
        prompts=len(rows) // recipe.num_generations,
        num_generations=recipe.num_generations,
        samples=len(rows),
        accuracy=total.correct / max(1, total.samples),
        accuracy_reward=accuracy_reward,
        rewards=means,
        reward=sum(r["reward"] for r in rows) / len(rows),
        mean_length=total.completion_tokens / max(1, total.samples),
        sampler={
            **dataclasses.asdict(sampler),
            "num_steps": sampler.plan.num_steps,
            "counts": list(sampler.plan.counts),
            "nfe": nfe(sampler),
        },
        seed=recipe.seed,
        processes=len(shards),
        wall_s=timing.wall_s,
        load_s=timing.load_s,
        eval_s=eval_s,
        generate_s=total.generate_s,
        grade_s=total.grade_s,
        grading_share=total.grade_s / busy if busy else 0.0,
        samples_per_s=per_second(len(rows)),
        tokens_per_s=per_second(total.canvas_tokens),
        completion_tokens_per_s=per_second(total.completion_tokens),
        forwards=total.forwards,
    )


def write_outputs(
    recipe: EvalRecipe, name: str, results: EvalResults, rows: list[dict[str, Any]]
) -> Path:
    """``results.json``, ``config.yaml`` and ``samples.jsonl`` in the output folder (sets
    ``results.output_dir``)."""
    out = Path(recipe.output_dir or Path("outputs", "eval", name, time.strftime("%Y%m%d-%H%M%S")))
    out.mkdir(parents=True, exist_ok=True)
    results.output_dir = str(out)
    (out / "results.json").write_text(json.dumps(results.to_dict(), indent=2) + "\n")
    (out / "config.yaml").write_text(to_yaml(recipe))
    keep = rows if recipe.log_samples is None else rows[: recipe.log_samples]
    with open(out / "samples.jsonl", "w") as f:
        for row in keep:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return out
