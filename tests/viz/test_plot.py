"""Training curves: one PNG from metrics.jsonl, held-out reward when eval rows exist."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dllm_rl.plot import PANELS, main, plot_metrics, plot_run, series


def _write(root: Path, rows: list[dict]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def _rows(n: int, eval_every: int = 0) -> list[dict]:
    rows = []
    for s in range(1, n + 1):
        rows.append(
            {
                "step": s,
                "reward": s / n,
                "reward_std": 0.1,
                "kl": 0.01 * s,
                "clip_ratio/region_mean": 0.0,
                "completions/mean_length": 8.0,
                "learning_rate": 1e-4,
                "time/step_s": 0.5,
                "loss": 1.0 / s,
            }
        )
        if eval_every and s % eval_every == 0:
            rows.append({"step": s, "eval/reward": s / n, "eval/rewards/exact_answer/mean": s / n})
    return rows


def test_series_keeps_the_last_row_of_a_repeated_step():
    rows = [
        {"step": 2, "reward": 1.0},
        {"step": 1, "reward": 0.0},
        {"step": 2, "reward": 5.0},
        {"step": 3, "reward": float("nan")},
        {"step": 4, "eval/reward": 1.0},
    ]
    assert series(rows, "reward") == ([1, 2], [0.0, 5.0])


@pytest.mark.parametrize("eval_every", [0, 2])
def test_plot_run_writes_one_png(tmp_path, eval_every, monkeypatch):
    import matplotlib.axes

    titles = []
    real = matplotlib.axes.Axes.set_title
    monkeypatch.setattr(
        matplotlib.axes.Axes,
        "set_title",
        lambda self, t, *a, **k: titles.append(t) or real(self, t, *a, **k),
    )
    run = _write(tmp_path / "run", _rows(60, eval_every))
    png = plot_run(run)
    assert png == run / "training.png" and png.read_bytes()[:4] == b"\x89PNG"
    want = [
        "reward",
        "KL to the reference",
        "clip ratio",
        "completion length",
        "learning rate",
        "step time (s)",
        "loss",
    ]
    assert [t for t in titles if t != "held-out reward"] == want
    assert ("held-out reward" in titles) == bool(eval_every)


def test_cli_and_errors(tmp_path, capsys):
    assert main([str(tmp_path / "nothing")]) == 2
    assert "no such file" in capsys.readouterr().err
    run = _write(tmp_path / "r", [{"step": 1, "foo": 1.0}])
    assert main([str(run)]) == 2
    assert "nothing to plot" in capsys.readouterr().err
    run = _write(tmp_path / "ok", _rows(3))
    assert main([str(run), "--out", str(tmp_path / "x.png")]) == 0
    assert (tmp_path / "x.png").is_file()


def test_preference_metrics_get_their_panels(tmp_path):
    rows = [
        {
            "step": s,
            "loss": 0.7,
            "rewards/chosen": 0.1 * s,
            "rewards/rejected": -0.1 * s,
            "rewards/margins": 0.2 * s,
            "rewards/accuracies": 0.5,
        }
        for s in range(1, 5)
    ]
    assert plot_metrics(rows, tmp_path / "p.png").is_file()
    assert {name for name, _ in PANELS} >= {"preference rewards", "held-out reward"}
