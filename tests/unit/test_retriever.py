"""Label retriever: sources, candidates, leak-free train scores, labels added by name, save/load (offline,
tiny random encoder, synthetic topics)."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from xlgen.data import DataError, Document
from xlgen.encoders import (
    EmbeddingCache,
    EncoderConfig,
    EncoderUnavailableError,
    LabelRetriever,
    LabelText,
    RetrieverConfig,
    SentenceEncoder,
    read_label_file,
    write_label_file,
)
from xlgen.encoders.candidates import Candidates, merge_sources
from xlgen.encoders.index import ExactIndex, HnswIndex, load_index, recall_at_k
from xlgen.encoders.label_texts import label_name_text

TOPICS = {
    "money_market": ["market", "stock", "shares", "bank", "rates", "money", "dollar"],
    "grain": ["wheat", "corn", "grain", "trade", "crude", "oil", "price"],
    "joy": ["happy", "love", "great", "thanks"],
    "anger": ["angry", "hate", "awful", "sorry", "sad"],
    "software-bug": ["python", "java", "code", "bug", "error"],
}


def make_docs(n: int, seed: int) -> list[Document]:
    rng = random.Random(seed)
    names = list(TOPICS)
    docs = []
    for i in range(n):
        labels = [rng.choice(names)]
        if rng.random() < 0.2:
            labels.append(rng.choice([x for x in names if x != labels[0]]))
        words = [rng.choice(TOPICS[x]) for x in labels for _ in range(rng.randint(3, 6))]
        rng.shuffle(words)
        docs.append(Document(f"d{seed}-{i}", " ".join(words), tuple(labels)))
    return docs


TRAIN = make_docs(150, 0)
TEST = make_docs(40, 1)
# one train document with a label no other document has: its leak-free scores must not know it
TRAIN.append(Document("unique", "python java code bug error bug", ("software-bug", "solo_label")))


@pytest.fixture(scope="module")
def encoder(tiny_encoder_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> SentenceEncoder:
    return SentenceEncoder.load(EncoderConfig(name=str(tiny_encoder_dir)),
                                conversions_dir=tmp_path_factory.mktemp("conversions"))


@pytest.fixture(scope="module")
def retriever(encoder: SentenceEncoder) -> LabelRetriever:
    return LabelRetriever.fit(TRAIN, config=RetrieverConfig(candidates=3, k_neighbours=5, cross_fit_folds=3), encoder=encoder)


def test_config_validates() -> None:
    for bad in ({"sources": ()}, {"sources": ("knn", "bm25")}, {"sources": ("knn", "knn")}, {"candidates": 0},
                {"linear_model": "svm"}, {"cross_fit_folds": 1}, {"knn_power": 0}, {"exact_limit": -1},
                {"encoder_quantization": "int4"}):
        with pytest.raises(ValueError):
            RetrieverConfig(**bad)
    cfg = RetrieverConfig(sources=["knn"])  # type: ignore[arg-type]
    assert cfg.sources == ("knn",)
    assert RetrieverConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match="unknown retriever config"):
        RetrieverConfig.from_dict({"bogus": 1})


def test_candidates_hold_each_sources_top_k_with_scores_and_ranks(retriever: LabelRetriever) -> None:
    cands = retriever.score([d.text for d in TEST])
    assert len(cands) == len(TEST) and cands.sources == ("knn", "label_text", "linear") and cands.top == 3
    assert retriever.labels[:5] == tuple(sorted(TOPICS, key=lambda x: (-sum(x in d.labels for d in TRAIN), x)))
    for i in range(len(cands)):
        rows = slice(cands.offsets[i], cands.offsets[i + 1])
        ids, scores, ranks = cands.label_ids[rows], cands.scores[rows], cands.ranks[rows]
        assert len(set(ids.tolist())) == len(ids)
        assert np.all(ranks.min(axis=1) <= 3)  # each candidate is in some source's top 3
        assert np.all((ranks >= 1) & (ranks <= 4))
        for j in range(len(cands.sources)):
            in_top = ranks[:, j] <= 3
            # ranks follow scores within a source
            order = np.argsort(ranks[in_top, j])
            assert np.all(np.diff(scores[in_top, j][order]) <= 1e-7)
            # a source's top 3 is all there (labels it scores > 0, up to 3)
            assert in_top.sum() <= 3
        assert np.all(np.diff(ranks.min(axis=1)) >= 0)  # rows by best rank
    # label_text scores every label: its cosine is known even outside its top K
    col = cands.source_column("label_text")
    assert np.all(cands.scores[:, col] != 0)
    assert set(cands.doc(0)[0][1]) == set(cands.sources)


def test_each_source_alone_ranks_the_topic_first(encoder: SentenceEncoder) -> None:
    gold = [set(d.labels) for d in TEST]
    for source in ("knn", "linear"):
        r = LabelRetriever.fit(TRAIN, config=RetrieverConfig(sources=(source,), candidates=3, k_neighbours=5), encoder=encoder)
        cands = r.score([d.text for d in TEST])
        assert cands.sources == (source,)
        hits = [next(iter(s)) in g for s, g in zip(cands.label_sets(), gold, strict=True) if s]
        assert np.mean(hits) > 0.6, source


def test_knn_formula(encoder: SentenceEncoder) -> None:
    r = LabelRetriever.fit(TRAIN, config=RetrieverConfig(sources=("knn",), k_neighbours=4, knn_power=2.0), encoder=encoder)
    q = encoder.encode([TEST[0].text])
    tv = encoder.encode([d.text for d in TRAIN])
    sims = (tv @ q[0])
    nn = np.argsort(-sims, kind="stable")[:4]
    w = np.maximum(sims[nn], 0) ** 2
    expected = {}
    for j, wj in zip(nn, w, strict=True):
        for x in TRAIN[j].labels:
            expected[x] = expected.get(x, 0.0) + wj / w.sum()
    got = r.score([TEST[0].text], top=10).source_scores("knn")[0]
    assert set(got) == set(expected)
    for x, v in expected.items():
        assert got[x] == pytest.approx(v, rel=1e-4)


def test_train_scores_are_leak_free(retriever: LabelRetriever) -> None:
    unique = len(TRAIN) - 1
    plain = retriever.score([TRAIN[unique].text], top=10)
    leak_free = retriever.score_train(TRAIN, top=10)
    solo = retriever.labels.index("solo_label")
    # scored as a new document, its own copy in the index votes for the label and the LR learnt it
    plain_row = dict(zip(plain.label_ids.tolist(), plain.scores.tolist(), strict=True))
    assert plain_row[solo][plain.source_column("knn")] > 0
    rows = slice(leak_free.offsets[unique], leak_free.offsets[unique + 1])
    ids = leak_free.label_ids[rows].tolist()
    if solo in ids:  # only label_text may know it (by its name, which it shares with no train label)
        at = ids.index(solo)
        assert leak_free.scores[rows][at, leak_free.source_column("knn")] == 0
        assert leak_free.scores[rows][at, leak_free.source_column("linear")] < 1e-6
    assert len(leak_free) == len(TRAIN)
    with pytest.raises(ValueError, match="exactly the documents"):
        retriever.score_train(TRAIN[:-1])


def test_knn_train_scores_exclude_only_the_document_itself(encoder: SentenceEncoder) -> None:
    r = LabelRetriever.fit(TRAIN, config=RetrieverConfig(sources=("knn",), k_neighbours=3), encoder=encoder)
    train_c = r.score_train(TRAIN, top=10).source_scores("knn", within_top=False)
    vecs = encoder.encode([d.text for d in TRAIN])
    for i in (0, 7, len(TRAIN) - 1):
        sims = vecs @ vecs[i]
        sims[i] = -np.inf
        nn = np.argsort(-sims, kind="stable")[:3]
        assert set(train_c[i]) == {x for j in nn for x in TRAIN[j].labels}


def test_label_added_by_name_is_retrieved_at_once(retriever: LabelRetriever, encoder: SentenceEncoder) -> None:
    r = LabelRetriever.fit(TRAIN, config=RetrieverConfig(candidates=3, k_neighbours=5), encoder=encoder)
    before = r.labels
    r.add_label("thanks_love")  # no train document has it
    assert r.labels == (*before, "thanks_love") and r.counts["thanks_love"] == 0
    cands = r.score(["thanks love"], top=3)
    scores = cands.source_scores("label_text")[0]
    assert max(scores, key=scores.__getitem__) == "thanks_love"  # same words as its name: cosine 1
    assert scores["thanks_love"] == pytest.approx(1.0, abs=1e-5)
    # describing a known label replaces its vector
    r.add_label("grain", description="python java code")
    assert r.label_texts[r.labels.index("grain")].description == "python java code"
    want = encoder.encode(["grain", "python java code"]).mean(axis=0)
    want /= np.linalg.norm(want)
    after = r.score(["python java code"], top=10).source_scores("label_text")[0]
    assert after["grain"] == pytest.approx(float(want @ encoder.encode(["python java code"])[0]), abs=1e-5)


def test_label_file_texts_and_labels_without_documents(encoder: SentenceEncoder, tmp_path: Path) -> None:
    path = tmp_path / "labels.jsonl"
    write_label_file([LabelText("joy", "happy love", ("great thanks",)), LabelText("crypto", None, ("dollar money",))], path)
    r = LabelRetriever.fit(TRAIN, path, config=RetrieverConfig(sources=("label_text",), candidates=2), encoder=encoder)
    assert r.labels[-1] == "crypto" and r.counts["crypto"] == 0
    want = encoder.encode(["joy", "happy love", "great thanks"]).mean(axis=0)
    want /= np.linalg.norm(want)
    assert np.allclose(r.label_vectors[r.labels.index("joy")], want, atol=1e-5)


def test_label_file_errors_name_the_line(tmp_path: Path) -> None:
    f = tmp_path / "l.jsonl"
    for body, msg in (('{"label": "a"}\nnot json\n', ":2: not valid JSON"), ('{"name": "a"}\n', ":1: each line needs"),
                      ('{"label": "a", "examples": "x"}\n', "'examples' must be a list"),
                      ('{"label": "a"}\n{"label": "a"}\n', "appears twice")):
        f.write_text(body)
        with pytest.raises(DataError, match=msg):
            read_label_file(f)
    f.write_text('{"label": "a_b", "description": "d", "examples": ["e"]}\n\n{"label": "c"}\n')
    got = read_label_file(f)
    assert got["a_b"].texts() == ["a b", "d", "e"] and got["c"].texts() == ["c"]
    assert label_name_text("mergers-acquisitions__x") == "mergers acquisitions x"


@pytest.mark.parametrize("linear_model", ["ovr", "tree"])
def test_save_load_round_trip(encoder: SentenceEncoder, tmp_path: Path, linear_model: str) -> None:
    cfg = RetrieverConfig(candidates=4, k_neighbours=5, linear_model=linear_model)
    r = LabelRetriever.fit(TRAIN, config=cfg, encoder=encoder)
    r.add_label("thanks_love", description="gratitude", examples=("thanks great",))
    r.save(tmp_path / "retriever")
    meta = json.loads((tmp_path / "retriever" / "retriever.json").read_text())
    # an encoder from a local directory travels with the retriever
    assert meta["encoder"] == {"name": encoder.name, "digest": encoder.digest, "numerics": "float32", "bundled": "encoder"}
    assert len(list((tmp_path / "retriever").rglob("model.safetensors"))) == 1
    back = LabelRetriever.load(tmp_path / "retriever", encoder=encoder)
    assert back.config == r.config and back.labels == r.labels and back.counts == r.counts
    assert back.label_texts == r.label_texts
    texts = [d.text for d in TEST]
    a, b = r.score(texts), back.score(texts)
    for field in ("offsets", "label_ids", "ranks"):
        assert np.array_equal(getattr(a, field), getattr(b, field)), field
    assert np.allclose(a.scores, b.scores, atol=1e-6)
    with pytest.raises(RuntimeError, match="fitted in this process"):
        back.score_train(TRAIN)


def test_int8_encoder_is_kept_by_the_saved_retriever(tiny_encoder_dir: Path, cache_dir: Path, tmp_path: Path) -> None:
    """A retriever fitted with the int8 encoder records it, and a loaded one embeds queries with int8 too
    (its scores match the fitted one's, not those of a float32 encoder of the same weights)."""
    cfg = RetrieverConfig(sources=("knn", "label_text"), encoder=str(tiny_encoder_dir), encoder_quantization="int8",
                          candidates=4, k_neighbours=5)
    r = LabelRetriever.fit(TRAIN, config=cfg)
    assert r.encoder.numerics == "int8"
    r.save(tmp_path / "retriever")
    assert json.loads((tmp_path / "retriever" / "retriever.json").read_text())["encoder"]["numerics"] == "int8"
    back = LabelRetriever.load(tmp_path / "retriever")
    assert back.encoder.numerics == "int8" and back.config.encoder_quantization == "int8"
    texts = [d.text for d in TEST]
    q = np.stack([back.embed(texts), r.embed(texts)])
    f32 = SentenceEncoder.load(EncoderConfig(name=str(tiny_encoder_dir))).encode(texts)
    assert np.allclose(q[0], q[1], atol=1e-6) and not np.allclose(q[0], f32, atol=1e-6)
    # an int8 encoder handed in is recorded as such, whatever the config said
    given = LabelRetriever.fit(TRAIN, config=RetrieverConfig(sources=("label_text",)), encoder=back.encoder)
    assert given.config.encoder_quantization == "int8"


def test_a_local_encoder_travels_inside_the_saved_retriever(tiny_encoder_dir: Path, cache_dir: Path, tmp_path: Path) -> None:
    """A retriever over an encoder directory carries a copy of it: it loads and scores the same once that directory
    is gone, the copy is checked against the recorded digest, and re-saving in place or elsewhere keeps it."""
    import shutil

    from xlgen.digests import encoder_digest
    from xlgen.encoders.packaged import DEFAULT_ENCODER

    source = tmp_path / "fine-tuned"
    shutil.copytree(tiny_encoder_dir, source)
    cfg = RetrieverConfig(sources=("knn", "label_text"), encoder=str(source), candidates=4, k_neighbours=5)
    r = LabelRetriever.fit(TRAIN, config=cfg)
    r.save(tmp_path / "r")
    shutil.rmtree(source)
    back = LabelRetriever.load(tmp_path / "r")
    assert back.encoder.digest == r.encoder.digest and Path(back.encoder.name) == tmp_path / "r" / "encoder"
    texts = [d.text for d in TEST]
    a, b = r.score(texts), back.score(texts)
    assert np.array_equal(a.label_ids, b.label_ids) and np.allclose(a.scores, b.scores, atol=1e-6)
    back.save(tmp_path / "r")  # in place: the copy is not copied onto itself
    back.save(tmp_path / "moved")
    assert encoder_digest(tmp_path / "moved" / "encoder") == r.encoder.digest
    assert LabelRetriever.load(tmp_path / "moved").score(texts).label_ids.tolist() == a.label_ids.tolist()
    weights = next((tmp_path / "moved" / "encoder").rglob("model.safetensors"))
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(EncoderUnavailableError, match="was built with encoder"):
        LabelRetriever.load(tmp_path / "moved")
    assert back.local_encoder_dir() == tmp_path / "r" / "encoder"
    packaged = type("E", (), {"name": DEFAULT_ENCODER})()
    assert LabelRetriever(cfg, packaged, r.label_texts, r.counts, r.label_vectors, r.sources,  # type: ignore[arg-type]
                          r.fingerprint).local_encoder_dir() is None  # the installed encoder is referenced, not copied


def test_load_refuses_another_encoder(encoder: SentenceEncoder, tmp_path: Path, tiny_encoder_dir: Path) -> None:
    from tests.unit.conftest import build_tiny_sentence_model

    r = LabelRetriever.fit(TRAIN, config=RetrieverConfig(sources=("label_text",)), encoder=encoder)
    r.save(tmp_path / "r")
    other = SentenceEncoder.load(str(build_tiny_sentence_model(tmp_path / "other", seed=1)), conversions_dir=tmp_path / "c")
    with pytest.raises(EncoderUnavailableError, match="was built with encoder"):
        LabelRetriever.load(tmp_path / "r", encoder=other)


def test_queries_use_the_cache(encoder: SentenceEncoder, tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path)
    r = LabelRetriever.fit(TRAIN, config=RetrieverConfig(sources=("knn",)), encoder=encoder, cache=cache)
    n = cache.count(encoder.cache_key)
    assert n >= len({d.text for d in TRAIN})
    r.score(["a brand new text"])
    assert cache.count(encoder.cache_key) == n + 1


def test_hnsw_index_recall_and_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(2000, 16)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    queries = vecs[:100] + 0.05 * rng.normal(size=(100, 16)).astype(np.float32)
    exact, hnsw = ExactIndex(vecs), HnswIndex(vecs, m=16, ef_construction=100, ef_search=64)
    es, ei = exact.search(queries, 10)
    hs, hi = hnsw.search(queries, 10)
    assert np.allclose(es[:, 0], np.max(queries @ vecs.T, axis=1), atol=1e-5)
    assert recall_at_k(ei, hi) > 0.9
    hnsw.save(tmp_path / "h")
    back = load_index(tmp_path / "h", vecs)
    assert np.array_equal(back.search(queries, 10)[1], hi)


def test_knn_over_hnsw_matches_exact(encoder: SentenceEncoder) -> None:
    texts = [d.text for d in TEST]
    exact = LabelRetriever.fit(TRAIN, config=RetrieverConfig(sources=("knn",), k_neighbours=5), encoder=encoder)
    graph = LabelRetriever.fit(TRAIN, config=RetrieverConfig(sources=("knn",), k_neighbours=5, exact_limit=0), encoder=encoder)
    assert type(graph.sources["knn"].index).__name__ == "HnswIndex"  # type: ignore[attr-defined]
    a, b = exact.score(texts).label_sets(), graph.score(texts).label_sets()
    assert np.mean([x[:1] == y[:1] for x, y in zip(a, b, strict=True)]) > 0.9


def test_merge_sources_by_hand() -> None:
    labels = ("a", "b", "c", "d")
    s1 = sp.csr_matrix(np.array([[0.9, 0.5, 0.0, 0.1]], dtype=np.float32))
    s2 = sp.csr_matrix(np.array([[0.0, 0.2, 0.8]], dtype=np.float32))  # fitted before label "d" existed
    c = merge_sources(labels, ("s1", "s2"), [s1, s2], top=1)
    # union of top-1s: a (s1) and c (s2); b is nobody's top 1
    assert c.label_sets() == [["a", "c"]]
    assert c.doc(0) == [("a", {"s1": (pytest.approx(0.9), 1), "s2": (0.0, 2)}),
                        ("c", {"s1": (0.0, 2), "s2": (pytest.approx(0.8), 1)})]
    c2 = merge_sources(labels, ("s1", "s2"), [s1, s2], top=2)
    assert c2.label_sets() == [["a", "c", "b"]]
    b_row = c2.doc(0)[2][1]
    assert b_row["s1"] == (pytest.approx(0.5), 2) and b_row["s2"] == (pytest.approx(0.2), 2)
    joined = Candidates.concat([c, replace(c)])
    assert len(joined) == 2 and joined.offsets.tolist() == [0, 2, 4]
    assert c.source_scores("s2", within_top=False) == [{"c": pytest.approx(0.8)}]


def test_no_texts_and_given_vectors(retriever: LabelRetriever, encoder: SentenceEncoder) -> None:
    empty = retriever.score([])
    assert len(empty) == 0 and empty.scores.shape == (0, 3)
    texts = [d.text for d in TEST[:5]]
    a = retriever.score(texts)
    b = retriever.score(texts, vectors=encoder.encode(texts))
    assert np.array_equal(a.label_ids, b.label_ids) and np.allclose(a.scores, b.scores)


def test_label_text_stores_its_top_k_and_still_scores_every_candidate(retriever: LabelRetriever) -> None:
    """The label-text source's rows hold its top K (not every label: at 10^5 labels that made each block
    2048 x 10^5 stored scores); the merge asks it for the cosine of the other sources' candidates, so the
    candidates equal those of rows holding every label."""
    texts = [d.text for d in TEST]
    vecs = retriever.embed(texts)  # (n, dim)
    top = 3
    source = retriever.sources["label_text"]
    rows = source.score(texts, vecs, top)
    assert np.all(np.diff(rows.indptr) <= top)
    blocks = [s.score(texts, vecs, top) for s in retriever.sources.values()]
    full = [sp.csr_matrix(vecs @ retriever.label_vectors.T) if name == "label_text" else b  # (n, n_labels) every label
            for name, b in zip(retriever.sources, blocks, strict=True)]
    reference = merge_sources(retriever.labels, list(retriever.sources), full, top)
    got = retriever.score(texts, top=top)
    np.testing.assert_array_equal(got.offsets, reference.offsets)
    np.testing.assert_array_equal(got.label_ids, reference.label_ids)
    np.testing.assert_array_equal(got.ranks, reference.ranks)
    np.testing.assert_allclose(got.scores, reference.scores, atol=1e-6)
