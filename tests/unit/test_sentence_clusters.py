"""Label clusters over a pretrained sentence encoder's embeddings (PIFA), saved and reloaded, and a
label first seen later placed by the reloaded featuriser."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from xlgen.clustering import ClusterConfig, assign_new_labels, build_clusters
from xlgen.clustering.features import SentenceFeaturizer, load_featurizer
from xlgen.data import Document
from xlgen.guidance.clusters import LabelClusters

DOCS = [
    Document("1", "oil price crude market", ("crude",)), Document("2", "crude oil price", ("crude",)),
    Document("3", "wheat corn grain trade", ("grain",)), Document("4", "grain wheat corn", ("grain",)),
    Document("5", "stock shares market bank", ("earn",)), Document("6", "bank shares stock", ("earn",)),
    Document("7", "happy love great thanks", ("joy",)), Document("8", "love happy thanks great", ("joy",)),
]


def test_sentence_features_cluster_and_place_new_labels(tiny_encoder_dir: Path, cache_dir: Path, tmp_path: Path) -> None:
    cfg = ClusterConfig(n_clusters=2, features="sentence", features_model=str(tiny_encoder_dir), seed=0)
    clusters, features = build_clusters(DOCS, cfg, work_dir=tmp_path / "features")
    assert set(clusters.assignment) == {"crude", "grain", "earn", "joy"} and clusters.source == "sentence"
    assert clusters.centroids.shape == (2, 32)  # the tiny encoder's 32 dimensions
    clusters.save(tmp_path / "artifact", features)
    again = LabelClusters.load(tmp_path / "artifact")
    assert again.digest() == clusters.digest()
    featurizer = load_featurizer(tmp_path / "artifact" / "features")
    assert isinstance(featurizer, SentenceFeaturizer)
    texts = [d.text for d in DOCS]
    np.testing.assert_allclose(featurizer.transform(texts), SentenceFeaturizer(str(tiny_encoder_dir)).transform(texts), atol=1e-6)
    # a label first annotated later joins the cluster of the label whose documents it shares
    new = [Document("9", "crude oil market price", ("petroleum",)), Document("10", "oil crude price", ("petroleum",))]
    added = assign_new_labels(again, DOCS + new, features_dir=tmp_path / "artifact" / "features")
    assert added == {"petroleum": again.assignment["crude"]}
    assert (cache_dir / "embeddings").is_dir()  # the embeddings went through the on-disk cache
