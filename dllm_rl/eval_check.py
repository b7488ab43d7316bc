"""The evaluation's dry run (``python -m dllm_rl.eval recipe=NAME dry_run=true``): everything that
can be checked before weights load (the model's path, the data, the rewards, the sampler), each
in one line, and the records both the check and the run read."""

from __future__ import annotations

from typing import Any

from dllm_rl.eval_config import EvalRecipe
from dllm_rl.eval_results import nfe
from dllm_rl.rollout.config import SamplerConfig
from dllm_rl.run.build import resolve_model


def check(recipe: EvalRecipe) -> list[str]:
    """Everything checkable without weights or network: model path, data, rewards, sampler.

    Raises:
        ValueError, FileNotFoundError, UnknownTaskError, UnknownRewardError: with the fix.
    """
    from dllm_rl.data.registry import describe_source
    from dllm_rl.rewards.registry import resolve_rewards

    source = resolve_model(recipe.model)
    data = recipe.data
    where = describe_source(
        data.task, data.split, data.source, recipe.seed, lambda: len(load_records(recipe))
    )
    specs = resolve_rewards(recipe.reward_names)
    names = [s.name for s in specs]
    if recipe.accuracy_reward is not None and recipe.accuracy_reward not in names:
        raise ValueError(
            f"accuracy_reward={recipe.accuracy_reward!r} is not among the rewards {names}"
        )
    limit = "" if data.limit is None else f", first {data.limit}"
    return [
        f"model: {source.describe}",
        f"data: {where}{limit}",
        f"rewards: {', '.join(f'{s.name} x {s.weight:g}' for s in specs)} "
        f"(accuracy: {recipe.accuracy_reward or names[0]})",
        f"sampler: {describe_sampler(recipe.sampler)}",
    ]


def describe_sampler(sampler: SamplerConfig) -> str:
    """One line: schedule, length, steps, temperature, remasking, forwards, EOS handling."""
    eos = []
    if sampler.eos_rejection.enabled:
        rejection = sampler.eos_rejection
        eos.append(
            f"EOS rejection {rejection.gamma_schedule} "
            f"{rejection.gamma_min:g}->{rejection.gamma_max:g}"
        )
    eos += [k for k in ("logits_eos_inf", "confidence_eos_eot_inf") if getattr(sampler, k)]
    return (
        f"{sampler.schedule}, L={sampler.gen_length}, S={sampler.plan.num_steps}, "
        f"T={sampler.temperature:g}, {sampler.remasking}, NFE={nfe(sampler)}"
        + (f", {', '.join(eos)}" if eos else "")
    )


def load_records(recipe: EvalRecipe) -> list[dict[str, Any]]:
    """The evaluation's records (:func:`dllm_rl.data.registry.load_records`)."""
    from dllm_rl.data.registry import load_records as load

    data = recipe.data
    return load(
        data.task,
        data.split,
        source=data.source,
        template=data.template,
        limit=data.limit,
        seed=recipe.seed,
        options=data.options,
    )
