"""Label-text source: the cosine similarity of a document to each label's text vector.

    s_text(d, l) = cos(e(d), v_l),   v_l = normalise( mean_{t in texts(l)} e(t) )

where e is the sentence encoder and texts(l) the label's name (``_``/``-`` as spaces), its description
and its example phrases. It learns nothing from train labels, so a label added by name alone is scored
at once, and its train scores are leak-free as they are.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from xlgen.encoders.candidates import PairScores
from xlgen.encoders.config import RetrieverConfig
from xlgen.encoders.index import HnswIndex, VectorIndex
from xlgen.encoders.sources.base import LabelSource, TrainData, top_sparse


class LabelTextSource(LabelSource):
    """Cosine similarity to the label's text vector (exact over all labels up to ``exact_limit``)."""

    name = "label_text"

    def __init__(self, config: RetrieverConfig) -> None:
        super().__init__(config)
        self.label_vectors = np.zeros((0, 0), dtype=np.float32)
        self._index: VectorIndex | None = None

    def fit(self, train: TrainData, label_vectors: np.ndarray) -> None:
        self.set_label_vectors(label_vectors)

    def set_label_vectors(self, label_vectors: np.ndarray) -> None:
        self.label_vectors = np.ascontiguousarray(label_vectors, dtype=np.float32)
        self._index = None  # rebuilt on demand: labels are few next to documents

    def score(self, texts: Sequence[str], vectors: np.ndarray, top: int) -> sp.csr_matrix:
        n_labels = self.label_vectors.shape[0]
        if n_labels <= self.config.exact_limit:
            # the top K alone: the cosine of another source's candidate comes from pair_scores. Keeping every
            # label made each (document, label) pair a stored entry: 2048 x 100,000 per block at 10^5 labels,
            # and the merge sorted them all (benchmarks/scale.py, docs/scale.md)
            return top_sparse(vectors @ self.label_vectors.T, top)  # (n_docs, n_labels), top K per row
        if self._index is None:
            c = self.config
            self._index = HnswIndex(self.label_vectors, c.hnsw_m, c.hnsw_ef_construction, c.hnsw_ef_search)
        sims, ids = self._index.search(vectors, top)  # (n_docs, top)
        ok = ids >= 0
        rows = np.repeat(np.arange(len(vectors)), ids.shape[1]).reshape(ids.shape)
        return sp.csr_matrix((sims[ok], (rows[ok], ids[ok])), shape=(len(vectors), n_labels))

    def pair_scores(self, vectors: np.ndarray) -> PairScores:
        """The cosine of any label to a document of ``vectors`` ``(n, dim)``."""
        return lambda row, labels: self.label_vectors[labels] @ vectors[row]  # (m,)

    def save(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)  # the vectors live with the retriever's label texts

    @classmethod
    def load(cls, path: Path, config: RetrieverConfig, label_vectors: np.ndarray) -> LabelTextSource:
        out = cls(config)
        out.set_label_vectors(label_vectors)
        return out
