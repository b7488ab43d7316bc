"""Checks a real run makes before anything loads: the model can be read from here, and it fits
the device. Each failure is a :class:`~dllm_rl.run.errors.StartError` with what to do instead
(``train.py`` prints it and exits with 2 within seconds, instead of retrying the hub for half a
minute or starting an 8B float32 run on a laptop CPU).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from dllm_rl.devices import npu_available
from dllm_rl.models.load import hub_offline
from dllm_rl.run.errors import StartError

LARGE_ON_CPU = 2e9
"""Parameters above which a CPU run is refused unless ``run.allow_cpu_large=true``."""
HUB_TIMEOUT_S = 3.0
TINY_RECIPE = "cj_grpo_tiny"


def local_config(name_or_path: str) -> dict[str, Any] | None:
    """``config.json`` of a local folder or of a hub id in the local cache; None otherwise."""
    path = Path(name_or_path).expanduser()
    if (path / "config.json").is_file():
        return json.loads((path / "config.json").read_text())
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(name_or_path, "config.json")
    except (ValueError, OSError):
        return None
    return json.loads(Path(cached).read_text()) if isinstance(cached, str) else None


def estimate_parameters(config: dict[str, Any]) -> int | None:
    """Parameters of a transformer from its ``config.json`` (LLaDA's or transformers' names):
    ``layers x (4 h^2 + 3 h m) + 2 V h``; None when the sizes are not there."""
    h = config.get("hidden_size") or config.get("d_model")
    layers = config.get("num_hidden_layers") or config.get("n_layers")
    if not (h and layers):
        return None
    m = config.get("intermediate_size") or config.get("mlp_hidden_size") or 4 * h
    vocab = config.get("embedding_size") or config.get("vocab_size") or 0
    return int(layers * (4 * h * h + 3 * h * m) + 2 * vocab * h)


def hub_reachable(timeout_s: float = HUB_TIMEOUT_S) -> bool:
    """Whether the Hugging Face hub answers within ``timeout_s`` (no retries)."""
    if hub_offline():
        return False
    import socket
    from urllib.parse import urlparse

    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    host = urlparse(endpoint).hostname or "huggingface.co"
    port = urlparse(endpoint).port or 443
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def not_found_message(name: str) -> str:
    return (
        f"model.name_or_path={name!r} is neither a local folder nor in the local Hugging Face "
        "cache, and the hub cannot be reached from this machine. Download it where there is "
        f"access (huggingface-cli download {name} --local-dir <folder>), copy the folder here "
        "and pass model.name_or_path=<folder>. dry_run=true checks the recipe, data and "
        f"rewards without any weights; on a laptop, recipe={TINY_RECIPE} trains a tiny random "
        "model in about a minute."
    )


def check_model(model: Any, run: Any) -> None:
    """The model of a real run can be read from here and fits the device.

    Args:
        model: the config's ``model`` section.
        run: the config's ``run`` section (``device``, ``allow_cpu_large``).

    Raises:
        StartError: not a local folder, not cached and no hub; or an 8B-class model on a CPU
            without ``run.allow_cpu_large=true`` (with the estimated memory).
    """
    if model.is_tiny:
        return
    from dllm_rl.run.build import names_local_path, resolve_model

    name = model.name_or_path
    if names_local_path(name):  # a run directory or checkpoint: the model it holds
        source = resolve_model(model)
        if source.base is not None and source.base.is_tiny:
            return
        name = source.path if source.base is None else source.base.name_or_path
    config = local_config(name)
    if config is None:
        if not hub_reachable():
            raise StartError(not_found_message(name))
        return  # downloaded at load; its size is checked by nobody before that
    on_cpu = run.device == "cpu" or (
        run.device == "auto" and not torch.cuda.is_available() and not npu_available()
    )
    params = estimate_parameters(config)
    if not on_cpu or params is None or params <= LARGE_ON_CPU or run.allow_cpu_large:
        return
    bytes_per = 2 if model.dtype in ("bfloat16", "float16") else 4  # auto: float32 on CPU
    weights = params * bytes_per / 2**30
    training = (
        "plus the LoRA adapters"
        if model.lora.enabled
        else f"~{params * (bytes_per + 12) / 2**30:.0f} GiB with gradients and AdamW"
    )
    raise StartError(
        f"model {name!r} has ~{params / 1e9:.1f}B parameters and this run is on the CPU: "
        f"~{weights:.0f} GiB for the weights alone ({training}), and hours per step. Run it "
        "on a GPU (see the README's 'Running on GPUs'), try "
        f"recipe={TINY_RECIPE} on this machine, or pass run.allow_cpu_large=true to start "
        "anyway."
    )

