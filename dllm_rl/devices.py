"""Device selection and per-device dtype capabilities.

Order of preference for ``"auto"``: CUDA, then Ascend NPU (when ``torch_npu`` imports), then
Apple MPS, then CPU. NPU and MPS have no float64 kernels, so the Gumbel noise of the sampler
falls back to float32 there: see :func:`sampling_float_dtype`.
"""

from __future__ import annotations

import importlib
import logging

import torch

logger = logging.getLogger(__name__)

_NO_FLOAT64 = ("npu", "mps")


def npu_available() -> bool:
    """True when ``torch_npu`` imports and reports an Ascend device."""
    try:
        importlib.import_module("torch_npu")
    except ImportError:
        return False
    npu = getattr(torch, "npu", None)
    return bool(npu is not None and npu.is_available())


def mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def device_type(device: torch.device | str) -> str:
    """``"npu"`` for ``"npu:0"``; parsed from the string, since ``torch.device("npu")`` only
    parses once ``torch_npu`` has registered the backend."""
    return device.type if isinstance(device, torch.device) else str(device).split(":")[0]


def _make_device(name: str) -> torch.device:
    return torch.device(name)


def pick_device(preference: str | torch.device = "auto") -> torch.device:
    """The device to run on.

    Args:
        preference: "auto" (cuda > npu > mps > cpu), or an explicit device such as "cpu",
            "cuda:1", "npu:0", "mps"; an explicit device is checked to exist.

    Returns:
        A ``torch.device``.

    Raises:
        ValueError: an explicit device was asked for but is not available here.
    """
    if isinstance(preference, torch.device) or preference != "auto":
        kind = device_type(preference)
        available = {
            "cpu": lambda: True,
            "cuda": torch.cuda.is_available,
            "npu": npu_available,
            "mps": mps_available,
        }.get(kind)
        if available is None or not available():
            raise ValueError(
                f"Device {str(preference)!r} was requested but is not available on this machine; "
                "use preference='auto' to pick the best available one (cuda > npu > mps > cpu)."
            )
        return _make_device(str(preference))
    if torch.cuda.is_available():
        return _make_device("cuda")
    if npu_available():
        return _make_device("npu")
    if mps_available():
        return _make_device("mps")
    return _make_device("cpu")


def supports_float64(device: torch.device | str) -> bool:
    """False on Ascend NPU and Apple MPS (no float64 kernels), True elsewhere."""
    return device_type(device) not in _NO_FLOAT64


def sampling_float_dtype(device: torch.device | str) -> torch.dtype:
    """float64 for the sampler's Gumbel noise where the device has it, else float32.

    Gumbel-max in low precision distorts the sampling distribution (many ties at the top), so
    the noise and its sum with ``logits / T`` use the widest float the device supports. Ranking
    scores and recorded log-probs are float32 on every device.
    """
    return torch.float64 if supports_float64(device) else torch.float32
