"""Label features -> seeded K-means -> a :class:`xlgen.guidance.clusters.LabelClusters` artifact."""

from __future__ import annotations

import logging
import math
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.preprocessing import normalize

from xlgen.clustering.features import SOURCES, Featurizer, label_features, load_featurizer, make_featurizer
from xlgen.config import opt
from xlgen.data import Document
from xlgen.guidance.clusters import LabelClusters
from xlgen.labels import LabelSpace
from xlgen.tokenizer import DEFAULT_CLUSTER_TOKENS

log = logging.getLogger("xlgen.clustering")

ALGORITHMS = ("auto", "kmeans", "minibatch")


def default_n_clusters(n_labels: int) -> int:
    """About the square root of the label count, within ``[2, 256]`` (the reserved cluster tokens)."""
    return int(min(DEFAULT_CLUSTER_TOKENS, max(2, round(math.sqrt(n_labels)))))


@dataclass(frozen=True)
class ClusterConfig:
    """How to cluster the labels.

    Attributes:
        n_clusters: Number of clusters; ``None`` picks :func:`default_n_clusters`.
        features: ``tfidf`` (default; needs no model), ``sentence`` (a pretrained sentence encoder's
            embeddings) or ``encoder`` (mean-pooled encoder states of an xlgen model directory).
        features_model: Model directory whose encoder gives the ``encoder`` features; for
            ``sentence``, the sentence encoder (default: the packaged all-MiniLM-L6-v2).
        max_features: TF-IDF vocabulary size.
        algorithm: ``kmeans``, ``minibatch`` (MiniBatchKMeans), or ``auto`` (minibatch above 5,000 labels).
        seed: K-means seed.
    """

    n_clusters: int | None = opt(None, "number of label clusters (default: about the square root of the label count, 2 to 256)")
    features: str = opt("tfidf", "label features: 'tfidf' of the texts, 'sentence' embeddings of a pretrained sentence encoder, or 'encoder' states of --features-model", choices=SOURCES)
    features_model: str | None = opt(None, "'encoder': the xlgen model directory whose mean-pooled encoder states are the features; 'sentence': the sentence encoder (default: the packaged all-MiniLM-L6-v2)")
    max_features: int = opt(20000, "TF-IDF vocabulary size")
    algorithm: str = opt("auto", "K-means flavour: kmeans, minibatch, or auto (minibatch above 5,000 labels)", choices=ALGORITHMS)
    seed: int = opt(0, "K-means seed")

    def __post_init__(self) -> None:
        if self.n_clusters is not None and not 2 <= self.n_clusters <= DEFAULT_CLUSTER_TOKENS:
            raise ValueError(f"--n-clusters must lie in [2, {DEFAULT_CLUSTER_TOKENS}]")
        if self.features == "encoder" and not self.features_model:
            raise ValueError("--features encoder needs --features-model DIR")


def _kmeans(x: np.ndarray | sp.csr_matrix, k: int, algorithm: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Cluster ids ``(n,)`` and unit centroids ``(k, n_features)`` of the unit rows of ``x``."""
    if algorithm == "auto":
        algorithm = "minibatch" if x.shape[0] > 5000 else "kmeans"
    if algorithm == "minibatch":
        km: KMeans | MiniBatchKMeans = MiniBatchKMeans(n_clusters=k, random_state=seed, batch_size=2048, n_init=3)
    else:
        km = KMeans(n_clusters=k, random_state=seed, n_init=3)
    ids = km.fit_predict(x)  # (n,)
    centroids = normalize(np.asarray(km.cluster_centers_, dtype=np.float32), norm="l2")  # (k, n_features)
    return ids, centroids


def build_clusters(docs: Sequence[Document], cfg: ClusterConfig | None = None, work_dir: str | Path | None = None) -> tuple[LabelClusters, Path]:
    """Clusters the labels of ``docs``.

    Args:
        docs: Labelled training documents.
        cfg: Settings (defaults: TF-IDF features, about sqrt(n_labels) clusters).
        work_dir: Where the featuriser's files go (a temporary folder when ``None``).

    Returns:
        The clustering (cluster 0 the one with the most training documents) and the featuriser's
        folder, to pass to :meth:`LabelClusters.save`.

    Raises:
        ValueError: If there are fewer labels than clusters.
    """
    cfg = cfg or ClusterConfig()
    space = LabelSpace.from_documents(docs)
    labels = list(space.labels)
    k = cfg.n_clusters or default_n_clusters(len(labels))
    if len(labels) < k:
        raise ValueError(f"{len(labels)} labels cannot form {k} clusters; lower --n-clusters")
    featurizer = make_featurizer(cfg.features, [d.text for d in docs], cfg.features_model, cfg.max_features)
    x = featurizer.transform([d.text for d in docs])  # (n_docs, n_features)
    feats = label_features(x, docs, labels)  # (n_labels, n_features)
    ids, centroids = _kmeans(feats, k, cfg.algorithm, cfg.seed)
    # renumber by documents per cluster, most first, so that cluster targets follow frequency order
    docs_per_cluster = np.zeros(k)
    np.add.at(docs_per_cluster, ids, np.asarray(space.counts, dtype=float))
    rank = np.argsort(-docs_per_cluster, kind="stable")
    new_id = np.empty(k, dtype=int)
    new_id[rank] = np.arange(k)
    params = {"algorithm": cfg.algorithm, "seed": cfg.seed, "n_docs": len(docs), **featurizer.params()}
    clusters = LabelClusters({x: int(new_id[c]) for x, c in zip(labels, ids, strict=True)}, centroids[rank], cfg.features, params)
    out_dir = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="xlgen-features-"))
    featurizer.save(out_dir)
    sizes = np.bincount(list(clusters.assignment.values()), minlength=k)
    log.info("clustered %d labels into %d clusters (sizes %d..%d)", len(labels), k, sizes.min(), sizes.max())
    return clusters, out_dir


def assign_new_labels(clusters: LabelClusters, docs: Sequence[Document], featurizer: Featurizer | None = None,
                      features_dir: str | Path | None = None) -> dict[str, int]:
    """Gives every label of ``docs`` that ``clusters`` lacks the centroid nearest to its PIFA feature.

    Args:
        clusters: Updated in place.
        docs: Documents carrying the new labels (their texts give the features).
        featurizer: The clustering's featuriser; else loaded from ``features_dir``.
        features_dir: The artifact's ``features/`` folder.

    Returns:
        The new assignments.
    """
    new = sorted({x for d in docs for x in d.labels if x not in clusters})
    if not new:
        return {}
    if featurizer is None:
        if features_dir is None:
            raise ValueError("new labels need the clustering's featuriser to be placed")
        featurizer = load_featurizer(Path(features_dir))
    with_new = [d for d in docs if any(x not in clusters for x in d.labels)]
    x = featurizer.transform([d.text for d in with_new])  # (n_docs, n_features)
    feats = label_features(x, with_new, new)  # (n_new, n_features)
    dense = feats.toarray() if sp.issparse(feats) else np.asarray(feats)  # type: ignore[union-attr]
    added = clusters.add(new, dense)
    log.info("placed %d new labels at their nearest cluster centroid", len(added))
    return added
