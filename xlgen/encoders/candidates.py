"""Candidate labels of a batch of documents, with every source's score and rank: the retriever's output
and the features a calibrator fuses.

For each document the candidates are the union of every source's top-K labels. Each candidate row
carries, per source, the source's score (0 where the source gives the label none) and its rank among
the source's labels for that document (1 = best; K + 1 where the label is outside the source's top K).
Rows are stored flat (CSR-like): document ``i`` owns rows ``offsets[i]:offsets[i + 1]``, ordered by
best rank over the sources, then by highest score, then by label id.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp


@dataclass(frozen=True, eq=False)
class Candidates:
    """Candidate labels with per-source scores and ranks for ``len(self)`` documents."""

    labels: tuple[str, ...]
    """The retriever's labels; ``label_ids`` index into them."""
    sources: tuple[str, ...]
    """Source names, the column order of ``scores`` and ``ranks``."""
    top: int
    """K: ranks run from 1 to K, and K + 1 means "not in this source's top K"."""
    offsets: np.ndarray
    """``(n_docs + 1,)`` int64: document ``i``'s rows are ``offsets[i]:offsets[i + 1]``."""
    label_ids: np.ndarray
    """``(n_rows,)`` int32 label of each row."""
    scores: np.ndarray
    """``(n_rows, n_sources)`` float32 score of each row's label by each source (0 where none)."""
    ranks: np.ndarray
    """``(n_rows, n_sources)`` int32 rank of each row's label in each source (K + 1 where outside top K)."""

    def __post_init__(self) -> None:
        n_rows = len(self.label_ids)
        if self.offsets[0] != 0 or self.offsets[-1] != n_rows or np.any(np.diff(self.offsets) < 0):
            raise ValueError("offsets do not delimit the rows")
        if self.scores.shape != (n_rows, len(self.sources)) or self.ranks.shape != (n_rows, len(self.sources)):
            raise ValueError("scores and ranks need one row per candidate and one column per source")

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def doc_index(self) -> np.ndarray:
        """``(n_rows,)`` document of each row."""
        return np.repeat(np.arange(len(self)), np.diff(self.offsets))

    def source_column(self, source: str) -> int:
        """Column of ``source`` in ``scores`` and ``ranks``."""
        try:
            return self.sources.index(source)
        except ValueError:
            raise KeyError(f"no source {source!r} in {self.sources}") from None

    def doc(self, i: int) -> list[tuple[str, dict[str, tuple[float, int]]]]:
        """Document ``i``'s candidates: ``(label, {source: (score, rank)})`` in row order."""
        rows = range(self.offsets[i], self.offsets[i + 1])
        return [(self.labels[self.label_ids[r]],
                 {s: (float(self.scores[r, j]), int(self.ranks[r, j])) for j, s in enumerate(self.sources)}) for r in rows]

    def source_scores(self, source: str, within_top: bool = True) -> list[dict[str, float]]:
        """One source's scores as ``{label: score}`` per document: its own top K (``within_top``), or
        every candidate it gave a score."""
        j = self.source_column(source)
        out: list[dict[str, float]] = []
        for i in range(len(self)):
            a, b = self.offsets[i], self.offsets[i + 1]
            keep = self.ranks[a:b, j] <= self.top if within_top else self.scores[a:b, j] > 0
            out.append({self.labels[x]: float(s) for x, s in zip(self.label_ids[a:b][keep], self.scores[a:b, j][keep], strict=True)})
        return out

    def label_sets(self) -> list[list[str]]:
        """Each document's candidate labels in row order."""
        return [[self.labels[x] for x in self.label_ids[self.offsets[i]:self.offsets[i + 1]]] for i in range(len(self))]

    def documents(self, keep: np.ndarray) -> Candidates:
        """The candidates of the documents ``keep`` (indices, in that order), each document's rows whole."""
        keep = np.asarray(keep, dtype=np.int64)
        sizes = np.diff(self.offsets)[keep]
        rows = np.concatenate([np.arange(self.offsets[i], self.offsets[i + 1]) for i in keep]) if len(keep) else np.zeros(0, np.int64)
        offsets = np.concatenate([np.zeros(1, dtype=np.int64), np.cumsum(sizes)])
        return Candidates(self.labels, self.sources, self.top, offsets, self.label_ids[rows], self.scores[rows], self.ranks[rows])

    @staticmethod
    def concat(parts: Sequence[Candidates]) -> Candidates:
        """Joins candidates of consecutive document batches (same labels, sources and K)."""
        if not parts:
            raise ValueError("nothing to join")
        first = parts[0]
        if any(p.sources != first.sources or p.top != first.top or len(p.labels) != len(first.labels) for p in parts):
            raise ValueError("candidates from different retrievers")
        offsets = [np.zeros(1, dtype=np.int64)]
        base = 0
        for p in parts:
            offsets.append(p.offsets[1:] + base)
            base += len(p.label_ids)
        return Candidates(first.labels, first.sources, first.top, np.concatenate(offsets),
                          np.concatenate([p.label_ids for p in parts]), np.concatenate([p.scores for p in parts]),
                          np.concatenate([p.ranks for p in parts]))


def _row_ranks(indices: np.ndarray, data: np.ndarray) -> np.ndarray:
    """1-based rank of each stored entry of one CSR row: highest score first, ties by label id."""
    order = np.lexsort((indices, -data))
    ranks = np.empty(len(data), dtype=np.int32)
    ranks[order] = np.arange(1, len(data) + 1)
    return ranks


PairScores = Callable[[int, np.ndarray], np.ndarray]
"""``(document row, label ids (m,)) -> (m,) scores``: a source's scores of labels its matrix row left out."""


def merge_sources(labels: Sequence[str], sources: Sequence[str], matrices: Sequence[sp.csr_matrix], top: int,
                  known: Sequence[PairScores | None] | None = None) -> Candidates:
    """Builds candidates from each source's score matrix.

    Args:
        labels: The retriever's labels (the matrices' columns; a matrix may have fewer columns).
        sources: Source names, aligned with ``matrices``.
        matrices: ``(n_docs, <= n_labels)`` CSR scores per source; stored entries are known scores.
        top: K.
        known: Per source (aligned with ``matrices``), a function giving its scores of a document's candidates
            that its matrix row does not store (``label_text``: the cosine of any label), or None. A source
            whose matrix holds its top K alone then still gives every candidate its score, as if its row
            held every label, at the cost of the candidates instead of the label space.
    """
    n_docs = matrices[0].shape[0]
    n_src = len(sources)
    offsets = np.zeros(n_docs + 1, dtype=np.int64)
    all_ids: list[np.ndarray] = []
    all_scores: list[np.ndarray] = []
    all_ranks: list[np.ndarray] = []
    csrs = [sp.csr_matrix(m) for m in matrices]
    for i in range(n_docs):
        per_source = []
        union: set[int] = set()
        for m in csrs:
            a, b = m.indptr[i], m.indptr[i + 1]
            idx, val = m.indices[a:b], m.data[a:b]
            nz = val != 0  # a stored zero proposes nothing (kNN and tree scores are >= 0; cosines may be < 0)
            idx, val = idx[nz], val[nz]
            ranks = _row_ranks(idx, val)
            per_source.append((idx, val, ranks))
            union.update(idx[ranks <= top].tolist())
        ids = np.array(sorted(union), dtype=np.int32)
        scores = np.zeros((len(ids), n_src), dtype=np.float32)
        ranks_out = np.full((len(ids), n_src), top + 1, dtype=np.int32)
        for j, (idx, val, ranks) in enumerate(per_source):
            loc = np.minimum(np.searchsorted(ids, idx), max(len(ids) - 1, 0))
            hit = (ids[loc] == idx) if len(ids) else np.zeros(len(idx), dtype=bool)
            scores[loc[hit], j] = val[hit]
            ranks_out[loc[hit], j] = np.minimum(ranks[hit], top + 1)
            fill = known[j] if known is not None else None
            if fill is not None and len(ids):
                missing = np.ones(len(ids), dtype=bool)
                missing[loc[hit]] = False
                if missing.any():  # outside the row's stored labels: rank K + 1, the score asked for
                    scores[missing, j] = fill(i, ids[missing])
        order = np.lexsort((ids, -scores.max(axis=1) if n_src else ids, ranks_out.min(axis=1)))
        all_ids.append(ids[order])
        all_scores.append(scores[order])
        all_ranks.append(ranks_out[order])
        offsets[i + 1] = offsets[i] + len(ids)
    empty_f = np.zeros((0, n_src), dtype=np.float32)
    return Candidates(tuple(labels), tuple(sources), top, offsets,
                      np.concatenate(all_ids) if all_ids else np.zeros(0, dtype=np.int32),
                      np.concatenate(all_scores) if all_scores else empty_f,
                      np.concatenate(all_ranks) if all_ranks else empty_f.astype(np.int32))


def with_source(candidates: Candidates, name: str, scores: np.ndarray) -> Candidates:
    """The candidates with one more source column: ``scores`` ``(n_rows,)`` for the existing rows (NaN
    where the new source did not score a row: read as 0, rank K + 1); ranks follow the scores per document."""
    scores = np.asarray(scores, dtype=np.float32)
    if scores.shape != candidates.label_ids.shape:
        raise ValueError(f"{scores.shape[0]} scores for {len(candidates.label_ids)} candidate rows")
    top = candidates.top
    ranks = np.full(len(scores), top + 1, dtype=np.int32)
    for i in range(len(candidates)):
        a, b = candidates.offsets[i], candidates.offsets[i + 1]
        known = np.flatnonzero(~np.isnan(scores[a:b]))
        order = known[np.lexsort((candidates.label_ids[a:b][known], -scores[a:b][known]))]
        ranks[a + order] = np.minimum(np.arange(1, len(order) + 1), top + 1)
    return Candidates(candidates.labels, (*candidates.sources, name), top, candidates.offsets, candidates.label_ids,
                      np.column_stack([candidates.scores, np.nan_to_num(scores, nan=0.0)]),
                      np.column_stack([candidates.ranks, ranks]))
