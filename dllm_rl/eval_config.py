"""The evaluation's schema (``python -m dllm_rl.eval``): the model, the prompts, the sampler (the
training rollout's own schema) and the graders; :func:`resolve` reads one from the command line."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from dllm_rl.config import ModelConfig
from dllm_rl.rollout.config import SamplerConfig
from dllm_rl.run.cli import (
    ConfigError,
    build_config,
    load_recipe,
    merge,
    parse_overrides,
    recipe_names,
)
from dllm_rl.settings import setting as _help


@dataclass
class EvalDataConfig:
    """The prompts (``dllm_rl.data.load_task``)."""

    task: str = _help(
        "gsm8k, math500, countdown, sudoku, humaneval, mbpp, addition", default="addition"
    )
    split: str = _help("split to evaluate", default="test")
    source: str | None = _help(
        "None (local copy or generator), local, generate, hub, or a path", default=None
    )
    template: str | None = _help("prompt template name or string with {question}", default=None)
    limit: int | None = _help(
        "keep the first N prompts (also `limit=N` at the top level)", default=None
    )
    options: dict[str, Any] = _help("generator options (size, digits, ...)", default_factory=dict)
    max_prompt_length: int | None = _help("left-truncate prompts to N tokens", default=None)


@dataclass
class EvalRecipe:
    """An evaluation recipe (``evaluation: true`` tells it from a training recipe)."""

    evaluation: bool = _help("marks an evaluation recipe (python -m dllm_rl.eval)", default=True)
    model: ModelConfig = _help(
        "the model: hub id, local path, run directory (latest checkpoint), checkpoint folder "
        "(LoRA adapters loaded onto their base), or tiny",
        default_factory=ModelConfig,
    )
    data: EvalDataConfig = _help("prompts", default_factory=EvalDataConfig)
    sampler: SamplerConfig = _help(
        "the sampler (the training rollout's schema; greedy by default)",
        default_factory=lambda: SamplerConfig(record_logprobs=True),  # samples.jsonl shows them
    )
    rewards: list[str | dict[str, Any]] | None = _help(
        "reward names (the trainer's graders); default: the task's", default=None
    )
    accuracy_reward: str | None = _help(
        "reward whose value 1 counts as correct (default: the first reward)", default=None
    )
    num_generations: int = _help("completions per prompt (pass@1 averages over them)", default=1)
    batch_size: int = _help("prompts per sampler call, per process", default=16)
    seed: int = _help("seed of every sampler generator (T > 0, random remasking)", default=0)
    limit: int | None = _help("keep the first N prompts (overrides data.limit)", default=None)
    output_dir: str | None = _help(
        "where to write; default outputs/eval/<recipe>/<time>", default=None
    )
    device: str = _help("auto (cuda > npu > mps > cpu), or a torch device name", default="auto")
    log_samples: int | None = _help("rows written to samples.jsonl (null: all)", default=None)
    dry_run: bool = _help("validate config, data and rewards; load no weights; exit", default=False)
    print_config: bool = _help("print the resolved config and exit", default=False)

    def __post_init__(self) -> None:
        if not self.evaluation:
            raise ValueError(
                "evaluation: false is not an evaluation recipe; train with dllm_rl.train"
            )
        if self.model.lora.enabled:
            raise ValueError(
                "model.lora.enabled adds new adapters for training; to evaluate a trained LoRA "
                "adapter, set model.name_or_path to its run directory or checkpoint"
            )
        for name in ("num_generations", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.limit is not None:
            if self.limit < 1:
                raise ValueError(f"limit must be >= 1, got {self.limit}")
            self.data.limit = self.limit

    @property
    def reward_names(self) -> list[str | dict[str, Any]]:
        """The recipe's rewards, or its task's (``TaskSpec.rewards``)."""
        from dllm_rl.data.registry import get_task

        return list(self.rewards) if self.rewards else list(get_task(self.data.task).rewards)


def resolve(argv: Sequence[str]) -> tuple[str, EvalRecipe | None, bool]:
    """Recipe + overrides -> ``(recipe name, validated EvalRecipe, --help asked)``.

    The function recipe tests call to validate an eval recipe:
    ``resolve(["recipe=recipes/eval_d1_gsm8k.yaml"])``.

    Raises:
        ConfigError: unknown keys (with close matches), wrong types, a training recipe.
    """
    recipe, overrides, want_help = parse_overrides(argv)
    overrides = {**overrides.pop("run", {}), **overrides}  # output_dir, seed, dry_run: top level
    if recipe is None:
        if want_help:
            return "", None, True
        names = [n for n in recipe_names() if n.startswith("eval_")]
        raise ConfigError(f"no recipe given: pass recipe=NAME ({', '.join(names)}) or a YAML path")
    name, data = load_recipe(recipe)
    if "algorithm" in data:
        raise ConfigError(
            f"recipe {name!r} is a training recipe (algorithm: {data['algorithm']}): run it with "
            "python -m dllm_rl.train; evaluate its run with "
            "python -m dllm_rl.eval recipe=eval_tiny model.name_or_path=<run directory>"
        )
    data = merge(data, overrides)
    if want_help:
        return name, None, True
    return name, build_config(EvalRecipe, data), False
