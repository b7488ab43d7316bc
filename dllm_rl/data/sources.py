"""Reading raw rows: local files (JSONL, JSON, CSV, gzip) and ``datasets.load_dataset`` paths."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path
from typing import Any

import datasets

from dllm_rl.run.errors import DataError


def read_local_file(path: Path) -> datasets.Dataset:
    """Rows of a local ``.jsonl``, ``.json`` (an array of objects), ``.csv`` (every column read as
    a string, so Sudoku's leading zeros survive) or ``.parquet`` file, optionally gzipped.

    Raises:
        DataError: the file is empty, a line is not a JSON object, or the JSON is malformed
            (with the file, line and column).
    """
    name = path.name.removesuffix(".gz")
    if name.endswith(".parquet"):
        return datasets.Dataset.from_parquet(str(path))
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        if name.endswith(".jsonl"):
            rows: list[dict[str, Any]] = _jsonl_rows(path, f)
        elif name.endswith(".json"):
            try:
                rows = json.load(f)
            except json.JSONDecodeError as err:
                raise DataError(
                    f"{path}, line {err.lineno}, column {err.colno}: not valid JSON ({err.msg})"
                ) from None
            if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
                raise DataError(f"{path}: expected a JSON array of objects (one per row)")
        elif name.endswith(".csv"):
            rows = list(csv.DictReader(f))
        else:
            raise DataError(
                f"cannot read {path}: expected .jsonl, .json, .csv or .parquet (optionally .gz)"
            )
    if not rows:
        raise DataError(f"{path} holds no rows")
    try:
        return datasets.Dataset.from_list(rows)
    except (TypeError, ValueError, ArithmeticError, LookupError) as err:
        raise DataError(
            mixed_types(path, rows) or f"{path}: rows not readable as a table ({err})"
        ) from None


def mixed_types(path: Path, rows: list[dict[str, Any]]) -> str | None:
    """The first row whose value in some column has another type than that column's first value
    (what makes a table of the rows fail), described; None when the types agree."""
    first: dict[str, tuple[type, int]] = {}
    for number, row in enumerate(rows, start=1):
        for column, value in row.items():
            if value is None:
                continue
            kind = type(value)
            seen = first.setdefault(column, (kind, number))
            if seen[0] is not kind:
                return (
                    f"{path}, row {number}: column {column!r} holds {kind.__name__} {value!r:.60} "
                    f"where row {seen[1]} holds {seen[0].__name__}: one type per column expected"
                )
    return None


def _jsonl_rows(path: Path, lines: Any) -> list[dict[str, Any]]:
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line.rstrip("\r\n"))  # so that the column is this line's
        except json.JSONDecodeError as err:
            raise DataError(
                f"{path}, line {number}, column {err.colno}: not valid JSON ({err.msg}); each "
                "line of a .jsonl file is one JSON object"
            ) from None
        if not isinstance(row, dict):
            raise DataError(
                f"{path}, line {number}: expected a JSON object, got {type(row).__name__}"
            )
        rows.append(row)
    return rows


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
