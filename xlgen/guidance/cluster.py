"""What the two kinds of cluster guidance (BCL and MCG) share: the label clustering, a cluster
threshold tuned on dev, and the cluster metrics."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from xlgen.data import Document
from xlgen.decoding import cut
from xlgen.guidance.base import Guidance, GuidedModel, Plan
from xlgen.guidance.clusters import LabelClusters
from xlgen.metrics import micro_f1, tune_threshold


def cluster_score_dicts(probs: np.ndarray) -> list[dict[str, float]]:
    """Rows of cluster probabilities ``(n_texts, n_clusters)`` -> ``{cluster id: probability}`` of the
    clusters with a non-zero score (the form the threshold tools take)."""
    return [{str(c): float(p) for c, p in enumerate(row) if p > 0} for row in probs]


class ClusterGuidance(Guidance):
    """Guidance over a label clustering.

    Args:
        clusters: The label clustering.
        features: Folder of the clustering's featuriser (places labels first seen later), if any.
        threshold: Probability a cluster needs to count as predicted (at least the best cluster
            always does); tuned on dev for cluster micro-F1.
    """

    reports = ("cluster_probs",)

    def __init__(self, clusters: LabelClusters, features: Path | None = None, threshold: float = 0.5):
        self.clusters, self.features, self.threshold = clusters, features, threshold

    @abstractmethod
    def cluster_probabilities(self, model: GuidedModel, texts: Sequence[str]) -> np.ndarray:
        """``(n_texts, n_clusters)`` cluster probabilities."""

    def check(self, model: GuidedModel) -> None:
        """Raises ValueError when the model's tokenizer lacks a token for every cluster."""
        if self.clusters.n_clusters > model.tokenizer.n_cluster_tokens:
            raise ValueError(f"{self.clusters.n_clusters} clusters but only {model.tokenizer.n_cluster_tokens} cluster tokens")

    def above(self, probs: np.ndarray, threshold: float | None = None) -> list[list[int]]:
        """Per row of ``probs`` ``(n_texts, n_clusters)``: the clusters scored at least ``threshold``
        (default: the tuned one), at least the best one; a row scoring no cluster gets none."""
        thr = self.threshold if threshold is None else threshold
        return [sorted(int(c) for c, _ in cut(s, thr, 1)) for s in cluster_score_dicts(probs)]

    def evaluate(self, model: GuidedModel, docs: Sequence[Document], tune: bool = False, oracle: bool = False) -> tuple[dict[str, float], Plan | None]:
        """``cluster_micro_f1`` of the predicted clusters against the gold labels' clusters, and
        ``cluster_threshold`` (tuned on ``docs`` when ``tune``)."""
        gold = [[str(c) for c in self.clusters.clusters_of(d.labels)] for d in docs]
        if oracle:
            return {}, self.plan(model, [d.text for d in docs], given=[[int(c) for c in g] for g in gold])
        texts = [d.text for d in docs]
        probs = self.cluster_probabilities(model, texts)  # (n_docs, n_clusters)
        thr = self.threshold
        if tune:
            thr, _ = tune_threshold(gold, cluster_score_dicts(probs), 1)
        predicted = self.above(probs, thr)
        metrics = {"cluster_micro_f1": micro_f1(gold, [[str(c) for c in p] for p in predicted]), "cluster_threshold": thr}
        return metrics, self.plan_from(model, texts, probs, thr)

    def plan_from(self, model: GuidedModel, texts: Sequence[str], probs: np.ndarray, threshold: float) -> Plan | None:
        """The plan to decode ``texts`` with, given their cluster probabilities (``None``: plan anew)."""
        return None

    def adopt(self, metrics: dict[str, float], prefix: str = "") -> None:
        if prefix + "cluster_threshold" in metrics:
            self.threshold = float(metrics[prefix + "cluster_threshold"])

    def save_clusters(self, directory: Path) -> dict[str, Any]:
        self.clusters.save(directory, self.features)
        return {"threshold": self.threshold}

    @staticmethod
    def load_clusters(directory: Path) -> tuple[LabelClusters, Path | None]:
        features = directory / "features"
        return LabelClusters.load(directory), features if features.is_dir() else None

    def describe(self) -> dict[str, Any]:
        return {"kind": self.name, "clusters": self.clusters.n_clusters, "cluster_threshold": self.threshold}
