"""The interface every label source implements, and the train data it is fitted on."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import scipy.sparse as sp

from xlgen.encoders.candidates import PairScores
from xlgen.encoders.config import RetrieverConfig


@dataclass(frozen=True, eq=False)
class TrainData:
    """Train documents as a source sees them."""

    texts: Sequence[str]
    """Document texts."""
    vectors: np.ndarray
    """``(n_docs, dim)`` unit embeddings of the texts."""
    y: sp.csr_matrix
    """``(n_docs, n_labels)`` binary label matrix (columns = the retriever's labels at fit time)."""


class LabelSource(ABC):
    """Scores every label for a document.

    ``score`` and ``score_train`` return a CSR matrix ``(n_docs, n_columns)`` whose row holds at least
    the source's ``top`` best labels with their scores, and may hold more (every label whose score the
    source knows cheaply); absent entries read 0. ``n_columns`` may be smaller than the retriever's
    current label count (labels added after fitting), never larger.
    """

    name: ClassVar[str]

    def __init__(self, config: RetrieverConfig) -> None:
        self.config = config

    @abstractmethod
    def fit(self, train: TrainData, label_vectors: np.ndarray) -> None:
        """Fits on the train documents; ``label_vectors`` ``(n_labels, dim)`` are the labels' text vectors."""

    @abstractmethod
    def score(self, texts: Sequence[str], vectors: np.ndarray, top: int) -> sp.csr_matrix:
        """Scores of new documents."""

    def score_train(self, texts: Sequence[str], vectors: np.ndarray, rows: np.ndarray, top: int) -> sp.csr_matrix:
        """Leak-free scores of train documents (``rows``: their positions in the fitted train data): no
        document's own labels reach its scores. The default suits sources that do not learn from labels."""
        return self.score(texts, vectors, top)

    def pair_scores(self, vectors: np.ndarray) -> PairScores | None:
        """Scores of any (document, label) pair of a batch with embeddings ``vectors`` ``(n, dim)``, when the source
        knows them cheaply (None: it does not), so that its rows need hold only its top labels
        (:func:`~xlgen.encoders.candidates.merge_sources`)."""
        return None

    def set_label_vectors(self, label_vectors: np.ndarray) -> None:  # noqa: B027 - optional hook
        """Takes the labels' text vectors after a label was added or changed (only ``label_text`` uses them)."""

    @abstractmethod
    def save(self, path: Path) -> None:
        """Writes the fitted source into the folder ``path``."""

    @classmethod
    @abstractmethod
    def load(cls, path: Path, config: RetrieverConfig, label_vectors: np.ndarray) -> LabelSource:
        """Reads what :meth:`save` wrote."""


def top_sparse(scores: np.ndarray, top: int | None = None) -> sp.csr_matrix:
    """A dense ``(n, L)`` score block as CSR, keeping every entry (``top`` None) or each row's ``top`` best."""
    n, n_labels = scores.shape
    if top is None or top >= n_labels:
        return sp.csr_matrix(scores.astype(np.float32))
    part = np.argpartition(-scores, top - 1, axis=1)[:, :top]  # (n, top)
    vals = np.take_along_axis(scores, part, axis=1)
    rows = np.repeat(np.arange(n), top)
    return sp.csr_matrix((vals.ravel().astype(np.float32), (rows, part.ravel())), shape=(n, n_labels))
