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


def run_in(checkout: Path, code: str, job: dict) -> dict:
    """Run ``code`` with ``checkout`` importable, ``job`` as JSON on its stdin; the JSON object
    its last stdout line prints."""
    import json
    import sys

    done = subprocess.run(
        [sys.executable, "-c", code],
        input=json.dumps(job),
        capture_output=True,
        text=True,
        cwd=checkout,
        env={"PYTHONPATH": str(checkout), "PATH": "/usr/local/bin:/usr/bin:/bin"},
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"the measurement failed in {checkout}:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])
