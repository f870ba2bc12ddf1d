"""XLGen-MCG: generate the document's cluster tokens first, then its labels with them appended.

Every document is two examples of one training run: ``<clusters> text -> <c3> <sep> <c7> <eos>``
and ``<labels> text <c3> <c7> -> labels`` (gold clusters appended: teacher forcing). At inference
the model first generates the clusters (its own decoding settings, beam 5; a cluster is kept when
its beam mass passes a threshold tuned on dev for cluster micro-F1), appends them, then generates
the labels.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from xlgen.data import Document
from xlgen.decoding import DecodingConfig, label_scores
from xlgen.guidance.base import Example, GuidedModel, Plan, label_inputs
from xlgen.guidance.cluster import ClusterGuidance
from xlgen.guidance.clusters import LabelClusters
from xlgen.tokenizer import TASK_CLUSTERS, cluster_token, encode_input

_CLUSTER_TOKEN = re.compile(r"^<c(\d+)>$")

CLUSTER_GENERATION_CONFIG = "cluster_generation_config.json"
"""The first stage's decoding settings at the model directory's root, beside ``generation_config.json``."""


def default_cluster_decoding(n_clusters: int) -> DecodingConfig:
    """Beam 5, long enough for every cluster token with a separator each (at most 32 tokens)."""
    return DecodingConfig(strategy="beam", num_beams=5, max_new_tokens=min(2 * n_clusters, 32))


class MCGGuidance(ClusterGuidance):
    """Multi-cluster generation first, labels second.

    Args:
        clusters: The label clustering.
        decoding: How the first stage generates cluster tokens.
        features: The clustering's featuriser folder, if any.
        threshold: Cluster threshold (tuned on dev).
    """

    name = "mcg"

    def __init__(self, clusters: LabelClusters, decoding: DecodingConfig | None = None, features: Path | None = None,
                 threshold: float = 0.5):
        super().__init__(clusters, features, threshold)
        self.decoding = decoding or default_cluster_decoding(clusters.n_clusters)

    def suffix(self, model: GuidedModel, clusters: Sequence[int]) -> list[int]:
        """Cluster token ids appended to a label input (and, joined by the separator, the cluster target)."""
        return [model.tokenizer.token_id(cluster_token(c)) for c in sorted(set(clusters))]

    def cluster_target(self, model: GuidedModel, clusters: Sequence[int]) -> list[int]:
        """First-stage target: the cluster tokens in id (= frequency) order, joined by the label
        separator, then eos, so that decoding splits them like labels."""
        ids: list[int] = []
        for t in self.suffix(model, clusters):
            ids += ([model.tokenizer.sep_id] if ids else []) + [t]
        return ids + [model.tokenizer.eos_id]

    def plan(self, model: GuidedModel, texts: Sequence[str], given: Sequence[Any] | None = None, report: bool = False) -> Plan:
        """Appends ``given`` clusters (the oracle), else the first stage's clusters above the threshold."""
        if given is not None:
            if len(given) != len(texts):
                raise ValueError("one cluster list per text")
            return Plan(suffixes=[self.suffix(model, c) for c in given])
        probs = self.cluster_probabilities(model, texts)  # (n_texts, n_clusters)
        plan = self.plan_from(model, texts, probs, self.threshold)
        plan.cluster_probs = probs if report else None
        return plan

    def plan_from(self, model: GuidedModel, texts: Sequence[str], probs: np.ndarray, threshold: float) -> Plan:
        return Plan(suffixes=[self.suffix(model, c) for c in self.above(probs, threshold)])

    def cluster_probabilities(self, model: GuidedModel, texts: Sequence[str]) -> np.ndarray:
        """The probability mass of the first-stage beams that contain each cluster token (0 for a
        cluster no beam generated): ``(n_texts, n_clusters)``."""
        probs = np.zeros((len(texts), self.clusters.n_clusters), dtype=np.float32)
        n = model.settings.max_input_length
        inputs = [encode_input(model.tokenizer, t, n, TASK_CLUSTERS) for t in texts]
        for i, cands in enumerate(model.candidates(inputs, self.decoding)):
            for token, v in label_scores(cands, self.decoding.strategy).items():
                m = _CLUSTER_TOKEN.match(token.strip())
                if m and int(m.group(1)) < self.clusters.n_clusters:
                    probs[i, int(m.group(1))] = v
        return probs

    def training_examples(self, model: GuidedModel, docs: Sequence[Document]) -> list[Example]:
        """Per document a label example with its gold clusters appended, then a second block of
        cluster-task examples (example ``len(docs) + i`` is document ``i``'s cluster task)."""
        texts = [d.text for d in docs]
        gold = [self.clusters.clusters_of(d.labels) for d in docs]
        labels = label_inputs(model, texts, [self.suffix(model, g) for g in gold])
        n = model.settings.max_input_length
        first = [encode_input(model.tokenizer, t, n, TASK_CLUSTERS) for t in texts]
        return [Example(ids, i) for i, ids in enumerate(labels)] + [Example(ids, i, "clusters") for i, ids in enumerate(first)]

    def target(self, model: GuidedModel, example: Example, doc: Document) -> list[int] | None:
        if example.task == "clusters":
            return self.cluster_target(model, self.clusters.clusters_of(doc.labels))
        return None

    def generation_configs(self) -> dict[str, DecodingConfig]:
        """The first stage's settings, as ``cluster_generation_config.json``."""
        return {CLUSTER_GENERATION_CONFIG: self.decoding}

    def save(self, directory: Path) -> dict[str, Any]:
        return {**self.save_clusters(directory), "decoding": asdict(self.decoding)}

    @classmethod
    def load(cls, directory: Path, meta: dict[str, Any]) -> MCGGuidance:
        clusters, features = cls.load_clusters(directory)
        return cls(clusters, DecodingConfig(**meta["decoding"]), features, float(meta["threshold"]))
