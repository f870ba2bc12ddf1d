"""Ensemble decoding: combination rules, and one encoder pass shared by every member."""

from __future__ import annotations

import pytest

from xlgen.active.ensemble import EnsembleConfig, combine_votes, decode_ensemble
from xlgen.decoding import DecodingConfig

TEXTS = ["I love this so much", "this is terrible and sad", "what a surprise", "thanks a lot", "meh", "ok then"]


def count_encoder_calls(model) -> list[int]:
    calls = [0]
    model.t5.get_encoder().register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def test_combine_votes():
    sets = [["a", "b"], ["a"], ["a", "c"], ["b"]]
    assert combine_votes(sets, "union") == [("a", 0.75), ("b", 0.5), ("c", 0.25)]
    assert combine_votes(sets, "intersection") == []
    assert combine_votes(sets[:3], "intersection") == [("a", 1.0)]
    assert combine_votes(sets, "vote", 0.5) == [("a", 0.75), ("b", 0.5)]
    with pytest.raises(ValueError):
        combine_votes(sets, "majority")


def test_config_validation_and_defaults():
    cfg = EnsembleConfig()
    kinds = [(m.strategy, m.num_beams, m.top_k, m.top_p, m.temperature) for m in cfg.members]
    assert kinds[0][:2] == ("beam", 5)
    assert kinds[1][0] == "sample" and (kinds[1][2] > 0 and kinds[1][3] < 1)
    assert kinds[2][0] == "sample" and kinds[2][4] == 0.8
    assert len(EnsembleConfig(mc_dropout=3).member_configs()) == 6
    for bad in ({"members": ()}, {"combine": "sum"}, {"min_votes": 0}, {"mc_dropout": -1}):
        with pytest.raises(ValueError):
            EnsembleConfig(**bad)


def test_every_member_reuses_one_encoder_pass(tiny_model):
    calls = count_encoder_calls(tiny_model)
    cfg = EnsembleConfig(max_new_tokens=8, batch_size=4, mc_dropout=2)
    out = decode_ensemble(tiny_model, TEXTS, cfg)
    assert calls[0] == 2  # two batches of at most 4 documents, whatever the 5 members
    assert out.n_members == 5
    assert len(out.candidates[0][0]) == 5  # beam-5 returns every beam
    assert out.embeddings.shape == (len(TEXTS), tiny_model.t5.config.d_model)
    assert not tiny_model.model.training  # MC dropout switched dropout off again


def test_votes_are_fractions_of_members(tiny_model):
    cfg = EnsembleConfig(max_new_tokens=8, combine="union")
    out = decode_ensemble(tiny_model, TEXTS, cfg, threshold=0.0)
    for d in range(len(TEXTS)):
        predicted = [set(m[d]) for m in out.member_labels]
        for label, v in out.votes[d].items():
            assert v == pytest.approx(sum(label in p for p in predicted) / out.n_members)
        assert dict(out.labels[d]) == out.votes[d]  # union keeps every label


def test_a_single_member_ensemble_matches_predict(tiny_model):
    member = DecodingConfig(strategy="beam", num_beams=3, max_new_tokens=8)
    out = decode_ensemble(tiny_model, TEXTS, EnsembleConfig(members=(member,)), threshold=0.0)
    preds = tiny_model.predict(TEXTS, member, threshold=0.0)
    assert [list(m) for m in out.member_labels[0]] == [p.labels for p in preds]
