"""Bi-encoder fine-tuning and cross-encoder re-ranking on the tiny random encoder (offline)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.unit.test_retriever import TRAIN
from xlgen.data import Document
from xlgen.encoders import EncoderConfig, LabelRetriever, LabelText, RetrieverConfig, SentenceEncoder
from xlgen.encoders.candidates import merge_sources, with_source
from xlgen.encoders.reranker import CrossEncoderReranker
from xlgen.training.retriever import (
    BiEncoderConfig,
    CrossEncoderConfig,
    cross_encoder_pairs,
    document_label_pairs,
    fine_tune_bi_encoder,
    label_training_text,
    train_cross_encoder,
)

DOCS = TRAIN[:60]


def gold_rank(retriever: LabelRetriever) -> float:
    """Mean rank of each gold label in the label_text ranking of the documents."""
    cands = retriever.score([d.text for d in DOCS], top=len(retriever.labels))
    col = cands.source_column("label_text")
    ranks = []
    for i, d in enumerate(DOCS):
        rows = slice(cands.offsets[i], cands.offsets[i + 1])
        by_label = dict(zip([retriever.labels[j] for j in cands.label_ids[rows]], cands.ranks[rows, col].tolist(), strict=True))
        ranks += [by_label[x] for x in d.labels]
    return float(np.mean(ranks))


def test_pairs_and_label_texts() -> None:
    a, b = document_label_pairs(DOCS[:3], {"grain": LabelText("grain", "cereal crops")})
    assert len(a) == sum(len(d.labels) for d in DOCS[:3])
    assert set(b) <= {"money market", "grain: cereal crops", "joy", "anger", "software bug"}
    assert len(document_label_pairs(DOCS, max_pairs=5)[0]) == 5
    assert label_training_text(LabelText("money-fx")) == "money fx"
    with pytest.raises(ValueError):
        BiEncoderConfig(output_dir="x", batch_size=1)


def test_bi_encoder_learns_the_label_texts(tiny_encoder_dir: Path, tmp_path: Path, cache_dir: Path) -> None:
    cfg = RetrieverConfig(sources=("label_text",))
    before = LabelRetriever.fit(DOCS, config=cfg, encoder=SentenceEncoder.load(str(tiny_encoder_dir)))
    out = fine_tune_bi_encoder(str(tiny_encoder_dir), DOCS, BiEncoderConfig(output_dir=str(tmp_path / "bi"), epochs=6,
                                                                          batch_size=5, lr=2e-3, max_seq_length=32))
    tuned = SentenceEncoder.load(EncoderConfig(name=str(out)))
    assert tuned.digest != before.encoder.digest and tuned.max_seq_length == 32
    after = LabelRetriever.fit(DOCS, config=cfg, encoder=tuned)
    assert gold_rank(after) < gold_rank(before) - 0.3


def test_cross_encoder_trains_and_reranks(tiny_encoder_dir: Path, tmp_path: Path, cache_dir: Path) -> None:
    enc = SentenceEncoder.load(str(tiny_encoder_dir))
    retriever = LabelRetriever.fit(DOCS, config=RetrieverConfig(candidates=5, k_neighbours=5, cross_fit_folds=2), encoder=enc)
    cfg = CrossEncoderConfig(output_dir=str(tmp_path / "ce"), epochs=4, batch_size=8, lr=1e-3, max_length=32,
                             negatives=2, candidates=5)
    first, second, labels = cross_encoder_pairs(retriever, DOCS, cfg)
    assert sum(labels) == sum(len(d.labels) for d in DOCS) and len(labels) > sum(labels)
    neg = [(t, x) for t, x, y in zip(first, second, labels, strict=True) if y == 0]
    gold_texts = {d.text: {label_training_text(LabelText(g)) for g in d.labels} for d in DOCS}
    assert all(x not in gold_texts[t] for t, x in neg)
    path = train_cross_encoder(str(tiny_encoder_dir), retriever, DOCS, cfg)
    reranker = CrossEncoderReranker(path, batch_size=16)
    texts = [d.text for d in DOCS]
    cands = retriever.score(texts)
    out = reranker.rerank(texts, cands, retriever.label_texts, top=3)
    assert out.sources == (*cands.sources, "cross_encoder")
    col = out.scores[:, -1]
    first_rows = [r for i in range(len(out)) for r in range(out.offsets[i], min(out.offsets[i] + 3, out.offsets[i + 1]))]
    assert np.all((col[first_rows] > 0) & (col[first_rows] < 1))
    rest = np.setdiff1d(np.arange(len(col)), first_rows)
    assert np.all(col[rest] == 0) and np.all(out.ranks[rest, -1] == out.top + 1)
    # trained on these documents: gold pairs score above the negatives on average
    gold = np.array([retriever.labels[out.label_ids[r]] in DOCS[out.doc_index[r]].labels for r in first_rows])
    assert col[first_rows][gold].mean() > col[first_rows][~gold].mean()


def test_with_source_ranks_per_document() -> None:
    import scipy.sparse as sp

    c = merge_sources(("a", "b", "c"), ("s",), [sp.csr_matrix(np.array([[0.9, 0.5, 0.1], [0.2, 0.0, 0.3]], dtype=np.float32))], 3)
    out = with_source(c, "new", np.array([0.1, 0.7, np.nan, 0.4, 0.6], dtype=np.float32))
    assert out.doc(0) == [("a", {"s": (pytest.approx(0.9), 1), "new": (pytest.approx(0.1), 2)}),
                          ("b", {"s": (pytest.approx(0.5), 2), "new": (pytest.approx(0.7), 1)}),
                          ("c", {"s": (pytest.approx(0.1), 3), "new": (0.0, 4)})]
    assert [x[1]["new"][1] for x in out.doc(1)] == [2, 1]
    with pytest.raises(ValueError):
        with_source(c, "new", np.zeros(2))


def test_answers_become_pairs_and_hard_negatives(tmp_path: Path) -> None:
    from xlgen.training.retriever import Answer, answer_examples, read_answers

    docs = [Document("a", "wheat corn", ("grain",)), Document("b", "oil crude", ("crude",))]
    answers = [Answer("corn grain wheat", "harvest", True), Answer("oil price", "harvest", False),
               Answer("crude oil", "harvest", False), Answer("bank rates", "unknown_label", False),
               Answer("wheat corn", "grain", True), Answer("stock shares", "grain", False)]
    ex = answer_examples(docs, answers, {"harvest": LabelText("harvest", "crops gathered")}, max_pairs=None)
    pairs = list(zip(ex["pairs"]["anchor"], ex["pairs"]["positive"], strict=True))
    # every train pair, every yes once (the yes already in the train pairs is not doubled)
    assert pairs == [("wheat corn", "grain"), ("oil crude", "crude"), ("corn grain wheat", "harvest: crops gathered")]
    hard = list(zip(*ex["hard_negatives"].values(), strict=True))
    # a no is a triplet (label text, a known positive, the rejected document); a label without a positive has none
    assert hard == [("harvest: crops gathered", "corn grain wheat", "oil price"),
                    ("harvest: crops gathered", "corn grain wheat", "crude oil"), ("grain", "wheat corn", "stock shares")]
    only = answer_examples(docs, answers, max_pairs=0)
    assert only["pairs"]["anchor"] == ["corn grain wheat", "wheat corn"]
    assert "hard_negatives" not in answer_examples(docs, [a for a in answers if a.answer])
    f = tmp_path / "answers.jsonl"
    f.write_text('{"text": "t", "label": "x", "answer": true}\n\n{"text": "u", "label": " y ", "answer": false, "id": "d1"}\n')
    assert read_answers(f) == [Answer("t", "x", True), Answer("u", "y", False)]
    for bad, field in (('{"text": "t", "label": "x", "answer": "yes"}', "answer"), ('{"text": "", "label": "x", "answer": true}', "text"),
                       ('{"text": "t", "answer": true}', "label"), ("[1]", "object"), ("{", "not valid JSON")):
        f.write_text('{"text": "t", "label": "x", "answer": true}\n' + bad + "\n")
        with pytest.raises(ValueError, match=f"answers.jsonl:2: .*{field}"):
            read_answers(f)


def test_no_answers_push_the_rejected_documents_below_the_label(tiny_encoder_dir: Path, tmp_path: Path, cache_dir: Path) -> None:
    """Fine-tuned on the same yes answers and replayed pairs, an encoder that also learns from the no answers
    separates the label's text from the rejected documents more than one that does not."""
    from xlgen.training.retriever import Answer

    yes = ["wheat corn grain", "corn grain trade", "grain wheat price", "wheat corn", "corn grain", "grain wheat trade"]
    no = ["oil crude price", "crude oil trade", "oil price", "crude price oil", "oil trade crude", "price crude"]
    answers = [Answer(t, "harvest", True) for t in yes] + [Answer(t, "harvest", False) for t in no]

    def margin(path: Path) -> float:
        enc = SentenceEncoder.load(EncoderConfig(name=str(path)))
        label, pos, neg = enc.encode(["harvest"]), enc.encode(yes), enc.encode(no)
        return float((pos @ label.T).mean() - (neg @ label.T).mean())

    cfg = dict(epochs=4, batch_size=8, lr=2e-3, max_seq_length=32, max_pairs=40)
    with_yes = fine_tune_bi_encoder(str(tiny_encoder_dir), DOCS, BiEncoderConfig(output_dir=str(tmp_path / "yes"), **cfg),
                                    answers=[a for a in answers if a.answer], progress=False)
    with_no = fine_tune_bi_encoder(str(tiny_encoder_dir), DOCS, BiEncoderConfig(output_dir=str(tmp_path / "no"), **cfg),
                                   answers=answers, progress=False)
    assert margin(with_no) > margin(with_yes) + 0.05, (margin(tiny_encoder_dir), margin(with_yes), margin(with_no))


def test_a_few_answers_alone_still_move_the_encoder(tiny_encoder_dir: Path, tmp_path: Path, cache_dir: Path) -> None:
    """One step (three yes answers, no replay): no warm-up from a learning rate of 0, so the weights change."""
    from xlgen.digests import encoder_digest
    from xlgen.training.retriever import Answer

    answers = [Answer("wheat corn grain", "harvest", True), Answer("corn grain", "harvest", True), Answer("oil", "crude", True)]
    out = fine_tune_bi_encoder(str(tiny_encoder_dir), [], BiEncoderConfig(output_dir=str(tmp_path / "few"), max_pairs=0),
                               answers=answers, progress=False)
    assert encoder_digest(out) != encoder_digest(tiny_encoder_dir)
