"""Task registry and the one entry point, :func:`load_task`.

Where rows come from (``source``):

- ``None``: the local copy under :func:`~dllm_rl.data.paths.data_dir` when one exists for the
  split; otherwise, for the generated tasks (Countdown and Sudoku train, addition), the generator.
- ``"local"``: the local copy only.
- ``"generate"``: the generator (countdown, sudoku, addition), deterministic from ``seed``.
- ``"hub"``: the task's registered ``datasets`` hub id and config (needs network or a cache).
- a path to a file or folder: read locally (a folder is searched for the task's usual file name,
  else handed to ``datasets.load_dataset``).
- any other string: ``datasets.load_dataset(source, split=split)`` (with the registered config
  when it is the registered hub id).

Whatever the source, each row goes through the task's pure row function, so the hub layout and
the local layout give the same columns.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import zlib
from collections.abc import Callable, Collection, Hashable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets

from dllm_rl.data.addition import addition_row, generate_addition
from dllm_rl.data.code_tasks import MBPP_SPLITS, humaneval_row, in_mbpp_split, mbpp_row
from dllm_rl.data.countdown import countdown_row, generate_countdown
from dllm_rl.data.math_tasks import gsm8k_row, math500_row, math_row
from dllm_rl.data.paths import DATA_ENV, data_dir
from dllm_rl.data.sources import load_dataset_path, read_local_file
from dllm_rl.data.sudoku import generate_sudoku, sudoku_row
from dllm_rl.data.templates import resolve_template
from dllm_rl.run.errors import DataError

RowFn = Callable[..., dict[str, Any]]

# One generated puzzle in TEST_SHARE goes to the test split, by a stable hash of the puzzle, so
# generated train and test sets never overlap whatever their sizes and seeds.
TEST_SHARE = 10


@dataclass(frozen=True)
class TaskSpec:
    """How to load one task.

    Attributes:
        row_fn: pure function ``(row, *, template, chat) -> record``.
        columns: the record's columns (documentation and tests).
        splits: the splits the task offers.
        local: split -> file path relative to the data folder.
        local_filter: ``(row, split) -> keep`` for files that hold several splits (MBPP).
        hub: the ``datasets`` hub id, and its config.
        hub_splits: split -> hub split expression, where they differ.
        generator: ``(n, seed, *, exclude, **options) -> raw rows`` for generated tasks.
        key: a raw row's identity, to keep generated splits disjoint from each other and from
            the local test file.
        sizes: split -> default number of generated rows.
        rewards: the task's rewards when a recipe lists none (the first is the accuracy reward
            of an evaluation).
    """

    row_fn: RowFn
    columns: tuple[str, ...]
    splits: tuple[str, ...]
    local: Mapping[str, str] = field(default_factory=dict)
    local_filter: Callable[[dict[str, Any], str], bool] | None = None
    hub: str | None = None
    hub_config: str | None = None
    hub_splits: Mapping[str, str] = field(default_factory=dict)
    generator: Callable[..., list[dict[str, Any]]] | None = None
    key: Callable[[dict[str, Any]], Hashable] | None = None
    sizes: Mapping[str, int] = field(default_factory=dict)
    rewards: tuple[str, ...] = ()


def _countdown_key(row: dict[str, Any]) -> Hashable:
    # Raw rows: generated {"numbers", "target"} or d1's {"input": "30,100,93", "output": "23"}.
    if "input" in row:
        return (tuple(sorted(int(x) for x in row["input"].split(","))), int(row["output"]))
    return (tuple(sorted(row["numbers"])), int(row["target"]))


def _sudoku_key(row: dict[str, Any]) -> Hashable:
    return row["Puzzle"] if "Puzzle" in row else row["puzzle"]


_MATH_COLUMNS = ("prompt", "answer", "solution")
_CODE_COLUMNS = ("prompt", "tests", "test_setup", "code_prefix", "entry_point", "task_id")
_MBPP_SPLIT_NAMES = (*MBPP_SPLITS, "all")
_MBPP_HUB_SPLITS = {"all": "+".join(MBPP_SPLITS)}

TASKS: dict[str, TaskSpec] = {
    "gsm8k": TaskSpec(
        row_fn=gsm8k_row,
        columns=_MATH_COLUMNS,
        splits=("train", "test"),
        local={"train": "gsm8k/train.jsonl", "test": "gsm8k/test.jsonl"},
        hub="openai/gsm8k",
        hub_config="main",
        rewards=("math",),
    ),
    "math500": TaskSpec(
        row_fn=math500_row,
        columns=(*_MATH_COLUMNS, "unique_id", "subject", "level"),
        splits=("test",),
        local={"test": "math500/test.jsonl"},
        hub="HuggingFaceH4/MATH-500",
        rewards=("math",),
    ),
    "math": TaskSpec(
        row_fn=math_row,
        columns=(*_MATH_COLUMNS, "subject", "level"),
        splits=("train", "test"),
        hub="DigitalLearningGmbH/MATH-lighteval",  # no local copy: source=hub or a path
        rewards=("math",),
    ),
    "countdown": TaskSpec(
        row_fn=countdown_row,
        columns=("prompt", "numbers", "target"),  # + "solution" when generated
        splits=("train", "test"),
        local={"test": "countdown/countdown_cd3_test.jsonl"},
        hub="Jiayi-Pan/Countdown-Tasks-3to4",  # train only
        generator=generate_countdown,
        key=_countdown_key,
        sizes={"train": 10_000, "test": 500},
        rewards=("countdown",),
    ),
    "sudoku": TaskSpec(
        row_fn=sudoku_row,
        columns=("prompt", "puzzle", "solution"),
        splits=("train", "test"),
        local={"test": "sudoku/4x4_test_sudoku.csv"},
        generator=generate_sudoku,
        key=_sudoku_key,
        sizes={"train": 10_000, "test": 500},
        rewards=("sudoku",),
    ),
    "humaneval": TaskSpec(
        row_fn=humaneval_row,
        columns=(*_CODE_COLUMNS, "canonical_solution"),
        splits=("test",),
        local={"test": "humaneval/HumanEval.jsonl"},
        hub="openai/openai_humaneval",
        rewards=("code",),
    ),
    "mbpp": TaskSpec(
        row_fn=mbpp_row,
        columns=(*_CODE_COLUMNS, "reference_code"),
        splits=_MBPP_SPLIT_NAMES,
        local=dict.fromkeys(_MBPP_SPLIT_NAMES, "mbpp/mbpp.jsonl"),
        local_filter=in_mbpp_split,
        hub="google-research-datasets/mbpp",
        hub_config="full",
        hub_splits=_MBPP_HUB_SPLITS,
        rewards=("code",),
    ),
    "mbpp_sanitized": TaskSpec(
        row_fn=mbpp_row,
        columns=(*_CODE_COLUMNS, "reference_code"),
        splits=_MBPP_SPLIT_NAMES,
        local=dict.fromkeys(_MBPP_SPLIT_NAMES, "mbpp/sanitized-mbpp.jsonl"),
        local_filter=in_mbpp_split,
        hub="google-research-datasets/mbpp",
        hub_config="sanitized",
        hub_splits=_MBPP_HUB_SPLITS,
        rewards=("code",),
    ),
    "addition": TaskSpec(
        row_fn=addition_row,
        columns=("prompt", "answer", "a", "b"),
        splits=("train", "test"),
        generator=generate_addition,
        key=lambda row: (row["a"], row["b"]),
        sizes={"train": 5_000, "test": 500},
        rewards=("exact_answer",),
    ),
}


def describe_source(
    task: str,
    split: str,
    source: str | None,
    seed: int,
    count_rows: Callable[[], int] | None = None,
) -> str:
    """Where the rows of ``task``/``split`` would come from, checked without the network: the
    dry run's ``data:`` line, the same for every trainer and the evaluation.

    Args:
        task: a registered task.
        split: one of its splits.
        source: ``data.source`` (None, local, generate, hub, or a path).
        seed: the run's seed (generated splits).
        count_rows: reads a local file ``source`` and returns its row count (so the dry run
            checks it as the run will); None: the file is only named.

    Raises:
        UnknownTaskError, ValueError (an unknown split), FileNotFoundError (a missing local
        copy): each with the fix.
    """
    spec = get_task(task)
    if split not in spec.splits:
        raise ValueError(f"task {task!r} has no split {split!r}; choose from {spec.splits}")
    if source in (None, "local") and split in spec.local:
        path = data_dir() / spec.local[split]
        if not path.is_file():
            raise FileNotFoundError(
                f"{task} {split}: no local copy at {path}; set DLLM_RL_DATA or data.source"
            )
        return f"{task}/{split} from {path}"
    if source in (None, "generate") and spec.generator is not None:
        return f"{task}/{split} generated (seed {seed})"
    if source is not None and Path(str(source)).expanduser().is_file():
        rows = f": {count_rows()} rows" if count_rows is not None else ""
        return f"{task}/{split} from {source}{rows}"
    return f"{task}/{split} from {source!r} (not checked offline)"


def load_records(
    task: str,
    split: str,
    *,
    source: str | None = None,
    template: str | None = None,
    limit: int | None = None,
    seed: int = 0,
    options: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """:func:`load_task`'s records as plain dicts (what rollouts and rewards take)."""
    rows = load_task(
        task, split, source=source, template=template, limit=limit, seed=seed, **(options or {})
    )
    return [dict(row) for row in rows]


class UnknownTaskError(KeyError):
    """A task name that is not in :data:`TASKS` (the message names the close matches)."""

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0])


def get_task(name: str) -> TaskSpec:
    """The registered :class:`TaskSpec` for ``name``; :class:`UnknownTaskError` otherwise."""
    if name not in TASKS:
        close = difflib.get_close_matches(name, TASKS, n=3, cutoff=0.5)
        hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
        raise UnknownTaskError(f"unknown task {name!r}.{hint} Known tasks: {', '.join(TASKS)}.")
    return TASKS[name]


def load_task(
    name: str,
    split: str = "test",
    *,
    source: str | Path | None = None,
    template: str | None = None,
    chat: bool = False,
    limit: int | None = None,
    seed: int = 0,
    **options: Any,
) -> datasets.Dataset:
    """Load a task as records ready for rollouts and rewards.

    Args:
        name: a key of :data:`TASKS` (gsm8k, math500, countdown, sudoku, humaneval, mbpp,
            mbpp_sanitized, addition).
        split: one of the task's splits (``TASKS[name].splits``).
        source: where rows come from; see the module docstring. ``None`` reads the local copy,
            or generates when the task has no local copy of this split.
        template: a template name from :data:`dllm_rl.data.templates.TEMPLATES` or a string with
            a ``{question}`` placeholder; ``None`` takes the task's default.
        chat: make ``prompt`` a one-message conversation ``[{"role": "user", "content": ...}]``
            for the tokenizer's chat template, instead of plain text.
        limit: keep the first ``limit`` rows.
        seed: seed of generated data (each split draws from its own stream).
        **options: generator options for generated data: ``size`` (number of rows) and the
            generator's keywords (countdown: ``num_numbers``, ``number_range``, ``target_range``;
            sudoku: ``num_blanks``; addition: ``digits``).

    Returns:
        A ``datasets.Dataset`` with ``prompt`` and the task's grading columns.
    """
    spec = get_task(name)
    if split not in spec.splits:
        raise ValueError(f"task {name!r} has no split {split!r}; choose from {list(spec.splits)}")
    text = resolve_template(template, name)
    generate = source == "generate" or (
        source is None and spec.generator is not None and split not in spec.local
    )
    if generate:
        raw = _generate(name, spec, split, seed, limit, options)
    else:
        if options:
            raise ValueError(
                f"options {sorted(options)} only apply to generated data; {name!r} {split!r} is "
                "read from a dataset here (pass source='generate' for generated data)"
            )
        raw = _read(name, spec, split, source)
    if limit is not None:
        raw = raw.select(range(min(limit, len(raw))))
    # Source columns get a prefix so that an output column of the same name (MBPP's task_id,
    # int in the source and str here) takes its own type instead of the source column's.
    raw = raw.rename_columns({c: _RAW + c for c in raw.column_names})
    to_record = functools.partial(
        _to_record, row_fn=spec.row_fn, template=text, chat=chat, where=f"{name}/{split}"
    )
    records = raw.map(
        to_record, with_indices=True, remove_columns=raw.column_names, desc=f"{name}/{split}"
    )
    first = [c for c in spec.columns if c in records.column_names]
    return records.select_columns(first + [c for c in records.column_names if c not in first])


_RAW = "__raw__"


def _to_record(
    row: dict[str, Any], index: int, *, row_fn: RowFn, template: str, chat: bool, where: str
) -> dict[str, Any]:
    fields = {k.removeprefix(_RAW): v for k, v in row.items()}
    try:
        return row_fn(fields, template=template, chat=chat)
    except KeyError as missing:
        raise DataError(
            f"{where}, row {index + 1}: no column {missing}; the rows have {sorted(fields)}"
        ) from None
    except (TypeError, ValueError) as error:
        raise DataError(f"{where}, row {index + 1}: {error}") from None


def _read(name: str, spec: TaskSpec, split: str, source: str | Path | None) -> datasets.Dataset:
    if source is None or source == "local":
        if split not in spec.local:
            raise ValueError(f"task {name!r} has no local copy of split {split!r}")
        path = data_dir() / spec.local[split]
        if not path.is_file():
            raise FileNotFoundError(
                f"{name} {split}: no local copy at {path}. Set {DATA_ENV} to the folder of "
                f"local dataset copies (the one holding {spec.local[split]}), or pass "
                f"source=<file, folder or datasets path>."
            )
        return _filter(spec, read_local_file(path), split)
    if source == "hub":
        if spec.hub is None:
            raise ValueError(f"task {name!r} has no registered hub dataset; pass a path instead")
        return load_dataset_path(spec.hub, spec.hub_config, spec.hub_splits.get(split, split))
    path = Path(source).expanduser()
    if path.is_file():
        return _filter(spec, read_local_file(path), split)
    if path.is_dir():
        for candidate in _candidates(path, spec.local.get(split)):
            if candidate.is_file():
                return _filter(spec, read_local_file(candidate), split)
        return load_dataset_path(str(path), None, split)
    config = spec.hub_config if str(source) == spec.hub else None
    return load_dataset_path(str(source), config, spec.hub_splits.get(split, split))


def _candidates(folder: Path, relative: str | None) -> list[Path]:
    # A folder may be the data root ("shared/data") or the task's own folder ("shared/data/mbpp").
    return [folder / relative, folder / Path(relative).name] if relative else []


def _filter(spec: TaskSpec, raw: datasets.Dataset, split: str) -> datasets.Dataset:
    if spec.local_filter is None:
        return raw
    keep = [i for i, row in enumerate(raw) if spec.local_filter(row, split)]
    return raw.select(keep)


def _generate(
    name: str, spec: TaskSpec, split: str, seed: int, limit: int | None, options: dict[str, Any]
) -> datasets.Dataset:
    if spec.generator is None:
        raise ValueError(f"task {name!r} has no generator; generated tasks: {_generated_tasks()}")
    options = dict(options)
    size = int(options.pop("size", spec.sizes[split]))
    allowed = set(inspect.signature(spec.generator).parameters) - {"n", "seed", "exclude"}
    unknown = sorted(set(options) - allowed)
    if unknown:
        close = {k: difflib.get_close_matches(k, allowed | {"size"}, n=1) for k in unknown}
        raise ValueError(
            f"unknown {name} generator option(s) {close}; allowed: {sorted(allowed | {'size'})}"
        )
    held_out: set[Hashable] = set()
    if split != "test" and "test" in spec.local:
        path = data_dir() / spec.local["test"]
        if path.is_file():  # keep generated training data off the real test set
            held_out = {spec.key(row) for row in read_local_file(path)}
    n = size if limit is None else min(size, limit)
    rows = spec.generator(
        n, f"{name}/{split}/{seed}", exclude=_OtherSplits(split, held_out), **options
    )
    return datasets.Dataset.from_list(rows)


class _OtherSplits(Collection):
    """The keys a generated split must avoid: those hashed to the other split, and held-out ones."""

    def __init__(self, split: str, held_out: Collection[Hashable]) -> None:
        self.split, self.held_out = split, held_out

    def __contains__(self, key: object) -> bool:
        in_test = zlib.crc32(repr(key).encode()) % TEST_SHARE == 0
        return in_test != (self.split == "test") or key in self.held_out

    def __iter__(self):  # only membership is meaningful
        return iter(())

    def __len__(self) -> int:
        return 0


def _generated_tasks() -> list[str]:
    return [name for name, spec in TASKS.items() if spec.generator is not None]
