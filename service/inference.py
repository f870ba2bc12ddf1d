"""The served model: loading it on the right device, swapping it atomically, running batches.

The model is called from one executor thread only (the micro-batcher's and the acquisition
scoring share it), so torch never runs two calls at once; a swap replaces the reference that the
next batch reads, so a batch that already runs finishes on the old model.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from xlgen.decoding import DecodingConfig, Prediction, cut
from xlgen.devices import bf16_supported, resolve_device
from xlgen.model import XLGenModel

log = logging.getLogger("xlgen.service")


@dataclass
class ServedModel:
    """A loaded model and where it came from.

    Attributes:
        model: The model.
        path: Its directory.
        version: :func:`xlgen.digests.model_version` of it.
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
    retriever = getattr(xm.guidance, "retriever", None)
    if retriever is not None:
        retriever.cache = None  # requests' texts are not written to the on-disk embedding cache
    dtype = torch.float32
    if bf16 and bf16_supported(dev):
        xm.model.to(torch.bfloat16)
        dtype = torch.bfloat16
    name = xm.backend.describe() if xm.backend is not None else "torch"
    return ServedModel(xm, str(Path(path).resolve()), xm.version, dev, str(dtype).removeprefix("torch."), name)


def ensure_export(path: str | Path, backend: str) -> None:
    """Exports ``backend`` into the model directory ``path`` unless a valid export is there: a
    retrained model swapped in keeps the backend the served one ran on."""
    from xlgen.backends import StaleExport, read_export
    from xlgen.model import export_model

    try:
        read_export(path, backend)
    except (FileNotFoundError, StaleExport):
        log.info("exporting", extra={"fields": {"model": str(path), "backend": backend}})
        export_model(path, backend)


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


def run_tag_batch(holder: ModelHolder, decoding: DecodingConfig, texts: Sequence[str],
                  should_stop: Callable[[], bool] | None = None) -> list[Tagged]:
    """Predicts every generated label's score (threshold 0; each request applies its own cut).

    Raises:
        xlgen.backends.Cancelled: When ``should_stop`` turned True between decoding batches.
    """
    served = holder.current
    if served is None:
        raise RuntimeError("no model loaded")
    preds = served.model.predict(list(texts), decoding, threshold=0.0, should_stop=should_stop)
    return [Tagged(p, served) for p in preds]


def text_work(model: XLGenModel, texts: Sequence[str], decoding: DecodingConfig) -> list[int]:
    """The work of tagging each text (see ``XLGEN_MAX_REQUEST_WORK``): the tokens each of its sequences reads
    and writes, its input tokens (task prefix and end of sequence included, at most the model's maximum
    input length) plus ``decoding.max_new_tokens``, times the sequences ``decoding`` returns per text.

    The decoded length counts at its maximum: a sequence may run to it (sampling at a high temperature
    nearly never emits the end of sequence early), and a decoding step of 256 samples costs as much
    whatever their input, so a one-word text sampled 256 times is priced as what it may cost.
    """
    limit = model.settings.max_input_length
    return [(min(len(model.tokenizer.encode(t)) + 2, limit) + decoding.max_new_tokens) * decoding.num_return for t in texts]


def scan_work(model: XLGenModel, texts: Sequence[str], cfg: Any) -> list[int]:
    """The work of scoring each pool text for next-batch under ``cfg`` (a
    :class:`xlgen.active.selection.SelectionConfig`), in the unit of :func:`text_work`: each decoding the
    strategy needs (the reference beam search; every ensemble member; BEAL's dropout passes), plus one
    encoder pass for the document vectors of diversity, Core-Set and DAL; 0 for a strategy that reads no model
    (random, subword), so such a scan is one piece."""
    from xlgen.active.acquisition import get_strategy

    strategy = get_strategy(cfg.strategy)
    members = cfg.ensemble.member_configs()
    decodings = {"none": [], "ensemble": members, "passes": [members[0]] * cfg.ensemble.mc_passes}.get(strategy.needs, members[:1])
    vectors = cfg.diversity or strategy.uses_embeddings
    if not decodings and not vectors:
        return [0] * len(texts)
    limit = model.settings.max_input_length
    inputs = [min(len(model.tokenizer.encode(t)) + 2, limit) for t in texts]
    return [sum((n + d.max_new_tokens) * d.num_return for d in decodings) + (n if vectors else 0) for n in inputs]


def labels_of(tagged: Tagged, threshold: float | None, top_k: int | None, min_labels: int) -> list[tuple[str, float, bool, list[str]]]:
    """``(label, score, new, sources)`` above the threshold (the model's tuned one when None), best
    first, at most ``top_k``; ``sources`` says what proposed the label (the generator, the retriever's
    sources)."""
    model = tagged.served.model
    thr = model.threshold if threshold is None else threshold
    kept = cut(tagged.prediction.all_scores, thr, min_labels)
    if top_k is not None:
        kept = kept[:top_k]
    pred = tagged.prediction
    return [(label, score, label not in model.label_space, pred.sources_of(label)) for label, score in kept]


def apply_labels(served: ServedModel, storage: Any) -> int:
    """Adds every recorded new label, with its examples and positives, to the served model's retriever
    (after a restart or a swap); returns how many. A model without a retriever is left as it is."""
    retriever = getattr(served.model.guidance, "retriever", None)
    if retriever is None:
        return 0
    labels = storage.new_labels()
    for rec in labels:
        retriever.add_label(rec["name"], rec["description"], [*rec["examples"], *rec["positives"]])
    return len(labels)
