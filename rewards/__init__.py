"""Reward functions with the TRL signature: f(prompts, completions, completion_ids=None, **columns).

Submodules are imported on first use, so that importing ``rewards`` (as every math-grading worker
process does) stays cheap: ``from rewards import countdown_reward`` imports only
``rewards.planning``.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "completion_text": "rewards.extract",
    "tag_content": "rewards.extract",
    "last_boxed": "rewards.extract",
    "last_number": "rewards.extract",
    "math_reward": "rewards.math",
    "MathGrader": "rewards.math",
    "exact_answer_reward": "rewards.arithmetic",
    "reasoning_format_reward": "rewards.format",
    "soft_reasoning_format_reward": "rewards.format",
    "boxed_format_reward": "rewards.format",
    "countdown_reward": "rewards.planning",
    "sudoku_reward": "rewards.planning",
    "BUILTIN_REWARDS": "rewards.registry",
    "RewardBatch": "rewards.registry",
    "RewardSpec": "rewards.registry",
    "UnknownRewardError": "rewards.registry",
    "compute_rewards": "rewards.registry",
    "get_reward": "rewards.registry",
    "resolve_rewards": "rewards.registry",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'rewards' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
