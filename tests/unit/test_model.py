import json

import pytest
import torch

from xlgen.decoding import DecodingConfig
from xlgen.model import ModelSettings, XLGenModel

TEXTS = ["Thank you so much, this made my day!", "I can't believe they did that, so angry", "What is this?", "lol ok"]


def test_save_load_gives_identical_predictions(tiny_model, tmp_path):
    tiny_model.threshold = 0.123
    tiny_model.save(tmp_path / "copy")
    loaded = XLGenModel.load(tmp_path / "copy")
    assert loaded.threshold == 0.123
    assert loaded.settings == tiny_model.settings
    assert loaded.label_space == tiny_model.label_space
    assert loaded.data_hash == tiny_model.data_hash and len(loaded.data_hash) == 64
    for cfg in (DecodingConfig(strategy="beam", max_new_tokens=16), DecodingConfig(strategy="greedy", max_new_tokens=16)):
        a, b = tiny_model.predict(TEXTS, cfg), loaded.predict(TEXTS, cfg)
        assert [(p.labels, p.scores) for p in a] == [(p.labels, p.scores) for p in b]
    sd_a, sd_b = tiny_model.t5.state_dict(), loaded.t5.state_dict()
    assert all(torch.equal(sd_a[k], sd_b[k]) for k in sd_a)


def test_model_directory_contents(tiny_model_dir):
    meta = json.loads((tiny_model_dir / "xlgen.json").read_text())
    assert {"settings", "decoding", "threshold", "data_hash", "metrics"} <= set(meta)
    assert meta["decoding"]["num_beams"] == 5 and meta["decoding"]["strategy"] == "beam"
    assert (tiny_model_dir / "spiece.model").is_file() and (tiny_model_dir / "tokenizer.json").is_file()
    assert "dev_micro_f1" in meta["metrics"] and "test_micro_f1" in meta["metrics"]


def test_predictions_have_scores_and_respect_threshold(tiny_model):
    preds = tiny_model.predict(TEXTS, threshold=0.0)
    for p in preds:
        assert len(p.labels) >= 1
        assert p.scores == sorted(p.scores, reverse=True)
        assert all(0.0 < s <= 1.0 for s in p.scores)
        assert set(p.labels) == set(p.all_scores)
    strict = tiny_model.predict(TEXTS, threshold=1.1)
    assert all(len(p.labels) == 1 for p in strict)  # min_labels keeps the best one


def test_new_labels_kept_or_dropped(tiny_model):
    from xlgen.decoding import Candidate

    cands = [Candidate(("neutral", "never-seen-label"), -0.1, 4)]
    kept = tiny_model.to_prediction(cands, DecodingConfig(keep_new_labels=True), 0.0)
    assert kept.labels == ["neutral", "never-seen-label"] and kept.new == [False, True]
    dropped = tiny_model.to_prediction(cands, DecodingConfig(keep_new_labels=False), 0.0)
    assert dropped.labels == ["neutral"]


def test_settings_validation():
    with pytest.raises(ValueError, match="unknown label order"):
        ModelSettings(label_order="alphabetical")
    with pytest.raises(FileNotFoundError, match="not a model directory"):
        XLGenModel.load("/nonexistent/dir")
