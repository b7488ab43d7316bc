"""Building what every trainer needs from its config: the policy (with LoRA), the reference, the
optimizer and schedule, and the seeds of every generator."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dllm_rl.config import ModelConfig, OptimConfig
from dllm_rl.models.adapter import DiffusionLM

logger = logging.getLogger(__name__)


def derive_seed(*parts: Any) -> int:
    """A 63-bit seed from any parts (``derive_seed(seed, "rollout", step, chunk)``).

    Stable across processes and Python runs (a hash of the parts' text, never Python's salted
    ``hash()``), so every rank and every resumed run draws the same numbers for the same parts.
    """
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    g = torch.Generator(device=torch.device(device))
    g.manual_seed(seed)
    return g


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if device.type in ("cuda", "npu") else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


@dataclass(frozen=True)
class ModelSource:
    """What ``model.name_or_path`` points at, resolved without loading anything.

    Attributes:
        path: the folder (or hub id) to load the model from; for LoRA, the adapter folder.
        base: for a LoRA adapter, the base model config (name_or_path, tiny sizes); else None.
        describe: one line for the log and the dry run.
    """

    path: str
    base: ModelConfig | None
    describe: str


def resolve_model(config: ModelConfig) -> ModelSource:
    """Hub id, local model folder, run directory or checkpoint -> what to load.

    Raises:
        FileNotFoundError: a path-looking name that is not a directory, or a folder with neither a
            model, an adapter nor checkpoints.
    """
    from dllm_rl.run.checkpoint import LATEST, list_checkpoints

    name = config.name_or_path
    if config.is_tiny:
        return ModelSource(name, None, "tiny random LLaDA")
    from dllm_rl.models.load import check_model_name

    check_model_name(name)  # no such directory: fails here, not after retrying the hub
    path = Path(name).expanduser()
    if not path.is_dir():
        return ModelSource(name, None, f"hub id {name!r} (local HF cache or download)")
    run_config = None
    checkpoints = path / "checkpoints"
    if checkpoints.is_dir():  # a run directory
        pointer = checkpoints / LATEST
        found = list_checkpoints(checkpoints)
        if pointer.is_file():
            path = checkpoints / pointer.read_text().strip()
        elif found:
            path = found[-1]
        else:
            raise FileNotFoundError(f"run directory {name!r} has no checkpoint yet")
    if (path / "trainer_state.json").is_file() and (path / "model").is_dir():  # a checkpoint
        run_config = path.parent.parent / "config.yaml"
        path = path / "model"
    if (path / "adapter_config.json").is_file():
        return ModelSource(str(path), _lora_base(path, run_config), f"LoRA adapter {path}")
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"model.name_or_path={name!r}: {path} holds no config.json, adapter_config.json or "
            "checkpoints/ (pass a model folder, a run directory or a checkpoint)"
        )
    return ModelSource(str(path), None, f"local model {path}")


def _lora_base(adapter: Path, run_config: Path | None) -> ModelConfig:
    """The base model of a LoRA adapter: the run's model section, else the adapter's record."""
    import yaml

    from dllm_rl.run.cli import build_config

    if run_config is not None and run_config.is_file():
        section = dict((yaml.safe_load(run_config.read_text()) or {}).get("model", {}))
        section["lora"] = {"enabled": False}
        return build_config(ModelConfig, section)
    base = json.loads((adapter / "adapter_config.json").read_text()).get("base_model_name_or_path")
    if not base:
        raise FileNotFoundError(
            f"LoRA adapter {adapter}: no run config.yaml beside it and no "
            "base_model_name_or_path in adapter_config.json; cannot tell its base model"
        )
    return ModelConfig(name_or_path=base)


def check_model_source(config: ModelConfig) -> str:
    """What loading ``config`` will read (:func:`resolve_model`), checked without loading or
    downloading anything; a one-line description for the dry run.

    Raises:
        FileNotFoundError: a local-looking path that does not exist or holds no model.
    """
    if config.is_tiny:
        t = config.tiny
        return f"tiny random LLaDA (d_model {t.d_model}, {t.n_layers} layers, seed {t.seed})"
    name = config.name_or_path
    if not names_local_path(name):
        # a hub id: whether it can be read is the start's check (run/preflight.py), which
        # says how to get it when the hub is out of reach
        return f"hub id {name!r} (read from the local HF cache or downloaded at load)"
    return resolve_model(config).describe


def names_local_path(name: str) -> bool:
    """``model.name_or_path`` names something on this machine (an existing path, or one that
    looks like a path), not a hub id."""
    return Path(name).expanduser().exists() or name.startswith(("/", "./", "../", "~"))


def load_policy(config: ModelConfig, device: torch.device) -> DiffusionLM:
    """The policy model on ``device``, in train-ready dtype, LoRA applied when enabled.

    ``model.name_or_path`` may be a hub id, a model folder, a run directory (its latest
    checkpoint), a checkpoint, or a LoRA checkpoint (merged onto its base first)
    (:func:`resolve_model`), for training as for evaluation."""
    dtype = resolve_dtype(config.dtype, device)
    if config.is_tiny:
        from dllm_rl.models.tiny import build_tiny_llada

        t = config.tiny
        policy = build_tiny_llada(
            t.seed,
            d_model=t.d_model,
            n_layers=t.n_layers,
            n_heads=t.n_heads,
            mlp_hidden_size=t.mlp_hidden_size,
            init_std=t.init_std,
            attn_implementation=config.attn_implementation,
            dtype=dtype,
        )
        policy.model.to(device)
        if config.gradient_checkpointing:
            from dllm_rl.models.load import enable_gradient_checkpointing

            enable_gradient_checkpointing(policy.model)
    elif (source := resolve_model(config)).base is not None:  # a LoRA checkpoint: merged
        from peft import PeftModel

        base = dataclasses.replace(
            source.base,
            dtype=config.dtype,
            attn_implementation=config.attn_implementation,
            gradient_checkpointing=config.gradient_checkpointing,
            lora=dataclasses.replace(config.lora, enabled=False),
        )
        policy = load_policy(base, device)
        policy.model = PeftModel.from_pretrained(policy.model, source.path).merge_and_unload()
        policy.model.requires_grad_(True)  # peft froze the base: the merged model trains whole
    else:
        from dllm_rl.models.load import load_model

        policy = load_model(
            source.path,
            family=config.family,
            dtype=dtype,
            device=device,
            attn_implementation=config.attn_implementation,
            gradient_checkpointing=config.gradient_checkpointing,
        )
    policy.mask_in_softmax = config.mask_in_softmax
    if config.lora.enabled:
        policy.model = apply_lora(policy.model, config, policy.family)
    return policy


def apply_lora(model: torch.nn.Module, config: ModelConfig, family: str) -> torch.nn.Module:
    """Wrap ``model`` with peft LoRA adapters (only the adapters train); the targets resolve
    per ``family`` (:func:`~dllm_rl.models.load.lora_targets`)."""
    from peft import LoraConfig, get_peft_model

    from dllm_rl.models.load import lora_targets

    lora = config.lora
    peft_config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora_targets(lora.target_modules, family),
    )
    wrapped = get_peft_model(model, peft_config)
    trainable = sum(p.numel() for p in wrapped.parameters() if p.requires_grad)
    total = sum(p.numel() for p in wrapped.parameters())
    logger.info(
        "LoRA: %d of %d parameters train (%.2f%%)", trainable, total, 100 * trainable / total
    )
    return wrapped


@dataclass
class Reference:
    """The reference policy: the PEFT model with adapters disabled, or a frozen copy."""

    model: DiffusionLM
    uses_disabled_adapter: bool

    @contextmanager
    def active(self, policy_module: torch.nn.Module) -> Iterator[DiffusionLM]:
        """Within the block, ``self.model`` scores as the reference."""
        if self.uses_disabled_adapter:
            with policy_module.disable_adapter():
                yield self.model
        else:
            yield self.model


def make_reference(policy: DiffusionLM, needed: bool) -> Reference | None:
    """None when no KL/reference term is used; otherwise the cheapest faithful reference."""
    if not needed:
        return None
    if hasattr(policy.model, "disable_adapter"):
        return Reference(policy, uses_disabled_adapter=True)
    frozen = copy.deepcopy(policy.model).eval()
    frozen.requires_grad_(False)
    return Reference(
        dataclasses.replace(policy, model=frozen, runner=None),
        uses_disabled_adapter=False,
    )


def make_adamw(model: torch.nn.Module, config: OptimConfig) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters of ``model``.

    Raises:
        ValueError: nothing trains.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    return torch.optim.AdamW(
        params,
        lr=config.lr,
        betas=tuple(config.betas),
        eps=config.eps,
        weight_decay=config.weight_decay,
    )


def make_scheduler(
    optimizer: torch.optim.Optimizer, config: OptimConfig, total_updates: int
) -> Any:
    """The ``transformers.get_scheduler`` schedule of ``optimizer`` over ``total_updates``."""
    from transformers import get_scheduler

    return get_scheduler(
        config.lr_scheduler,
        optimizer,
        num_warmup_steps=config.warmup_steps,
        num_training_steps=total_updates,
        scheduler_specific_kwargs=dict(config.lr_scheduler_kwargs) or None,
    )


def build_optimizer(
    model: torch.nn.Module, config: OptimConfig, total_updates: int
) -> tuple[torch.optim.Optimizer, Any]:
    """AdamW over the trainable parameters and its schedule (one process, no engine)."""
    optimizer = make_adamw(model, config)
    return optimizer, make_scheduler(optimizer, config, total_updates)


def make_accelerator(device: str = "auto") -> Any:
    """An ``accelerate.Accelerator`` for evaluation (CPU when asked or when no accelerator is
    present); training builds its own for the engine it runs (:mod:`dllm_rl.run.engine`)."""
    from accelerate import Accelerator

    return Accelerator(cpu=device == "cpu")
