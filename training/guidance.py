"""Cluster guidance in training: the clustering a run uses, and the loss of each variant.

* ``base``: token cross-entropy of the label target.
* ``bcl``: the same plus ``lambda * BCE`` of the multi-cluster head against the document's clusters.
* ``mcg``: every document is two examples in the same run, ``<clusters> text -> cluster tokens``
  and ``<labels> text <cluster tokens> -> labels`` (gold clusters appended: teacher forcing).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from clustering import ClusterConfig, assign_new_labels, build_clusters
from training.config import TrainConfig
from xlgen.cluster_head import ClusterHead
from xlgen.clusters import LabelClusters
from xlgen.data import Document

log = logging.getLogger("xlgen.train")


def prepare_clusters(cfg: TrainConfig, train: Sequence[Document], work_dir: Path) -> tuple[LabelClusters, Path | None]:
    """The run's label clustering and its featuriser folder.

    In order: ``--clusters``; else the clustering of ``--base-model`` when it is an xlgen model
    directory that has one; else K-means built here on the train split (saved in ``work_dir``, so a
    resumed run reads the same one). Train labels the clustering lacks go to their nearest centroid.
    """
    if cfg.clusters:
        source = Path(cfg.clusters)
    elif cfg.base_model and (Path(cfg.base_model) / "clusters" / "clusters.json").is_file():
        source = Path(cfg.base_model) / "clusters"
    elif (work_dir / "clusters.json").is_file():
        source = work_dir
    else:
        cc = ClusterConfig(n_clusters=cfg.n_clusters, features=cfg.cluster_features,
                           features_model=cfg.base_model if cfg.cluster_features == "encoder" else None, seed=cfg.seed)
        built, built_features = build_clusters(train, cc, work_dir=work_dir / ".features")
        built.save(work_dir, built_features)
        source = work_dir
    clusters = LabelClusters.load(source)
    features_dir = source / "features"
    features = features_dir if features_dir.is_dir() else None
    added = assign_new_labels(clusters, train, features_dir=features) if features else {}
    missing = {x for d in train for x in d.labels} - set(clusters.assignment)
    if missing:
        raise ValueError(f"{len(missing)} train labels have no cluster and the clustering has no featuriser to place them")
    if added:
        log.info("%d labels new to the clustering placed at their nearest centroid", len(added))
    return clusters, features


class Objective(nn.Module):
    """The training loss of one batch, around the model (and the cluster head for ``bcl``).

    Holding both as submodules lets accelerate prepare (and DDP synchronise) them as one module.

    Args:
        model: The T5 (or peft-wrapped T5).
        head: The ``bcl`` cluster head, else ``None``.
        bcl_lambda: Weight of the cluster BCE.
        label_smoothing: Label smoothing of the generation loss.
    """

    def __init__(self, model: nn.Module, head: ClusterHead | None = None, bcl_lambda: float = 1.0, label_smoothing: float = 0.0):
        super().__init__()
        self.model, self.head = model, head
        self.bcl_lambda, self.label_smoothing = bcl_lambda, label_smoothing

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor,
                clusters: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """``(loss, parts)``; ``labels`` ``(batch, tgt_len)`` with -100 at padding, ``clusters``
        ``(batch, n_clusters)`` multi-hot."""
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, labels=labels)
        logits = out.logits  # (batch, tgt_len, vocab)
        xent = F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=-100, label_smoothing=self.label_smoothing)
        if self.head is None or clusters is None:
            return xent, {"xent": xent.item()}
        cluster_logits = self.head(out.encoder_last_hidden_state, attention_mask)  # (batch, n_clusters)
        bce = F.binary_cross_entropy_with_logits(cluster_logits.float(), clusters.float())
        return xent + self.bcl_lambda * bce, {"xent": xent.item(), "bce": bce.item()}
