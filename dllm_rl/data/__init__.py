"""Task datasets: loaders, generators and prompt templates.

    from dllm_rl.data import load_task
    ds = load_task("gsm8k", "test")                     # local copy, plain-text prompts
    ds = load_task("countdown", "train", size=2000)     # generated, deterministic from seed
    rows = load_preference("hh_rlhf")                   # prompt / chosen / rejected (DPO, VRPO)
    rows = load_sft("gsm8k", "train")                   # prompt / response (masked-diffusion SFT)

The loaders import ``datasets`` on first use, so ``dllm_rl.data.paths`` stays cheap to import.
"""

from __future__ import annotations

import importlib
from typing import Any

from dllm_rl.data.paths import DATA_ENV, data_dir

_LAZY = {
    "TASKS": "dllm_rl.data.registry",
    "TaskSpec": "dllm_rl.data.registry",
    "get_task": "dllm_rl.data.registry",
    "load_task": "dllm_rl.data.registry",
    "UnknownTaskError": "dllm_rl.data.registry",
    "TEMPLATES": "dllm_rl.data.templates",
    "DEFAULT_TEMPLATE": "dllm_rl.data.templates",
    "PREFERENCE_DATASETS": "dllm_rl.data.preference",
    "PreferenceBatch": "dllm_rl.data.preference",
    "PreferenceExample": "dllm_rl.data.preference",
    "collate_preference": "dllm_rl.data.preference",
    "load_preference": "dllm_rl.data.preference",
    "tokenize_preference": "dllm_rl.data.preference",
    "SFTBatch": "dllm_rl.data.sft",
    "SFTExample": "dllm_rl.data.sft",
    "collate_sft": "dllm_rl.data.sft",
    "load_sft": "dllm_rl.data.sft",
    "tokenize_sft": "dllm_rl.data.sft",
    "TokenizeStats": "dllm_rl.data.formatting",
}

__all__ = ["DATA_ENV", "data_dir", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'dllm_rl.data' has no attribute {name!r}")
