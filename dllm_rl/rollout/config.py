"""Sampler settings: one schema for the training rollouts (``rollout:``), the evaluation
(``sampler:``) and Python callers, validated at construction (pydantic: types, choices, unknown
names), so a bad value fails before any forward pass."""

from __future__ import annotations

from functools import cached_property
from typing import Literal, get_args

from pydantic import ConfigDict, StrictInt
from pydantic.dataclasses import dataclass

from dllm_rl.models.adapter import SpecialIds
from dllm_rl.rollout.schedules import (
    GammaScheduleName,
    Schedule,
    ScheduleName,
    ascending_counts,
    ascending_schedule,
    eos_gamma_factors,
    uniform_schedule,
)
from dllm_rl.settings import setting

Remasking = Literal["low_confidence", "random", "entropy", "margin"]
REMASKING: tuple[str, ...] = get_args(Remasking)
EOS_ID_SETS = ("eos", "stop")
STRICT = ConfigDict(extra="forbid")  # an unknown name is an error, not ignored
# Counts are StrictInt: "32", 32.0 and true are refused rather than read as 32 or 1.


@dataclass(frozen=True, config=STRICT)
class EosRejection:
    """EOS early rejection (EOSER): push EOS commits late by scaling their confidence by gamma(s).

    Only the ranking changes; the sampled token is kept. The gamma table is
    :func:`~dllm_rl.rollout.schedules.eos_gamma_factors`.
    """

    enabled: bool = setting("apply EOS early rejection", default=False)
    gamma_min: float = setting("gamma at the first step", default=0.01)
    gamma_max: float = setting("gamma reached at the last step", default=1.0)
    gamma_schedule: GammaScheduleName = setting(
        "gamma table: linear, or power (the one paired with the ascending schedule)",
        default="linear",
    )
    ids: Literal["eos", "stop"] | tuple[int, ...] = setting(
        "which proposals count as EOS: eos (the model's EOS), stop (EOS and EOT), or a list of "
        "token ids",
        default="eos",
    )

    def __post_init__(self) -> None:
        if not 0.0 <= self.gamma_min <= self.gamma_max or self.gamma_max <= 0.0:
            raise ValueError(
                f"eos_rejection needs 0 <= gamma_min <= gamma_max and gamma_max > 0 "
                f"(got gamma_min={self.gamma_min}, gamma_max={self.gamma_max})"
            )
        if not isinstance(self.ids, str) and not self.ids:
            raise ValueError("eos_rejection.ids is an empty list; give at least one token id")

    def resolve_ids(self, special: SpecialIds) -> tuple[int, ...]:
        """The token ids whose confidence is scaled, for a model with these special ids."""
        if self.ids == "eos":
            return (special.eos,)
        if self.ids == "stop":
            return special.stop_ids
        return self.ids

    def factors(self, num_steps: int) -> tuple[float, ...] | None:
        """gamma(s) for s = 0..S-1, or None when disabled."""
        if not self.enabled:
            return None
        return eos_gamma_factors(num_steps, self.gamma_min, self.gamma_max, self.gamma_schedule)


@dataclass(frozen=True, config=STRICT)
class SamplerConfig:
    """How the masked-diffusion sampler decodes ``gen_length`` tokens after each prompt.

    The same schema is the training recipes' ``rollout:`` section and the evaluation recipes'
    ``sampler:`` section.
    """

    gen_length: StrictInt = setting("L, completion positions filled after each prompt", default=256)
    steps: StrictInt | None = setting(
        "S, decoding steps; uniform: default L, a multiple of the number of blocks; ascending: "
        "floor(log2 L), leave unset",
        default=None,
    )
    block_length: StrictInt | None = setting(
        "uniform: semi-autoregressive block size (default L, or L / num_blocks)", default=None
    )
    num_blocks: StrictInt | None = setting(
        "number of blocks (ascending: sized geometrically from the right)", default=None
    )
    schedule: ScheduleName = setting(
        "uniform (LLaDA) or ascending (ASS: 2^i tokens at step i)", default="uniform"
    )
    temperature: float = setting(
        "T of the proposals: 0 is argmax, T > 0 an exact sample of softmax(logits / T) "
        "(training needs T > 0)",
        default=0.0,
    )
    remasking: Remasking = setting(
        "ranking of the proposals: low_confidence (probability of the proposed token), random, "
        "entropy (exp(-entropy)), margin (top-1 minus top-2 probability)",
        default="low_confidence",
    )
    cfg_scale: float = setting(
        "classifier-free guidance w, logits = u + (w + 1)(c - u) with the prompt masked in u; "
        "0: off (1 forward per step); evaluation only",
        default=0.0,
    )
    eos_rejection: EosRejection = setting(
        "EOS early rejection", default_factory=lambda: EosRejection()
    )
    record_logprobs: bool = setting(
        "keep the log-probability of every committed token (training always does)", default=False
    )
    logits_eos_inf: bool = setting(
        "LLaDA's option: EOS is never proposed (evaluation only)", default=False
    )
    confidence_eos_eot_inf: bool = setting(
        "LLaDA's option: EOS/EOT proposals rank last, committed only when a step's quota leaves "
        "nothing else (evaluation only)",
        default=False,
    )

    def __post_init__(self) -> None:
        if not self.temperature >= 0.0:  # also catches NaN
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if not self.cfg_scale >= 0.0:
            raise ValueError(f"cfg_scale must be >= 0 (0 = no guidance), got {self.cfg_scale}")
        if self.gen_length < 1:
            raise ValueError(f"gen_length must be >= 1, got {self.gen_length}")
        _ = self.plan  # build (and so validate) the step schedule now

    @cached_property
    def plan(self) -> Schedule:
        """The step :class:`Schedule` these settings describe."""
        if self.schedule == "ascending":
            return self._ascending()
        return self._uniform()

    def _uniform(self) -> Schedule:
        length, block, blocks = self.gen_length, self.block_length, self.num_blocks
        if blocks is not None:
            if blocks < 1 or length % blocks:
                raise ValueError(f"num_blocks={blocks} must be >= 1 and divide gen_length={length}")
            if block is not None and block * blocks != length:
                raise ValueError(
                    f"block_length={block} x num_blocks={blocks} != gen_length={length}; set only one"
                )
            block = length // blocks
        block = length if block is None else block
        return uniform_schedule(length, block, length if self.steps is None else self.steps)

    def _ascending(self) -> Schedule:
        natural = len(ascending_counts(self.gen_length))
        if self.steps is not None and self.steps != natural:
            raise ValueError(
                f"the ascending schedule takes floor(log2 gen_length) = {natural} steps for "
                f"gen_length={self.gen_length}; got steps={self.steps}. Leave steps unset."
            )
        if self.block_length not in (None, self.gen_length):
            raise ValueError(
                "the ascending schedule sizes its blocks geometrically; set num_blocks instead of "
                f"block_length (got block_length={self.block_length})"
            )
        return ascending_schedule(
            self.gen_length, 1 if self.num_blocks is None else self.num_blocks
        )
