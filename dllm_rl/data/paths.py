"""Where the local dataset copies live."""

from __future__ import annotations

import os
from pathlib import Path

DATA_ENV = "DLLM_RL_DATA"
"""Environment variable naming the folder of local dataset copies."""

REPO_ROOT = Path(__file__).resolve().parents[2]


def data_dir() -> Path:
    """The folder of local dataset copies: ``$DLLM_RL_DATA`` if set, else ``<repo>/../shared/data``.

    The folder may not exist (for example in an installed package); loaders say where they looked
    and how to point them elsewhere.
    """
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env).expanduser()
    return REPO_ROOT.parent / "shared" / "data"
