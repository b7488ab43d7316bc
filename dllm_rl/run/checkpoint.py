"""Checkpoints shared by every trainer.

A checkpoint is a folder ``checkpoints/step-000010/``::

    model/              save_pretrained: the full model and tokenizer, or the LoRA adapter only
    optimizer.pt        optimizer state
    scheduler.pt        learning-rate scheduler state
    rng.pt              torch CPU (and CUDA) RNG states and every trainer generator's state
    trainer_state.json  step, data position, and whatever else the trainer needs to continue

It is written into ``checkpoints/.tmp-step-000010`` and renamed into place, then the one-line file
``checkpoints/latest`` is replaced atomically, so a process killed while saving leaves the previous
checkpoint intact and ``latest`` pointing at it.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

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


def save_model(model: torch.nn.Module, folder: Path, tokenizer: Any | None = None) -> None:
    """``save_pretrained`` of the model (adapter only for a PEFT model) and its tokenizer."""
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder))
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


def rng_state(generators: dict[str, torch.Generator]) -> dict[str, Any]:
    state: dict[str, Any] = {"torch_cpu": torch.random.get_rng_state()}
    if torch.cuda.is_available():
        state["torch_cuda"] = torch.cuda.get_rng_state_all()
    state["generators"] = {name: g.get_state() for name, g in generators.items()}
    return state


def restore_rng(state: dict[str, Any], generators: dict[str, torch.Generator]) -> None:
    torch.random.set_rng_state(state["torch_cpu"])
    if "torch_cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["torch_cuda"])
    for name, g in generators.items():
        if name in state["generators"]:
            g.set_state(state["generators"][name])


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
) -> Path:
    """Write a checkpoint for ``state.step`` under ``root`` (the run's ``checkpoints/``).

    Returns:
        The checkpoint folder.
    """
    root.mkdir(parents=True, exist_ok=True)
    name = checkpoint_name(state.step)
    final, tmp = root / name, root / f".tmp-{name}"
    if tmp.exists():
        shutil.rmtree(tmp)
    save_model(model, tmp / "model", tokenizer)
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
    torch.save(rng_state(generators or {}), tmp / "rng.pt")
    payload = {"step": state.step, "data_position": state.data_position, "extra": state.extra}
    (tmp / "trainer_state.json").write_text(json.dumps(payload, indent=2) + "\n")
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    _write_latest(root, name)
    if save_total_limit:
        prune_checkpoints(root, save_total_limit)
    return final


def _write_latest(root: Path, name: str) -> None:
    tmp = root / f".{LATEST}.tmp"
    tmp.write_text(name + "\n")
    os.replace(tmp, root / LATEST)


def list_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints under ``root``, oldest first."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("step-"))


def prune_checkpoints(root: Path, keep: int) -> None:
    for old in list_checkpoints(root)[:-keep]:
        shutil.rmtree(old)


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


def load_checkpoint(
    path: Path,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    generators: dict[str, torch.Generator] | None = None,
) -> TrainerState:
    """Restore everything :func:`save_checkpoint` wrote; returns the trainer state."""
    load_model_weights(model, path / "model")
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=False))
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=False))
    restore_rng(torch.load(path / "rng.pt", weights_only=False), generators or {})
    payload = json.loads((path / "trainer_state.json").read_text())
    return TrainerState(payload["step"], payload["data_position"], payload.get("extra", {}))
