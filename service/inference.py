"""The served model: loading it on the right device, swapping it atomically, running batches.

The model is called from one executor thread only (the micro-batcher's and the acquisition
scoring share it), so torch never runs two calls at once; a swap replaces the reference that the
next batch reads, so a batch that already runs finishes on the old model.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from xlgen.decoding import DecodingConfig, Prediction, cut
from xlgen.model import XLGenModel

log = logging.getLogger("xlgen.service")


def resolve_device(name: str) -> str:
    """``auto`` is CUDA when present, else CPU."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def model_version(path: str | Path) -> str:
    """A short content hash of the model directory's metadata (settings, threshold, metrics) and
    weight file sizes: equal for the same model, different after a retraining."""
    path = Path(path)
    h = hashlib.sha256((path / "xlgen.json").read_bytes())
    for f in sorted(path.glob("*.safetensors")) + sorted(path.glob("adapter/*.safetensors")):
        h.update(f"{f.name}:{f.stat().st_size}".encode())
    return h.hexdigest()[:12]


@dataclass
class ServedModel:
    """A loaded model and where it came from.

    Attributes:
        model: The model.
        path: Its directory.
        version: :func:`model_version` of it.
        device: Where it runs.
        dtype: Its parameter dtype.
        backend: The inference backend its decoding runs on (see :mod:`xlgen.backends`).
        loaded_at: Unix time it was loaded.
    """

    model: XLGenModel
    path: str
    version: str
    device: str
    dtype: str
    backend: str = "torch"
    loaded_at: float = field(default_factory=time.time)

    @property
    def dev_micro_f1(self) -> float:
        return float(self.model.metrics.get("dev_micro_f1", -1.0))


def load_served_model(path: str | Path, device: str = "auto", threads: int = 0, bf16: bool = True, backend: str = "auto") -> ServedModel:
    """Loads a model directory for serving: on CUDA when ``device`` is auto and a GPU is present
    (in bfloat16 where supported and ``bf16``), else on CPU with ``threads`` torch threads (and as
    many backend threads); decoding runs on ``backend`` (``auto``: the fastest valid export)."""
    dev = resolve_device(device)
    if dev == "cpu" and threads:
        torch.set_num_threads(threads)
    xm = XLGenModel.load(path, device=dev, backend=backend)
    dtype = torch.float32
    if dev.startswith("cuda") and bf16 and torch.cuda.is_bf16_supported():
        xm.model.to(torch.bfloat16)
        dtype = torch.bfloat16
    name = xm.backend.describe() if xm.backend is not None else "torch"
    return ServedModel(xm, str(Path(path).resolve()), model_version(path), dev, str(dtype).removeprefix("torch."), name)


def ensure_export(path: str | Path, backend: str) -> None:
    """Exports ``backend`` into the model directory ``path`` unless a valid export is there: a
    retrained model swapped in keeps the backend the served one ran on."""
    from xlgen.backends import StaleExport, export, read_export

    try:
        read_export(path, backend)
    except (FileNotFoundError, StaleExport):
        log.info("exporting", extra={"fields": {"model": str(path), "backend": backend}})
        export(path, backend)


class ModelHolder:
    """The model being served; :meth:`swap` replaces it in one reference assignment."""

    def __init__(self) -> None:
        self._current: ServedModel | None = None
        self._lock = threading.Lock()
        self.error: str = ""

    @property
    def current(self) -> ServedModel | None:
        return self._current

    def swap(self, new: ServedModel) -> ServedModel | None:
        """Serves ``new`` from the next batch on; returns the model it replaced."""
        with self._lock:
            old, self._current = self._current, new
        return old


@dataclass(frozen=True)
class Tagged:
    """One text's prediction and the model that made it."""

    prediction: Prediction
    served: ServedModel


def run_tag_batch(holder: ModelHolder, decoding: DecodingConfig, texts: Sequence[str]) -> list[Tagged]:
    """Predicts every generated label's score (threshold 0; each request applies its own cut)."""
    served = holder.current
    if served is None:
        raise RuntimeError("no model loaded")
    preds = served.model.predict(list(texts), decoding, threshold=0.0)
    return [Tagged(p, served) for p in preds]


def labels_of(tagged: Tagged, threshold: float | None, top_k: int | None, min_labels: int) -> list[tuple[str, float, bool]]:
    """``(label, score, new)`` above the threshold (the model's tuned one when None), best first,
    at most ``top_k``."""
    model = tagged.served.model
    thr = model.threshold if threshold is None else threshold
    kept = cut(tagged.prediction.all_scores, thr, min_labels)
    if top_k is not None:
        kept = kept[:top_k]
    return [(label, score, label not in model.label_space) for label, score in kept]
