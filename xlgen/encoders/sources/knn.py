"""kNN source: the labels of a document's nearest train documents, weighted by similarity.

    s_knn(d, l) = sum_{j in N_k(d)} w_j y_jl / sum_{j in N_k(d)} w_j,   w_j = max(cos(e(d), e(j)), 0) ** p

with N_k(d) the k train documents most similar to d (excluding d itself when d is a train document,
so train scores are leak-free), y_jl = 1 if train document j has label l, and p = ``knn_power``.
Scores lie in [0, 1]; every label voted for is kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from xlgen.encoders.config import RetrieverConfig
from xlgen.encoders.index import VectorIndex, build_index, load_index
from xlgen.encoders.sources.base import LabelSource, TrainData


class KnnSource(LabelSource):
    """Similarity-weighted label votes of the k nearest train documents."""

    name = "knn"

    def __init__(self, config: RetrieverConfig) -> None:
        super().__init__(config)
        self.vectors = np.zeros((0, 0), dtype=np.float32)
        self.y = sp.csr_matrix((0, 0), dtype=np.float32)
        self.index: VectorIndex | None = None

    def fit(self, train: TrainData, label_vectors: np.ndarray) -> None:
        c = self.config
        self.vectors = np.ascontiguousarray(train.vectors, dtype=np.float32)
        self.y = sp.csr_matrix(train.y, dtype=np.float32)
        self.index = build_index(self.vectors, c.exact_limit, c.hnsw_m, c.hnsw_ef_construction, c.hnsw_ef_search)

    def _votes(self, sims: np.ndarray, ids: np.ndarray) -> sp.csr_matrix:
        weights = np.where(ids >= 0, np.maximum(sims, 0.0) ** self.config.knn_power, 0.0)  # (n, k)
        total = weights.sum(axis=1, keepdims=True)
        weights = np.divide(weights, total, out=np.zeros_like(weights), where=total > 0)
        n, k = ids.shape
        w = sp.csr_matrix((weights.ravel(), (np.repeat(np.arange(n), k), np.maximum(ids, 0).ravel())),
                          shape=(n, self.vectors.shape[0]))  # (n, n_train)
        out = (w @ self.y).tocsr()  # (n, n_labels)
        out.eliminate_zeros()
        return out.astype(np.float32)

    def score(self, texts: Sequence[str], vectors: np.ndarray, top: int) -> sp.csr_matrix:
        assert self.index is not None, "fit the source first"
        sims, ids = self.index.search(vectors, self.config.k_neighbours)  # (n, k)
        return self._votes(sims, ids)

    def score_train(self, texts: Sequence[str], vectors: np.ndarray, rows: np.ndarray, top: int) -> sp.csr_matrix:
        assert self.index is not None, "fit the source first"
        k = self.config.k_neighbours
        sims, ids = self.index.search(vectors, k + 1)  # (n, k + 1): one spare for the document itself
        is_self = ids == np.asarray(rows)[:, None]
        # drop the document itself where found, else the farthest neighbour, keeping k per row
        drop = np.where(is_self.any(axis=1), is_self.argmax(axis=1), ids.shape[1] - 1)
        keep = np.ones_like(ids, dtype=bool)
        keep[np.arange(len(ids)), drop] = False
        kk = ids.shape[1] - 1
        return self._votes(sims[keep].reshape(len(ids), kk), ids[keep].reshape(len(ids), kk))

    def save(self, path: Path) -> None:
        assert self.index is not None, "fit the source first"
        path.mkdir(parents=True, exist_ok=True)
        np.save(path / "train_vectors.npy", self.vectors)
        sp.save_npz(path / "train_labels.npz", self.y)
        self.index.save(path / "index")

    @classmethod
    def load(cls, path: Path, config: RetrieverConfig, label_vectors: np.ndarray) -> KnnSource:
        out = cls(config)
        out.vectors = np.load(path / "train_vectors.npy")
        out.y = sp.csr_matrix(sp.load_npz(path / "train_labels.npz"), dtype=np.float32)
        out.index = load_index(path / "index", out.vectors)
        return out
