"""A temporary checkout of another commit, for scripts that measure two commits in one run."""

from __future__ import annotations

import contextlib
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def worktree(commit: str) -> Iterator[Path]:
    """``commit`` checked out (detached) in a temporary folder, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="dllm-rl-against-") as folder:
        path = Path(folder) / "checkout"
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(path), commit],
            cwd=REPO,
            check=True,
            capture_output=True,
        )
        try:
            yield path
        finally:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(path)], cwd=REPO, check=False
            )
