"""Selection over pools too large to load: streamed, sub-sampled, narrowed by the retriever, scored
across processes.

``select_streaming(model, "pool.jsonl", cfg, StreamConfig(sample=20_000, narrow=100))``:

1. **Stream and sub-sample.** The JSON Lines pool is read line by line; with ``sample`` a seeded
   reservoir sample (Vitter's algorithm R) keeps that many documents, so memory does not grow with
   the pool (every process draws the same sample from the same seed).
2. **Narrow** (a ``retrieval`` model): per label, only the ``narrow`` documents the label retriever
   ranks highest for it are kept (the retriever stage's probability of the label; the union over the
   labels, or over ``narrow_labels``): the pipeline's way of turning millions of documents into a few
   thousand per label before anything expensive runs. Each process embeds and ranks its share; the
   per-label top lists are merged.
3. **Score** the remaining documents with the strategy, each process its share
   (accelerate's ``split_between_processes``: one process normally, two or more under ``accelerate
   launch`` or ``torch.distributed.run``, on CPUs or GPUs), and gather the scores on every process.
4. **Select** as :func:`xlgen.active.selection.select_batch` does (drop the noisiest share, top-b or
   K-means diversity over the gathered encoder embeddings).

Strategies that compare the pool with the labelled documents (``coreset``, ``dal``) or pick their batch
as a whole (``picks_batch``: ``alps``) need the whole pool at once and are refused here; use
:func:`~xlgen.active.selection.select_batch` for them.
"""

from __future__ import annotations

import heapq
import random
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from xlgen.active.acquisition import get_strategy
from xlgen.active.selection import Selection, SelectionConfig, drop_noise, pick_batch, score_pool, top_b
from xlgen.data import Document, iter_jsonl
from xlgen.model import XLGenModel


@dataclass(frozen=True)
class StreamConfig:
    """How a large pool is reduced before scoring.

    Attributes:
        sample: Keep a seeded reservoir sample of this many documents (None: every document).
        narrow: Keep, per label, the documents the retriever ranks highest for it (None: no narrowing).
        narrow_labels: Narrow for these labels only (default: every label of the retriever).
        chunk: Documents embedded and ranked at once while narrowing.
    """

    sample: int | None = None
    narrow: int | None = None
    narrow_labels: tuple[str, ...] = ()
    chunk: int = 4096

    def __post_init__(self) -> None:
        if (self.sample is not None and self.sample < 1) or (self.narrow is not None and self.narrow < 1) or self.chunk < 1:
            raise ValueError("sample, narrow and chunk must be positive")


def reservoir(docs: Iterable[Document], k: int, seed: int = 0) -> tuple[list[Document], int]:
    """A uniform sample of ``k`` documents of a stream (Vitter's algorithm R), in stream order.

    Returns:
        ``(sample, number of documents in the stream)``.
    """
    rng = random.Random(seed)
    kept: list[tuple[int, Document]] = []
    n = 0
    for n, doc in enumerate(docs, 1):
        if len(kept) < k:
            kept.append((n, doc))
        else:
            j = rng.randrange(n)
            if j < k:
                kept[j] = (n, doc)
    kept.sort(key=lambda t: t[0])
    return [d for _, d in kept], n


def _chunks(items: list[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def narrow_pool(model: XLGenModel, docs: Sequence[Document], per_label: int, labels: Sequence[str] = (), chunk: int = 4096,
                state: Any = None) -> list[int]:
    """Indices (sorted) of the documents among each label's ``per_label`` best by the retriever.

    A document's score for a label is the fusion's retriever-stage probability of the label when the
    retriever proposes it (its candidates), so a label's top list holds the documents most likely to
    carry it. With ``state`` (accelerate's ``PartialState``) each process ranks its share of ``docs``
    and the top lists are merged.

    Raises:
        ValueError: If the model has no label retriever, or ``labels`` names a label it does not know.
    """
    g: Any = model.guidance
    retriever = getattr(g, "retriever", None)
    if retriever is None:
        raise ValueError("narrowing a pool needs a model trained with --variant retrieval (its label retriever)")
    unknown = [x for x in labels if x not in retriever.counts]
    if unknown:
        raise ValueError(f"the retriever does not know the labels {unknown[:5]}")
    wanted = set(labels) if labels else None
    heaps: dict[str, list[tuple[float, int]]] = {}
    indices = list(range(len(docs)))
    mine = _share(indices, state)
    for part in _chunks(mine, chunk):
        cands = retriever.score([docs[i].text for i in part])
        probs = g.fusion.retriever_probabilities(cands, retriever.counts)  # (n_rows,)
        for row, (doc, label_id) in enumerate(zip(cands.doc_index.tolist(), cands.label_ids.tolist(), strict=True)):
            label = cands.labels[label_id]
            if wanted is not None and label not in wanted:
                continue
            heap = heaps.setdefault(label, [])
            item = (float(probs[row]), -part[doc])  # ties: the earlier document
            if len(heap) < per_label:
                heapq.heappush(heap, item)
            elif item > heap[0]:
                heapq.heapreplace(heap, item)
    merged: dict[str, list[tuple[float, int]]] = {}
    for local in _gather(heaps, state):
        for label, items in local.items():
            merged.setdefault(label, []).extend(items)
    keep = {-i for items in merged.values() for _, i in heapq.nlargest(per_label, items)}
    return sorted(keep)


def _share(items: list[int], state: Any) -> list[int]:
    if state is None or state.num_processes == 1:
        return items
    with state.split_between_processes(items) as mine:
        return list(mine)


def _gather(obj: Any, state: Any) -> list[Any]:
    """Every process's ``obj``, in rank order, on every process."""
    if state is None or state.num_processes == 1:
        return [obj]
    from accelerate.utils import gather_object

    return list(gather_object([obj]))


def select_streaming(model: XLGenModel, pool: str | Iterable[Document], cfg: SelectionConfig, stream: StreamConfig,
                     state: Any = None) -> tuple[Selection, list[Document], dict[str, Any]]:
    """Selects the next batch from a pool streamed from JSON Lines (or any iterable of documents).

    Args:
        model: The current model.
        pool: A JSON Lines path of ``{"id", "text"}`` or documents.
        cfg: Strategy and batch settings (its ``pool_sample`` is ignored: ``stream.sample`` streams).
        stream: Sampling and narrowing.
        state: accelerate's ``PartialState`` to share the work between processes (None: this process only).

    Returns:
        ``(selection, the documents its indices refer to, stats)``; ``stats`` holds the pool size, the
        sample and narrowed sizes, and the seconds of each stage.

    Raises:
        ValueError: For a strategy that needs the whole pool at once (it compares it with labelled documents,
            or picks its batch as a whole).
    """
    strategy = get_strategy(cfg.strategy, cfg.seed)
    if strategy.uses_labelled or strategy.picks_batch:
        raise ValueError(f"{cfg.strategy} needs the whole pool at once (it compares it with the labelled documents, or picks "
                         "its batch as a whole): it cannot score a streamed pool")
    stats: dict[str, Any] = {"processes": 1 if state is None else state.num_processes}
    started = time.perf_counter()
    docs_iter = iter_jsonl(pool, require_labels=False) if isinstance(pool, str) else iter(pool)
    if stream.sample is not None:
        docs, stats["pool"] = reservoir(docs_iter, stream.sample, cfg.seed)
    else:
        docs = list(docs_iter)
        stats["pool"] = len(docs)
    stats["sampled"] = len(docs)
    stats["read_s"] = time.perf_counter() - started
    if stream.narrow is not None:
        started = time.perf_counter()
        keep = narrow_pool(model, docs, stream.narrow, stream.narrow_labels, stream.chunk, state)
        docs = [docs[i] for i in keep]
        stats["narrow_s"] = time.perf_counter() - started
    stats["scored"] = len(docs)
    started = time.perf_counter()
    mine = _share(list(range(len(docs))), state)
    if mine:
        scores, decoded, _ = score_pool(model, [docs[i] for i in mine], replace(cfg, pool_sample=None))
        part = (mine, scores, decoded.suggestions, decoded.outputs.embeddings if cfg.diversity else None)
    else:  # fewer documents than processes
        part = ([], np.zeros(0), [], None)
    parts = _gather(part, state)
    all_scores = np.zeros(len(docs))
    suggestions: list[list[tuple[str, float]]] = [[] for _ in docs]
    embeddings: np.ndarray | None = None
    for idx, sc, sug, e in parts:
        all_scores[idx] = sc
        for i, s in zip(idx, sug, strict=True):
            suggestions[i] = s
        if e is not None:
            embeddings = np.zeros((len(docs), e.shape[1]), dtype=e.dtype) if embeddings is None else embeddings
            embeddings[idx] = e
    stats["score_s"] = time.perf_counter() - started
    picked = pick_batch(drop_noise(top_b(all_scores, len(all_scores)), cfg.drop_top), all_scores, embeddings, cfg)
    sel = Selection(indices=[int(i) for i in picked], ids=[docs[int(i)].id for i in picked],
                    scores=[float(all_scores[i]) for i in picked], suggestions=[suggestions[int(i)] for i in picked],
                    seconds=stats["score_s"], n_scored=len(docs), cached=False)
    return sel, docs, stats
