"""Tiny adapters of every family and attention backend, shared by the model tests."""

from __future__ import annotations

import pytest

from dllm_rl.models.tiny import build_tiny_dream, build_tiny_llada, build_tiny_masked_lm

# init_std 0.02 makes logits nearly constant; a larger scale makes every dependency visible.
BUILDERS = {
    "llada-sdpa": lambda: build_tiny_llada(0, init_std=0.2),
    "llada-eager": lambda: build_tiny_llada(0, init_std=0.2, attn_implementation="eager"),
    "llada-gqa": lambda: build_tiny_llada(0, init_std=0.2, n_kv_heads=2),
    "dream-sdpa": lambda: build_tiny_dream(0),
    "dream-eager": lambda: build_tiny_dream(0, attn_implementation="eager"),
    "modernbert-sdpa": lambda: build_tiny_masked_lm(0, arch="modernbert"),
    "modernbert-eager": lambda: build_tiny_masked_lm(
        0, arch="modernbert", attn_implementation="eager"
    ),
    "bert-sdpa": lambda: build_tiny_masked_lm(0, arch="bert"),
    "bert-eager": lambda: build_tiny_masked_lm(0, arch="bert", attn_implementation="eager"),
}


@pytest.fixture(params=sorted(BUILDERS))
def any_lm(request):
    """Every (family, backend) pair, freshly built (tests may switch it to train mode)."""
    return BUILDERS[request.param]()
