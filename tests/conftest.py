"""Shared test fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """``$DLLM_RL_DATA`` or ``../shared/data`` beside the checkout."""
    return Path(os.environ.get("DLLM_RL_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = shared_data_dir()
    if not (path / "gsm8k").is_dir():
        pytest.skip(f"shared datasets not found at {path}; set DLLM_RL_DATA")
    return path
