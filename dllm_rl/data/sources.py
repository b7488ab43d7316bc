"""Reading raw rows: local files (JSONL, JSON, CSV, gzip) and ``datasets.load_dataset`` paths."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path
from typing import Any

import datasets


def read_local_file(path: Path) -> datasets.Dataset:
    """Rows of a local ``.jsonl``, ``.json`` (an array of objects), ``.csv`` (every column read as
    a string, so Sudoku's leading zeros survive) or ``.parquet`` file, optionally gzipped."""
    name = path.name.removesuffix(".gz")
    if name.endswith(".parquet"):
        return datasets.Dataset.from_parquet(str(path))
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        if name.endswith(".jsonl"):
            rows: list[dict[str, Any]] = [json.loads(line) for line in f if line.strip()]
        elif name.endswith(".json"):
            rows = json.load(f)
        elif name.endswith(".csv"):
            rows = list(csv.DictReader(f))
        else:
            raise ValueError(
                f"cannot read {path}: expected .jsonl, .json, .csv or .parquet (optionally .gz)"
            )
    if not rows:
        raise ValueError(f"{path} holds no rows")
    return datasets.Dataset.from_list(rows)


def load_dataset_path(
    path: str, config: str | None, split: str
) -> datasets.Dataset:  # pragma: no cover - needs the hub or a dataset folder
    """``datasets.load_dataset(path, config, split=split)``, with an error that says what to do."""
    try:
        return datasets.load_dataset(path, config, split=split)
    except Exception as err:  # noqa: BLE001 - re-raised with context below
        raise RuntimeError(
            f"datasets.load_dataset({path!r}, {config!r}, split={split!r}) failed: {err}. "
            "For the local copies leave source=None and set DLLM_RL_DATA, or pass a file path."
        ) from err
