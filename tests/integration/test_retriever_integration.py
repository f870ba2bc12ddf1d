"""The packaged encoder and the label retriever on real data (../shared/data/reuters21578)."""

from __future__ import annotations

import socket
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import shared_dataset
from xlgen.data import read_documents
from xlgen.encoders import EmbeddingCache, EncoderConfig, LabelRetriever, RetrieverConfig, SentenceEncoder
from xlgen.encoders.packaged import WEIGHTS_SHA256


@pytest.fixture(scope="module")
def minilm(tmp_path_factory: pytest.TempPathFactory) -> SentenceEncoder:
    return SentenceEncoder.load(conversions_dir=tmp_path_factory.mktemp("conversions"))


def test_packaged_encoder_loads_offline_and_both_backends_agree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                minilm: SentenceEncoder) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("network access while loading the packaged encoder")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    ref = SentenceEncoder.load(EncoderConfig(backend="torch"))
    assert ref.digest == minilm.digest == WEIGHTS_SHA256
    assert ref.dim == 384 and ref.max_seq_length == 256 and minilm.backend == "ctranslate2"
    texts = [d.text for d in read_documents(shared_dataset("reuters21578") / "test.jsonl.gz")[:40]]
    a, b = minilm.encode(texts), ref.encode(texts)
    assert a.shape == (40, 384)
    assert np.min(np.sum(a * b, axis=1)) > 0.9999
    # semantics, not noise: a text is closer to its own topic's label name than to an unrelated one
    v = ref.encode(["coffee prices rose in Brazil", "coffee", "aluminium"])
    assert v[0] @ v[1] > v[0] @ v[2] + 0.1


def test_int8_cache_is_the_same_whatever_order_it_was_filled_in(tmp_path: Path) -> None:
    """The active-learning learner's encoder (CTranslate2 int8): a pool embedded in pieces, across
    rounds, holds the same bits as one embedded at once, so refits on the same documents agree exactly."""
    encoder = SentenceEncoder.load(EncoderConfig(quantization="int8"), conversions_dir=tmp_path / "conversions")
    texts = [d.text for d in read_documents(shared_dataset("goemotions") / "dev.jsonl.gz")[:400]]
    whole, pieces = EmbeddingCache(tmp_path / "a"), EmbeddingCache(tmp_path / "b")
    a = encoder.encode(texts, cache=whole)
    for start, stop in ((0, 150), (300, 301), (150, 300), (301, 400)):
        encoder.encode(texts[start:stop], cache=pieces)
    assert np.array_equal(a, encoder.encode(texts, cache=pieces))


def test_label_added_by_name_is_retrieved_for_its_documents(minilm: SentenceEncoder, tmp_path: Path) -> None:
    """Hide "coffee" from train, add it back by name only: its test documents rank it in their top 10."""
    data = shared_dataset("reuters21578")
    train = [replace(d, labels=tuple(x for x in d.labels if x != "coffee")) for d in read_documents(data / "train.jsonl.gz")[:300]]
    train = [d for d in train if d.labels]
    coffee = [d for d in read_documents(data / "test.jsonl.gz") if "coffee" in d.labels]
    cache = EmbeddingCache(tmp_path)
    retriever = LabelRetriever.fit(train, config=RetrieverConfig(candidates=10), encoder=minilm, cache=cache)
    assert "coffee" not in retriever.labels
    retriever.add_label("coffee")
    cands = retriever.score([d.text for d in coffee], top=10)
    recall = np.mean(["coffee" in labels for labels in cands.label_sets()])
    assert len(coffee) >= 20 and recall >= 0.8
    # only the label-text source can know it: the others never saw the label
    j = retriever.labels.index("coffee")
    rows = cands.label_ids == j
    assert np.all(cands.scores[rows, cands.source_column("knn")] == 0)
    assert np.all(cands.scores[rows, cands.source_column("label_text")] > 0)
