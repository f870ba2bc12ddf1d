"""Device names (the one place ``auto`` is resolved) and torch's CPU threads around CTranslate2."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

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


def cpu_bf16_native() -> bool:
    """Whether this CPU has bfloat16 matrix instructions (AMX or AVX512-BF16), which make bf16 autocast
    training faster than float32 on it; without them torch emulates bfloat16, more slowly."""
    checks = [getattr(torch.cpu, name, None) for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")]
    return any(bool(check()) for check in checks if callable(check))


@contextmanager
def torch_threads_kept() -> Iterator[None]:
    """Keeps torch's CPU thread count across the block.

    Loading a CTranslate2 model sets the calling thread's OpenMP thread count to the model's
    ``intra_threads``, and torch reads its own count from there: a model of one-thread workers left a
    process set to two threads running torch (transformers' ``generate``, the kNN search) on one.
    Every CTranslate2 model xlgen loads is loaded inside this block.
    """
    threads = torch.get_num_threads()
    try:
        yield
    finally:
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
