"""The generator-free active-learning learner: the retriever stage refitted each round."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.unit.test_retriever import TEST, TRAIN, make_docs
from xlgen.active.selection import ScoreCache, SelectionConfig, select_batch, unsupported
from xlgen.encoders import EmbeddingCache, EncoderConfig, RetrieverConfig, SentenceEncoder
from xlgen.training.active_learning import SimulationConfig, simulate
from xlgen.training.al_retriever import RetrieverStageModel, evaluate_stage_model, fit_stage_model

CONFIG = RetrieverConfig(candidates=3, k_neighbours=5, cross_fit_folds=3)


@pytest.fixture(scope="module")
def encoder(tiny_encoder_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> SentenceEncoder:
    return SentenceEncoder.load(EncoderConfig(name=str(tiny_encoder_dir)), conversions_dir=tmp_path_factory.mktemp("conversions"))


@pytest.fixture(scope="module")
def model(encoder: SentenceEncoder, tmp_path_factory: pytest.TempPathFactory) -> RetrieverStageModel:
    cache = EmbeddingCache(tmp_path_factory.mktemp("embeddings"))
    return fit_stage_model(TRAIN[:100], TRAIN[100:], encoder, cache, CONFIG)


def test_fitted_stage_scores_every_candidate_and_beats_chance(model: RetrieverStageModel):
    probs = model.label_probabilities([d.text for d in TEST])
    assert len(probs) == len(TEST)
    assert all(0.0 <= p <= 1.0 for doc in probs for p in doc.values())
    assert all(list(doc.values()) == sorted(doc.values(), reverse=True) for doc in probs)  # best first
    m = evaluate_stage_model(model, TEST)
    assert m["micro_f1"] > 0.5  # five word-topics: chance is about 0.25
    assert 0.0 < model.threshold < 1.0


def test_version_follows_the_labelled_documents(model: RetrieverStageModel, encoder: SentenceEncoder, tmp_path: Path):
    other = fit_stage_model(TRAIN[:90], TRAIN[100:], encoder, EmbeddingCache(tmp_path), CONFIG)
    same = fit_stage_model(TRAIN[:100], TRAIN[100:], encoder, EmbeddingCache(tmp_path), CONFIG)
    assert other.weights_version() != model.weights_version()
    assert same.weights_version() == model.weights_version()


def test_dropout_passes_differ_reproduce_and_restore_eval_mode(model: RetrieverStageModel):
    texts = [d.text for d in TEST[:10]]
    before = model.label_probabilities(texts)
    a = model.dropout_passes(texts, 3, seed=0)
    b = model.dropout_passes(texts, 3, seed=0)
    c = model.dropout_passes(texts, 3, seed=1)
    assert len(a) == 3 and all(len(p) == len(texts) for p in a)
    assert a == b  # seeded
    assert a[0] != a[1]  # dropout on: the passes differ
    assert a != c
    assert not model.retriever.encoder.model.training
    assert model.label_probabilities(texts) == before  # the deterministic path is untouched


@pytest.mark.parametrize("strategy", ["random", "subword", "coreset", "dal", "cvirs", "beal_det", "label_entropy", "beal", "bald"])
def test_every_generator_free_strategy_selects_a_batch(model: RetrieverStageModel, strategy: str):
    pool = make_docs(30, 7)
    ensemble = SelectionConfig().ensemble.__class__(mc_passes=2)
    sel = select_batch(model, pool, SelectionConfig(strategy=strategy, batch_size=5, ensemble=ensemble), ScoreCache(),
                       labelled=TRAIN[:100])
    assert len(set(sel.indices)) == 5
    assert all(0 <= i < len(pool) for i in sel.indices)
    if strategy in ("cvirs", "beal_det", "label_entropy"):
        assert all(sel.suggestions)  # the stage's labels above its threshold, for annotators


def test_beal_det_picks_the_least_confident(model: RetrieverStageModel):
    pool = make_docs(30, 8)
    sel = select_batch(model, pool, SelectionConfig(strategy="beal_det", batch_size=30), ScoreCache())
    probs = model.label_probabilities([pool[i].text for i in sel.indices])
    confidence = []
    for p in probs:  # T = 1: sum of R(y) / rank over the labels ranked by probability
        y = np.array(list(p.values()))
        confidence.append(float(((2.0**y - 1.0) / np.arange(1, len(y) + 1)).sum()))
    assert confidence == sorted(confidence)


def test_label_entropy_picks_the_most_uncertain(model: RetrieverStageModel):
    pool = make_docs(30, 8)
    sel = select_batch(model, pool, SelectionConfig(strategy="label_entropy", batch_size=30), ScoreCache())
    probs = model.label_probabilities([pool[i].text for i in sel.indices])
    entropy = [float(sum(-y * np.log(y) - (1 - y) * np.log(1 - y) for y in np.clip(list(p.values()), 1e-12, 1 - 1e-12))) for p in probs]
    assert entropy == sorted(entropy, reverse=True) and entropy[0] > entropy[-1]


def test_sequence_strategies_are_refused_with_the_reason(model: RetrieverStageModel):
    for strategy in ("margin", "entropy", "vote", "variance", "beal_adapted"):
        why = unsupported(model, strategy)  # type: ignore[arg-type]
        assert why is not None and "generated sequences" in why and "beal_det" in why
    with pytest.raises(ValueError, match="learner retriever cannot run margin"):
        SimulationConfig(learner="retriever", strategies=("random", "margin"))


def test_simulation_with_the_retriever_learner(tiny_data: Path, tiny_encoder_dir: Path, cache_dir: Path, tmp_path: Path):
    cfg = SimulationConfig(data=str(tiny_data), output_dir=str(tmp_path / "al"), learner="retriever", encoder=str(tiny_encoder_dir),
                           encoder_quantization="float32", strategies=("random", "coreset", "beal_det", "beal"), seeds=(0,),
                           pool_size=120, initial=40, batch=20, rounds=2, dev_size=40, test_size=40, mc_passes=2, progress=False)
    result = simulate(cfg)
    saved = json.loads((tmp_path / "al" / "active_learning.json").read_text())
    assert saved["config"]["learner"] == "retriever"
    assert set(result["full_data"]) >= {"micro_f1", "macro_f1", "train_s"}
    for name in ("random", "coreset", "beal_det", "beal"):
        points = result["curves"][name]["0"]
        assert [p["labelled"] for p in points] == [40, 60, 80]
        chosen = [i for p in points for i in p["selected"]]
        assert len(chosen) == len(set(chosen))  # nothing selected twice
    assert result["curves"]["beal"]["0"][1]["selected"] != result["curves"]["random"]["0"][1]["selected"]
    assert "random" in result["selection"]
