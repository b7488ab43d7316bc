"""Reward functions with the TRL signature: f(prompts, completions, completion_ids=None, **columns).

Submodules are imported on first use, so that importing ``dllm_rl.rewards`` (as every math-grading worker
process does) stays cheap: ``from dllm_rl.rewards import countdown_reward`` imports only
``dllm_rl.rewards.planning``.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "completion_text": "dllm_rl.rewards.extract",
    "tag_content": "dllm_rl.rewards.extract",
    "last_boxed": "dllm_rl.rewards.extract",
    "last_number": "dllm_rl.rewards.extract",
    "math_reward": "dllm_rl.rewards.math",
    "MathGrader": "dllm_rl.rewards.math",
    "exact_answer_reward": "dllm_rl.rewards.arithmetic",
    "reasoning_format_reward": "dllm_rl.rewards.format",
    "soft_reasoning_format_reward": "dllm_rl.rewards.format",
    "boxed_format_reward": "dllm_rl.rewards.format",
    "countdown_reward": "dllm_rl.rewards.planning",
    "sudoku_reward": "dllm_rl.rewards.planning",
    "BUILTIN_REWARDS": "dllm_rl.rewards.registry",
    "RewardBatch": "dllm_rl.rewards.registry",
    "RewardSpec": "dllm_rl.rewards.registry",
    "UnknownRewardError": "dllm_rl.rewards.registry",
    "compute_rewards": "dllm_rl.rewards.registry",
    "get_reward": "dllm_rl.rewards.registry",
    "resolve_rewards": "dllm_rl.rewards.registry",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
