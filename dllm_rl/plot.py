"""``python -m dllm_rl.plot RUN_DIR``: a run's training curves in one PNG (``RUN_DIR/training.png``).

    python -m dllm_rl.plot outputs/cj_grpo_tiny/20261201-215703
    python -m dllm_rl.plot RUN_DIR --out curves.png

Reads ``metrics.jsonl``: reward (with its std band), KL, clip ratio, completion length, learning
rate and step time against step, and the held-out reward when the run had evaluation rows
(``eval/...`` keys). Panels whose metrics were never logged are left out, so a preference run
(``rewards/chosen``, ``rewards/margins``) gets its own panels from the same call. A resumed run's
repeated steps keep their last row. Trainers call :func:`plot_run` at the end of a run.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

PANELS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("reward", ("reward",)),
    ("held-out reward", ("eval/reward",)),
    ("KL to the reference", ("kl",)),
    ("clip ratio", ("clip_ratio/region_mean", "clip_ratio/low_mean", "clip_ratio/high_mean")),
    ("completion length", ("completions/mean_length",)),
    ("learning rate", ("learning_rate",)),
    ("step time (s)", ("time/step_s", "time/rollout_s", "time/train_s")),
    ("loss", ("loss",)),
    ("preference rewards", ("rewards/chosen", "rewards/rejected", "rewards/margins")),
    ("preference accuracy", ("rewards/accuracies",)),
)
"""(panel title, metric keys drawn in it); a panel is drawn when one of its keys was logged."""

BANDS = {"reward": "reward_std"}
EXACT = ("learning_rate", "eval/")
"""Keys drawn as logged, never smoothed (a schedule; sparse evaluation points)."""


def series(rows: Sequence[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    """``(steps, values)`` of ``key``, sorted by step; a repeated step keeps its last value."""
    by_step: dict[int, float] = {}
    for row in rows:
        value = row.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and "step" in row:
            if math.isfinite(value):
                by_step[int(row["step"])] = float(value)
    steps = sorted(by_step)
    return steps, [by_step[s] for s in steps]


def ema(values: Sequence[float], alpha: float) -> list[float]:
    out, acc = [], None
    for v in values:
        acc = v if acc is None else alpha * v + (1 - alpha) * acc
        out.append(acc)
    return out


def plot_metrics(rows: Sequence[dict[str, Any]], out: Path, title: str = "") -> Path:
    """Draw the panels of :data:`PANELS` that have data into one PNG at ``out``.

    Raises:
        ValueError: no panel has any data.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    eval_keys = sorted(
        {k for r in rows for k in r if k.startswith("eval/rewards/") and k.endswith("/mean")}
    )
    panels = []
    for name, keys in PANELS:
        if name == "held-out reward":
            keys = keys + tuple(eval_keys)
        drawn = [(k, *series(rows, k)) for k in keys]
        drawn = [d for d in drawn if d[1]]
        if drawn:
            panels.append((name, drawn))
    if not panels:
        raise ValueError("no known metric in the rows (reward, kl, loss, ...): nothing to plot")
    cols = 3 if len(panels) > 4 else 2
    nrows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.6 * cols, 2.9 * nrows), squeeze=False)
    for ax, (name, drawn) in zip(axes.flat, panels):
        for key, steps, values in drawn:
            many = len(values) > 50 and not key.startswith(EXACT)
            line = ax.plot(
                steps,
                values,
                label=key,
                lw=1,
                alpha=0.35 if many else 1.0,
                marker="o" if len(values) < 12 else None,
                ms=3,
            )[0]
            if many:
                ax.plot(steps, ema(values, 0.1), color=line.get_color(), lw=1.6)
            band = BANDS.get(key)
            if band:
                bsteps, std = series(rows, band)
                if bsteps == steps:
                    lo = [v - s for v, s in zip(values, std)]
                    hi = [v + s for v, s in zip(values, std)]
                    ax.fill_between(steps, lo, hi, color=line.get_color(), alpha=0.15, lw=0)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
        if name == "learning rate":
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
        if len(drawn) > 1:
            ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_run(run_dir: str | Path, out: str | Path | None = None, wandb_run: Any = None) -> Path:
    """``RUN_DIR/metrics.jsonl`` -> ``RUN_DIR/training.png`` (or ``out``); returns the path.

    Args:
        run_dir: a run directory written by a trainer.
        out: where to write the PNG (default ``RUN_DIR/training.png``).
        wandb_run: an active wandb run; the figure is logged to it as ``training_curves``.

    Raises:
        FileNotFoundError: no ``metrics.jsonl`` in ``run_dir``.
        ValueError: the file has no plottable metric.
    """
    from dllm_rl.run.metrics import read_metrics

    root = Path(run_dir)
    path = root / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (is {root} a run directory?)")
    png = plot_metrics(read_metrics(path), Path(out) if out else root / "training.png", root.name)
    if wandb_run is not None:
        import wandb

        wandb_run.log({"training_curves": wandb.Image(str(png))})
    return png


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m dllm_rl.plot", description=__doc__.split("\n")[0])
    p.add_argument("run_dir", type=Path, help="a run directory (holds metrics.jsonl)")
    p.add_argument("--out", type=Path, default=None, help="PNG path (default RUN_DIR/training.png)")
    args = p.parse_args(argv)
    try:
        png = plot_run(args.run_dir, args.out)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
