"""Finding reward functions by name, and scoring a batch with several weighted rewards.

A reward is any callable with TRL's signature
``f(prompts, completions, completion_ids=None, **columns) -> list[float | None]`` (``async def``
allowed). A recipe names its rewards in one of three ways:

1. a built-in name from ``BUILTIN_REWARDS`` (``"math"``, ``"countdown"``, ...);
2. ``"package.module:function"`` for code on the Python path (``"trl.rewards:accuracy_reward"``);
3. the name of an entry point in the ``dllm_rl.rewards`` group of an installed package.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import difflib
import importlib
import inspect
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

import torch

logger = logging.getLogger(__name__)

RewardFn = Callable[..., Any]
"""``f(prompts, completions, completion_ids=None, **columns) -> list[float | None]`` (or a
coroutine returning that list)."""

ENTRY_POINT_GROUP = "dllm_rl.rewards"

BUILTIN_REWARDS: dict[str, str] = {
    "math": "dllm_rl.rewards.math:math_reward",
    "exact_answer": "dllm_rl.rewards.arithmetic:exact_answer_reward",
    "digit_credit": "dllm_rl.rewards.arithmetic:digit_credit_reward",
    "reasoning_format": "dllm_rl.rewards.format:reasoning_format_reward",
    "soft_reasoning_format": "dllm_rl.rewards.format:soft_reasoning_format_reward",
    "boxed_format": "dllm_rl.rewards.format:boxed_format_reward",
    "countdown": "dllm_rl.rewards.planning:countdown_reward",
    "sudoku": "dllm_rl.rewards.planning:sudoku_reward",
    "code": "dllm_rl.rewards.code:code_reward",
    "code_format": "dllm_rl.rewards.code:code_format_reward",
}
"""Built-in reward names -> ``"module:function"``, imported only when asked for."""

_SPEC_KEYS = ("name", "weight")


class UnknownRewardError(KeyError):
    """A reward name that is neither built in, nor ``module:function``, nor an entry point."""

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0])


def _import_target(target: str, what: str) -> RewardFn:
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"{what}: expected 'package.module:function', got {target!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ImportError(f"{what}: cannot import module {module_name!r}: {error}") from error
    obj: Any = module
    for part in attribute.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as error:
            raise ImportError(f"{what}: module {module_name!r} has no {attribute!r}") from error
    if not callable(obj):
        raise TypeError(f"{what}: {target!r} is a {type(obj).__name__}, not a callable")
    return obj


def plugin_rewards() -> dict[str, Any]:
    """Entry points of installed packages in the ``dllm_rl.rewards`` group, by name."""
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def get_reward(name: str) -> RewardFn:
    """The reward function called ``name``.

    Args:
        name: a built-in name, ``"package.module:function"``, or an entry-point name.

    Returns:
        The callable.

    Raises:
        UnknownRewardError: the name is none of the three; the message lists close matches.
        ImportError: the module of a built-in or ``module:function`` reward cannot be imported.
    """
    if ":" in name:
        return _import_target(name, f"reward {name!r}")
    if name in BUILTIN_REWARDS:
        return _import_target(BUILTIN_REWARDS[name], f"built-in reward {name!r}")
    plugins = plugin_rewards()
    if name in plugins:
        reward = plugins[name].load()
        if not callable(reward):
            raise TypeError(f"reward plugin {name!r} ({plugins[name].value}) is not callable")
        return reward
    known = sorted(BUILTIN_REWARDS) + sorted(plugins)
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    raise UnknownRewardError(
        f"unknown reward {name!r}.{hint} A reward can be: a built-in name "
        f"({', '.join(sorted(BUILTIN_REWARDS))}); 'package.module:function' for your own code on "
        f"the Python path; or an entry point in the {ENTRY_POINT_GROUP!r} group of an installed "
        f"package (installed: {', '.join(sorted(plugins)) or 'none'})."
    )


@dataclass(frozen=True)
class RewardSpec:
    """One reward of a recipe: its name (for metrics), the callable, and its weight."""

    name: str
    fn: RewardFn
    weight: float = 1.0


class RewardSignatureError(TypeError, ValueError):
    """A reward target that cannot take the reward arguments (a ValueError too, so that the
    command lines report it as a config error)."""


def check_reward_signature(fn: Any, name: str) -> None:
    """Raise unless ``fn`` can be called as ``fn(prompts=..., completions=..., **columns)``.

    Checked when a recipe is resolved, so ``"os:system"`` fails before any model loads, not at
    the first scoring step. (Naming ``module:function`` still imports the module: a recipe is
    code; do not run recipes you do not trust.)

    Raises:
        RewardSignatureError: the signature cannot take the reward arguments; the message
            shows it.
    """
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError) as error:
        raise RewardSignatureError(
            f"reward {name!r}: cannot read the signature of {fn!r} ({error}); a reward is "
            "f(prompts, completions, completion_ids=None, **columns)"
        ) from None
    params = signature.parameters.values()
    var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
    named = {
        p.name
        for p in params
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    }
    missing = [k for k in ("prompts", "completions") if k not in named and not var_kw]
    if missing or not var_kw:
        what = f"no parameter {' or '.join(missing)}" if missing else "no **kwargs for the columns"
        raise RewardSignatureError(
            f"reward {name!r}: {getattr(fn, '__qualname__', fn)}{signature} has {what}; a "
            "reward is f(prompts, completions, completion_ids=None, **columns) returning one "
            "float or None per completion"
        )


def _spec(item: Any) -> RewardSpec:
    if isinstance(item, RewardSpec):
        return item
    if isinstance(item, str):
        fn = get_reward(item)
        check_reward_signature(fn, item)
        return RewardSpec(item, fn)
    if callable(item):
        name = getattr(item, "__name__", type(item).__name__)
        check_reward_signature(item, name)
        return RewardSpec(name, item)
    if isinstance(item, Mapping):
        unknown = [k for k in item if k not in _SPEC_KEYS]
        if unknown:
            close = {k: difflib.get_close_matches(str(k), _SPEC_KEYS, n=1) for k in unknown}
            hints = ", ".join(
                f"{k!r}" + (f" (did you mean {c[0]!r}?)" if c else "") for k, c in close.items()
            )
            raise ValueError(
                f"reward spec {dict(item)!r}: unknown key {hints}; keys are name, weight"
            )
        if "name" not in item:
            raise ValueError(f"reward spec {dict(item)!r} has no 'name'")
        weight = item.get("weight", 1.0)
        if (
            isinstance(weight, bool)
            or not isinstance(weight, (int, float))
            or not math.isfinite(weight)
        ):
            raise ValueError(
                f"reward {item['name']!r}: weight must be a finite number, got {weight!r}"
            )
        fn = get_reward(str(item["name"]))
        check_reward_signature(fn, str(item["name"]))
        return RewardSpec(str(item["name"]), fn, float(weight))
    raise TypeError(
        f"a reward spec is a name, {{'name': ..., 'weight': ...}}, or a callable; got {item!r}"
    )


def resolve_rewards(specs: Sequence[Any]) -> list[RewardSpec]:
    """Turn a recipe's reward list into typed specs, importing each reward once.

    >>> [s.name for s in resolve_rewards(["countdown", {"name": "reasoning_format", "weight": 0.5}])]
    ['countdown', 'reasoning_format']

    Args:
        specs: items that are a name (weight 1), a mapping ``{"name": ..., "weight": ...}``, a
            callable (named by its ``__name__``), or a ``RewardSpec``.

    Returns:
        One ``RewardSpec`` per item, in order.

    Raises:
        ValueError: no rewards, a duplicate name, an unknown key, or a bad weight.
        UnknownRewardError: a name that cannot be found.
    """
    if isinstance(specs, (str, Mapping)) or callable(specs):
        specs = [specs]
    resolved = [_spec(item) for item in specs]
    if not resolved:
        raise ValueError("no rewards given: list at least one reward")
    names = [s.name for s in resolved]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"rewards listed twice: {duplicates}; list each reward once")
    return resolved


@dataclass
class RewardBatch:
    """The rewards of one batch of completions.

    Attributes:
        names: reward names, ``[R]``.
        weights: reward weights, ``[R]``.
        values: ``[N, R]`` float32, NaN where a reward returned ``None`` (not applicable).
        total: ``[N]`` float32, the weighted sum of ``values`` ignoring NaN (TRL's nansum: a
            completion no reward applies to gets 0).
        metrics: ``rewards/<name>/mean`` and ``rewards/<name>/std`` (sample std, as TRL) over
            the completions the reward applies to (NaN if none), and ``reward``, the mean of
            ``total``.
    """

    names: list[str]
    weights: list[float]
    values: torch.Tensor
    total: torch.Tensor
    metrics: dict[str, float] = field(default_factory=dict)


def _run_coroutines(coroutines: list[Any]) -> list[Any]:
    async def gather() -> list[Any]:
        return list(await asyncio.gather(*coroutines))

    try:
        asyncio.get_running_loop()
    except RuntimeError:  # no loop in this thread: the usual case
        return asyncio.run(gather())
    # Called from inside a running loop (a notebook, an async trainer): run in a fresh thread.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, gather()).result()


class RewardContractError(TypeError, ValueError):
    """A reward broke its contract (one float or None per completion): the user's reward is
    wrong, not the trainer. ``train.py`` prints the message on one line and exits with 2."""


def _to_float(value: Any, name: str, index: int) -> float:
    if value is None:
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        raise RewardContractError(
            f"reward {name!r} returned {value!r:.80} at position {index}: expected a float or None"
        ) from None


def compute_rewards(
    specs: Sequence[RewardSpec],
    prompts: Sequence[Any],
    completions: Sequence[Any],
    completion_ids: Sequence[Any] | None = None,
    **columns: Sequence[Any],
) -> RewardBatch:
    """Call every reward on a batch and combine them.

    Synchronous rewards run one after another; ``async`` ones run concurrently with each other.
    A reward that raises is logged (name and exception), its values are None for the batch and
    ``metrics["rewards/<name>/errors"]`` counts them: a bad row never stops training.

    Args:
        specs: the rewards, from ``resolve_rewards``.
        prompts: ``[N]`` prompts (each repeated for its G completions).
        completions: ``[N]`` completions, strings or conversational.
        completion_ids: ``[N]`` token-id lists, passed through.
        **columns: dataset columns, ``[N]`` values each, passed to every reward.

    Returns:
        A ``RewardBatch`` with ``values [N, R]``, ``total [N]`` and the per-reward metrics.

    Raises:
        ValueError: a reward returned a list of the wrong length.
        TypeError: a reward returned something that is not a list of floats or ``None``.
    """
    n = len(completions)
    outputs: list[Any] = []
    errors: dict[str, int] = {}

    def failed(spec: RewardSpec, error: Exception) -> list[None]:
        # A reward that raises costs its values for this batch (None), never the run.
        logger.warning(
            "reward %r raised %s: %s; its value is None for these %d completions",
            spec.name,
            type(error).__name__,
            error,
            n,
        )
        errors[spec.name] = n
        return [None] * n

    for spec in specs:
        try:
            out = spec.fn(
                prompts=prompts, completions=completions, completion_ids=completion_ids, **columns
            )
        except Exception as error:  # any reward bug: counted and logged
            out = failed(spec, error)
        outputs.append(out)

    async def guarded(i: int) -> Any:
        try:
            return await outputs[i]
        except Exception as error:  # the same for an async reward
            return failed(specs[i], error)

    pending = [i for i, out in enumerate(outputs) if inspect.isawaitable(out)]
    if pending:
        for i, result in zip(pending, _run_coroutines([guarded(i) for i in pending])):
            outputs[i] = result

    values = torch.empty(n, len(specs), dtype=torch.float32)  # [N, R]
    for r, (spec, out) in enumerate(zip(specs, outputs)):
        if isinstance(out, (str, bytes, Mapping)) or not hasattr(out, "__len__"):
            raise RewardContractError(
                f"reward {spec.name!r} returned {type(out).__name__}, expected a list"
            )
        if len(out) != n:
            raise RewardContractError(
                f"reward {spec.name!r} returned {len(out)} values for {n} completions: "
                "a reward must return one value (float or None) per completion"
            )
        values[:, r] = torch.tensor([_to_float(v, spec.name, i) for i, v in enumerate(out)])

    weights = torch.tensor([s.weight for s in specs], dtype=torch.float32)  # [R]
    total = (values * weights).nansum(dim=1)  # [N]
    unscored = torch.isnan(values).all(dim=1)  # [N]
    if n and bool(unscored.any()):
        logger.warning(
            "no reward applies to completions %s (all returned None); their total reward is 0",
            unscored.nonzero().flatten().tolist(),
        )

    metrics: dict[str, float] = {}
    for r, spec in enumerate(specs):
        column = values[:, r][~torch.isnan(values[:, r])]
        metrics[f"rewards/{spec.name}/mean"] = column.mean().item() if len(column) else math.nan
        metrics[f"rewards/{spec.name}/std"] = (
            column.std().item() if len(column) > 1 else 0.0 if len(column) else math.nan
        )
    metrics["reward"] = total.mean().item() if n else math.nan
    for spec in specs:
        metrics[f"rewards/{spec.name}/errors"] = float(errors.get(spec.name, 0))
    return RewardBatch(
        names=[s.name for s in specs],
        weights=[s.weight for s in specs],
        values=values,
        total=total,
        metrics=metrics,
    )
