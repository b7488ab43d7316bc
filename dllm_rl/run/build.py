"""Building what every trainer needs from its config: the policy (with LoRA), the reference, the
optimizer and schedule, and the seeds of every generator."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
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


def check_model_source(config: ModelConfig) -> str:
    """What loading ``config`` will read, checked without loading or downloading anything.

    Returns:
        A one-line description for the dry run.

    Raises:
        FileNotFoundError: a local-looking path (``/``, ``./``, ``~``) that does not exist.
    """
    if config.is_tiny:
        t = config.tiny
        return f"tiny random LLaDA (d_model {t.d_model}, {t.n_layers} layers, seed {t.seed})"
    path = Path(config.name_or_path).expanduser()
    looks_local = config.name_or_path.startswith(("/", "./", "../", "~")) or path.exists()
    if looks_local:
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"model.name_or_path={config.name_or_path!r}: no config.json in that folder"
            )
        return f"local checkpoint {path}"
    return f"hub id {config.name_or_path!r} (read from the local HF cache or downloaded at load)"


def load_policy(config: ModelConfig, device: torch.device) -> DiffusionLM:
    """The policy model on ``device``, in train-ready dtype, LoRA applied when enabled."""
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
    else:
        from dllm_rl.models.load import load_model

        policy = load_model(
            config.name_or_path,
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


def make_scheduler(optimizer: torch.optim.Optimizer, config: OptimConfig, total_updates: int) -> Any:
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
