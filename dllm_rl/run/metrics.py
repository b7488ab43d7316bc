"""Metrics out of a run: ``metrics.jsonl``, ``samples.jsonl``, a tqdm bar, and wandb if asked.

Only the main process writes. wandb runs offline when no API key is configured: it never prompts.
"""

from __future__ import annotations

import json
import logging
import math
import netrc
import os
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else str(value)  # JSON has no NaN/inf
    return value


class MetricsLogger:
    """Writes one JSON object per step and, on the console, a progress bar with the key figures.

    Args:
        root: the run directory.
        total_steps: length of the progress bar.
        is_main: only the main process writes anything.
        report_to: "none" or "wandb".
        config: the resolved config (sent to wandb).
        project: wandb project; run name = the run directory's name.
        start_step: the step a resumed run starts from.
        line_every: in a log file (not a terminal), the console line is written every this many
            steps (``run.logging_steps``) and at the last step.
    """

    def __init__(
        self,
        root: Path,
        total_steps: int,
        *,
        is_main: bool = True,
        report_to: str = "none",
        config: Mapping[str, Any] | None = None,
        project: str = "dllm-rl",
        start_step: int = 0,
        bar_keys: tuple[str, ...] = ("reward", "loss"),
        line_every: int = 1,
    ) -> None:
        self.root, self.is_main, self.bar_keys = Path(root), is_main, bar_keys
        self.total_steps, self.line_every = total_steps, max(1, line_every)
        self._wandb = None
        self._bar = None
        self._log_lines = False
        if not is_main:
            return
        from dllm_rl.progress import is_terminal, progress_bar

        # On a terminal a bar; in a log file (not a terminal) one line per step instead.
        self._bar = progress_bar(total=total_steps, initial=start_step, desc="train")
        self._log_lines = not is_terminal()
        if report_to == "wandb":
            self._wandb = _start_wandb(project, self.root, config)

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        """Append ``{"step": step, **metrics}`` to metrics.jsonl (and wandb), advance the bar."""
        if not self.is_main:
            return
        row = self._write(step, metrics)
        if self._bar is not None:
            shown = {k: f"{row[k]:.3g}" for k in self.bar_keys if isinstance(row.get(k), float)}
            if isinstance(row.get("time/step_s"), float):
                shown["s/step"] = f"{row['time/step_s']:.2f}"
            self._bar.set_postfix(shown, refresh=False)
            self._bar.update(1)
            if self._log_lines and (step % self.line_every == 0 or step == self.total_steps):
                logger.info("step %d: %s", step, ", ".join(f"{k} {v}" for k, v in shown.items()))

    def log_eval(self, step: int, metrics: Mapping[str, Any]) -> None:
        """Evaluation metrics: appended as their own row (``eval/...`` keys)."""
        if not self.is_main:
            return
        self._write(step, metrics)

    def _write(self, step: int, metrics: Mapping[str, Any]) -> dict[str, Any]:
        """One row to metrics.jsonl (and its numbers to wandb); returns the row."""
        row = {"step": step, **{k: _jsonable(v) for k, v in metrics.items()}}
        with open(self.root / "metrics.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        if self._wandb is not None:
            self._wandb.log(
                {k: v for k, v in row.items() if isinstance(v, (int, float))}, step=step
            )
        return row

    def samples(self, step: int, rows: list[dict[str, Any]]) -> None:
        """Append sample rows (prompt, completion, rewards, unmask order) to samples.jsonl."""
        if not self.is_main or not rows:
            return
        with open(self.root / "samples.jsonl", "a") as f:
            for row in rows:
                f.write(json.dumps({"step": step, **row}) + "\n")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        if self._wandb is not None:
            self._wandb.finish()


def _has_wandb_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        auth = netrc.netrc().authenticators("api.wandb.ai")
    except (OSError, netrc.NetrcParseError):
        return False
    return bool(auth and auth[2])


def _start_wandb(project: str, root: Path, config: Mapping[str, Any] | None) -> Any:
    import wandb

    mode = os.environ.get("WANDB_MODE") or ("online" if _has_wandb_key() else "offline")
    if mode == "offline":
        logger.info("wandb: no API key found, logging offline to %s (wandb sync to upload)", root)
    # One wandb run per run directory: a resumed run continues it (the id is kept in the folder).
    # Steps the interrupted run had already sent are refused by wandb; exact resume logs the
    # same values for them.
    id_file = root / "wandb_id"
    run_id = id_file.read_text().strip() if id_file.is_file() else None
    if not run_id:
        run_id = uuid.uuid4().hex[:12]
        id_file.write_text(run_id + "\n")
    return wandb.init(
        project=project,
        name=root.name,
        dir=str(root),
        config=dict(config or {}),
        mode=mode,
        id=run_id,
        resume="allow",
    )


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a ``metrics.jsonl`` file."""
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def rows_up_to(path: str | Path, step: int) -> list[str]:
    """The JSON lines of ``path`` whose ``step`` is at most ``step`` (unreadable lines, such as
    the half-written last line of a killed process, are left out)."""
    path = Path(path)
    if not path.is_file():
        return []
    kept = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                logger.warning("%s: dropped an unreadable line (%.60s...)", path.name, line)
                continue
            if isinstance(row, dict) and row.get("step", 0) <= step:
                kept.append(line)
    return kept


def truncate_after(path: str | Path, step: int) -> int:
    """Drop the rows of ``path`` logged after ``step`` (by a run that died after its last
    checkpoint), rewriting the file atomically; returns how many lines went."""
    path = Path(path)
    if not path.is_file():
        return 0
    with open(path) as f:
        before = sum(1 for line in f if line.strip())
    kept = rows_up_to(path, step)
    if len(kept) == before:
        return 0
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(line + "\n" for line in kept))
    os.replace(tmp, path)
    return before - len(kept)
