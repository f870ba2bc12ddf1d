"""The label-cluster artifact: which cluster each label belongs to, and the centroids.

``clustering/`` builds it (label features -> K-means); a model directory of the ``bcl`` or ``mcg``
variant carries it in ``clusters/``; this module only reads, writes and queries it.

Cluster ids are numbered by decreasing number of training documents, so that cluster 0 is the
most frequent: cluster targets follow the same frequency order as label targets.

Files in the artifact folder:

* ``clusters.json``: labels with their cluster, the feature source and its parameters, the hash.
* ``centroids.npy``: ``(n_clusters, n_features)`` float32, unit rows, in the feature space.
* ``features/``: whatever the feature source needs to featurise new documents (written by
  ``xlgen.clustering.features``), so that a label first seen after clustering gets its nearest centroid.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

FORMAT_VERSION = 1


@dataclass
class LabelClusters:
    """Labels grouped into clusters.

    Attributes:
        assignment: Label -> cluster id.
        centroids: ``(n_clusters, n_features)`` unit-norm centroids in the feature space.
        source: Feature source (``tfidf`` or ``encoder``).
        params: How the clustering was built (seed, algorithm, feature options).
    """

    assignment: dict[str, int]
    centroids: np.ndarray
    source: str = "tfidf"
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.centroids = np.asarray(self.centroids, dtype=np.float32)
        if self.centroids.ndim != 2:
            raise ValueError("centroids must be a (n_clusters, n_features) matrix")
        bad = [x for x, c in self.assignment.items() if not 0 <= c < len(self.centroids)]
        if bad:
            raise ValueError(f"labels assigned to no existing cluster: {bad[:5]}")

    @property
    def n_clusters(self) -> int:
        return int(self.centroids.shape[0])

    def __contains__(self, label: object) -> bool:
        return label in self.assignment

    def __len__(self) -> int:
        return len(self.assignment)

    def clusters_of(self, labels: Iterable[str]) -> list[int]:
        """Sorted distinct clusters of ``labels``; labels without a cluster are skipped."""
        return sorted({self.assignment[x] for x in labels if x in self.assignment})

    def multi_hot(self, labels: Iterable[str]) -> np.ndarray:
        """``(n_clusters,)`` float32 with 1 at the clusters of ``labels``."""
        out = np.zeros(self.n_clusters, dtype=np.float32)
        out[self.clusters_of(labels)] = 1.0
        return out

    def members(self, cluster: int) -> list[str]:
        return [x for x, c in self.assignment.items() if c == cluster]

    def nearest(self, features: np.ndarray) -> np.ndarray:
        """Nearest centroid (cosine) of each row of ``features`` ``(n, n_features)``: ``(n,)``."""
        feats = np.asarray(features, dtype=np.float32)
        norms = np.linalg.norm(feats, axis=1, keepdims=True)
        return np.argmax((feats / np.maximum(norms, 1e-12)) @ self.centroids.T, axis=1)  # (n,)

    def add(self, labels: Sequence[str], features: np.ndarray) -> dict[str, int]:
        """Assigns new ``labels`` to the nearest centroid of their ``features`` ``(n, n_features)``
        (centroids stay fixed); returns the new assignments. Known labels keep their cluster."""
        new = [i for i, x in enumerate(labels) if x not in self.assignment]
        if not new:
            return {}
        nearest = self.nearest(np.asarray(features)[new])
        added = {labels[i]: int(c) for i, c in zip(new, nearest, strict=True)}
        self.assignment.update(added)
        return added

    def digest(self) -> str:
        """Hash of the assignment, the centroids and the source: equal iff the clustering is."""
        h = hashlib.sha256(json.dumps({"assignment": self.assignment, "source": self.source}, sort_keys=True).encode())
        h.update(np.ascontiguousarray(self.centroids).tobytes())
        return h.hexdigest()[:16]

    def save(self, path: str | Path, features_dir: str | Path | None = None) -> None:
        """Writes the artifact folder; ``features_dir`` (the featuriser's files) is copied in."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        meta = {
            "format_version": FORMAT_VERSION,
            "n_clusters": self.n_clusters,
            "source": self.source,
            "params": self.params,
            "hash": self.digest(),
            "assignment": self.assignment,
        }
        (path / "clusters.json").write_text(json.dumps(meta, indent=1, ensure_ascii=False))
        np.save(path / "centroids.npy", self.centroids)
        if features_dir is not None and Path(features_dir).resolve() != (path / "features").resolve():
            shutil.rmtree(path / "features", ignore_errors=True)
            shutil.copytree(features_dir, path / "features")

    @classmethod
    def load(cls, path: str | Path) -> LabelClusters:
        """Reads an artifact folder written by :meth:`save`.

        Raises:
            FileNotFoundError: If ``path`` holds no clustering.
            ValueError: If the stored hash does not match the content.
        """
        path = Path(path)
        if not (path / "clusters.json").is_file():
            raise FileNotFoundError(f"{path}: no label clustering here (clusters.json missing)")
        meta = json.loads((path / "clusters.json").read_text())
        out = cls(
            assignment={str(k): int(v) for k, v in meta["assignment"].items()},
            centroids=np.load(path / "centroids.npy"),
            source=meta["source"],
            params=meta.get("params", {}),
        )
        if meta.get("hash") and meta["hash"] != out.digest():
            raise ValueError(f"{path}: clusters.json does not match centroids.npy (hash differs)")
        return out
