"""Device choice and float64 capability."""

from __future__ import annotations

import pytest
import torch

from dllm_rl import devices


def test_cpu_only_machine(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(devices, "npu_available", lambda: False)
    monkeypatch.setattr(devices, "mps_available", lambda: False)
    assert devices.pick_device() == torch.device("cpu")


@pytest.mark.parametrize(
    "cuda, npu, mps, expected",
    [
        (True, True, True, "cuda"),
        (False, True, True, "npu"),
        (False, False, True, "mps"),
        (False, False, False, "cpu"),
    ],
)
def test_auto_preference_order(monkeypatch, cuda, npu, mps, expected):
    # torch.device("npu") only parses once torch_npu is imported: record the name instead.
    monkeypatch.setattr(devices, "_make_device", lambda name: name)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(devices, "npu_available", lambda: npu)
    monkeypatch.setattr(devices, "mps_available", lambda: mps)
    assert devices.pick_device("auto") == expected


def test_explicit_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert devices.pick_device("cpu") == torch.device("cpu")
    assert devices.pick_device(torch.device("cpu")) == torch.device("cpu")
    with pytest.raises(ValueError, match="not available"):
        devices.pick_device("cuda:0")


def test_npu_needs_torch_npu():
    try:
        import torch_npu  # noqa: F401
    except ImportError:
        assert not devices.npu_available()


@pytest.mark.parametrize(
    "device, f64",
    [
        ("cpu", True),
        ("cuda", True),
        ("cuda:1", True),
        ("npu", False),
        ("npu:0", False),
        ("mps", False),
    ],
)
def test_float64_support(device, f64):
    assert devices.supports_float64(device) is f64
    assert devices.sampling_float_dtype(device) == (torch.float64 if f64 else torch.float32)
    if not device.startswith("npu"):  # torch.device("npu") needs torch_npu imported
        assert devices.supports_float64(torch.device(device)) is f64
