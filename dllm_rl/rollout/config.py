"""Sampler settings, validated at construction so that a bad value fails before any forward pass."""

from __future__ import annotations

import difflib
import functools
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from functools import cached_property
from typing import Any

from dllm_rl.models.adapter import SpecialIds
from dllm_rl.rollout.schedules import (
    GAMMA_SCHEDULES,
    SCHEDULES,
    Schedule,
    ascending_counts,
    ascending_schedule,
    eos_gamma_factors,
    uniform_schedule,
)

REMASKING = ("low_confidence", "random", "entropy", "margin")
EOS_ID_SETS = ("eos", "stop")


class SamplerSettingError(TypeError, ValueError):
    """A sampler setting of the wrong name or type; the message names the field and the fix.

    Both a ``TypeError`` (what Python raises for a bad keyword) and a ``ValueError`` (what the
    command line reports as a config error).
    """


def _did_you_mean(word: str, choices: Any) -> str:
    close = difflib.get_close_matches(str(word), list(choices), n=3, cutoff=0.5)
    return f" Did you mean {' or '.join(map(repr, close))}?" if close else ""


def named_fields(cls: type) -> type:
    """Class decorator (after ``@dataclass``): an unknown keyword names the close field names."""
    init = cls.__init__
    names = [f.name for f in fields(cls)]

    @functools.wraps(init)
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        for key in kwargs:
            if key not in names:
                raise SamplerSettingError(
                    f"{cls.__name__} has no field {key!r}.{_did_you_mean(key, names)} "
                    f"Fields: {', '.join(names)}"
                )
        init(self, *args, **kwargs)

    cls.__init__ = __init__
    return cls


def _check_types(
    obj: Any,
    ints: tuple[str, ...],
    floats: tuple[str, ...],
    bools: tuple[str, ...],
    strs: tuple[str, ...],
) -> None:
    """Field-named type errors for values arriving from YAML, the CLI or a typo."""
    where = type(obj).__name__
    for name in ints:
        value = getattr(obj, name)
        if value is None and _default(obj, name) is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            fix = ""
            if isinstance(value, float) and value.is_integer():
                fix = f"; write {int(value)}"
            elif isinstance(value, str) and value.strip().lstrip("-").isdigit():
                fix = f"; write {value.strip()} without quotes"
            raise SamplerSettingError(
                f"{where}.{name} must be an integer, got {value!r} ({type(value).__name__}){fix}"
            )
    for name in floats:
        value = getattr(obj, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SamplerSettingError(
                f"{where}.{name} must be a number, got {value!r} ({type(value).__name__})"
            )
    for name in bools:
        value = getattr(obj, name)
        if not isinstance(value, bool):
            raise SamplerSettingError(
                f"{where}.{name} must be true or false, got {value!r} ({type(value).__name__})"
            )
    for name in strs:
        value = getattr(obj, name)
        if not isinstance(value, str):
            raise SamplerSettingError(
                f"{where}.{name} must be a string, got {value!r} ({type(value).__name__})"
            )


def _default(obj: Any, name: str) -> Any:
    for f in fields(obj):
        if f.name == name:
            return None if f.default is MISSING else f.default
    return None


@named_fields
@dataclass(frozen=True)
class EosRejection:
    """EOS early rejection (EOSER): push EOS commits late by scaling their confidence by gamma(s).

    Only the ranking changes; the sampled token is kept.

    Attributes:
        enabled: apply the scaling.
        gamma_min: factor at the first step.
        gamma_max: factor reached at the last step.
        gamma_schedule: "linear" or "power" (the one paired with the ascending schedule); see
            :func:`~dllm_rl.rollout.schedules.eos_gamma_factors`.
        ids: which proposals count as EOS: "eos" (the model's EOS), "stop" (EOS and EOT), or an
            explicit tuple of token ids.
    """

    enabled: bool = False
    gamma_min: float = 0.01
    gamma_max: float = 1.0
    gamma_schedule: str = "linear"
    ids: str | tuple[int, ...] = "eos"

    def __post_init__(self) -> None:
        _check_types(self, (), ("gamma_min", "gamma_max"), ("enabled",), ("gamma_schedule",))
        if self.gamma_schedule not in GAMMA_SCHEDULES:
            raise ValueError(
                f"eos_rejection.gamma_schedule={self.gamma_schedule!r} is unknown; "
                f"expected one of {GAMMA_SCHEDULES}.{_did_you_mean(self.gamma_schedule, GAMMA_SCHEDULES)}"
            )
        if not 0.0 <= self.gamma_min <= self.gamma_max or self.gamma_max <= 0.0:
            raise ValueError(
                f"eos_rejection needs 0 <= gamma_min <= gamma_max and gamma_max > 0 "
                f"(got gamma_min={self.gamma_min}, gamma_max={self.gamma_max})"
            )
        if isinstance(self.ids, str):
            if self.ids not in EOS_ID_SETS:
                raise ValueError(
                    f"eos_rejection.ids={self.ids!r} is unknown; use one of {EOS_ID_SETS} "
                    f"or a list of token ids.{_did_you_mean(self.ids, EOS_ID_SETS)}"
                )
        else:
            bad = [i for i in self.ids if isinstance(i, bool) or not isinstance(i, int)]
            if bad:
                raise SamplerSettingError(
                    f"EosRejection.ids must be 'eos', 'stop' or a list of integer token ids; got "
                    f"{bad[0]!r} ({type(bad[0]).__name__}) in the list"
                )
            object.__setattr__(self, "ids", tuple(int(i) for i in self.ids))
            if not self.ids:
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


@named_fields
@dataclass(frozen=True)
class SamplerConfig:
    """How the masked-diffusion sampler decodes ``gen_length`` tokens after each prompt.

    Attributes:
        gen_length: L, completion positions filled after each prompt.
        steps: S, decoding steps. ``uniform``: defaults to L (one token per step) and must be a
            multiple of the number of blocks. ``ascending``: fixed to floor(log2 L); leave unset.
        block_length: ``uniform`` only: semi-autoregressive block size (defaults to L, i.e. full
            diffusion, or to ``L / num_blocks``).
        num_blocks: number of blocks. ``ascending``: blocks sized geometrically from the right.
        schedule: "uniform" (LLaDA) or "ascending" (ASS, 2^i tokens at step i).
        temperature: T of the token proposal; 0 is argmax, T > 0 an exact sample of
            softmax(logits / T) through Gumbel-max.
        remasking: ranking of the proposals: "low_confidence" (probability of the proposed
            token), "random", "entropy" (exp(-entropy)), "margin" (top-1 minus top-2 probability).
        cfg_scale: w of classifier-free guidance, logits = u + (w + 1)(c - u) with the prompt
            masked in u; 0 disables it (and its extra forward).
        eos_rejection: EOS early rejection settings.
        record_logprobs: keep the log-probability of every committed token at commit time.
        logits_eos_inf: LLaDA's option: EOS is never proposed (its logit is -inf before the
            proposal; the recorded log-probs are those of the restricted distribution).
        confidence_eos_eot_inf: LLaDA's option, as intended at every temperature: EOS and EOT
            proposals rank below every other proposal, so they are committed only when a step's
            quota leaves nothing else (the reference reaches EOT at T = 0 only).
    """

    gen_length: int = 256
    steps: int | None = None
    block_length: int | None = None
    num_blocks: int | None = None
    schedule: str = "uniform"
    temperature: float = 0.0
    remasking: str = "low_confidence"
    cfg_scale: float = 0.0
    eos_rejection: EosRejection = field(default_factory=EosRejection)
    record_logprobs: bool = False
    logits_eos_inf: bool = False
    confidence_eos_eot_inf: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.eos_rejection, Mapping):
            object.__setattr__(self, "eos_rejection", EosRejection(**self.eos_rejection))
        elif not isinstance(self.eos_rejection, EosRejection):
            raise SamplerSettingError(
                f"SamplerConfig.eos_rejection must be an EosRejection or a mapping of its fields, "
                f"got {self.eos_rejection!r}"
            )
        _check_types(
            self,
            ("gen_length", "steps", "block_length", "num_blocks"),
            ("temperature", "cfg_scale"),
            ("record_logprobs", "logits_eos_inf", "confidence_eos_eot_inf"),
            ("schedule", "remasking"),
        )
        if self.remasking not in REMASKING:
            raise ValueError(
                f"remasking={self.remasking!r} is unknown; expected one of {REMASKING}."
                f"{_did_you_mean(self.remasking, REMASKING)}"
            )
        if self.schedule not in SCHEDULES:
            raise ValueError(
                f"schedule={self.schedule!r} is unknown; expected one of {SCHEDULES}."
                f"{_did_you_mean(self.schedule, SCHEDULES)}"
            )
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
