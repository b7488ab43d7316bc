"""The run directory: one folder per run that holds everything needed to read or continue it.

Layout::

    <output_dir>/
      config.yaml      the resolved config (recipe + overrides + defaults)
      command.txt      the command line
      meta.json        git sha, package versions, processes, start time
      metrics.jsonl    one JSON object per step
      samples.jsonl    a few prompts, completions, rewards and unmask orders per logging step
      checkpoints/     step-000010/, ..., and `latest` (the name of the newest complete one)
"""

from __future__ import annotations

import json
import platform
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from dllm_rl.run.cli import to_yaml
from dllm_rl.run.errors import StartError

PACKAGES = (
    "torch",
    "transformers",
    "accelerate",
    "peft",
    "trl",
    "datasets",
    "math-verify",
    "deepspeed",
    "dllm-rl",
)


@dataclass(frozen=True)
class RunDir:
    """Paths of one run directory."""

    root: Path

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def samples(self) -> Path:
        return self.root / "samples.jsonl"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"


def default_output_dir(recipe: str, now: float | None = None) -> str:
    """``outputs/<recipe>/<YYYYmmdd-HHMMSS>`` (local time)."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(time.time() if now is None else now))
    return str(Path("outputs") / recipe / stamp)


def agree_on_output_dir(output_dir: str | None, recipe: str, accelerator: Any | None) -> str:
    """The run directory every rank uses: rank 0's choice, broadcast to the others."""
    chosen = output_dir or default_output_dir(recipe)
    if accelerator is None or accelerator.num_processes == 1:
        return chosen
    from accelerate.utils import broadcast_object_list

    box = [chosen]
    broadcast_object_list(box, from_process=0)
    return box[0]


RUN_FILES = ("metrics.jsonl", "samples.jsonl", "command.txt", "meta.json", "training.png")
"""What a run writes at the top of its folder (besides ``config*.yaml`` and ``checkpoints/``)."""


def previous_run(root: Path) -> str | None:
    """What a run directory already holds (a description), or None when it holds no run."""
    run = RunDir(Path(root))
    latest = run.checkpoints / "latest"
    rows = run.metrics.read_text().count("\n") if run.metrics.is_file() else 0
    if not rows and not latest.is_file():
        return None
    held = [f"{rows} metric row(s)"] if rows else []
    if latest.is_file():
        held.append(f"checkpoints up to {latest.read_text().strip()}")
    return ", ".join(held)


def has_trained(root: Path) -> bool:
    """A checkpoint, or a metric row of a training step (step >= 1): an evaluation before the
    first step alone does not make a folder a run worth keeping."""
    run = RunDir(Path(root))
    if (run.checkpoints / "latest").is_file():
        return True
    if not run.metrics.is_file():
        return False
    for line in run.metrics.read_text().splitlines():
        try:
            if int(json.loads(line).get("step", 0)) >= 1:
                return True
        except (ValueError, AttributeError):  # a torn or foreign line: keep the folder
            return True
    return False


def check_output_dir(root: Path, resuming: bool, overwrite: bool) -> bool:
    """Refuse to start a new run on top of a finished one; True when it is to be wiped first.

    Raises:
        StartError: ``root`` is a file, or holds a run and neither ``resume_from`` nor
            ``run.overwrite=true`` was given (with both ways out).
    """
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise StartError(f"output_dir={root} is a file: choose a folder")
    if resuming:
        return False
    held = previous_run(root)
    if held is None:
        return False
    if not overwrite:
        raise StartError(
            f"output_dir={root} already holds a run ({held}): continue it with "
            f"resume_from=latest, choose another output_dir, or pass run.overwrite=true to "
            "replace it"
        )
    return True


def wipe_run(root: Path) -> None:
    """Delete what a run wrote in ``root`` (only the run's own files: the folder stays)."""
    import shutil

    root = Path(root)
    for name in RUN_FILES:
        (root / name).unlink(missing_ok=True)
    for config in root.glob("config*.yaml"):
        config.unlink()
    shutil.rmtree(root / "checkpoints", ignore_errors=True)


def create_run_dir(
    root: str | Path, config: Any, argv: list[str], num_processes: int = 1
) -> RunDir:
    """Make the folder and write ``config.yaml``, ``command.txt`` and ``meta.json`` (main rank).

    A run directory that already holds a run (a resume) keeps its history: the command is
    appended to ``command.txt``, the previous ``config.yaml`` is kept as ``config.<n>.yaml``, and
    ``meta.json`` lists every start under ``starts``.
    """
    run = RunDir(Path(root))
    run.checkpoints.mkdir(parents=True, exist_ok=True)
    config_path = run.root / "config.yaml"
    if config_path.is_file():
        n = 1
        while (run.root / f"config.{n}.yaml").exists():
            n += 1
        config_path.rename(run.root / f"config.{n}.yaml")
    config_path.write_text(to_yaml(config))
    with open(run.root / "command.txt", "a") as f:
        f.write(shlex.join([Path(sys.argv[0]).name, *argv]) + "\n")
    meta_path = run.root / "meta.json"
    start = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "git_sha": git_sha(),
        "num_processes": num_processes,
    }
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    meta.update(
        {
            **start,
            "python": platform.python_version(),
            "platform": platform.platform(),
            "packages": package_versions(),
            "starts": [*meta.get("starts", []), start],
        }
    )
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    return run


def git_sha() -> str | None:
    """The checkout's commit (with ``-dirty``), or None outside a git checkout."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5
        )
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
        )
        return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.TimeoutExpired):
        return None


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions
