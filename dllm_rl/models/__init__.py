"""Model adapters: one :class:`DiffusionLM` interface over LLaDA, Dream and masked LMs."""

from dllm_rl.models.adapter import DiffusionLM, SpecialIds, bidirectional_mask

__all__ = ["DiffusionLM", "SpecialIds", "bidirectional_mask"]
