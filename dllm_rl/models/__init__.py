"""Model adapters: one :class:`DiffusionLM` interface over LLaDA, Dream and masked LMs.

The adapter contract is imported eagerly (torch only); everything that needs transformers
(model classes, loaders, tiny builders) is imported on first attribute access, so that
``from dllm_rl.models import DiffusionLM`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

from dllm_rl.models.adapter import DiffusionLM, SpecialIds, bidirectional_mask

_LAZY = {
    "LLaDAConfig": "dllm_rl.models.llada",
    "LLaDAModelLM": "dllm_rl.models.llada",
    "llada_adapter": "dllm_rl.models.llada",
    "build_tiny_tokenizer": "dllm_rl.models.tiny",
    "build_tiny_llada": "dllm_rl.models.tiny",
    "build_tiny_dream": "dllm_rl.models.tiny",
    "build_tiny_masked_lm": "dllm_rl.models.tiny",
    "dream_adapter": "dllm_rl.models.dream",
    "masked_lm_adapter": "dllm_rl.models.masked_lm",
    "FAMILIES": "dllm_rl.models.load",
    "enable_gradient_checkpointing": "dllm_rl.models.load",
    "detect_family": "dllm_rl.models.load",
    "load_model": "dllm_rl.models.load",
}

__all__ = ["DiffusionLM", "SpecialIds", "bidirectional_mask", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
