"""``train.py recipe=NAME key.sub=value ...``: parse, check, build, run. Nothing else lives here.

    accelerate launch dllm_rl/train.py recipe=cj_grpo_gsm8k
    python -m dllm_rl.train recipe=cj_grpo_tiny max_steps=3 output_dir=runs/try
    python -m dllm_rl.train recipe=cj_grpo_gsm8k dry_run=true      # no weights, no network
    python -m dllm_rl.train recipe=cj_grpo_tiny --help              # every key with its help

The recipe's ``algorithm:`` picks the trainer (:data:`ALGORITHMS`).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file (accelerate launch dllm_rl/train.py): find the package
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dllm_rl.run.cli import (  # noqa: E402
    ConfigError,
    build_config,
    help_text,
    load_recipe,
    merge,
    parse_overrides,
    recipe_names,
    to_yaml,
)

logger = logging.getLogger("dllm_rl.train")


@dataclass(frozen=True)
class Algorithm:
    """One trainer: its config schema, its dry-run check and its entry point."""

    schema: Callable[[], type]
    check: Callable[[Any, int], list[str]]
    run: Callable[[Any, str, list[str]], Any]


def _grpo() -> Algorithm:
    from dllm_rl.trainers import grpo
    from dllm_rl.trainers.grpo_config import GRPOConfig

    return Algorithm(lambda: GRPOConfig, grpo.check, grpo.run)


def _sft() -> Algorithm:
    from dllm_rl.trainers import sft
    from dllm_rl.trainers.sft_config import SFTConfig

    return Algorithm(lambda: SFTConfig, sft.check, sft.run)


def _preference() -> Algorithm:
    from dllm_rl.trainers import preference
    from dllm_rl.trainers.preference_config import PreferenceConfig

    return Algorithm(lambda: PreferenceConfig, preference.check, preference.run)


ALGORITHMS: dict[str, Callable[[], Algorithm]] = {
    "grpo": _grpo,
    "sft": _sft,
    "vrpo": _preference,
    "dpo": _preference,
}
"""``algorithm:`` value -> its trainer (imported only when chosen)."""


def resolve(argv: Sequence[str]) -> tuple[str, Any, Algorithm, bool]:
    """Recipe + overrides -> ``(recipe name, validated config, algorithm, --help asked)``."""
    recipe, overrides, want_help = parse_overrides(argv)
    if recipe is None:
        if want_help:
            return "", None, None, True
        raise ConfigError(
            "no recipe given: pass recipe=NAME (bundled: "
            f"{', '.join(recipe_names()) or 'none'}) or recipe=path/to/recipe.yaml"
        )
    name, data = load_recipe(recipe)
    data = merge(data, overrides)
    algorithm = data.get("algorithm")
    if algorithm is None:
        raise ConfigError(
            f"recipe {name!r} has no 'algorithm:' key, so it is not a training recipe (an "
            f"evaluation recipe runs with python -m dllm_rl.eval recipe={name}); training "
            f"recipes set algorithm: one of {sorted(ALGORITHMS)}"
        )
    if algorithm not in ALGORITHMS:
        raise ConfigError(
            f"recipe {name!r}: algorithm={algorithm!r} is unknown; one of {sorted(ALGORITHMS)}"
        )
    algo = ALGORITHMS[algorithm]()
    if want_help:
        try:  # the recipe's values beside the defaults; a recipe that fails checks shows none
            return name, build_config(algo.schema(), data), algo, True
        except (ConfigError, ValueError):
            return name, None, algo, True
    return name, build_config(algo.schema(), data), algo, False


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        name, config, algo, want_help = resolve(argv)
    except (ConfigError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if want_help:
        if algo is None:
            for key in sorted(ALGORITHMS):
                print(help_text(ALGORITHMS[key]().schema(), f"algorithm: {key}"), "\n")
        else:
            print(help_text(algo.schema(), f"recipe {name}", config))
        print(f"\nbundled recipes: {', '.join(recipe_names())}")
        return 0
    if config.run.print_config:
        print(to_yaml(config), end="")
        return 0
    from dllm_rl.rewards.registry import RewardContractError
    from dllm_rl.run.engine import close_processes
    from dllm_rl.run.errors import StartError
    from dllm_rl.trainers.common import RunStopped, check_launch

    try:
        check_launch()  # an untested engine (e.g. ZeRO-1, FSDP1): refused before anything loads
    except StartError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    from dllm_rl.progress import quiet_library_bars

    quiet_library_bars()  # before the dry run's data reads: no bar redraws in a log file
    world = int(os.environ.get("WORLD_SIZE", "1"))
    try:
        lines = algo.check(config, world)
    except (ValueError, KeyError, FileNotFoundError, ImportError) as error:
        print(f"error: recipe {name}: {error}", file=sys.stderr)
        return 2
    if config.run.dry_run:
        print(f"dry run of recipe {name}: config valid")
        for line in lines:
            print(f"  {line}")
        return 0
    from dllm_rl.run.preflight import check_model

    try:
        check_model(config.model, config.run)  # offline hub, 8B on a CPU: before anything loads
    except StartError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    fresh = not config.run.output_dir or not Path(config.run.output_dir).exists()
    finished = False
    try:
        trainer = algo.run(config, name, argv)
        finished = True
    except RunStopped as stopped:  # preempted or diverged: a checkpoint was written
        if os.environ.get("RANK", "0") == "0":  # one message, not one per process
            print(f"stopped: {stopped}", file=sys.stderr, flush=True)
        return stopped.exit_code
    except (StartError, RewardContractError) as error:  # data, output_dir, a reward's output
        if os.environ.get("RANK", "0") == "0":
            print(f"error: {error}", file=sys.stderr, flush=True)
        return 2
    finally:
        if fresh and not finished:  # a failed start, of any kind, leaves no empty run folder
            remove_empty_run(config.run.output_dir)
        close_processes(synchronize=finished)
    plot_curves(trainer)
    return 0


def remove_empty_run(output_dir: str | None) -> None:
    """A start that failed before its first training step's row or checkpoint leaves no run
    folder behind (main process; only a folder this start created; the evaluation before step 1
    does not count)."""
    if not output_dir or os.environ.get("RANK", "0") != "0":
        return
    from dllm_rl.run.rundir import has_trained

    root = Path(output_dir)
    if root.is_dir() and not has_trained(root):
        import shutil

        shutil.rmtree(root, ignore_errors=True)
        logger.info("removed %s: the run stopped before its first step", root)


def plot_curves(trainer: Any) -> None:
    """``training.png`` in the run directory (main process; a plotting failure only warns)."""
    session = getattr(trainer, "session", None)
    if session is None or not session.is_main:
        return
    from dllm_rl.plot import plot_run

    try:
        path = plot_run(session.run.root, wandb_run=getattr(session.metrics, "_wandb", None))
        logger.info("training curves: %s", path)
    except (OSError, ValueError, RuntimeError) as error:
        logger.warning("could not plot the training curves: %s", error)


if __name__ == "__main__":
    sys.exit(main())
