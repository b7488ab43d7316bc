"""Shared test fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dllm_rl.data.paths import data_dir

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """``$DLLM_RL_DATA`` or ``../shared/data`` beside the checkout (see ``dllm_rl.data.paths``)."""
    return data_dir()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = shared_data_dir()
    if not (path / "gsm8k").is_dir():
        message = f"shared datasets not found at {path}; set DLLM_RL_DATA"
        if os.environ.get("DLLM_RL_REQUIRE_DATA"):  # CI: a missing folder must not pass silently
            pytest.fail(message)
        pytest.skip(message)
    return path
