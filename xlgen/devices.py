"""Device names: the one place ``auto`` is resolved."""

from __future__ import annotations

import torch

DEVICE_HELP = "cpu, cuda, cuda:N, or auto (CUDA when present, else CPU)"


def resolve_device(name: str = "auto") -> str:
    """A device name checked against this machine: ``auto`` is CUDA when present, else CPU.

    Raises:
        ValueError: For a name that is not ``auto``, ``cpu``, ``cuda`` or ``cuda:N``, or a CUDA
            device this machine does not have.
    """
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ValueError(f"unknown device {name!r}; use {DEVICE_HELP}") from None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"unsupported device {name!r}; use {DEVICE_HELP}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r}: no CUDA device here (use cpu or auto)")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"device {name!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return name


def bf16_supported(device: str) -> bool:
    """Whether ``device`` computes in bfloat16 natively (a recent CUDA GPU)."""
    return device.startswith("cuda") and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
