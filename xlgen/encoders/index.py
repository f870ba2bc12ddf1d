"""Nearest-neighbour search over unit vectors by inner product (= cosine similarity).

Exact search (chunked matrix products) up to a size limit; above it an HNSW graph (faiss, the ``fast``
extra), whose recall@k against exact search ``benchmarks/retrieval.py`` reports. Without faiss every
index is exact: slower above the limit, never less accurate.
"""

from __future__ import annotations

import json
import logging
from importlib.util import find_spec
from pathlib import Path
from typing import Any, Protocol

import numpy as np

log = logging.getLogger(__name__)

QUERY_CHUNK = 1024
"""Queries per matrix product in exact search: bounds the ``(chunk, n)`` similarity block."""


class VectorIndex(Protocol):
    """Top-k inner-product search over a fixed set of vectors."""

    kind: str

    def __len__(self) -> int: ...

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``(similarities, ids)``, both ``(n_queries, min(k, len))``, best first."""
        ...

    def save(self, path: Path) -> None:
        """Writes the index under ``path`` (a folder)."""
        ...


def _topk(sims: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    if k < sims.shape[1]:
        import torch

        # torch's top-k selection: about 13x faster than numpy's argpartition over 43k train documents
        # (which also needs a negated copy), the largest cost of a served kNN query before
        part = torch.from_numpy(np.ascontiguousarray(sims, dtype=np.float32)).topk(k, dim=1, sorted=False).indices.numpy()  # (rows, k)
    else:
        part = np.broadcast_to(np.arange(sims.shape[1]), sims.shape).copy()
    vals = np.take_along_axis(sims, part, axis=1)
    # ties broken by the lower id, so results are deterministic
    order = np.lexsort((part, -vals), axis=1)
    return np.take_along_axis(vals, order, axis=1), np.take_along_axis(part, order, axis=1)


class ExactIndex:
    """Exact inner-product search.

    Args:
        vectors: ``(n, d)`` float32 unit vectors (kept, not copied).
    """

    kind = "exact"

    def __init__(self, vectors: np.ndarray) -> None:
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)

    def __len__(self) -> int:
        return int(self.vectors.shape[0])

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        k = min(k, len(self))
        n = queries.shape[0]
        sims_out = np.zeros((n, k), dtype=np.float32)
        ids_out = np.zeros((n, k), dtype=np.int64)
        if k == 0:
            return sims_out, ids_out
        for start in range(0, n, QUERY_CHUNK):
            block = queries[start : start + QUERY_CHUNK] @ self.vectors.T  # (chunk, n)
            s, i = _topk(block, k)
            sims_out[start : start + len(block)] = s
            ids_out[start : start + len(block)] = i
        return sims_out, ids_out

    def save(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        (path / "index.json").write_text(json.dumps({"kind": self.kind}))


def _limit_threads() -> None:
    """faiss's OpenMP threads follow torch's thread count (one process should not claim every core)."""
    import faiss
    import torch

    faiss.omp_set_num_threads(torch.get_num_threads())


class HnswIndex:
    """An HNSW graph (faiss ``IndexHNSWFlat`` with the inner-product metric).

    Args:
        vectors: ``(n, d)`` float32 unit vectors.
        m: Graph degree (links per node).
        ef_construction: Candidate list size while building.
        ef_search: Candidate list size while searching (recall against speed).
    """

    kind = "hnsw"

    def __init__(self, vectors: np.ndarray | None, m: int = 32, ef_construction: int = 200, ef_search: int = 128) -> None:
        import faiss

        self.m, self.ef_construction, self.ef_search = m, ef_construction, ef_search
        self.index: Any = None
        if vectors is not None:
            _limit_threads()
            vectors = np.ascontiguousarray(vectors, dtype=np.float32)
            self.index = faiss.IndexHNSWFlat(vectors.shape[1], m, faiss.METRIC_INNER_PRODUCT)
            self.index.hnsw.efConstruction = ef_construction
            self.index.add(vectors)

    def __len__(self) -> int:
        return int(self.index.ntotal) if self.index is not None else 0

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        _limit_threads()
        k = min(k, len(self))
        self.index.hnsw.efSearch = max(self.ef_search, k)
        sims, ids = self.index.search(np.ascontiguousarray(queries, dtype=np.float32), k)  # (n, k) each
        # a graph search can come back with fewer than k hits (id -1): give them similarity -inf
        sims = np.where(ids < 0, -np.inf, sims).astype(np.float32)
        return sims, ids.astype(np.int64)

    def save(self, path: Path) -> None:
        import faiss

        path.mkdir(parents=True, exist_ok=True)
        faiss.write_index(self.index, str(path / "hnsw.faiss"))
        (path / "index.json").write_text(json.dumps({"kind": self.kind, "m": self.m, "ef_construction": self.ef_construction,
                                                     "ef_search": self.ef_search}))

    @classmethod
    def load(cls, path: Path) -> HnswIndex:
        import faiss

        meta = json.loads((path / "index.json").read_text())
        out = cls(None, meta["m"], meta["ef_construction"], meta["ef_search"])
        out.index = faiss.read_index(str(path / "hnsw.faiss"))
        return out


def build_index(vectors: np.ndarray, exact_limit: int, m: int = 32, ef_construction: int = 200,
                ef_search: int = 128) -> VectorIndex:
    """Exact search for at most ``exact_limit`` vectors, an HNSW graph above (exact there too without faiss)."""
    if len(vectors) <= exact_limit:
        return ExactIndex(vectors)
    if find_spec("faiss") is None:
        log.warning("exact search over %d vectors: faiss is not installed (the fast extra: pip install 'xlgen[fast]')", len(vectors))
        return ExactIndex(vectors)
    return HnswIndex(vectors, m, ef_construction, ef_search)


def load_index(path: Path, vectors: np.ndarray) -> VectorIndex:
    """Reads an index written by ``save``; an exact index takes its ``vectors`` from the caller."""
    kind = json.loads((path / "index.json").read_text())["kind"]
    if kind == "exact":
        return ExactIndex(vectors)
    if kind == "hnsw":
        if find_spec("faiss") is None:
            log.warning("%s: exact search in place of the saved HNSW graph: faiss is not installed (the fast extra: "
                        "pip install 'xlgen[fast]')", path)
            return ExactIndex(vectors)
        return HnswIndex.load(path)
    raise ValueError(f"{path}: unknown index kind {kind!r}")


def recall_at_k(exact_ids: np.ndarray, approx_ids: np.ndarray) -> float:
    """Mean share of the exact top-k that the approximate top-k found."""
    k = exact_ids.shape[1]
    return float(np.mean([len(set(a) & set(e)) / k for a, e in zip(approx_ids.tolist(), exact_ids.tolist(), strict=True)]))
