"""Checkpoints shared by every trainer.

A checkpoint is a folder ``checkpoints/step-000010/``::

    model/              save_pretrained: the full model and tokenizer, or the LoRA adapter only
                        (consolidated from every rank's shard under ZeRO-3 / FSDP2)
    optimizer.pt        optimizer state (plain and DDP engines)
    engine/             a sharded engine's own state, written by every rank: DeepSpeed's
                        partitioned optimizer and master weights, or FSDP2's rank-R.pt shards
    scheduler.pt        learning-rate scheduler state
    rng.pt              per process: torch CPU and CUDA, python and numpy RNG states, and the state
                        of every generator a trainer registered
    trainer_state.json  step, data position, skipped updates, and whatever else the trainer needs
    metrics.jsonl       the run's metric rows up to this step (the history plots are drawn from)

It is written into ``checkpoints/.tmp-step-000010`` (:func:`begin_checkpoint` on the main process,
then every rank's engine state, then :func:`commit_checkpoint`), flushed to disk and renamed into place; then
the one-line file ``checkpoints/latest`` is replaced atomically. A process killed at any point while
saving leaves the previous checkpoint intact and ``latest`` pointing at it; the half-written
``.tmp-*`` folder is removed by the next save.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger(__name__)

LATEST = "latest"


@dataclass
class TrainerState:
    """What a trainer needs, beyond weights and optimizer, to continue a run."""

    step: int = 0
    data_position: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def checkpoint_name(step: int) -> str:
    return f"step-{step:06d}"


def is_peft(model: torch.nn.Module) -> bool:
    return hasattr(model, "peft_config")


def save_model(
    model: torch.nn.Module,
    folder: Path,
    tokenizer: Any | None = None,
    state_dict: dict[str, torch.Tensor] | None = None,
) -> None:
    """``save_pretrained`` of the model (adapter only for a PEFT model) and its tokenizer.

    Args:
        state_dict: the weights to write instead of the module's own (a sharded engine's
            consolidated state dict; a PEFT model keeps only its adapter's entries).
    """
    folder.mkdir(parents=True, exist_ok=True)
    if state_dict is None:
        model.save_pretrained(str(folder))
    else:
        model.save_pretrained(str(folder), state_dict=dict(state_dict))
    if tokenizer is not None:
        tokenizer.save_pretrained(str(folder))


def load_model_weights(model: torch.nn.Module, folder: Path) -> None:
    """Load weights saved by :func:`save_model` into ``model`` (same architecture).

    Raises:
        FileNotFoundError: no weight files in ``folder``.
        RuntimeError: weights missing from or unexpected in the files.
    """
    from safetensors.torch import load_file

    if is_peft(model):
        from peft import set_peft_model_state_dict

        path = folder / "adapter_model.safetensors"
        if not path.is_file():
            raise FileNotFoundError(f"no LoRA adapter at {path}")
        set_peft_model_state_dict(model, load_file(str(path)))
        return
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no *.safetensors weights in {folder}")
    state: dict[str, torch.Tensor] = {}
    for path in files:
        state.update(load_file(str(path)))
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = set(getattr(model, "_tied_weights_keys", None) or [])
    missing = [k for k in missing if k not in tied]
    if missing or unexpected:
        raise RuntimeError(
            f"checkpoint {folder} does not match the model: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )


# ----------------------------------------------------------------------------- random states
def rng_state(generators: dict[str, torch.Generator]) -> dict[str, Any]:
    """This process's random states: torch CPU/CUDA, python, numpy (when imported), generators."""
    state: dict[str, Any] = {"torch_cpu": torch.random.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["torch_cuda"] = torch.cuda.get_rng_state_all()
    if "numpy" in sys.modules:
        state["numpy"] = sys.modules["numpy"].random.get_state()
    state["generators"] = {name: g.get_state() for name, g in generators.items()}
    return state


def restore_rng(state: dict[str, Any], generators: dict[str, torch.Generator]) -> None:
    """Inverse of :func:`rng_state` (``state`` of one process)."""
    torch.random.set_rng_state(state["torch_cpu"])
    if "torch_cuda" in state and torch.cuda.is_available():
        cuda = state["torch_cuda"]
        torch.cuda.set_rng_state_all(cuda[: torch.cuda.device_count()])
    if "python" in state:
        random.setstate(state["python"])
    if "numpy" in state:
        import numpy

        numpy.random.set_state(state["numpy"])
    saved = state.get("generators", {})
    for name, g in generators.items():
        if name in saved:
            g.set_state(saved[name])
        else:
            logger.warning("checkpoint has no state for generator %r: it starts afresh", name)


def rank_rng(saved: dict[str, Any], rank: int) -> dict[str, Any]:
    """Process ``rank``'s states from a loaded ``rng.pt`` (one per process, or the old layout)."""
    if "ranks" not in saved:
        return saved
    ranks = saved["ranks"]
    if rank >= len(ranks):
        logger.warning(
            "the checkpoint holds random states of %d processes; process %d takes rank 0's",
            len(ranks),
            rank,
        )
        rank = 0
    return ranks[rank]


# ----------------------------------------------------------------------------- writing
def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse fsync on directories
        pass
    finally:
        os.close(fd)


def _fsync_tree(folder: Path) -> None:
    for dirpath, _, files in os.walk(folder):
        for name in files:
            _fsync(Path(dirpath) / name)
        _fsync(Path(dirpath))


def clean_stale(root: Path) -> list[Path]:
    """Remove half-written ``.tmp-*`` / ``.old-*`` folders left by a killed save."""
    removed = []
    for p in root.iterdir() if root.is_dir() else []:
        if p.name.startswith((".tmp-", ".old-")):
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            removed.append(p)
    if removed:
        logger.info("removed %d stale folder(s) of an interrupted save", len(removed))
    return removed


def _copy_metrics(source: Path, dest: Path, step: int) -> None:
    from dllm_rl.run.metrics import rows_up_to

    lines = rows_up_to(source, step)
    dest.write_text("".join(line + "\n" for line in lines))


def staging_folder(root: Path, step: int) -> Path:
    """Where the checkpoint of ``step`` is written before it is renamed into place."""
    return root / f".tmp-{checkpoint_name(step)}"


def begin_checkpoint(
    root: Path,
    state: TrainerState,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    scheduler: Any,
    generators: dict[str, torch.Generator] | None = None,
    tokenizer: Any | None = None,
    rng: dict[str, Any] | None = None,
    metrics_file: Path | None = None,
    model_state: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write everything but an engine's own state into :func:`staging_folder` (main process).

    Args:
        optimizer: None when the engine saves its partitioned optimizer state itself.
        rng: the random states to store (``{"ranks": [...]}`` from every process); default: this
            process's (:func:`rng_state` of ``generators``).
        metrics_file: the run's ``metrics.jsonl``; its rows up to ``state.step`` are copied in.
        model_state: consolidated weights of a sharded model (:func:`save_model`).

    Returns:
        The staging folder.
    """
    root.mkdir(parents=True, exist_ok=True)
    clean_stale(root)
    tmp = staging_folder(root, state.step)
    save_model(model, tmp / "model", tokenizer, state_dict=model_state)
    if optimizer is not None:
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
    torch.save(rng if rng is not None else rng_state(generators or {}), tmp / "rng.pt")
    if metrics_file is not None and metrics_file.is_file():
        _copy_metrics(metrics_file, tmp / "metrics.jsonl", state.step)
    payload = {"step": state.step, "data_position": state.data_position, "extra": state.extra}
    (tmp / "trainer_state.json").write_text(json.dumps(payload, indent=2) + "\n")
    return tmp


def commit_checkpoint(root: Path, step: int, save_total_limit: int | None = None) -> Path:
    """Flush the staging folder of ``step`` to disk, rename it into place and point ``latest``
    at it (main process, after every rank wrote its share).

    Returns:
        The checkpoint folder.
    """
    name = checkpoint_name(step)
    final, tmp, old = root / name, staging_folder(root, step), root / f".old-{name}"
    _fsync_tree(tmp)
    if final.exists():  # the same step saved again (a resumed branch): swap, then drop the old
        os.replace(final, old)
    os.replace(tmp, final)
    _fsync(root)
    _write_latest(root, name)
    shutil.rmtree(old, ignore_errors=True)
    if save_total_limit:
        prune_checkpoints(root, save_total_limit)
    return final


def save_checkpoint(
    root: Path,
    state: TrainerState,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    generators: dict[str, torch.Generator] | None = None,
    tokenizer: Any | None = None,
    save_total_limit: int | None = None,
    rng: dict[str, Any] | None = None,
    metrics_file: Path | None = None,
) -> Path:
    """Write a whole checkpoint for ``state.step`` under ``root`` (one process, no sharded
    engine): :func:`begin_checkpoint` then :func:`commit_checkpoint`.

    Returns:
        The checkpoint folder.
    """
    begin_checkpoint(
        root,
        state,
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        generators=generators,
        tokenizer=tokenizer,
        rng=rng,
        metrics_file=metrics_file,
    )
    return commit_checkpoint(root, state.step, save_total_limit)


def _write_latest(root: Path, name: str) -> None:
    tmp = root / f".{LATEST}.tmp"
    with open(tmp, "w") as f:
        f.write(name + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, root / LATEST)
    _fsync(root)


def list_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints under ``root``, oldest first."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("step-"))


def prune_checkpoints(root: Path, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` checkpoints (never the one ``latest`` names)."""
    pointer = root / LATEST
    latest = pointer.read_text().strip() if pointer.is_file() else None
    removed = []
    for old in list_checkpoints(root)[:-keep]:
        if old.name != latest:
            shutil.rmtree(old)
            removed.append(old)
    return removed


# ----------------------------------------------------------------------------- reading
def resolve_checkpoint(resume_from: str, checkpoints: Path) -> Path:
    """``latest`` -> the folder ``checkpoints/latest`` names; a path -> that folder.

    Raises:
        FileNotFoundError: with what was looked for.
    """
    if resume_from == LATEST:
        pointer = checkpoints / LATEST
        if not pointer.is_file():
            raise FileNotFoundError(
                f"resume_from=latest but {pointer} does not exist: no checkpoint was saved in "
                "this output_dir yet (pass output_dir=<the run to continue>)"
            )
        path = checkpoints / pointer.read_text().strip()
    else:
        path = Path(resume_from).expanduser()
    if not (path / "trainer_state.json").is_file():
        raise FileNotFoundError(f"{path} is not a checkpoint (no trainer_state.json)")
    return path


def load_rng(path: Path, rank: int = 0) -> dict[str, Any]:
    """Process ``rank``'s random states saved in checkpoint ``path``."""
    return rank_rng(torch.load(path / "rng.pt", weights_only=False), rank)


def load_checkpoint(
    path: Path,
    *,
    model: torch.nn.Module | None,
    optimizer: torch.optim.Optimizer | None,
    scheduler: Any,
    generators: dict[str, torch.Generator] | None = None,
    restore_random: bool = True,
    rank: int = 0,
) -> TrainerState:
    """Restore everything :func:`save_checkpoint` wrote; returns the trainer state.

    Args:
        model: None leaves the weights for a later :func:`load_model_weights`.
        optimizer: None leaves the optimizer to the engine that saved its own state.
        restore_random: also set the random states now (a trainer loop that restores them just
            before its first step passes False and calls :func:`load_rng` then).
        rank: whose random states to restore.
    """
    if model is not None:
        load_model_weights(model, path / "model")
    if optimizer is not None:
        optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=False))
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=False))
    if restore_random:
        restore_rng(load_rng(path, rank), generators or {})
    payload = json.loads((path / "trainer_state.json").read_text())
    return TrainerState(payload["step"], payload["data_position"], payload.get("extra", {}))
