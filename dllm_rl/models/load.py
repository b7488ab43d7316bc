"""``load_model``: a checkpoint path or hub id -> :class:`DiffusionLM`, family detected from config.

The family registry is a plain dict (``FAMILIES``). Detection reads only ``config.json``
(``model_type``), so a wrong path, an unknown family or an unsupported option fails before any
weights are read. Published LLaDA and Dream checkpoints load into our classes without
``trust_remote_code``: their ``auto_map`` (remote code) is never consulted.

    lm = load_model("GSAI-ML/LLaDA-8B-Instruct", dtype="bfloat16", device="cuda")
    lm = load_model("/ckpt/dream", gradient_checkpointing=True)
    lm = load_model("answerdotai/ModernBERT-base")              # family "masked_lm"
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from dllm_rl.models.adapter import DiffusionLM

logger = logging.getLogger(__name__)

_DTYPES = {
    "auto": "auto",
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
    "float32": torch.float32,
    "fp32": torch.float32,
    "float": torch.float32,
}
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "vocab.txt")


@dataclass(frozen=True)
class Family:
    """One model family: how to build its model class and wrap it.

    Attributes:
        name: registry key.
        model_types: ``config.json`` ``model_type`` values that select this family.
        model_class: returns the class whose ``from_pretrained`` loads the weights.
        adapter: ``(model, tokenizer) -> DiffusionLM``.
        attn_implementations: backends the family supports (None: whatever transformers allows).
        lora_targets: the default LoRA targets (peft's ``target_modules``: a full-match regex or
            ``"all-linear"``): every attention and MLP projection inside the blocks, never the
            output head.
        hub_ids: published checkpoints known to load (documentation only).
    """

    name: str
    model_types: tuple[str, ...]
    model_class: Callable[[], type]
    adapter: Callable[[nn.Module, Any], DiffusionLM]
    attn_implementations: tuple[str, ...] | None
    lora_targets: str = "all-linear"
    hub_ids: tuple[str, ...] = ()


def _llada_class() -> type:
    from dllm_rl.models.llada import LLaDAModelLM

    return LLaDAModelLM


def _llada_adapter(model: nn.Module, tokenizer: Any) -> DiffusionLM:
    from dllm_rl.models.llada import llada_adapter

    return llada_adapter(model, tokenizer)


def _dream_class() -> type:
    from dllm_rl.models.dream import DreamModel

    return DreamModel


def _dream_adapter(model: nn.Module, tokenizer: Any) -> DiffusionLM:
    from dllm_rl.models.dream import dream_adapter

    return dream_adapter(model, tokenizer)


def _masked_lm_class() -> type:
    from transformers import AutoModelForMaskedLM

    return AutoModelForMaskedLM


def _masked_lm_adapter(model: nn.Module, tokenizer: Any) -> DiffusionLM:
    from dllm_rl.models.masked_lm import masked_lm_adapter

    return masked_lm_adapter(model, tokenizer)


LORA_PRESETS: dict[str, list[str]] = {
    # The CJ-GRPO reference trainer's target list (d1's is the same without o_proj). In LLaDA it
    # matches q/k/v and up_proj only (LLaDA names its output projection attn_out, its gate
    # ff_proj and its down projection ff_out); in Dream, all seven projections.
    "reference": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
}
"""Named ``model.lora.target_modules`` values (besides ``default``, the family's own)."""


def lora_targets(value: list[str] | str, family: str) -> list[str] | str:
    """peft's ``target_modules`` for a ``model.lora.target_modules`` setting: ``default`` (the
    family's :attr:`Family.lora_targets`), a :data:`LORA_PRESETS` name, or itself."""
    if value == "default":
        return _family(family).lora_targets
    if isinstance(value, str) and value in LORA_PRESETS:
        return list(LORA_PRESETS[value])
    return value


FAMILIES: dict[str, Family] = {
    "llada": Family(
        name="llada",
        model_types=("llada",),
        model_class=_llada_class,
        adapter=_llada_adapter,
        attn_implementations=("sdpa", "eager"),
        lora_targets=r".*blocks\.\d+\.(q_proj|k_proj|v_proj|attn_out|ff_proj|up_proj|ff_out)",
        hub_ids=("GSAI-ML/LLaDA-8B-Base", "GSAI-ML/LLaDA-8B-Instruct", "GSAI-ML/LLaDA-1.5"),
    ),
    "dream": Family(
        name="dream",
        model_types=("Dream", "dream"),
        model_class=_dream_class,
        adapter=_dream_adapter,
        attn_implementations=("sdpa", "eager"),
        lora_targets=r".*layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)",
        hub_ids=("Dream-org/Dream-v0-Base-7B", "Dream-org/Dream-v0-Instruct-7B"),
    ),
    "masked_lm": Family(
        name="masked_lm",
        model_types=(),  # any model_type with an AutoModelForMaskedLM class
        model_class=_masked_lm_class,
        adapter=_masked_lm_adapter,
        attn_implementations=None,
        hub_ids=("answerdotai/ModernBERT-base", "google-bert/bert-base-uncased"),
    ),
}


def _masked_lm_model_types() -> set[str]:
    from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

    return set(MODEL_FOR_MASKED_LM_MAPPING_NAMES)


_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")


def hub_offline() -> bool:
    """``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE`` is set: nothing may be downloaded."""
    return any(
        os.environ.get(k, "").strip().lower() in ("1", "true", "yes", "on")
        for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def _cached_on_hub(repo_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except (ValueError, OSError):  # an invalid id or an unreadable cache: not cached
        return False


def check_model_name(name_or_path: str | os.PathLike) -> None:
    """Fail at once, without touching the network, on a name that cannot be a model.

    A name is accepted when it is an existing directory or a hub id in ``org/name`` form (cached,
    or to download unless offline). Anything else (a path-looking name that does not exist, a
    bare name that is neither a directory nor a cached hub id) fails with "no such directory"
    instead of retrying the hub for a typo.

    Raises:
        FileNotFoundError: with the name and what was expected.
    """
    name = os.fspath(name_or_path)
    path = os.path.expanduser(name)
    if os.path.isdir(path):
        return
    if os.path.exists(path):
        raise FileNotFoundError(f"{name!r} is a file, not a model directory")
    looks_local = name.startswith(("/", "./", "../", "~", ".\\")) or "\\" in name
    if looks_local or not _HUB_ID.fullmatch(name):
        if "/" not in name and not looks_local and _cached_on_hub(name):
            return  # a legacy one-word hub id in the local cache
        where = "" if os.path.isabs(path) else f" (relative to {os.getcwd()})"
        raise FileNotFoundError(
            f"{name!r}: no such directory{where}. Pass a directory holding config.json and the "
            "weights, or a hub id as 'org/name'."
        )
    if hub_offline() and not _cached_on_hub(name):
        raise FileNotFoundError(
            f"{name!r}: no such directory, and not a hub id in the local cache while offline "
            "(HF_HUB_OFFLINE is set). Download it first or pass a local directory."
        )


def read_config_dict(name_or_path: str | os.PathLike) -> dict[str, Any]:
    """``config.json`` of a local directory or hub id, as a dict (no weights are touched)."""
    from transformers import PretrainedConfig

    try:
        config_dict, _ = PretrainedConfig.get_config_dict(str(name_or_path))
    except (OSError, ValueError) as err:
        raise FileNotFoundError(
            f"Cannot read config.json for {str(name_or_path)!r}: {err}. Pass a directory that "
            "holds config.json (and the weights), or a hub id reachable from this machine."
        ) from err
    return config_dict


def detect_family(config: dict[str, Any] | Any) -> str:
    """Family name for a config (dict or ``PretrainedConfig``), from its ``model_type``.

    Raises:
        ValueError: the model_type matches no family; the message lists the known ones.
    """
    model_type = config.get("model_type") if isinstance(config, dict) else config.model_type
    for family in FAMILIES.values():
        if model_type in family.model_types:
            return family.name
    if model_type in _masked_lm_model_types():
        return "masked_lm"
    known = ", ".join(
        f"{f.name} (model_type {list(f.model_types) or 'any masked LM'})" for f in FAMILIES.values()
    )
    raise ValueError(
        f"Unknown model family for model_type={model_type!r}. Known families: {known}. "
        "If this checkpoint is one of them under another model_type, pass family=... explicitly."
    )


def _family(name: str) -> Family:
    if name not in FAMILIES:
        raise ValueError(f"Unknown family {name!r}; known families: {sorted(FAMILIES)}")
    return FAMILIES[name]


def _resolve_dtype(dtype: torch.dtype | str | None) -> torch.dtype | str | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise ValueError(f"Unknown dtype {dtype!r}; use a torch.dtype or one of {sorted(_DTYPES)}")
    return _DTYPES[dtype]


def enable_gradient_checkpointing(model: nn.Module) -> None:
    """Turn on activation checkpointing (non-reentrant) through the transformers 5 API."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def load_tokenizer(name_or_path: str | os.PathLike, family: str) -> Any | None:
    """The checkpoint's tokenizer, or None when it ships none (a weights-only directory).

    Dream's published tokenizer names a remote class (``DreamTokenizer``); it is the Qwen2 BPE
    tokenizer with Dream's added tokens, so it is read with ``Qwen2Tokenizer`` instead.
    """
    from transformers import AutoTokenizer

    path = str(name_or_path)
    if os.path.isdir(path) and not any(
        os.path.exists(os.path.join(path, f)) for f in _TOKENIZER_FILES
    ):
        return None
    try:
        return AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    except (OSError, ValueError) as err:
        if family == "dream":
            from transformers import Qwen2Tokenizer

            return Qwen2Tokenizer.from_pretrained(path)
        logger.warning("No usable tokenizer at %s (%s); continuing without one", path, err)
        return None


def load_model(
    name_or_path: str | os.PathLike,
    *,
    family: str | None = None,
    dtype: torch.dtype | str | None = None,
    device: torch.device | str | None = None,
    attn_implementation: str = "sdpa",
    gradient_checkpointing: bool = False,
) -> DiffusionLM:
    """Load a diffusion LM checkpoint (and its tokenizer) behind the :class:`DiffusionLM` API.

    Args:
        name_or_path: local checkpoint directory or hub id.
        family: "llada", "dream" or "masked_lm"; detected from ``config.json`` when None.
        dtype: parameter dtype (torch dtype, "bfloat16"/"bf16", "float32", "auto"); None keeps
            transformers' default.
        device: where to place the weights (loaded there directly); None keeps CPU.
        attn_implementation: "sdpa" (default) or "eager" for LLaDA and Dream.
        gradient_checkpointing: enable activation checkpointing (only active in train mode).

    Returns:
        The adapter, model in eval mode, ``tokenizer`` set when the checkpoint has one.

    Raises:
        FileNotFoundError: no such directory (a path-looking name, or a name that is neither a
            directory nor an ``org/name`` hub id), or no readable config.json.
        ValueError: unknown family, unsupported option or attention backend (all raised before
            any weights are read).
    """
    check_model_name(name_or_path)
    config_dict = read_config_dict(name_or_path)
    fam = _family(family) if family is not None else _family(detect_family(config_dict))
    if fam.attn_implementations and attn_implementation not in fam.attn_implementations:
        raise ValueError(
            f"{fam.name} supports attn_implementation in {fam.attn_implementations}, "
            f"got {attn_implementation!r}"
        )
    resolved_dtype = _resolve_dtype(dtype)
    model_class = fam.model_class()
    config_class = getattr(model_class, "config_class", None)
    if config_class is not None:  # our classes: validate the config before reading weights
        config = config_class.from_pretrained(str(name_or_path))
    else:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(str(name_or_path))
    tokenizer = load_tokenizer(name_or_path, fam.name)
    if fam.name == "masked_lm" and tokenizer is None:
        raise ValueError(
            f"{str(name_or_path)!r} has no tokenizer files; a masked LM's mask/EOS/pad ids come "
            "from its tokenizer. Save the tokenizer next to the weights (tokenizer.save_pretrained)."
        )
    kwargs: dict[str, Any] = {"config": config, "attn_implementation": attn_implementation}
    if resolved_dtype is not None:
        kwargs["dtype"] = resolved_dtype
    if device is not None:
        kwargs["device_map"] = {"": str(torch.device(device))}
    model = model_class.from_pretrained(str(name_or_path), **kwargs)
    model.eval()
    if gradient_checkpointing:
        enable_gradient_checkpointing(model)
    return fam.adapter(model, tokenizer)
