"""Label clustering: PIFA features, seeded K-means, the artifact's round trip, new labels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import shared_dataset
from xlgen.clustering import ClusterConfig, assign_new_labels, build_clusters, default_n_clusters
from xlgen.clustering.features import TfidfFeaturizer, label_features
from xlgen.data import Document, read_documents
from xlgen.guidance.clusters import LabelClusters
from xlgen.guidance.head import ClusterHead, masked_mean


@pytest.fixture(scope="module")
def reuters() -> list[Document]:
    return read_documents(shared_dataset("reuters21578") / "train.jsonl.gz")[:1500]


@pytest.fixture(scope="module")
def built(reuters: list[Document], tmp_path_factory: pytest.TempPathFactory) -> tuple[LabelClusters, Path]:
    return build_clusters(reuters, ClusterConfig(n_clusters=6, max_features=3000), tmp_path_factory.mktemp("feats"))


def test_default_cluster_count() -> None:
    assert default_n_clusters(3) == 2
    assert default_n_clusters(90) == 9
    assert default_n_clusters(1748) == 42
    assert default_n_clusters(10**6) == 256


def test_pifa_is_the_normalised_mean_of_positive_documents() -> None:
    docs = [Document("a", "x", ["p"]), Document("b", "y", ["p", "q"]), Document("c", "z", ["q"])]
    x = np.array([[3.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    feats = label_features(x, docs, ["p", "q", "r"])
    expected_p = np.array([1.0, 1.0]) / np.sqrt(2)  # mean of (1, 0) and (0, 1), normalised
    np.testing.assert_allclose(feats[0], expected_p, atol=1e-6)
    assert feats[1][1] > feats[1][0]  # q: (0, 1) + (0.707, 0.707)
    np.testing.assert_allclose(feats[2], 0.0)  # no documents: zero row


def test_clusters_cover_every_label_and_are_seeded(reuters: list[Document], built: tuple[LabelClusters, Path], tmp_path: Path) -> None:
    clusters, _ = built
    labels = {x for d in reuters for x in d.labels}
    assert set(clusters.assignment) == labels
    assert clusters.n_clusters == 6 and set(clusters.assignment.values()) == set(range(6))
    np.testing.assert_allclose(np.linalg.norm(clusters.centroids, axis=1), 1.0, atol=1e-5)
    # cluster 0 holds the most training documents (frequency order of cluster targets)
    docs_per = np.zeros(6)
    for d in reuters:
        for x in d.labels:
            docs_per[clusters.assignment[x]] += 1
    assert docs_per[0] == docs_per.max()
    again, _ = build_clusters(reuters, ClusterConfig(n_clusters=6, max_features=3000), tmp_path / "f")
    assert again.digest() == clusters.digest()


def test_artifact_round_trip(built: tuple[LabelClusters, Path], reuters: list[Document], tmp_path: Path) -> None:
    clusters, feats = built
    clusters.save(tmp_path / "c", feats)
    loaded = LabelClusters.load(tmp_path / "c")
    assert loaded.assignment == clusters.assignment
    np.testing.assert_array_equal(loaded.centroids, clusters.centroids)
    assert loaded.source == "tfidf" and loaded.params == clusters.params and loaded.digest() == clusters.digest()
    # the saved featuriser gives the same features as the fitted one
    texts = [d.text for d in reuters[:20]]
    a = TfidfFeaturizer.load(feats).transform(texts).toarray()
    b = TfidfFeaturizer.load(tmp_path / "c" / "features").transform(texts).toarray()
    np.testing.assert_allclose(a, b)
    # a tampered artifact is refused
    meta = json.loads((tmp_path / "c" / "clusters.json").read_text())
    first = next(iter(meta["assignment"]))
    meta["assignment"][first] = (meta["assignment"][first] + 1) % 6
    (tmp_path / "c" / "clusters.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="hash"):
        LabelClusters.load(tmp_path / "c")
    with pytest.raises(FileNotFoundError):
        LabelClusters.load(tmp_path / "nothing")


def test_unseen_label_goes_to_its_nearest_centroid(built: tuple[LabelClusters, Path], reuters: list[Document]) -> None:
    clusters, feats = built
    clusters = LabelClusters(dict(clusters.assignment), clusters.centroids.copy(), clusters.source, clusters.params)
    # a new label on documents of one existing label lands in that label's cluster
    for known in ("earn", "acq", "crude"):
        docs = [Document(d.id, d.text, [f"new-{known}"]) for d in reuters if tuple(d.labels) == (known,)][:30]
        added = assign_new_labels(clusters, docs, features_dir=feats)
        assert added == {f"new-{known}": clusters.assignment[known]}
    before = dict(clusters.assignment)
    assert assign_new_labels(clusters, reuters[:50], features_dir=feats) == {}  # known labels keep their cluster
    assert clusters.assignment == before


def test_cluster_head_ignores_padding() -> None:
    torch.manual_seed(0)
    head = ClusterHead(8, 3).eval()
    states = torch.randn(2, 5, 8)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    out = head(states, mask)
    garbage = states.clone()
    garbage[0, 3:] = 1e3  # whatever sits at padded positions
    torch.testing.assert_close(head(garbage, mask), out)
    torch.testing.assert_close(masked_mean(states, mask)[0], states[0, :3].mean(0))
    assert out.shape == (2, 3)


def test_encoder_features_and_minibatch(tiny_model_dir: Path, tiny_data: Path, tmp_path: Path) -> None:
    """Mean-pooled encoder states of a model directory as label features; MiniBatchKMeans; the
    saved featuriser points back at the model and places new labels."""
    docs = read_documents(tiny_data / "train.jsonl")
    cfg = ClusterConfig(n_clusters=3, features="encoder", features_model=str(tiny_model_dir), algorithm="minibatch")
    clusters, feats = build_clusters(docs, cfg, tmp_path / "f")
    assert clusters.source == "encoder" and clusters.centroids.shape[0] == 3
    assert clusters.centroids.shape[1] == json.loads((tiny_model_dir / "config.json").read_text())["d_model"]
    assert set(clusters.assignment) == {x for d in docs for x in d.labels}
    clusters.save(tmp_path / "c", feats)
    loaded = LabelClusters.load(tmp_path / "c")
    new = [Document("n", d.text, ["brand-new"]) for d in docs[:5]]
    assert set(assign_new_labels(loaded, new, features_dir=tmp_path / "c" / "features")) == {"brand-new"}
    with pytest.raises(ValueError, match="features-model"):
        ClusterConfig(features="encoder")
