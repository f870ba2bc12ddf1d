"""Document features for label clustering, and label features from them (PIFA).

Three feature sources:

* ``tfidf`` (default): TF-IDF of the texts; needs no model. Its vocabulary and idf are saved, so
  that documents seen later are featurised in the same space.
* ``sentence``: the pretrained sentence encoder's embeddings (the packaged all-MiniLM-L6-v2 unless
  another is named; :class:`xlgen.encoders.SentenceEncoder`, through the on-disk embedding cache), as
  the XLGen paper clusters labels over pretrained features.
* ``encoder``: the mean of a model directory's encoder states over the real tokens (padding masked).

A label's feature is the L2-normalised mean of the L2-normalised features of its positive training
documents (positive-instance feature aggregation, PIFA).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.preprocessing import normalize

from xlgen.data import Document

SOURCES = ("tfidf", "sentence", "encoder")


class Featurizer(Protocol):
    """Texts -> one feature row each."""

    source: str

    def transform(self, texts: Sequence[str]) -> np.ndarray | sp.csr_matrix: ...

    def save(self, path: Path) -> None: ...


class TfidfFeaturizer:
    """TF-IDF of word uni- and bigrams (sublinear tf, l2 rows).

    Args:
        max_features: Vocabulary size.
        min_df: Minimum document frequency of a term.
    """

    source = "tfidf"

    def __init__(self, max_features: int = 20000, min_df: int = 2):
        self.max_features, self.min_df = max_features, min_df
        self.vectorizer = TfidfVectorizer(
            max_features=max_features, min_df=min_df, ngram_range=(1, 2), sublinear_tf=True, dtype=np.float32
        )

    def fit(self, texts: Sequence[str]) -> TfidfFeaturizer:
        n = len(texts)
        if n < self.min_df:
            self.vectorizer.set_params(min_df=1)
        self.vectorizer.fit(texts)
        return self

    def transform(self, texts: Sequence[str]) -> sp.csr_matrix:
        return self.vectorizer.transform(texts)  # (n_docs, n_terms)

    def params(self) -> dict[str, Any]:
        return {"max_features": self.max_features, "min_df": self.min_df}

    def save(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        vocab = {term: int(i) for term, i in self.vectorizer.vocabulary_.items()}
        (path / "tfidf.json").write_text(json.dumps({"params": self.params(), "vocabulary": vocab}, ensure_ascii=False))
        np.save(path / "idf.npy", self.vectorizer.idf_.astype(np.float32))

    @classmethod
    def load(cls, path: Path) -> TfidfFeaturizer:
        meta = json.loads((path / "tfidf.json").read_text())
        out = cls(**meta["params"])
        out.vectorizer.set_params(vocabulary=meta["vocabulary"])
        out.vectorizer.fit(["x"])  # builds the analyzer with the fixed vocabulary; idf is set next
        out.vectorizer.idf_ = np.load(path / "idf.npy")
        return out


class EncoderFeaturizer:
    """Mean-pooled encoder states of an xlgen model directory.

    Args:
        model_dir: The model directory.
        batch_size: Documents per forward pass.
    """

    source = "encoder"

    def __init__(self, model_dir: str | Path, batch_size: int = 64):
        from xlgen.model import XLGenModel

        self.model_dir = str(model_dir)
        self.batch_size = batch_size
        self.model = XLGenModel.load(model_dir)

    def transform(self, texts: Sequence[str]) -> np.ndarray:
        return self.model.embeddings(texts, self.batch_size)  # (n_docs, d_model)

    def params(self) -> dict[str, Any]:
        return {"model_dir": self.model_dir}

    def save(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        (path / "encoder.json").write_text(json.dumps(self.params()))


class SentenceFeaturizer:
    """Unit sentence embeddings of a pretrained encoder (name or directory), cached on disk.

    Args:
        encoder: The encoder's name (default: the packaged all-MiniLM-L6-v2) or directory.
    """

    source = "sentence"

    def __init__(self, encoder: str | None = None):
        from xlgen.encoders import DEFAULT_ENCODER, EmbeddingCache, EncoderConfig, SentenceEncoder

        self.encoder_name = encoder or DEFAULT_ENCODER
        self.encoder = SentenceEncoder.load(EncoderConfig(name=self.encoder_name))
        self.cache = EmbeddingCache()

    def transform(self, texts: Sequence[str]) -> np.ndarray:
        return self.encoder.encode(list(texts), cache=self.cache)  # (n_docs, dim)

    def params(self) -> dict[str, Any]:
        return {"encoder": self.encoder_name, "digest": self.encoder.digest}

    def save(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        (path / "sentence.json").write_text(json.dumps(self.params()))


Featurizers = TfidfFeaturizer | SentenceFeaturizer | EncoderFeaturizer


def make_featurizer(source: str, texts: Sequence[str], model_dir: str | None = None, max_features: int = 20000) -> Featurizers:
    """A featuriser fitted on ``texts`` (``tfidf``), a pretrained sentence encoder (``sentence``, named
    by ``model_dir`` or the packaged default), or reading ``model_dir``'s encoder (``encoder``)."""
    if source == "tfidf":
        return TfidfFeaturizer(max_features=max_features).fit(texts)
    if source == "sentence":
        return SentenceFeaturizer(model_dir)
    if source == "encoder":
        if not model_dir:
            raise ValueError("encoder features need a model directory (--features-model)")
        return EncoderFeaturizer(model_dir)
    raise ValueError(f"unknown feature source {source!r}; choose one of {', '.join(SOURCES)}")


def load_featurizer(path: Path) -> Featurizers:
    """The featuriser saved in an artifact's ``features/`` folder.

    Raises:
        FileNotFoundError: If none was saved, or the encoder's model directory is gone.
    """
    if (path / "tfidf.json").is_file():
        return TfidfFeaturizer.load(path)
    if (path / "sentence.json").is_file():
        meta = json.loads((path / "sentence.json").read_text())
        featurizer = SentenceFeaturizer(meta["encoder"])
        if featurizer.encoder.digest != meta["digest"]:
            raise FileNotFoundError(f"the sentence features came from encoder {meta['encoder']!r} of digest {meta['digest']}, "
                                    f"which {featurizer.encoder.digest} is not")
        return featurizer
    if (path / "encoder.json").is_file():
        model_dir = json.loads((path / "encoder.json").read_text())["model_dir"]
        if not (Path(model_dir) / "xlgen.json").is_file():
            raise FileNotFoundError(f"the encoder features came from {model_dir}, which is no model directory any more")
        return EncoderFeaturizer(model_dir)
    raise FileNotFoundError(f"{path}: no saved featuriser")


def label_features(features: np.ndarray | sp.spmatrix, docs: Sequence[Document], labels: Sequence[str]) -> np.ndarray | sp.csr_matrix:
    """PIFA: per label, the normalised mean of its positive documents' normalised features.

    Args:
        features: ``(n_docs, n_features)``, dense or sparse, one row per document of ``docs``.
        docs: The documents (their labels say which rows are positive for which label).
        labels: The labels to featurise, in output row order.

    Returns:
        ``(n_labels, n_features)`` with unit rows (all-zero for a label without documents); sparse
        when ``features`` is.
    """
    index = {x: i for i, x in enumerate(labels)}
    rows, cols = [], []
    for d, doc in enumerate(docs):
        for x in doc.labels:
            if x in index:
                rows.append(index[x])
                cols.append(d)
    y = sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(len(labels), len(docs)))  # (n_labels, n_docs)
    x = normalize(features, norm="l2")  # (n_docs, n_features)
    pifa = y @ x  # (n_labels, n_features): sums; the l2 norm makes them means, normalised
    return normalize(pifa, norm="l2")
