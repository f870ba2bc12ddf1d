"""Inference backends: one interface (:class:`Backend`: ``encode``, ``generate``), three implementations.

* ``torch``: transformers' ``generate`` plus a rescoring pass; the reference, and the only one
  for PEFT models as they are and for MC dropout;
* ``onnxruntime``: exported encoder and decoder-step graphs under a numpy search (CUDA with
  onnxruntime-gpu);
* ``ctranslate2``: the converted model, int8 on CPU, bfloat16 on CUDA.

``xlgen export --backend onnxruntime|ctranslate2`` (:meth:`xlgen.model.XLGenModel.export`) writes an export into the model directory;
:func:`load_backend` (called by :meth:`xlgen.model.XLGenModel.load`) loads the valid ones present,
and :func:`pick` sends each request to the fastest that can serve it, or back to torch (a decoding
none of them runs, dropout on, or torch weights changed since the exports were loaded).
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from xlgen.backends.base import Backend, Generated
from xlgen.backends.batching import MAX_BATCH_TOKENS, Cancelled, decode, length_batches
from xlgen.backends.export import FOLDERS, INSTALL, ExportInfo, StaleExport, read_export
from xlgen.decoding import BACKENDS, DecodingConfig

__all__ = [
    "BACKENDS", "MAX_BATCH_TOKENS", "SPEED_ORDER", "Backend", "Backends", "Cancelled", "ExportInfo", "Generated", "StaleExport", "decode",
    "installed", "length_batches", "load_backend", "pick", "read_export",
]

log = logging.getLogger("xlgen.backends")


SPEED_ORDER = ("ctranslate2", "onnxruntime")
"""Exported backends, fastest first on beam-5 tagging (``benchmarks/inference.py``)."""

_MODULES = {"onnxruntime": "onnxruntime", "ctranslate2": "ctranslate2"}


def installed(name: str) -> bool:
    """Whether the library of backend ``name`` is importable (torch always is)."""
    return name == "torch" or importlib.util.find_spec(_MODULES[name]) is not None


def weights_stamp(module: torch.nn.Module) -> tuple[int, int]:
    """Identity and in-place-update count of a module's weights: an optimizer step or a
    ``load_state_dict`` changes it, a dtype or device move does not."""
    return id(module), sum(p._version for p in module.parameters())


def length_penalty(t5: Any) -> float:
    """The beam length penalty ``generate`` uses for ``t5`` (transformers' default 1.0 when unset)."""
    value = getattr(t5.generation_config, "length_penalty", None)
    return 1.0 if value is None else float(value)


def _onnx(path: Path, xm: Any, info: ExportInfo, device: str, threads: int) -> Backend:
    from xlgen.backends.onnx_backend import OnnxBackend

    cfg = xm.t5.config
    return OnnxBackend(path, cfg.num_decoder_layers, cfg.num_heads, cfg.d_kv, xm.tokenizer.pad_id, xm.tokenizer.eos_id,
                       length_penalty(xm.t5), device=device, threads=threads)


def _ct2(path: Path, xm: Any, info: ExportInfo, device: str, threads: int) -> Backend:
    from xlgen.backends.ct2_backend import CT2Backend
    from xlgen.backends.torch_backend import TorchBackend

    if getattr(xm, "reads_encoder_states", False):
        raise StaleExport(f"{path}: a CTranslate2 export cannot serve a model whose encoder reads token states")

    encoder = TorchBackend(xm.t5, xm.tokenizer.eos_id, xm.tokenizer.pad_id, xm.device).encode
    return CT2Backend(path, xm.tokenizer.eos_id, length_penalty(xm.t5), encoder=encoder, device=device,
                      compute_type=info.compute_type, threads=threads)


_LOADERS: dict[str, Callable[[Path, Any, ExportInfo, str, int], Backend]] = {"onnxruntime": _onnx, "ctranslate2": _ct2}


@dataclass
class Backends:
    """The exported backends a model decodes with, fastest first; torch serves what none of them can.

    Attributes:
        members: The backends, fastest first.
        stamp: :func:`weights_stamp` of the torch model when they were loaded.
    """

    members: tuple[Backend, ...]
    stamp: tuple[int, int]

    @property
    def name(self) -> str:
        """The first (fastest) backend's name."""
        return self.members[0].name

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(b.name for b in self.members)

    def describe(self) -> str:
        """One line for logs, e.g. ``ctranslate2 (int8 on cpu), onnxruntime (CPUExecutionProvider)``."""
        return ", ".join(b.describe() for b in self.members)

    def pick(self, module: torch.nn.Module, cfg: DecodingConfig) -> Backend | None:
        """The fastest member that can serve ``cfg`` for ``module`` now; None (torch) with dropout on
        (MC dropout), for a decoding none of them runs, or once the weights changed in place since
        loading (training)."""
        if module.training or weights_stamp(module) != self.stamp:
            return None
        return next((b for b in self.members if b.supports(cfg)), None)


def pick(backends: Backends | None, module: torch.nn.Module, cfg: DecodingConfig) -> Backend | None:
    """:meth:`Backends.pick`, None without backends."""
    return None if backends is None else backends.pick(module, cfg)


def load_backend(model_dir: str | Path, xm: Any, name: str = "auto", device: str = "cpu", threads: int | None = None) -> Backends | None:
    """The exported backends to decode ``xm`` (loaded from ``model_dir``) with; None means torch.

    Args:
        model_dir: The model directory holding the exports.
        xm: The loaded :class:`xlgen.model.XLGenModel` (its torch model stays the fallback).
        name: ``auto`` (every valid export whose library is installed, fastest first; torch
            when none), ``torch``, ``onnxruntime`` or ``ctranslate2``.
        device: Where to run.
        threads: CPU threads (default: torch's current setting).

    Raises:
        FileNotFoundError: If ``name`` names a backend that has no export in ``model_dir``.
        StaleExport: If ``name``'s export was made from other weights.
        ImportError: If ``name``'s library is not installed.
    """
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    if name == "torch":
        return None
    threads = torch.get_num_threads() if threads is None else threads
    members: list[Backend] = []
    for candidate in SPEED_ORDER if name == "auto" else (name,):
        try:
            info = read_export(model_dir, candidate)
            if not installed(candidate):
                raise ImportError(f"the {candidate} export needs the {_MODULES[candidate]} package: {INSTALL[candidate]}")
            members.append(_LOADERS[candidate](Path(model_dir) / FOLDERS[candidate], xm, info, device, threads))
        except (FileNotFoundError, StaleExport, ImportError) as e:
            if name != "auto":
                raise
            if not isinstance(e, FileNotFoundError):
                log.warning("skipping the %s export: %s", candidate, e)
    return Backends(tuple(members), weights_stamp(xm.model)) if members else None
