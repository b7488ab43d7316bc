"""The config sections every trainer shares: dataclasses are the schema, YAML recipes are instances.

``run``, ``model`` and ``training`` live here; each trainer family's own schema lives next to its
trainer (TRL's layout): :mod:`dllm_rl.trainers.grpo_config`, :mod:`dllm_rl.trainers.sft_config`,
:mod:`dllm_rl.trainers.preference_config`, and the evaluation's :mod:`dllm_rl.eval_config`. Every
field carries its help text (``train.py --help`` prints it). Checks that need only the config
run in ``__post_init__``, so a bad value fails before any model, tokenizer or dataset loads; the
batch arithmetic that needs the number of processes is checked by each config's
``check_batch``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from dllm_rl.settings import setting

_help = setting  # every field carries its help text


LR_SCHEDULERS = (
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "constant",
    "constant_with_warmup",
    "inverse_sqrt",
    "cosine_with_min_lr",
    "warmup_stable_decay",
)
"""``transformers.get_scheduler`` names (listed here so that checking a config does not import
transformers' trainer; a test keeps the list in step with it)."""

SCHEDULER_ARGUMENTS = {
    "cosine_with_min_lr": ("min_lr", "min_lr_rate"),
    "warmup_stable_decay": ("num_decay_steps",),
}
"""The schedules that need an argument in ``training.lr_scheduler_kwargs``: one of these keys."""


# ----------------------------------------------------------------------------- shared sections
@dataclass
class RunConfig:
    """Where a run writes and for how long it runs (keys accepted at the top level of the CLI)."""

    output_dir: str | None = _help(
        "run directory; default outputs/<recipe>/<timestamp> (all ranks agree on it)", default=None
    )
    seed: int = _help("seed of every generator of the run (data order, rollouts, masks)", default=0)
    max_steps: int = _help(
        "training steps (RL: rollouts, each followed by num_iterations updates)", default=100
    )
    save_steps: int = _help("checkpoint every N steps (0: only at the end)", default=0)
    eval_steps: int = _help("evaluate every N steps (0: never)", default=0)
    logging_steps: int = _help("write samples.jsonl and the console line every N steps", default=1)
    report_to: Literal["none", "wandb"] = _help(
        "also log to wandb (offline without an API key)", default="none"
    )
    resume_from: str | None = _help("checkpoint directory, or 'latest' in output_dir", default=None)
    allow_cpu_large: bool = _help(
        "start a run of a model above 2B parameters on the CPU (refused without it: the "
        "message gives the estimated memory)",
        default=False,
    )
    overwrite: bool = _help(
        "start afresh in an output_dir that holds a run, deleting its metrics and checkpoints "
        "(without it such a start is refused)",
        default=False,
    )
    dry_run: bool = _help(
        "resolve and check the config, data and rewards; load nothing; exit", default=False
    )
    print_config: bool = _help("print the resolved config and exit", default=False)
    save_total_limit: int | None = _help("keep only the newest N checkpoints", default=None)
    log_samples: int = _help("completions written to samples.jsonl per logging step", default=4)
    device: str = _help("auto (cuda > npu > mps > cpu), or a torch device name", default="auto")
    wandb_project: str = _help("wandb project name", default="dllm-rl")
    max_bad_steps: int | None = _help(
        "stop (with a checkpoint) after more than N steps in a row whose update was skipped for "
        "a non-finite loss or gradient norm (null: never stop)",
        default=10,
    )

    def __post_init__(self) -> None:
        if self.max_bad_steps is not None and self.max_bad_steps < 0:
            raise ValueError(f"run.max_bad_steps must be >= 0 or null, got {self.max_bad_steps}")
        for name in ("max_steps",):
            if getattr(self, name) < 1:
                raise ValueError(f"run.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("save_steps", "eval_steps", "logging_steps", "log_samples"):
            if getattr(self, name) < 0:
                raise ValueError(f"run.{name} must be >= 0, got {getattr(self, name)}")
        if self.logging_steps == 0:
            self.logging_steps = 1


@dataclass
class TinyModelConfig:
    """Sizes of the random-weight tiny LLaDA built when ``model.name_or_path: tiny``."""

    seed: int = _help("seed of the random weights", default=0)
    d_model: int = _help("hidden size", default=64)
    n_layers: int = _help("transformer blocks", default=2)
    n_heads: int = _help("attention heads", default=4)
    mlp_hidden_size: int | None = _help("MLP width (default 2 * d_model)", default=None)
    init_std: float = _help("std of the normal weight init", default=0.02)


@dataclass
class LoraConfig:
    """LoRA through peft (off unless ``enabled``)."""

    enabled: bool = _help("train LoRA adapters instead of every weight", default=False)
    r: int = _help("LoRA rank", default=128)
    alpha: int = _help("LoRA alpha (scaling alpha / r)", default=64)
    dropout: float = _help("LoRA dropout", default=0.05)
    target_modules: list[str] | str = _help(
        "'default' (the model family's attention and MLP projections inside the blocks, never "
        "the output head), 'reference' (the CJ-GRPO reference trainer's list: q/k/v and "
        "up_proj in LLaDA), module names (suffix match) or one regex (full match)",
        default="default",
    )

    def __post_init__(self) -> None:
        if self.r < 1 or self.alpha <= 0:
            raise ValueError(f"lora.r must be >= 1 and lora.alpha > 0 (got {self.r}, {self.alpha})")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"lora.dropout must be in [0, 1), got {self.dropout}")


@dataclass
class ModelConfig:
    """The policy (and, through it, the reference)."""

    name_or_path: str = _help(
        "checkpoint directory or hub id (GSAI-ML/LLaDA-8B-Instruct, ...), or 'tiny' for a "
        "random-weight tiny LLaDA (see model.tiny)",
        default="tiny",
    )
    family: str | None = _help("llada, dream or masked_lm; detected from config.json", default=None)
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = _help(
        "parameter dtype; auto: bfloat16 on GPU/NPU, float32 on CPU", default="auto"
    )
    attn_implementation: Literal["sdpa", "eager"] = _help("attention backend", default="sdpa")
    gradient_checkpointing: bool = _help("activation checkpointing (train mode)", default=False)
    chat_template: bool = _help("wrap prompts in the tokenizer's chat template", default=False)
    mask_in_softmax: bool = _help(
        "keep [MASK] in every softmax that scores tokens (the sampler's confidences and commit "
        "log-probs, the RL log-probs, the ELBO), as the CJ-GRPO and d1 reference trainers do; "
        "false gives [MASK] zero probability. Tokens are never drawn as [MASK] either way",
        default=False,
    )
    tiny: TinyModelConfig = _help("sizes of the tiny model", default_factory=TinyModelConfig)
    lora: LoraConfig = _help("LoRA adapters", default_factory=LoraConfig)

    @property
    def is_tiny(self) -> bool:
        return self.name_or_path == "tiny"


@dataclass
class OptimConfig:
    """AdamW and a transformers learning-rate schedule."""

    lr: float = _help("peak learning rate", default=1e-5)
    weight_decay: float = _help("AdamW weight decay", default=0.0)
    betas: tuple[float, float] = _help("AdamW betas", default=(0.9, 0.999))
    eps: float = _help("AdamW eps", default=1e-8)
    max_grad_norm: float | None = _help(
        "clip the global gradient norm (null: no clipping)", default=1.0
    )
    lr_scheduler: str = _help(
        "transformers.get_scheduler name: constant, constant_with_warmup, linear, cosine, ...",
        default="constant",
    )
    warmup_steps: int = _help("warm-up optimizer steps", default=0)
    lr_scheduler_kwargs: dict[str, Any] = _help(
        "the schedule's own arguments (transformers' scheduler_specific_kwargs), e.g. "
        "{min_lr_rate: 0.1} for cosine_with_min_lr",
        default_factory=dict,
    )

    def __post_init__(self) -> None:
        if not self.lr > 0:
            raise ValueError(f"training.lr must be > 0, got {self.lr}")
        if self.lr_scheduler not in LR_SCHEDULERS:
            raise ValueError(
                f"training.lr_scheduler={self.lr_scheduler!r} is unknown; one of {LR_SCHEDULERS}"
            )
        needs = SCHEDULER_ARGUMENTS.get(self.lr_scheduler, ())
        if needs and not set(needs) & set(self.lr_scheduler_kwargs):
            raise ValueError(
                f"training.lr_scheduler={self.lr_scheduler} needs "
                f"{' or '.join(needs)} in training.lr_scheduler_kwargs, e.g. "
                f"training.lr_scheduler_kwargs={{{needs[-1]}: 0.1}}"
            )
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise ValueError(
                f"training.max_grad_norm must be > 0 or null, got {self.max_grad_norm}"
            )


def check_rows(name: str, total: int, per_device: int, world_size: int) -> int:
    """Rows per process; raises with the arithmetic when the sizes do not divide."""
    if total % world_size:
        raise ValueError(
            f"{name}={total} is not divisible by the {world_size} processes; use a multiple of "
            f"{world_size}"
        )
    local = total // world_size
    if local % per_device:
        raise ValueError(
            f"each process holds {name} / processes = {total} / {world_size} = {local} rows per "
            f"step, not divisible by per_device_batch_size={per_device}; choose a divisor of {local}"
        )
    return local
