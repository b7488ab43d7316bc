"""Tiny models and prompts shared by the sampler tests."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dllm_rl.models.adapter import DiffusionLM
from dllm_rl.models.tiny import build_tiny_llada
from dllm_rl.rollout.sampler import encode_prompts

# init_std 0.3 gives peaked, varied predictions (0.02 predicts one token everywhere, so every
# ranking would be a tie and the tests below could not fail).
INIT_STD = 0.3
PROMPTS = ["What is 2+3?", "Hi", "Tell me a story."]


@pytest.fixture(scope="session")
def tiny() -> DiffusionLM:
    return build_tiny_llada(0, init_std=INIT_STD)


@pytest.fixture(scope="session")
def tiny64() -> DiffusionLM:
    """float64 weights: batch-shape rounding stays far below any ranking gap."""
    return build_tiny_llada(0, init_std=INIT_STD, dtype=torch.float64)


@pytest.fixture(scope="session")
def prompts(tiny) -> tuple[torch.Tensor, torch.Tensor]:
    """Three left-padded prompts of 12, 2 and 16 tokens: ``[3, 16]`` ids and mask."""
    return encode_prompts(tiny, PROMPTS)


class LogitBias(nn.Module):
    """Wraps a network and adds ``bias`` to one token's logit everywhere."""

    def __init__(self, inner: nn.Module, token: int, bias: float):
        super().__init__()
        self.inner, self.token, self.bias = inner, token, bias

    def forward(self, input_ids, attention_mask=None):
        logits = self.inner(input_ids=input_ids, attention_mask=attention_mask).logits
        shift = torch.zeros(logits.shape[-1], dtype=logits.dtype, device=logits.device)
        shift[self.token] = self.bias
        return logits + shift


def biased(lm: DiffusionLM, token: int, bias: float) -> DiffusionLM:
    """The same model with ``token`` favoured by ``bias`` nats."""
    return DiffusionLM(LogitBias(lm.model, token, bias), lm.ids, tokenizer=lm.tokenizer)
