"""``python -m dllm_rl.eval recipe=NAME key.sub=value ...``: accuracy with the trainer's own graders.

    python -m dllm_rl.eval recipe=eval_tiny                                   # CPU, seconds
    python -m dllm_rl.eval recipe=eval_d1_gsm8k model.name_or_path=runs/cj_grpo_gsm8k/2026-...
    accelerate launch -m dllm_rl.eval recipe=eval_cj_gsm8k limit=200 batch_size=32
    python -m dllm_rl.eval recipe=eval_d1_gsm8k dry_run=true                  # no weights loaded

The prompts of a task's test split go through :meth:`RolloutWorker.rollout`, the trainer's rollout
path, so the sampler and the reward functions are the very ones training used. ``model.name_or_path``
may be a hub id, a local checkpoint, a run directory (its latest checkpoint) or a checkpoint folder;
a checkpoint holding a LoRA adapter is loaded onto its base. With several processes each takes a
contiguous shard (:func:`~dllm_rl.trainers.common.shard_bounds`) and the main process gathers
the rows by index, so no prompt is dropped or counted twice when the set does not divide evenly.

Writes ``OUTPUT_DIR/results.json`` (accuracy, per-reward means, sampler settings, throughput) and
``OUTPUT_DIR/samples.jsonl`` (one row per completion, with the unmask order; the trajectory viewer
reads it: ``python -m dllm_rl.viz.viewer OUTPUT_DIR/samples.jsonl``).

This module is the run and the command; the evaluation's other parts each have their module:
the schema and reading it from the command line (:mod:`dllm_rl.eval_config`), the dry run
(:mod:`dllm_rl.eval_check`), the rows, counters and ``results.json`` (:mod:`dllm_rl.eval_results`),
and where the model comes from (:func:`dllm_rl.run.build.resolve_model`, shared with training).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

if __package__ in (None, ""):  # run as a file: find the package
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dllm_rl.config import ModelConfig  # noqa: E402
from dllm_rl.eval_check import check, load_records  # noqa: E402
from dllm_rl.eval_config import EvalDataConfig, EvalRecipe, resolve  # noqa: E402
from dllm_rl.eval_results import (  # noqa: E402
    EvalResults,
    ShardStats,
    Timing,
    sample_rows,
    summarize,
    write_outputs,
)
from dllm_rl.progress import progress_bar, quiet_library_bars  # noqa: E402
from dllm_rl.run.build import ModelSource, resolve_model  # noqa: E402
from dllm_rl.run.cli import ConfigError, help_text, recipe_names, to_yaml  # noqa: E402

logger = logging.getLogger("dllm_rl.eval")


# ----------------------------------------------------------------------------- the model
def load_eval_model(config: ModelConfig, device: Any) -> tuple[Any, ModelSource]:
    """The model to evaluate (eval mode; a LoRA checkpoint merged onto its base), and where it
    came from (:func:`~dllm_rl.run.build.resolve_model`)."""
    from dllm_rl.run.build import load_policy

    source = resolve_model(config)
    plain = dataclasses.replace(config, lora=dataclasses.replace(config.lora, enabled=False))
    policy = load_policy(plain, device)
    policy.model.eval()
    return policy, source


def _gather(accelerator: Any, items: list[Any]) -> list[Any]:
    if accelerator.num_processes == 1:
        return items
    from accelerate.utils import gather_object

    return gather_object(items)


def evaluate(
    recipe: EvalRecipe, name: str = "eval", loaded: tuple[Any, ModelSource] | None = None
) -> dict[str, Any] | None:
    """Run the evaluation; returns ``results`` on the main process (None elsewhere).

    Args:
        recipe: the validated recipe.
        name: the recipe name (output folder, progress bar).
        loaded: ``(model, source)`` from :func:`load_eval_model`, to evaluate several sampler
            settings with one load (``scripts/eval_matrix.py``); None loads ``recipe.model``.
    """
    from dllm_rl.rewards.registry import resolve_rewards
    from dllm_rl.rollout.worker import RolloutWorker
    from dllm_rl.run.build import derive_seed, generator, make_accelerator

    t0 = time.perf_counter()
    accelerator = make_accelerator(recipe.device)
    rank, world, is_main = (
        accelerator.process_index,
        accelerator.num_processes,
        accelerator.is_main_process,
    )
    quiet_library_bars()
    specs = resolve_rewards(recipe.reward_names)
    names = [s.name for s in specs]
    acc_name = recipe.accuracy_reward or names[0]
    acc_col = names.index(acc_name)
    records = load_records(recipe)
    if not records:
        raise ValueError(f"{recipe.data.task}/{recipe.data.split} has no rows to evaluate")
    from dllm_rl.trainers.common import shard_bounds

    lo, hi = shard_bounds(len(records), world, rank)
    policy, source = loaded or load_eval_model(recipe.model, accelerator.device)
    g, bs = recipe.num_generations, recipe.batch_size
    worker = RolloutWorker(
        policy,
        specs,
        bs * g,
        chat_template=recipe.model.chat_template,
        max_prompt_length=recipe.data.max_prompt_length,
    )
    sampler = recipe.sampler
    steps = sampler.plan.num_steps
    stats, rows = ShardStats(), []
    load_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    bar = progress_bar(total=hi - lo, desc=f"eval {name}", unit="prompt", enabled=is_main)
    with bar:
        for start in range(lo, hi, bs):
            chunk = records[start : min(start + bs, hi)]
            seed = derive_seed(recipe.seed, "eval", start)  # by global row: any world size
            batch = worker.rollout(
                chunk,
                g,
                sampler,
                lambda c, s=seed: generator(derive_seed(s, c), policy.device),
                group_offset=start,
            )
            new = sample_rows(batch, policy.tokenizer, start, g, acc_col, steps)
            rows.extend(new)
            stats.samples += len(new)
            stats.correct += sum(r["correct"] for r in new)
            stats.generate_s += batch.rollout_s
            stats.grade_s += batch.score_s
            stats.canvas_tokens += len(batch) * sampler.gen_length
            stats.completion_tokens += int(batch.lengths.sum())
            stats.forwards += batch.forwards * (2 if sampler.cfg_scale > 0 else 1)
            bar.update(len(chunk))
            bar.set_postfix(acc=f"{stats.correct / stats.samples:.3f}")
    rows = _gather(accelerator, rows)
    every = _gather(accelerator, [stats])
    eval_s = time.perf_counter() - t1
    if not is_main:
        return None
    rows.sort(key=lambda r: (r["index"], r["generation"]))
    seen = [r["index"] for r in rows if r["generation"] == 0]
    if seen != list(range(len(records))) or len(rows) != len(records) * g:
        raise RuntimeError(f"gathered {len(rows)} rows for {len(records)} prompts x {g}")
    results = summarize(
        recipe,
        name,
        source,
        sampler,
        rows,
        every,
        acc_name,
        Timing(wall_s=time.perf_counter() - t0, load_s=load_s, eval_s=eval_s),
    )
    write_outputs(recipe, name, results, rows)
    return results


# ----------------------------------------------------------------------------- entry point
def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        name, recipe, want_help = resolve(argv)
    except (ConfigError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if want_help:
        print(help_text(EvalRecipe, f"evaluation recipe {name}".strip()))
        print(
            f"\nbundled eval recipes: {', '.join(n for n in recipe_names() if n.startswith('eval_'))}"
        )
        return 0
    if recipe.print_config:
        print(to_yaml(recipe), end="")
        return 0
    try:
        lines = check(recipe)
    except (ValueError, KeyError, FileNotFoundError, ImportError, TypeError) as error:
        print(f"error: recipe {name}: {error}", file=sys.stderr)
        return 2
    if recipe.dry_run:
        print(f"dry run of eval recipe {name}: config valid")
        for line in lines:
            print(f"  {line}")
        return 0
    for line in lines:
        logger.info(line)
    from dllm_rl.run.engine import close_processes

    finished = False
    try:
        results = evaluate(recipe, name)
        finished = True
    finally:
        close_processes(synchronize=finished)
    if results is not None:
        print(
            f"{name}: accuracy {results.accuracy:.4f} ({results.accuracy_reward}) on "
            f"{results.samples} samples; {results.samples_per_s:.2f} samples/s, "
            f"{results.tokens_per_s:.0f} tokens/s, grading {100 * results.grading_share:.1f}% "
            f"-> {results.output_dir}"
        )
    return 0


__all__ = [
    "EvalDataConfig",
    "EvalRecipe",
    "EvalResults",
    "check",
    "evaluate",
    "load_eval_model",
    "main",
    "resolve",
    "resolve_model",
]

if __name__ == "__main__":
    sys.exit(main())
