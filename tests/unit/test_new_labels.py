"""Cold-start questions for labels added by name: the question orders, recall@k, and the simulation
end to end on a tiny encoder and a small synthetic dataset."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from xlgen.active.new_labels import candidate_questions, greedy_order, order_questions, random_order, recall_at_k, rocchio
from xlgen.data import Document, write_jsonl

TOPICS = {"oil": "oil crude price", "wheat": "wheat grain corn", "bank": "bank rates money dollar",
          "code": "python java code bug error", "love": "love happy great thanks"}


def test_greedy_spreads_questions_and_keeps_each_labels_ranking() -> None:
    questions = {"a": [5, 3, 1], "b": [7], "c": [2, 4]}
    order = greedy_order(questions, seed=0)
    assert sorted(order) == sorted((x, d) for x, ds in questions.items() for d in ds)  # every question once
    for label, docs in questions.items():
        assert [d for x, d in order if x == label] == docs  # best-ranked first within a label
    first = {x for x, _ in order[:3]}
    assert len(first) >= 2  # labels are drawn, not exhausted one after the other
    assert sorted(random_order(questions, 1)) == sorted(order) and order_questions(questions, "greedy", 0) == order
    with pytest.raises(ValueError):
        order_questions(questions, "nope")


def test_candidates_and_recall_at_k() -> None:
    scores = np.array([[0.9, 0.1], [0.2, 0.8], [0.5, 0.7]])  # (n_pool, n_new)
    assert candidate_questions(scores, ["a", "b"], 2) == {"a": [0, 2], "b": [1, 2]}
    ranking = np.array([[0.9, 0.5, 0.1], [0.1, 0.2, 0.9]])  # (n_docs, n_labels)
    labels = ["a", "b", "c"]
    assert recall_at_k(ranking, labels, [{"a", "c"}, {"a"}], {"a", "c"}, k=1) == pytest.approx((0.5 + 0.0) / 2)
    assert np.isnan(recall_at_k(ranking, labels, [{"b"}, set()], {"a"}, k=2))


def _dataset(root: Path, seed: int = 0) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    words = sorted({w for t in TOPICS.values() for w in t.split()}) + ["the", "tag", "label", "sad", "angry"]
    for split, n in (("train", 200), ("test", 60)):
        docs = []
        for i in range(n):
            topic = sorted(TOPICS)[i % len(TOPICS)]
            text = " ".join(list(rng.choice(TOPICS[topic].split(), 3)) + list(rng.choice(words, 2)))
            docs.append(Document(f"{split}{i}", text, (topic,)))
        write_jsonl(docs, root / f"{split}.jsonl")
    return root


def test_simulation_finds_the_new_labels_and_reports_forgetting(tmp_path: Path, tiny_encoder_dir: Path, cache_dir: Path) -> None:
    from xlgen.training.new_labels import NewLabelConfig, simulate_new_labels

    data = _dataset(tmp_path / "data")
    cfg = NewLabelConfig(data=str(data), output_dir=str(tmp_path / "out"), hidden=2, min_train=10, top_n=30, step=10,
                         seeds=(0, 1), encoder=str(tiny_encoder_dir), k=2)
    result = simulate_new_labels(cfg, progress=False)
    assert {(r["seed"], r["order"]) for r in result["runs"]} == {(0, "greedy"), (0, "random"), (1, "greedy"), (1, "random")}
    for run in result["runs"]:
        curve = run["curve"]
        assert [p["answers"] for p in curve] == [0, 10, 20, 30, 40, 50, 60]  # 2 labels x 30 questions, every 10
        assert curve[0]["positives"] == 0 and curve[-1]["positives"] > 0
        assert curve[-1]["new_recall"] >= curve[0]["new_recall"]  # the positives move the label towards its documents
        assert 0.0 <= run["old_recall_before"] <= 1.0 and all(0.0 <= p["old_recall"] <= 1.0 for p in curve)
        assert len(run["hidden"]) == 2
    saved = json.loads((tmp_path / "out" / "new_labels.json").read_text())
    assert saved["runs"] == result["runs"]
    table = (tmp_path / "out" / "new_labels.md").read_text()
    assert "| greedy | 60 |" in table and (tmp_path / "out" / "new_labels.png").stat().st_size > 1000
    with pytest.raises(ValueError):
        NewLabelConfig(data=str(data), orders=("sideways",))
    with pytest.raises(ValueError, match="negative-weight"):
        NewLabelConfig(data=str(data), negative_weight=-1.0)
    # the no-answers subtracted (Rocchio): the same questions and positives, other vectors, so other recalls
    pushed = simulate_new_labels(NewLabelConfig(**{**cfg.__dict__, "output_dir": str(tmp_path / "neg"), "negative_weight": 1.0}),
                                 progress=False)
    for plain, neg in zip(result["runs"], pushed["runs"], strict=True):
        assert [p["positives"] for p in plain["curve"]] == [p["positives"] for p in neg["curve"]]
        assert plain["curve"][0] == neg["curve"][0]  # no answer yet: nothing to subtract
    assert any(a["new_recall"] != b["new_recall"] for r, q in zip(result["runs"], pushed["runs"], strict=True)
               for a, b in zip(r["curve"], q["curve"], strict=True))


def test_rocchio_subtracts_the_mean_of_the_negatives() -> None:
    pos = np.array([[3.0, 0.0], [1.0, 1.0]])  # name + 2 positives; name only
    n_pos = np.array([3.0, 1.0])
    neg = np.array([[0.0, 4.0], [0.0, 0.0]])  # 2 negatives; none
    n_neg = np.array([2.0, 0.0])
    assert np.allclose(rocchio(pos, n_pos, neg, n_neg, 0.0), [[1.0, 0.0], [1.0, 1.0]])
    assert np.allclose(rocchio(pos, n_pos, neg, n_neg, 0.5), [[1.0, -1.0], [1.0, 1.0]])  # a label without negatives keeps its mean


def test_fine_tuning_the_bi_encoder_on_the_answers_is_measured_with_and_without_replay(tmp_path: Path, tiny_encoder_dir: Path,
                                                                                         cache_dir: Path) -> None:
    from xlgen.training.new_labels import NewLabelConfig, fine_tuned_summary, simulate_new_labels

    data = _dataset(tmp_path / "data")
    points = {}
    for replay in (0, 40):
        cfg = NewLabelConfig(data=str(data), output_dir=str(tmp_path / f"out{replay}"), hidden=2, min_train=10, top_n=30, step=20,
                             seeds=(0,), orders=("greedy",), encoder=str(tiny_encoder_dir), k=2, fine_tune_at=(20, 60), replay=replay,
                             fine_tune_epochs=3)  # a few steps: the first is warm-up at a learning rate of 0
        result = simulate_new_labels(cfg, progress=False)
        tuned = result["runs"][0]["fine_tuned"]
        assert [p["answers"] for p in tuned] == [20, 60]
        curve = {p["answers"]: p for p in result["runs"][0]["curve"]}
        for p in tuned:
            assert p["positives"] == curve[p["answers"]]["positives"]  # the same answers, another vector space
            assert p["pairs"] == p["positives"] + replay and p["replay"] == replay
            assert 0.0 <= p["new_recall"] <= 1.0 and 0.0 <= p["old_recall"] <= 1.0
            assert p["drift"] > 1e-7  # the pool's vectors moved (exactly 0.0 with the encoder unchanged): it learned
        points[replay] = tuned
        assert [r["answers"] for r in fine_tuned_summary(result)] == [20, 60]
        assert "bi-encoder fine-tuned (replay" in (tmp_path / f"out{replay}" / "new_labels.md").read_text()
    # the no-answers as hard negatives: the same answers, and as many triplets as no-answers with a positive found before
    cfg = NewLabelConfig(data=str(data), output_dir=str(tmp_path / "neg"), hidden=2, min_train=10, top_n=30, step=20, seeds=(0,),
                         orders=("greedy",), encoder=str(tiny_encoder_dir), k=2, fine_tune_at=(60,), replay=40, fine_tune_epochs=3,
                         fine_tune_negatives=True)
    result = simulate_new_labels(cfg, progress=False)
    (tuned,) = result["runs"][0]["fine_tuned"]
    assert tuned["positives"] == points[40][1]["positives"] and tuned["hard_negatives"] == 60 - tuned["positives"] > 0
    assert tuned["drift"] != points[40][1]["drift"]  # the negatives changed what it learned
    assert "no-answers as hard negatives" in (tmp_path / "neg" / "new_labels.md").read_text()
    with pytest.raises(ValueError):
        NewLabelConfig(data=str(data), fine_tune_at=(0,))
