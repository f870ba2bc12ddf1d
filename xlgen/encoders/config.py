"""Configuration of the label retriever."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from xlgen.encoders.packaged import DEFAULT_ENCODER

SOURCE_NAMES = ("knn", "label_text", "linear")
"""Label sources, in the order their columns appear in :class:`~xlgen.encoders.candidates.Candidates`."""
LINEAR_MODELS = ("auto", "ovr", "tree")
LINEAR_SOLVERS = ("lbfgs", "liblinear")
ENCODER_QUANTIZATIONS = ("float32", "int8")
"""The sentence encoder's CTranslate2 compute types (here, torch-free, for the command lines too)."""
STATIC_ENCODERS = ("static", "static-all-MiniLM-L6-v2")
"""Encoder names that select the model2vec static encoder distilled from the packaged one
(:mod:`xlgen.encoders.static`; here, torch-free, for the command lines too)."""


@dataclass(frozen=True)
class RetrieverConfig:
    """What the label retriever scores with and how many candidates it keeps."""

    sources: tuple[str, ...] = SOURCE_NAMES
    """Label sources to fit and score with: any of ``knn``, ``label_text``, ``linear``."""
    encoder: str = DEFAULT_ENCODER
    """Sentence encoder name (packaged default, a sentence-transformers directory, or a hub name)."""
    encoder_quantization: str = "float32"
    """The encoder's CTranslate2 weights on CPU: ``float32`` (the same vectors as torch) or ``int8`` (about
    1.8x faster, cosine 0.995 to float32 on goemotions); a loaded retriever embeds queries the same way."""
    candidates: int = 20
    """K: each source's top-K labels per document join the candidates; ranks beyond K read K+1."""
    k_neighbours: int = 20
    """kNN source: train documents voting for a document's labels."""
    knn_power: float = 3.0
    """kNN source: a neighbour's vote weight is max(cosine, 0) ** knn_power (higher: the closest count more;
    k 20 and power 3 were best on average over goemotions and reuters21578 dev)."""
    linear_model: str = "auto"
    """Linear source: ``ovr`` (one-vs-rest logistic regression), ``tree`` (omikuji label-tree forest, for
    thousands of labels), or ``auto`` (``ovr`` up to ``linear_ovr_limit`` labels)."""
    linear_ovr_limit: int = 200
    """Linear source: the most labels ``auto`` fits one-vs-rest."""
    linear_c: float = 8.0
    """Linear source: inverse L2 regularisation strength of each logistic regression (liblinear's C)."""
    linear_solver: str = "lbfgs"
    """Linear source, ``ovr``: ``lbfgs`` fits the labels' logistic regressions together (L-BFGS over one
    weight matrix, the embedding block as a dense product: 40 s on goemotions' 43k documents where
    ``liblinear``, one label at a time over 384 dense columns stored sparse, took about 16 minutes)."""
    linear_max_iter: int = 100
    """Linear source, ``lbfgs``: iterations of each fit; the stop acts as extra regularisation
    (goemotions dev micro-F1 0.564 at 100 iterations, 0.558 at 300)."""
    embedding_weight: float = 1.0
    """Linear source: scale of the (unit) embedding block next to the (unit) TF-IDF block."""
    tfidf_max_features: int = 300_000
    """Linear source: TF-IDF vocabulary size (words and word bigrams seen in >= 2 train documents)."""
    cross_fit_folds: int = 5
    """Linear source: folds of the leak-free train scores (each fold scored by a model fitted on the others)."""
    exact_limit: int = 100_000
    """Exact nearest-neighbour search up to this many vectors (train documents, labels), HNSW above."""
    hnsw_m: int = 32
    """HNSW graph degree."""
    hnsw_ef_construction: int = 200
    """HNSW candidate list while building."""
    hnsw_ef_search: int = 128
    """HNSW candidate list while searching."""
    jobs: int = 1
    """Processes / threads for fitting the linear source."""
    seed: int = 0
    """Seed of the cross-fitting folds."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "sources", tuple(self.sources))
        if not self.sources:
            raise ValueError("the retriever needs at least one source")
        unknown = [s for s in self.sources if s not in SOURCE_NAMES]
        if unknown:
            raise ValueError(f"unknown retriever source(s) {unknown}; choose from {', '.join(SOURCE_NAMES)}")
        if len(set(self.sources)) != len(self.sources):
            raise ValueError(f"repeated retriever source in {self.sources}")
        if self.linear_model not in LINEAR_MODELS:
            raise ValueError(f"linear_model {self.linear_model!r} is not one of {', '.join(LINEAR_MODELS)}")
        if self.encoder_quantization not in ENCODER_QUANTIZATIONS:
            raise ValueError(f"encoder_quantization {self.encoder_quantization!r} is not one of {', '.join(ENCODER_QUANTIZATIONS)}")
        if self.linear_solver not in LINEAR_SOLVERS:
            raise ValueError(f"linear_solver {self.linear_solver!r} is not one of {', '.join(LINEAR_SOLVERS)}")
        for name in ("candidates", "k_neighbours", "linear_ovr_limit", "linear_max_iter", "tfidf_max_features", "hnsw_m",
                     "hnsw_ef_construction", "hnsw_ef_search", "jobs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.cross_fit_folds < 2:
            raise ValueError("cross_fit_folds must be >= 2")
        if self.exact_limit < 0:
            raise ValueError("exact_limit must be >= 0")
        if self.knn_power <= 0 or self.linear_c <= 0 or self.embedding_weight < 0:
            raise ValueError("knn_power and linear_c must be > 0, embedding_weight >= 0")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        out = asdict(self)
        out["sources"] = list(self.sources)
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RetrieverConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        names = {f.name for f in fields(cls)}
        extra = set(d) - names
        if extra:
            raise ValueError(f"unknown retriever config field(s) {sorted(extra)}")
        values: dict[str, Any] = {k: tuple(v) if k == "sources" else v for k, v in d.items()}
        return cls(**values)
