"""The GRPO trainer's schema (CJ-GRPO, diffu-GRPO, SPG, wd1, coupled-GRPO): its ``data``,
``rollout``, ``grpo`` and ``eval`` sections on top of the shared ``run``, ``model`` and
``training`` (:mod:`dllm_rl.config`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from dllm_rl.config import ModelConfig, OptimConfig, RunConfig
from dllm_rl.rollout.config import SamplerConfig
from dllm_rl.settings import setting as _help


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
