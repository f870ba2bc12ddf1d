"""The ``retrieval`` variant on the tiny preset and a tiny sentence encoder: candidates appended to the
input (leak-free in training), fused scores with their sources, the three scorings, save/load equality,
the oracle, and the fusion's calibrators."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from xlgen.data import Document, read_documents, write_jsonl
from xlgen.decoding import DecodingConfig
from xlgen.digests import encoder_digest
from xlgen.fusion import GENERATOR, LogisticCalibrator
from xlgen.model import XLGenModel

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def retrieval_run(tiny_encoder_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    from xlgen.training.config import TrainConfig
    from xlgen.training.train import run

    root = tmp_path_factory.mktemp("retrieval")
    mp = pytest.MonkeyPatch()
    mp.setenv("XLGEN_CACHE_DIR", str(root / "cache"))
    data = root / "data"
    data.mkdir()
    for split, n in (("train", 300), ("dev", 50), ("test", 50)):
        write_jsonl(read_documents(ROOT / "data" / "goemotions" / f"{split}.jsonl.gz")[:n], data / f"{split}.jsonl")
    run(TrainConfig(data=str(data), output_dir=str(root / "run"), preset="tiny", max_steps=12, eval_every=12, batch_size=16,
                    lr=3e-2, max_target_length=16, max_input_length=64, progress=False, variant="retrieval",
                    encoder=str(tiny_encoder_dir), encoder_quantization="int8", candidates_in_input=4))
    yield root
    mp.undo()


def test_trains_saves_and_reloads(retrieval_run: Path) -> None:
    model_dir = retrieval_run / "run" / "model"
    assert (model_dir / "guidance" / "retriever" / "retriever.json").is_file()
    fusion = json.loads((model_dir / "guidance" / "fusion.json").read_text())
    assert fusion["generator"] is not None  # the generator stage was fitted on dev after training
    metrics = json.loads((retrieval_run / "run" / "metrics.json").read_text())
    assert 0.0 <= metrics["dev_candidate_recall"] <= 1.0 and "dev_oof_micro_f1" in metrics and "test_micro_f1" in metrics
    assert metrics["dev_threshold"] == XLGenModel.load(model_dir).threshold
    m = XLGenModel.load(model_dir)
    m.decoding = DecodingConfig(max_new_tokens=8)
    texts = ["thank you so much!", "this is awful and I hate it"]
    preds = m.predict(texts)
    assert all(p.labels for p in preds)
    for p in preds:
        assert list(p.all_scores.values()) == sorted(p.all_scores.values(), reverse=True)
        assert all(0.0 <= v <= 1.0 for v in p.all_scores.values())
        for label in p.labels:  # every returned label says what proposed it
            assert p.sources[label] and set(p.sources[label]) <= {"knn", "label_text", "linear", GENERATOR}
    m.save(retrieval_run / "copy")
    again = XLGenModel.load(retrieval_run / "copy")
    again.decoding = m.decoding
    assert [p.all_scores for p in again.predict(texts)] == [p.all_scores for p in preds]


def test_the_encoder_numerics_travel_with_the_model_and_into_retraining(retrieval_run: Path, tiny_encoder_dir: Path) -> None:
    """The int8 encoder the model was trained with is the one it tags with, and the service's retraining
    job trains the next model with the same encoder, numerics, sources and candidate count."""
    from xlgen.config import from_arguments
    from xlgen.service.jobs import RetrainManager
    from xlgen.training.config import TrainConfig

    model_dir = retrieval_run / "run" / "model"
    m = XLGenModel.load(model_dir)
    assert m.guidance.retriever.encoder.numerics == "int8"

    async def install(_: str) -> str:
        return ""

    jobs = RetrainManager(None, retrieval_run / "jobs", str(retrieval_run / "data"), "--preset tiny", lambda: 0.0, install,  # type: ignore[arg-type]
                          serving_path=lambda: str(model_dir))
    cmd = jobs._command(retrieval_run / "jobs" / "j", {})
    parser = argparse.ArgumentParser()
    from xlgen.training.train import add_arguments

    add_arguments(parser)
    cfg = from_arguments(TrainConfig, parser.parse_args(cmd[cmd.index("xlgen.training.train") + 1 :]))
    # the model carries its (local-directory) encoder, and the next model is trained from that copy
    bundled = model_dir / "guidance" / "retriever" / "encoder"
    assert (cfg.variant, cfg.encoder, cfg.encoder_quantization) == ("retrieval", str(bundled), "int8")
    assert encoder_digest(bundled) == encoder_digest(tiny_encoder_dir)
    assert not cfg.fine_tune_encoder and cfg.label_file is None  # no answers, no label texts: nothing more to learn
    assert cfg.retriever_sources == m.guidance.retriever.config.sources
    assert cfg.retriever_candidates == m.guidance.retriever.config.candidates
    # an option the operator set wins over the served model's
    mine = RetrainManager(None, retrieval_run / "jobs", str(retrieval_run / "data"), "--encoder-quantization float32",  # type: ignore[arg-type]
                          lambda: 0.0, install, serving_path=lambda: str(model_dir))
    cmd = mine._command(retrieval_run / "jobs" / "j", {})
    assert cmd.count("--encoder-quantization") == 1 and cmd[cmd.index("--encoder-quantization") + 1] == "float32"


def test_input_carries_the_ordered_candidates(retrieval_run: Path) -> None:
    m = XLGenModel.load(retrieval_run / "run" / "model")
    g = m.guidance
    texts = ["thank you so much!"]
    plan = m.plan(texts)
    ordered = g.ordered(plan.extra["candidates"])[0]
    ids = m.encode_inputs(texts, plan=plan)[0]
    suffix = g.suffix(m, ordered)
    assert ids[-1] == m.tokenizer.eos_id and ids[-1 - len(suffix) : -1] == suffix
    assert suffix.count(m.tokenizer.sep_id) == min(4, len(ordered))  # candidates_in_input
    # the oracle appends the gold labels instead
    gold = m.encode_inputs(texts, given=[["gratitude"]])[0]
    assert gold[-2 - len(m.tokenizer.encode("gratitude")) : -1] == [m.tokenizer.sep_id, *m.tokenizer.encode("gratitude")]


def test_three_scorings(retrieval_run: Path) -> None:
    m = XLGenModel.load(retrieval_run / "run" / "model")
    m.decoding = DecodingConfig(max_new_tokens=8)
    texts = ["I love this so much"]
    retr = m.predict(texts, scoring="retriever")[0]
    gen = m.predict(texts, scoring="generator")[0]
    fused = m.predict(texts, scoring="fused")[0]
    assert retr.candidates == [] and GENERATOR not in {s for v in retr.sources.values() for s in v}
    assert gen.sources == {} and all(gen.sources_of(x) == [GENERATOR] for x in gen.labels) and gen.candidates
    assert set(retr.all_scores) <= set(fused.all_scores)
    with pytest.raises(ValueError, match="scoring"):
        m.predict(texts, scoring="nonsense")


def test_training_candidates_are_leak_free(retrieval_run: Path, tiny_encoder_dir: Path) -> None:
    """kNN never votes with the document itself when scoring training documents."""
    from xlgen.encoders import LabelRetriever, RetrieverConfig, SentenceEncoder

    docs = [Document(str(i), t, (x,)) for i, (t, x) in enumerate(
        [("oil price crude", "crude"), ("wheat corn grain", "grain"), ("stock shares bank", "earn"), ("happy love thanks", "joy")])]
    r = LabelRetriever.fit(docs, config=RetrieverConfig(sources=("knn",), k_neighbours=3), encoder=SentenceEncoder.load(str(tiny_encoder_dir)))
    train = r.score_train(docs)
    for i, d in enumerate(docs):  # each document's own label comes from other documents only: here, no other has it
        assert d.labels[0] not in train.source_scores("knn")[i]
    assert docs[0].labels[0] in r.score([docs[0].text]).source_scores("knn")[0]  # as a new document it finds its twin


def test_logistic_calibrator_round_trip() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 3))
    y = (x[:, 0] + 0.5 * x[:, 1] * x[:, 2] + rng.normal(scale=0.3, size=400) > 0).astype(int)
    cal = LogisticCalibrator(("a", "b", "c"), pairs=True).fit(x, y)
    again = LogisticCalibrator.from_dict(json.loads(json.dumps(cal.to_dict())))
    np.testing.assert_allclose(again.predict(x), cal.predict(x))
    assert ((cal.predict(x) > 0.5) == y).mean() > 0.85  # the product term is learnable through the pairs
    const = LogisticCalibrator(("a",)).fit(np.zeros((5, 1)), np.ones(5))
    assert np.allclose(const.predict(np.zeros((2, 1))), 1.0, atol=1e-5)


def _synthetic_candidates(n_docs: int, seed: int = 0):  # type: ignore[no-untyped-def]
    from xlgen.encoders.candidates import Candidates

    rng = np.random.default_rng(seed)
    sizes = rng.integers(3, 12, n_docs)
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    n = int(offsets[-1])
    labels = tuple(f"l{i}" for i in range(30))
    label_ids = rng.integers(0, 30, n).astype(np.int32)
    scores = rng.random((n, 3)).astype(np.float32)
    ranks = rng.integers(1, 12, (n, 3)).astype(np.int32)
    cands = Candidates(labels, ("knn", "label_text", "linear"), 10, offsets, label_ids, scores, ranks)
    # gold: a label is right more often the higher its scores
    gold = [tuple(labels[label_ids[r]] for r in range(offsets[i], offsets[i + 1]) if rng.random() < scores[r].mean() ** 2)
            for i in range(n_docs)]
    return cands, gold


def test_the_retriever_stage_fits_on_whole_documents_up_to_its_row_cap() -> None:
    from xlgen.fusion import (
        LogisticCalibrator,
        fit_retriever_stage,
        gold_targets,
        retriever_feature_names,
        retriever_features,
        stage_documents,
    )

    cands, gold = _synthetic_candidates(3_000)
    n_rows = len(cands.label_ids)
    assert stage_documents(cands, n_rows) is None
    keep = stage_documents(cands, 5_000, seed=1)
    assert keep is not None and np.array_equal(keep, np.sort(keep)) and np.array_equal(keep, stage_documents(cands, 5_000, seed=1))
    part_cands = cands.documents(keep)
    assert 4_000 < len(part_cands.label_ids) <= 5_000 and len(part_cands) == len(keep)
    for j, i in enumerate(keep):  # every kept document whole, its rows as they were
        assert part_cands.doc(j) == cands.doc(i)
    counts = {label: 5 for label in cands.labels}
    # the subset's own features are the full features' rows of those documents (a row's features read its document only)
    rows = np.concatenate([np.arange(cands.offsets[i], cands.offsets[i + 1]) for i in keep])
    assert np.array_equal(retriever_features(part_cands, counts), retriever_features(cands, counts)[rows])
    capped = fit_retriever_stage(cands, gold, counts, max_rows=5_000, seed=1)
    by_rows = LogisticCalibrator(retriever_feature_names(cands.sources), pairs=True).fit(
        retriever_features(cands, counts)[rows], gold_targets(cands, gold)[rows])
    assert np.allclose(capped.weights, by_rows.weights) and np.isclose(capped.bias, by_rows.bias)
    full = fit_retriever_stage(cands, gold, counts, max_rows=n_rows)
    part = fit_retriever_stage(cands, gold, counts, max_rows=n_rows // 2)
    x = retriever_features(cands, counts)
    # half the rows: about the same probabilities (the calibrator's 77 weights need far fewer rows)
    assert np.abs(full.predict(x) - part.predict(x)).mean() < 0.02
    assert not np.allclose(full.weights, part.weights)


def test_document_vectors_come_from_the_sentence_encoder(retrieval_run: Path) -> None:
    """Diversity and similarity use the retriever's pretrained vectors, not the T5's states."""
    m = XLGenModel.load(retrieval_run / "run" / "model")
    texts = ["thank you so much!", "this is awful and I hate it"]
    vectors = m.embeddings(texts)
    assert vectors.shape == (2, 32)  # the tiny sentence encoder's width, not the T5's d_model
    assert np.allclose(vectors, m.guidance.retriever.embed(texts), atol=1e-5)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)


def test_the_service_answers_sources_and_selects_with_diversity(retrieval_run: Path, tmp_path: Path) -> None:
    from tests.support import KEY, running, settings_for

    with running(settings_for(retrieval_run / "run" / "model", tmp_path / "svc")) as client:
        r = client.post("/v1/tag", json={"texts": ["thank you so much!", "I am so angry"], "max_new_tokens": 8})
        assert r.status_code == 400 and r.json()["extra"][0]["key"] == "max_new_tokens"  # not a request option
        r = client.post("/v1/tag", json={"texts": ["thank you so much!", "I am so angry"], "top_k": 3})
        assert r.status_code == 200, r.text
        for result in r.json()["results"]:
            for label in result["labels"]:
                assert label["sources"] and set(label["sources"]) <= {"knn", "label_text", "linear", GENERATOR}
        assert client.get("/v1/model").json()["variant"] == "retrieval"
        docs = [{"id": f"d{i}", "text": t} for i, t in enumerate(["thanks a lot", "so sad today", "what a surprise",
                                                                  "I love it", "this is annoying", "I am scared"])]
        assert client.post("/v1/pool", json={"documents": docs}, headers=KEY).status_code == 200
        r = client.post("/v1/al/next-batch", json={"strategy": "margin", "size": 2, "diversity": True, "annotator": "a"},
                        headers=KEY)
        assert r.status_code == 200 and len(r.json()["documents"]) == 2, r.text
        for doc in r.json()["documents"]:
            assert all(x["sources"] for x in doc["suggested"])
        r = client.post("/v1/al/next-batch", json={"strategy": "subword", "size": 2, "annotator": "b"}, headers=KEY)
        assert r.status_code == 200 and len(r.json()["documents"]) == 2, r.text


def test_the_service_keeps_no_embedding_of_requests(retrieval_run: Path) -> None:
    from xlgen.service.inference import load_served_model

    served = load_served_model(retrieval_run / "run" / "model", device="cpu", threads=1, backend="torch", bf16=False)
    assert served.model.guidance.retriever.cache is None


def test_a_label_added_by_name_gets_questions_answers_and_survives_a_restart(retrieval_run: Path, tmp_path: Path) -> None:
    from tests.support import KEY, running, settings_for

    docs = [{"id": f"d{i}", "text": t} for i, t in enumerate(
        ["python code bug", "java code error", "python error", "oil price crude", "wheat corn grain", "bank rates money",
         "code python java", "happy love thanks"])]
    settings = settings_for(retrieval_run / "run" / "model", tmp_path / "svc", new_label_questions=4)
    with running(settings) as client:
        assert client.post("/v1/pool", json={"documents": docs}, headers=KEY).status_code == 200
        r = client.post("/v1/labels", json={"name": "programming", "examples": ["python code"]})
        assert r.status_code == 401  # writes need the key
        r = client.post("/v1/labels", json={"name": "programming", "examples": ["python code"]}, headers=KEY)
        assert r.status_code == 201 and r.json()["questions"] == 4, r.text
        assert client.post("/v1/labels", json={"name": "programming"}, headers=KEY).status_code == 409  # added before
        assert client.post("/v1/labels", json={"name": "joy"}, headers=KEY).status_code == 409  # in the label space
        r = client.post("/v1/labels", json={"name": " "}, headers=KEY)
        assert r.status_code == 400 and r.json()["extra"][0]["key"] == "name"
        r = client.post("/v1/labels", json={"name": "finance", "description": "banks, money and rates"}, headers=KEY)
        assert r.status_code == 201
        # two annotators at once never get the same question; the greedy order spreads them over both labels
        a = client.post("/v1/labels/questions", json={"annotator": "ann", "size": 3}, headers=KEY).json()["questions"]
        b = client.post("/v1/labels/questions", json={"annotator": "bob", "size": 3}, headers=KEY).json()["questions"]
        assert len(a) == 3 and len(b) == 3
        assert not {(q["document_id"], q["label"]) for q in a} & {(q["document_id"], q["label"]) for q in b}
        assert {q["label"] for q in a + b} == {"programming", "finance"}
        yes = next(q for q in a + b if q["label"] == "programming")
        r = client.post("/v1/labels/answers", json={"document_id": yes["document_id"], "label": "programming", "answer": True,
                                                    "annotator": "ann", "seconds": 2.5}, headers=KEY)
        assert r.status_code == 200 and r.json()["positives"] == 1 and r.json()["answered"] == 1
        r = client.post("/v1/labels/answers", json={"document_id": "nope", "label": "programming", "answer": False}, headers=KEY)
        assert r.status_code == 404
        listed = {x["name"]: x for x in client.get("/v1/labels", headers=KEY).json()["labels"]}
        assert listed["programming"]["positives"] == 1 and listed["finance"]["questions"] == 4
        tagged = client.post("/v1/tag", json={"texts": ["python code bug"], "threshold": 0.0, "top_k": 50}).json()
        assert tagged["results"][0]["labels"]  # the new labels compete with the old ones at once
    with running(settings) as client:  # a restart re-applies what the database holds
        retriever = client.app.state.runtime.holder.current.model.guidance.retriever
        assert {"programming", "finance"} <= set(retriever.labels)
        programming = next(t for t in retriever.label_texts if t.label == "programming")
        assert yes_text(docs, yes["document_id"]) in programming.examples


def yes_text(docs: list[dict], doc_id: str) -> str:
    return next(d["text"] for d in docs if d["id"] == doc_id)


def _train_config(cmd: list[str]):  # type: ignore[no-untyped-def]
    from xlgen.config import from_arguments
    from xlgen.training.config import TrainConfig
    from xlgen.training.train import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return from_arguments(TrainConfig, parser.parse_args(cmd[cmd.index("xlgen.training.train") + 1 :]))


def test_retraining_fine_tunes_the_encoder_on_the_answers(retrieval_run: Path, tmp_path: Path) -> None:
    """The job writes the answers (with their texts) and the label texts; ``auto`` fine-tunes the encoder when
    there are answers, ``never`` does not, and an operator's own options win."""
    from xlgen.encoders.label_texts import read_label_file
    from xlgen.service.jobs import RetrainManager, write_answers, write_label_texts
    from xlgen.service.storage import PoolDocument, Storage
    from xlgen.training.retriever import read_answers

    model_dir = retrieval_run / "run" / "model"
    storage = Storage(f"sqlite:///{tmp_path / 'db.sqlite'}")
    storage.add_documents([PoolDocument("p1", "pasta and pizza tonight"), PoolDocument("p2", "I am so angry")])
    storage.add_new_label("food", "meals and dishes", ["pizza"], annotator="alice")
    storage.add_questions("food", [("p1", 0.9), ("p2", 0.1)])
    for doc, answer in (("p1", True), ("p2", False)):
        storage.answer_question(doc, "food", answer, annotator="alice", seconds=1.0)
    job = tmp_path / "job"
    job.mkdir()
    assert write_answers(storage, job / "answers.jsonl") == {"yes": 1, "no": 1}
    assert [(a.text, a.label, a.answer) for a in read_answers(job / "answers.jsonl")] == [
        ("pasta and pizza tonight", "food", True), ("I am so angry", "food", False)]
    assert write_label_texts(storage, str(model_dir), job / "labels.jsonl") == 1
    assert read_label_file(job / "labels.jsonl")["food"].texts() == ["food", "meals and dishes", "pizza"]

    async def install(_: str) -> str:
        return ""

    def command(mode: str, extra: str = "", answers: int = 2) -> list[str]:
        jobs = RetrainManager(storage, tmp_path / "jobs", str(retrieval_run / "data"), extra, lambda: 0.0, install,
                              serving_path=lambda: str(model_dir), fine_tune_encoder=mode)
        return jobs._command(job, {}, {"answers": answers, "labels": 1})

    cfg = _train_config(command("auto"))
    assert cfg.fine_tune_encoder and cfg.encoder_answers == str(job / "answers.jsonl")
    assert cfg.label_file == str(job / "labels.jsonl") and cfg.encoder.endswith("guidance/retriever/encoder")
    assert not _train_config(command("auto", answers=0)).fine_tune_encoder
    assert _train_config(command("always", answers=0)).fine_tune_encoder
    assert not _train_config(command("never")).fine_tune_encoder
    assert not _train_config(command("auto", "--no-fine-tune-encoder")).fine_tune_encoder
    # an operator who names the variant and the encoder keeps them, and the answers are still learned
    cfg = _train_config(command("auto", "--variant retrieval --encoder all-MiniLM-L6-v2"))
    assert cfg.fine_tune_encoder and cfg.encoder == "all-MiniLM-L6-v2" and cfg.label_file == str(job / "labels.jsonl")
    cfg = _train_config(command("auto", "--variant=base"))
    assert cfg.variant == "base" and not cfg.fine_tune_encoder and cfg.label_file is None
    cmd = command("auto", "--encoder-pairs=50 --label-file=/x.jsonl")
    assert _train_config(cmd).encoder_pairs == 50 and cmd.count("--label-file") == 0 and _train_config(cmd).label_file == "/x.jsonl"
    storage.close()


def test_a_fine_tuned_encoder_is_trained_kept_and_carried_by_the_model(tiny_encoder_dir: Path, tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """``--fine-tune-encoder --encoder-answers``: the encoder is fine-tuned before the retriever is fitted (once:
    a resumed run reuses it), and the model directory carries it and tags with it."""
    from xlgen.training.config import TrainConfig
    from xlgen.training.train import run

    monkeypatch.setenv("XLGEN_CACHE_DIR", str(tmp_path / "cache"))
    data = tmp_path / "data"
    data.mkdir()
    for split, n in (("train", 120), ("dev", 30)):
        write_jsonl(read_documents(ROOT / "data" / "goemotions" / f"{split}.jsonl.gz")[:n], data / f"{split}.jsonl")
    answers = tmp_path / "answers.jsonl"
    answers.write_text('{"text": "pizza and pasta", "label": "food", "answer": true}\n'
                       '{"text": "I hate this", "label": "food", "answer": false}\n')
    with pytest.raises(ValueError, match="need --fine-tune-encoder"):
        TrainConfig(variant="retrieval", encoder_answers=str(answers))
    with pytest.raises(ValueError, match="needs --variant retrieval"):
        TrainConfig(fine_tune_encoder=True)
    cfg = TrainConfig(data=str(data), output_dir=str(tmp_path / "run"), preset="tiny", max_steps=2, eval_every=2, batch_size=16,
                      max_target_length=16, max_input_length=64, progress=False, variant="retrieval", candidates_in_input=4,
                      encoder=str(tiny_encoder_dir), fine_tune_encoder=True, encoder_answers=str(answers), encoder_pairs=30, encoder_epochs=3,
                      fusion_features="counts+document")
    run(cfg)
    bundled = tmp_path / "run" / "model" / "guidance" / "retriever" / "encoder"
    assert encoder_digest(bundled) != encoder_digest(tiny_encoder_dir)
    assert not (tmp_path / "run" / "checkpoint").exists()  # the run's copy went with its checkpoint
    m = XLGenModel.load(tmp_path / "run" / "model")
    assert m.guidance.retriever.encoder.digest == encoder_digest(bundled)
    assert m.guidance.generator_features == "counts+document" and "log_count" in m.guidance.fusion.generator.names
    assert m.predict(["pizza and pasta"])[0].all_scores


def test_a_resumed_run_reuses_its_fine_tuned_encoder(tiny_encoder_dir: Path, tmp_path: Path) -> None:
    import shutil

    from xlgen.training.config import TrainConfig
    from xlgen.training.guidance import fine_tuned_encoder

    shutil.copytree(tiny_encoder_dir, tmp_path / "encoder")
    cfg = TrainConfig(variant="retrieval", fine_tune_encoder=True, encoder="/nonexistent")  # would fail if it trained
    assert fine_tuned_encoder(cfg, [], tmp_path) == tmp_path / "encoder"


def test_generator_stage_feature_sets(retrieval_run: Path) -> None:
    """Each named feature set computes what it says for one document; a stage fitted with one is saved with its
    names and the fused scores of a reloaded stage use them (a model saved before the feature sets, whose stage
    names the base features, keeps computing those)."""
    from xlgen.encoders.candidates import Candidates
    from xlgen.fusion import GENERATOR_FEATURE_SETS, Fusion, document_generator_features, fit_generator_stage

    names = GENERATOR_FEATURE_SETS["counts+document"]
    labels, x = document_generator_features(names, {"joy": 1.5, "anger": -0.5}, {"anger": 0.6, "love": 0.3}, {"joy": 9, "anger": 2})
    assert labels == ["joy", "anger", "love"]
    row = {lab: dict(zip(names, x[i], strict=True)) for i, lab in enumerate(labels)}
    assert row["joy"] == pytest.approx({"retriever_logit": 1.5, "generator_mass": 0.0, "generated": 0.0, "generator_inv_rank": 0.0,
                                        "retrieved": 1.0, "log_count": np.log(10), "retriever_gap": 0.0, "generator_gap": -0.6,
                                        "n_generated": 2.0})
    assert row["love"]["retriever_logit"] == -8.0 and row["love"]["generator_inv_rank"] == 0.5 and row["love"]["log_count"] == 0.0
    assert row["anger"]["retriever_gap"] == -2.0 and row["anger"]["generator_gap"] == 0.0

    m = XLGenModel.load(retrieval_run / "run" / "model")
    g = m.guidance
    assert g.generator_features == "counts" and g.fusion.generator.names == GENERATOR_FEATURE_SETS["counts"]  # the default
    docs = read_documents(retrieval_run / "data" / "dev.jsonl")
    texts = [d.text for d in docs]
    plan = m.plan(texts)
    gen = [p.all_scores for p in m.predict(texts, threshold=0.0, plan=plan, scoring="generator")]
    stage, oof = fit_generator_stage(g.fusion, plan.extra["candidates"], g.counts, gen, [d.labels for d in docs], features="base")
    assert stage.names == GENERATOR_FEATURE_SETS["base"] and len(oof) == len(docs)
    fused = Fusion(g.fusion.retriever, stage, g.fusion.top).fuse(plan.extra["candidates"], g.counts, gen)
    cands = plan.extra["candidates"]
    for i in (0, len(docs) // 2, len(docs) - 1):  # all documents scored in one call: each gets its own rows' scores
        a, b = cands.offsets[i], cands.offsets[i + 1]
        alone = Candidates(cands.labels, cands.sources, cands.top, np.array([0, b - a]), cands.label_ids[a:b], cands.scores[a:b],
                           cands.ranks[a:b])
        assert Fusion(g.fusion.retriever, stage, g.fusion.top).fuse(alone, g.counts, gen[i : i + 1])[0].scores == pytest.approx(fused[i].scores)
    back = Fusion.load(_saved(Fusion(g.fusion.retriever, stage, g.fusion.top), retrieval_run / "fusion_base.json"))
    assert [f.scores for f in back.fuse(plan.extra["candidates"], g.counts, gen)] == [f.scores for f in fused]
    with pytest.raises(ValueError, match="unknown generator-stage features"):
        fit_generator_stage(g.fusion, plan.extra["candidates"], g.counts, gen, [d.labels for d in docs], features="nope")


def _saved(fusion, path: Path) -> Path:  # type: ignore[no-untyped-def]
    fusion.save(path)
    return path


def test_reservoir_sample_is_seeded_uniform_and_in_stream_order() -> None:
    from collections import Counter

    from xlgen.active.stream import reservoir

    docs = [Document(str(i), f"t{i}") for i in range(50)]
    sample, n = reservoir(iter(docs), 10, seed=3)
    assert n == 50 and len(sample) == 10 and [int(d.id) for d in sample] == sorted(int(d.id) for d in sample)
    assert reservoir(iter(docs), 10, seed=3)[0] == sample and reservoir(iter(docs), 10, seed=4)[0] != sample
    assert reservoir(iter(docs[:4]), 10)[0] == docs[:4]
    hits = Counter(d.id for s in range(2000) for d in reservoir(iter(docs), 10, seed=s)[0])
    assert len(hits) == 50 and max(hits.values()) < 1.3 * 400 and min(hits.values()) > 0.7 * 400  # each kept 1/5 of the time


def test_streamed_selection_matches_the_whole_pool_and_narrows_by_the_retriever(retrieval_run: Path) -> None:
    from xlgen.active.selection import SelectionConfig, select_batch
    from xlgen.active.stream import StreamConfig, narrow_pool, select_streaming

    m = XLGenModel.load(retrieval_run / "run" / "model")
    m.decoding = DecodingConfig(max_new_tokens=8)
    pool = [Document(d.id, d.text) for d in read_documents(retrieval_run / "data" / "test.jsonl")]
    cfg = SelectionConfig(strategy="margin", batch_size=7)
    whole = select_batch(m, pool, cfg)
    sel, docs, stats = select_streaming(m, iter(pool), cfg, StreamConfig())
    assert sel.ids == whole.ids and sel.scores == pytest.approx(whole.scores) and stats["scored"] == stats["pool"] == len(pool)
    # narrowing: each label's best documents by the retriever stage, as a brute-force ranking finds them
    g = m.guidance
    cands = g.retriever.score([d.text for d in pool])
    probs = g.fusion.retriever_probabilities(cands, g.counts)
    best: dict[str, list[tuple[float, int]]] = {}
    for row, (i, j) in enumerate(zip(cands.doc_index.tolist(), cands.label_ids.tolist(), strict=True)):
        best.setdefault(cands.labels[j], []).append((float(probs[row]), -i))
    for labels in ((), ("gratitude", "anger")):
        expect = {-i for x, items in best.items() if not labels or x in labels for _, i in sorted(items, reverse=True)[:3]}
        assert narrow_pool(m, pool, 3, labels, chunk=16) == sorted(expect)
    sel, docs, stats = select_streaming(m, iter(pool), cfg, StreamConfig(sample=30, narrow=2, narrow_labels=("gratitude",)))
    assert stats["pool"] == 50 and stats["sampled"] == 30 and stats["scored"] == len(docs) <= 2 and len(sel.ids) == len(docs)
    with pytest.raises(ValueError, match="does not know"):
        narrow_pool(m, pool, 3, ("no such label",))
    with pytest.raises(ValueError, match="cannot score a streamed pool"):
        select_streaming(m, iter(pool), SelectionConfig(strategy="coreset"), StreamConfig())


@pytest.mark.parametrize("hard", [False, True])
def test_no_answers_are_hard_negatives_only_when_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hard: bool) -> None:
    import xlgen.training.retriever
    from xlgen.training.config import TrainConfig
    from xlgen.training.guidance import fine_tuned_encoder

    seen = {}

    def fake(encoder, docs, config, label_texts=None, answers=(), progress=True):  # type: ignore[no-untyped-def]
        seen["answers"] = list(answers)
        Path(config.output_dir).mkdir(parents=True, exist_ok=True)  # atomic_dir hands over an empty folder
        (Path(config.output_dir) / "modules.json").write_text("[]")
        return Path(config.output_dir)

    monkeypatch.setattr(xlgen.training.retriever, "fine_tune_bi_encoder", fake)
    answers = tmp_path / "answers.jsonl"
    answers.write_text('{"text": "a", "label": "x", "answer": true}\n{"text": "b", "label": "x", "answer": false}\n')
    cfg = TrainConfig(variant="retrieval", fine_tune_encoder=True, encoder_answers=str(answers), encoder_hard_negatives=hard)
    assert fine_tuned_encoder(cfg, [Document("d", "t", ("x",))], tmp_path) == tmp_path / "encoder"
    assert [a.answer for a in seen["answers"]] == ([True, False] if hard else [True])
