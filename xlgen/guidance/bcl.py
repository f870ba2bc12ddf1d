"""XLGen-BCL: an auxiliary multi-cluster head trained beside generation.

The head (:class:`xlgen.guidance.head.ClusterHead`, linear on the masked mean of the encoder's last
states) sits next to the stock T5; training adds ``lambda * BCE(head(x), clusters(y))`` to the
generation loss, which shapes the encoder; the input is not changed. At inference the head's sigmoid
gives each cluster a probability (for the ``cluster`` acquisition function).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from xlgen.data import Document
from xlgen.guidance.base import GuidedModel, Plan, label_inputs
from xlgen.guidance.cluster import ClusterGuidance
from xlgen.guidance.clusters import LabelClusters
from xlgen.guidance.head import ClusterHead

HEAD_FILE = "cluster_head.safetensors"


class BCLGuidance(ClusterGuidance):
    """Binary cluster loss beside generation.

    Args:
        clusters: The label clustering.
        head: The multi-cluster head.
        bcl_lambda: Weight of the cluster BCE next to the generation loss.
        features: The clustering's featuriser folder, if any.
        threshold: Cluster threshold (tuned on dev).
    """

    name = "bcl"

    def __init__(self, clusters: LabelClusters, head: ClusterHead, bcl_lambda: float = 1.0, features: Path | None = None,
                 threshold: float = 0.5):
        super().__init__(clusters, features, threshold)
        if head.n_clusters != clusters.n_clusters:
            raise ValueError(f"the head predicts {head.n_clusters} clusters, the clustering has {clusters.n_clusters}")
        self.head: ClusterHead = head
        self.bcl_lambda = bcl_lambda

    def plan(self, model: GuidedModel, texts: Sequence[str], given: Sequence[Any] | None = None, report: bool = False) -> Plan:
        """No suffix; the cluster probabilities when ``report``."""
        return Plan(cluster_probs=self.cluster_probabilities(model, texts) if report else None)

    @torch.inference_mode()
    def cluster_probabilities(self, model: GuidedModel, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """The head's sigmoid over each text's encoder states: ``(n_texts, n_clusters)``."""
        self.head.eval()
        rows = [torch.sigmoid(self.head(states, mask)).float().cpu()  # (batch, n_clusters)
                for states, mask in model.encoded_batches(label_inputs(model, texts), batch_size)]
        if not rows:
            return np.zeros((0, self.clusters.n_clusters), dtype=np.float32)
        return torch.cat(rows).numpy()  # (n_texts, n_clusters)

    def batch_extras(self, docs: Sequence[Document]) -> dict[str, torch.Tensor]:
        """The documents' multi-hot clusters, ``(batch, n_clusters)``."""
        return {"clusters": torch.as_tensor(np.stack([self.clusters.multi_hot(d.labels) for d in docs]))}

    def loss(self, encoder_states: torch.Tensor, mask: torch.Tensor, extras: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """``lambda * BCE(head(states), clusters)``."""
        logits = self.head(encoder_states, mask)  # (batch, n_clusters)
        bce = F.binary_cross_entropy_with_logits(logits.float(), extras["clusters"].to(logits.device).float())
        return self.bcl_lambda * bce, {"bce": bce.item()}

    def save(self, directory: Path) -> dict[str, Any]:
        from safetensors.torch import save_file

        meta = self.save_clusters(directory)
        save_file({k: v.detach().cpu().contiguous() for k, v in self.head.state_dict().items()}, str(directory / HEAD_FILE))
        return {**meta, "bcl_lambda": self.bcl_lambda, "head": {"d_model": self.head.d_model, "n_clusters": self.head.n_clusters}}

    @classmethod
    def load(cls, directory: Path, meta: dict[str, Any]) -> BCLGuidance:
        from safetensors.torch import load_file

        clusters, features = cls.load_clusters(directory)
        head = ClusterHead(meta["head"]["d_model"], meta["head"]["n_clusters"])
        # model directories of format 1 kept the head beside the weights (``head_file``)
        head.load_state_dict(load_file(str(meta.get("head_file") or directory / HEAD_FILE)))
        head.eval()
        return cls(clusters, head, float(meta.get("bcl_lambda", 1.0)), features, float(meta["threshold"]))
