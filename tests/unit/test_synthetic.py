"""The synthetic XMC corpora of the scale benchmark: seeded, every label present, Zipf tail, topical words."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from benchmarks.synthetic import SyntheticConfig, SyntheticCorpus


def test_corpus_is_seeded_covers_every_label_and_has_a_long_tail(tmp_path: Path) -> None:
    cfg = SyntheticConfig(n_labels=2000, n_train=3000, n_dev=50, n_test=50, n_pool=100, vocab_size=5000, seed=3)
    sizes = SyntheticCorpus(cfg).write(tmp_path / "a")
    SyntheticCorpus(cfg).write(tmp_path / "b")
    assert sizes == {"train": 3000, "dev": 50, "test": 50, "pool": 100}
    for split in sizes:
        assert (tmp_path / "a" / f"{split}.jsonl").read_bytes() == (tmp_path / "b" / f"{split}.jsonl").read_bytes()
    train = [json.loads(x) for x in (tmp_path / "a" / "train.jsonl").read_text().splitlines()]
    counts = Counter(x for d in train for x in d["labels"])
    corpus = SyntheticCorpus(cfg)
    assert set(counts) == set(corpus.labels) and len(corpus.labels) == len(set(corpus.labels)) == 2000
    values = sorted(counts.values(), reverse=True)
    assert sum(v <= 5 for v in values) / len(values) > 0.5  # most labels in the tail
    assert values[0] > 20 * values[len(values) // 2]  # a Zipf head
    assert 2.0 < sum(len(d["labels"]) for d in train) / len(train) < 4.5
    # a document's words come mostly from its labels' topics: their names' words appear in it
    name_words = [set(x.split()) for x in train[0]["labels"]]
    assert any(w & set(train[0]["text"].split()) for w in name_words)
    pool = json.loads((tmp_path / "a" / "pool.jsonl").read_text().splitlines()[0])
    assert set(pool) == {"id", "text"}


def test_impossible_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="cannot all occur"):
        SyntheticConfig(n_labels=10_000, n_train=100)
    with pytest.raises(ValueError):
        SyntheticConfig(signal=1.5)
