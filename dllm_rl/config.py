"""The config schemas: dataclasses are the schema, YAML recipes are instances.

Sections shared by every trainer (``run``, ``model``, ``optim``) live here next to the RL
trainer's own (``data``, ``rollout``, ``grpo``, ``eval``). Every field carries its help text
(``train.py --help`` prints it). Checks that need only the config run in ``__post_init__``, so a bad
value fails before any model, tokenizer or dataset loads; the batch arithmetic that needs the
number of processes is checked by :func:`GRPOConfig.check_batch`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from dllm_rl.rollout.config import SamplerConfig
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


# ----------------------------------------------------------------------------- RL sections
@dataclass
class DataConfig:
    """Prompts for rollouts (``dllm_rl.data.load_task``)."""

    task: str = _help(
        "task name: gsm8k, math500, countdown, sudoku, humaneval, mbpp, addition, ...",
        default="addition",
    )
    split: str = _help("training split", default="train")
    source: str | None = _help(
        "None (local copy or generator), local, generate, hub, or a path", default=None
    )
    template: str | None = _help("prompt template name or string with {question}", default=None)
    limit: int | None = _help("keep the first N rows", default=None)
    options: dict[str, Any] = _help(
        "generator options (size, digits, num_blanks, ...)", default_factory=dict
    )
    max_prompt_length: int | None = _help(
        "left-truncate prompts to N tokens (counted as truncated_prompts in the metrics)",
        default=None,
    )
    eval_split: str = _help("split of the periodic evaluation", default="test")
    eval_options: dict[str, Any] = _help(
        "generator options of the eval split", default_factory=dict
    )


@dataclass
class SPGSettings:
    """SPG's settings (``grpo.estimator: spg``; names from its reference code)."""

    bound: Literal["elbo", "eubo", "mix"] = _help(
        "the likelihood bound of negative-advantage completions: eubo (the upper bound), mix "
        "(mix_weight x EUBO + (1 - mix_weight) x ELBO) or elbo (the lower bound everywhere)",
        default="mix",
    )
    num_t: int = _help(
        "Monte-Carlo draws (masked copies, one forward each) per completion", default=2
    )
    eubo_beta: float = _help("beta of the EUBO (eq. 7; an upper bound for beta >= 1)", default=1.5)
    mix_weight: float = _help("omega, the EUBO's share in the mixture", default=0.5)
    block_length: int | None = _help(
        "block of the block-wise masks; None: the rollout's block (rollout.block_length, or L / "
        "num_blocks, or L)",
        default=None,
    )

    def __post_init__(self) -> None:
        if self.num_t < 1:
            raise ValueError(f"grpo.spg.num_t must be >= 1, got {self.num_t}")
        if not self.eubo_beta > 0:
            raise ValueError(
                f"grpo.spg.eubo_beta must be > 0 (>= 1 for a bound), got {self.eubo_beta}"
            )
        if not 0.0 <= self.mix_weight <= 1.0:
            raise ValueError(f"grpo.spg.mix_weight must be in [0, 1], got {self.mix_weight}")
        if self.block_length is not None and self.block_length < 1:
            raise ValueError(f"grpo.spg.block_length must be >= 1, got {self.block_length}")


@dataclass
class Wd1Settings:
    """wd1's settings (``grpo.estimator: wd1``)."""

    psi: float = _help(
        "inverse temperature of the group weights softmax(+-psi A) (the reference code: 1)",
        default=1.0,
    )

    def __post_init__(self) -> None:
        if not self.psi > 0:
            raise ValueError(f"grpo.wd1.psi must be > 0, got {self.psi}")


@dataclass
class CoupledSettings:
    """Coupled-GRPO's settings (``grpo.estimator: coupled``; DiffuCoder's values)."""

    t_min: float = _help("lowest masking level t of the complementary pair", default=0.2)
    t_max: float = _help("highest masking level t", default=0.8)
    full_mask: bool = _help(
        "also score the fully masked completion and average it with the pair (the reference "
        "code; 3 forwards instead of 2)",
        default=True,
    )

    def __post_init__(self) -> None:
        if not 0.0 < self.t_min <= self.t_max < 1.0:
            raise ValueError(
                f"grpo.coupled needs 0 < t_min <= t_max < 1, got t_min={self.t_min}, "
                f"t_max={self.t_max}"
            )


RATIO_FREE = ("spg", "wd1")
"""Estimators without an old-policy ratio or a KL term (their reference objectives have none)."""


@dataclass
class GRPOSection:
    """CJ-GRPO / diffu-GRPO settings. Batch names say what they count."""

    prompts_per_step: int = _help("global prompts per step (all ranks together)", default=8)
    num_generations: int = _help("G, completions per prompt", default=4)
    per_device_batch_size: int = _help("completions per micro-batch forward (training)", default=8)
    generation_batch_size: int = _help("completions per rollout forward", default=32)
    num_iterations: int = _help(
        "mu: optimizer updates (passes over the rollout buffer) per step", default=1
    )
    estimator: Literal["trajectory", "one_step", "spg", "wd1", "coupled"] = _help(
        "trajectory (CJ-GRPO: every recorded transition), one_step (d1's diffu-GRPO), spg "
        "(sandwiched policy gradient), wd1 (weighted likelihood) or coupled (DiffuCoder's "
        "coupled-GRPO)",
        default="trajectory",
    )
    beta: float = _help("weight of the k3 KL to the reference (0: no reference pass)", default=0.0)
    epsilon: float = _help("clip range below 1 (and above, unless epsilon_high)", default=0.2)
    epsilon_high: float | None = _help("clip range above 1 (DAPO's clip-higher)", default=None)
    scale_rewards: Literal["group", "batch", "none", "leave_one_out"] = _help(
        "divide advantages by the group std, the batch std, or nothing; leave_one_out: "
        "r - mean of the other G - 1 rewards (coupled-GRPO)",
        default="group",
    )
    loss_type: Literal["step_mean", "token_mean", "sequence_mean", "sequence_sum"] = _help(
        "reduction: per-step token mean then mean over steps (CJ-GRPO), global token mean "
        "(DAPO), per-sequence mean then mean over sequences, or per-sequence sum then mean over "
        "sequences (wd1: the sequence log-likelihood)",
        default="step_mean",
    )
    loss_positions: Literal["all", "until_eos"] = _help(
        "positions in the loss: the whole canvas with its EOS run, or up to the first stop id",
        default="all",
    )
    old_logps: Literal["rollout", "recompute"] = _help(
        "log pi_old: the rollout's recorded commit log-probs (exact, free), or S more forwards",
        default="rollout",
    )
    steps_per_backward: int = _help(
        "trajectory: decoding steps per backward (1: peak memory does not grow with S)", default=1
    )
    p_mask_prompt: float = _help(
        "one_step, wd1, spg: probability of masking each prompt token (spg: and each token of "
        "the blocks before the masked one)",
        default=0.15,
    )
    spg: SPGSettings = _help("spg's bounds and draws", default_factory=SPGSettings)
    wd1: Wd1Settings = _help("wd1's group weights", default_factory=Wd1Settings)
    coupled: CoupledSettings = _help("coupled-GRPO's mask pairs", default_factory=CoupledSettings)
    skip_zero_advantage: bool = _help(
        "train only on completions with a nonzero advantage; exact when beta = 0 (the others "
        "add nothing to the gradient), so groups whose rewards all agree cost no forward. "
        "entropy and the clip ratios then cover the trained completions",
        default=True,
    )

    def __post_init__(self) -> None:
        for name in (
            "prompts_per_step",
            "num_generations",
            "per_device_batch_size",
            "generation_batch_size",
            "num_iterations",
            "steps_per_backward",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"grpo.{name} must be >= 1, got {getattr(self, name)}")
        if self.num_generations < 2 and self.scale_rewards == "group":
            raise ValueError(
                "grpo.num_generations must be >= 2 for group advantages (a group of 1 has "
                "advantage 0 and no std)"
            )
        if self.beta < 0 or self.epsilon < 0 or (self.epsilon_high or 0) < 0:
            raise ValueError("grpo.beta, grpo.epsilon and grpo.epsilon_high must be >= 0")
        if not 0.0 <= self.p_mask_prompt < 1.0:
            raise ValueError(f"grpo.p_mask_prompt must be in [0, 1), got {self.p_mask_prompt}")
        if self.estimator in RATIO_FREE and self.beta > 0:
            raise ValueError(
                f"grpo.estimator={self.estimator} has no KL term (its objective has no reference "
                f"policy); set grpo.beta=0 (got {self.beta})"
            )


@dataclass
class EvalConfig:
    """Periodic evaluation on held-out prompts (every ``run.eval_steps``)."""

    prompts: int = _help("held-out prompts per evaluation", default=32)
    temperature: float = _help("sampling temperature of the evaluation (0: greedy)", default=0.0)
    num_generations: int = _help("completions per held-out prompt", default=1)


@dataclass
class GRPOConfig:
    """A CJ-GRPO / diffu-GRPO recipe."""

    algorithm: Literal["grpo"] = _help("the trainer: grpo", default="grpo")
    run: RunConfig = _help("run directory, length, logging", default_factory=RunConfig)
    model: ModelConfig = _help("policy model", default_factory=ModelConfig)
    data: DataConfig = _help("prompts", default_factory=DataConfig)
    rewards: list[str | dict[str, Any]] | None = _help(
        "reward names or {name, weight}: built-in, module:function, or an entry point; "
        "null: the task's own (data.task's TaskSpec.rewards)",
        default=None,
    )
    rollout: SamplerConfig = _help(
        "the rollout sampler (the evaluation's sampler schema; T > 0)",
        default_factory=lambda: SamplerConfig(temperature=1.0, record_logprobs=True),
    )
    grpo: GRPOSection = _help("the RL objective and its batch sizes", default_factory=GRPOSection)
    training: OptimConfig = _help("optimizer and schedule", default_factory=OptimConfig)
    eval: EvalConfig = _help("periodic evaluation", default_factory=EvalConfig)

    def __post_init__(self) -> None:
        if self.rollout.temperature <= 0:
            raise ValueError(
                f"rollout.temperature={self.rollout.temperature}: training needs T > 0; at T = 0 "
                "every completion of a group is the same, so every advantage is 0. Use T = 1.0 "
                "(CJ-GRPO) or 0.9 (d1); eval.temperature may be 0."
            )
        for name in ("logits_eos_inf", "confidence_eos_eot_inf"):
            if getattr(self.rollout, name):
                raise ValueError(
                    f"rollout.{name} is an evaluation option: the rollout would record the "
                    "log-probs of a restricted distribution that the training forward does not "
                    "score; leave it off for training"
                )
        if self.rollout.cfg_scale > 0:
            raise ValueError(
                "rollout.cfg_scale > 0 is an evaluation option: the training log-probs are of the "
                "unguided model, so the on-policy ratio would not be 1; set rollout.cfg_scale=0"
            )
        if self.rewards is not None and not self.rewards:
            raise ValueError("rewards is empty: list at least one reward, or null for the task's")

    @property
    def reward_names(self) -> list[str | dict[str, Any]]:
        """The recipe's rewards, or its task's (``TaskSpec.rewards``)."""
        from dllm_rl.data.registry import get_task

        return list(self.rewards) if self.rewards else list(get_task(self.data.task).rewards)

    def check_batch(self, world_size: int) -> BatchPlan:
        """The batch arithmetic, checked once at start-up with the numbers in the message."""
        g = self.grpo
        if g.prompts_per_step % world_size:
            raise ValueError(
                f"grpo.prompts_per_step={g.prompts_per_step} is not divisible by the "
                f"{world_size} processes; use a multiple of {world_size}"
            )
        local_prompts = g.prompts_per_step // world_size
        local = local_prompts * g.num_generations
        for name in ("per_device_batch_size", "generation_batch_size"):
            size = getattr(g, name)
            if local % size:
                raise ValueError(
                    f"each process holds prompts_per_step / processes x num_generations = "
                    f"{g.prompts_per_step} / {world_size} x {g.num_generations} = {local} "
                    f"completions per step, not divisible by grpo.{name}={size}; choose a "
                    f"divisor of {local}"
                )
        return BatchPlan(
            world_size=world_size,
            local_prompts=local_prompts,
            local_completions=local,
            micro_batches=local // g.per_device_batch_size,
            generation_chunks=local // g.generation_batch_size,
        )


@dataclass(frozen=True)
class BatchPlan:
    """What the batch settings mean on this many processes (derived, never configured)."""

    world_size: int
    local_prompts: int
    local_completions: int
    micro_batches: int  # gradient accumulation steps per optimizer step
    generation_chunks: int


# ----------------------------------------------------------------------------- likelihood trainers
@dataclass
class SFTDataConfig:
    """Prompt/response rows (``dllm_rl.data.sft.load_sft``)."""

    dataset: str = _help(
        "gsm8k, math500, addition (task names), a local file, or a datasets name with messages, "
        "prompt/completion or prompt/response columns",
        default="addition",
    )
    split: str = _help("training split", default="train")
    config: str | None = _help("datasets config name", default=None)
    template: str | None = _help("prompt template (task names only)", default=None)
    limit: int | None = _help("keep the first N rows", default=None)
    options: dict[str, Any] = _help("load_task options (size, digits, ...)", default_factory=dict)
    max_prompt_length: int | None = _help("the prompt keeps its last N tokens", default=None)
    max_length: int | None = _help("prompt + response at most N tokens", default=None)
    response_length: int | None = _help(
        "right-pad every response to N tokens (LLaDA's EOS-padded layout with sft.eos_padding)",
        default=None,
    )
    eval_split: str | None = _help("held-out split for eval/loss (null: none)", default="test")
    eval_options: dict[str, Any] = _help(
        "load_task options of the eval split", default_factory=dict
    )


@dataclass
class SFTSection:
    """Masked-diffusion SFT (LLaDA's recipe): t ~ U(eps, 1], CE on masked tokens weighted 1/t."""

    batch_size: int = _help("global rows per optimizer step (all processes)", default=16)
    per_device_batch_size: int = _help("rows per micro-batch forward", default=16)
    normalization: Literal["response_length", "masked_tokens"] = _help(
        "divide by each response's length (LLaDA's GUIDELINES) or by the masked tokens",
        default="response_length",
    )
    eos_padding: bool = _help(
        "response padding becomes EOS targets counted as answer tokens (as LLaDA trains)",
        default=False,
    )
    eps: float = _help("lower end of t", default=1e-3)
    eval_rows: int = _help("held-out rows scored for eval/loss (fixed draws)", default=64)

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.per_device_batch_size < 1:
            raise ValueError("sft.batch_size and sft.per_device_batch_size must be >= 1")
        if not 0.0 < self.eps < 1.0:
            raise ValueError(f"sft.eps must be in (0, 1), got {self.eps}")


def _check_rows(name: str, total: int, per_device: int, world_size: int) -> int:
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


@dataclass
class SFTConfig:
    """A masked-diffusion SFT recipe."""

    algorithm: Literal["sft"] = _help("the trainer: sft", default="sft")
    run: RunConfig = _help("run directory, length, logging", default_factory=RunConfig)
    model: ModelConfig = _help("the model", default_factory=ModelConfig)
    data: SFTDataConfig = _help("prompt/response data", default_factory=SFTDataConfig)
    sft: SFTSection = _help("the SFT loss and batch sizes", default_factory=SFTSection)
    training: OptimConfig = _help("optimizer and schedule", default_factory=OptimConfig)

    def check_batch(self, world_size: int) -> int:
        return _check_rows(
            "sft.batch_size", self.sft.batch_size, self.sft.per_device_batch_size, world_size
        )


@dataclass
class PreferenceDataConfig:
    """Preference pairs in TRL's format (``dllm_rl.data.preference.load_preference``)."""

    dataset: str = _help(
        "hh_rlhf (local slice), a local file, or a datasets name", default="hh_rlhf"
    )
    split: str = _help("split of a datasets name", default="train")
    config: str | None = _help("datasets config name", default=None)
    limit: int | None = _help("keep the first N rows", default=None)
    max_prompt_length: int | None = _help("the prompt keeps its last N tokens", default=256)
    max_length: int | None = _help("prompt + each response at most N tokens", default=512)
    eval_rows: int = _help("rows held out from the end of the data for evaluation", default=0)


@dataclass
class PreferenceSection:
    """DPO / VRPO on ELBO estimates (LLaDA 1.5, Zhu et al. 2025)."""

    pairs_per_step: int = _help("global preference pairs per optimizer step", default=8)
    per_device_batch_size: int = _help("pairs per micro-batch", default=8)
    beta: float = _help("DPO beta (LLaDA 1.5: 0.2)", default=0.2)
    loss_type: Literal["sigmoid", "ipo", "hinge"] = _help("preference loss", default="sigmoid")
    label_smoothing: float = _help("conservative-DPO flip rate (sigmoid only)", default=0.0)
    n_t: int = _help("timesteps per response: the budget n = n_t x n_yt", default=8)
    n_yt: int = _help("masks per timestep (Proposition 1: 1 is optimal)", default=1)
    form: Literal["L/l", "1/t"] = _help("ELBO estimator (Eq. 14-15 or 12-13)", default="L/l")
    antithetic: bool = _help("share the draws between policy and reference (Prop. 2)", default=True)
    stratified: bool = _help("stratified l across the n_t draws", default=False)
    eps: float = _help("1/t form: p = (1 - eps) t + eps", default=1e-3)
    sft_weight: float = _help(
        "weight of the SFT term on the chosen response (paper: 0.05)", default=0.0
    )
    length_normalize: bool = _help("divide each ELBO by its response length", default=False)
    max_tokens_per_forward: int | None = _help(
        "bound on rows x sequence length per ELBO forward (memory)", default=None
    )

    def __post_init__(self) -> None:
        if self.pairs_per_step < 1 or self.per_device_batch_size < 1:
            raise ValueError("preference.pairs_per_step and per_device_batch_size must be >= 1")
        if self.n_t < 1 or self.n_yt < 1:
            raise ValueError(f"preference.n_t and n_yt must be >= 1, got {self.n_t}, {self.n_yt}")
        if self.beta <= 0:
            raise ValueError(f"preference.beta must be > 0, got {self.beta}")


@dataclass
class PreferenceConfig:
    """A VRPO (or naive DPO: n_t = n_yt = 1, antithetic off) recipe."""

    algorithm: Literal["vrpo", "dpo"] = _help(
        "the trainer: vrpo or dpo (same loop)", default="vrpo"
    )
    run: RunConfig = _help("run directory, length, logging", default_factory=RunConfig)
    model: ModelConfig = _help(
        "the policy (the reference is its starting point)", default_factory=ModelConfig
    )
    data: PreferenceDataConfig = _help("preference pairs", default_factory=PreferenceDataConfig)
    preference: PreferenceSection = _help(
        "the loss, its ELBO budget and batch sizes", default_factory=PreferenceSection
    )
    training: OptimConfig = _help("optimizer and schedule", default_factory=OptimConfig)

    def check_batch(self, world_size: int) -> int:
        p = self.preference
        return _check_rows(
            "preference.pairs_per_step", p.pairs_per_step, p.per_device_batch_size, world_size
        )


# ----------------------------------------------------------------------------- evaluation
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


TrainerConfig = GRPOConfig | SFTConfig | PreferenceConfig
"""The config of any trainer: each has ``run``, ``model`` and ``training`` sections."""
