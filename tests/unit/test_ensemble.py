"""Ensemble decoding: combination rules, and one encoder pass shared by every member."""

from __future__ import annotations

import numpy as np
import pytest

from xlgen.active.ensemble import MEMBER_SETS, EnsembleConfig, combine_votes, decode_ensemble, sample_groups, share_out
from xlgen.decoding import Candidate, DecodingConfig

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
    kinds = [(m.strategy, m.num_beams, m.num_samples, m.top_k, m.top_p, m.temperature) for m in cfg.members]
    assert kinds[0][:2] == ("beam", 5)
    assert kinds[1] == kinds[2] == ("sample", 5, 1, 20, 0.9, 1.0)  # the fast set: one call of 2 samples
    assert sample_groups(cfg.members) == [[0], [1, 2]]
    wide = [(m.strategy, m.num_samples, m.temperature) for m in MEMBER_SETS["wide"][1:]]
    assert MEMBER_SETS["wide"][0] == cfg.members[0] and wide == [("sample", 5, 1.0), ("sample", 5, 0.8)]
    assert sample_groups(MEMBER_SETS["wide"]) == [[0], [1], [2]]  # different settings: a call each
    assert len(EnsembleConfig(mc_dropout=3).member_configs()) == 6
    for bad in ({"members": ()}, {"combine": "sum"}, {"min_votes": 0}, {"mc_dropout": -1}):
        with pytest.raises(ValueError):
            EnsembleConfig(**bad)


def test_sample_groups_join_consecutive_sampling_members_alike_but_for_count_and_seed():
    beam = DecodingConfig(strategy="beam", num_beams=5)
    s1 = DecodingConfig(strategy="sample", num_samples=1, top_k=20, seed=1)
    s3 = DecodingConfig(strategy="sample", num_samples=3, top_k=20, seed=7)
    hot = DecodingConfig(strategy="sample", num_samples=1, top_k=20, temperature=1.5, seed=1)
    greedy_like = DecodingConfig(strategy="sample", num_samples=2, top_k=1)
    assert sample_groups([beam, s1, s3, hot, s1]) == [[0], [1, 2], [3], [4]]  # only consecutive members join
    assert sample_groups([s1, beam, s1]) == [[0], [1], [2]]
    assert sample_groups([beam, beam]) == [[0], [1]]  # deterministic members never share a call
    assert sample_groups([greedy_like, greedy_like]) == [[0], [1]]


def test_share_out_gives_each_member_its_count_best_first_and_not_always_the_likeliest():
    cands = [Candidate((str(i),), -float(i), 2) for i in range(6)]  # best first
    firsts = set()
    rng = np.random.default_rng(0)
    for _ in range(40):
        shares = share_out(cands, [2, 1, 3], rng)
        assert [len(x) for x in shares] == [2, 1, 3]
        assert sorted(c.labels for x in shares for c in x) == sorted(c.labels for c in cands)  # each sample once
        assert all(x == sorted(x, key=lambda c: -c.logprob) for x in shares)
        firsts.add(shares[0][0].labels)
    assert len(firsts) > 2  # the likeliest sample is not always the first member's


def test_a_group_of_sampling_members_decodes_once(tiny_model, monkeypatch):
    """Two sampling members alike draw their samples in one call, 2 x 3 samples, shared out 3 and 3;
    a member with other settings gets a call of its own."""
    calls = []
    original = type(tiny_model).candidates

    def spy(self, inputs, cfg, **kw):
        calls.append((cfg.strategy, cfg.num_return))
        return original(self, inputs, cfg, **kw)

    monkeypatch.setattr(type(tiny_model), "candidates", spy)
    s = DecodingConfig(strategy="sample", num_samples=3, top_k=20, seed=1)
    members = (DecodingConfig(strategy="beam", num_beams=2), s,
               DecodingConfig(strategy="sample", num_samples=3, top_k=20, seed=9),
               DecodingConfig(strategy="sample", num_samples=2, temperature=0.5))
    out = decode_ensemble(tiny_model, TEXTS, EnsembleConfig(members=members, max_new_tokens=8), threshold=0.0, embeddings=False)
    assert calls == [("beam", 2), ("sample", 6), ("sample", 2)]
    assert [[len(c) for c in m] for m in out.candidates] == [[n] * len(TEXTS) for n in (2, 3, 3, 2)]
    assert decode_ensemble(tiny_model, TEXTS, EnsembleConfig(members=members, max_new_tokens=8), threshold=0.0,
                           embeddings=False).candidates == out.candidates  # seeded, shares included


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


@pytest.fixture()
def ct2_model(tiny_model_dir):
    """The tiny model decoding on its CTranslate2 export (float32, so that its beams are torch's)."""
    from xlgen.backends import installed
    from xlgen.model import XLGenModel, export_model

    if not installed("ctranslate2"):
        pytest.skip("ctranslate2 is not installed")
    export_model(tiny_model_dir, "ctranslate2", compute_type="float32")
    m = XLGenModel.load(tiny_model_dir, backend="ctranslate2")
    m.decoding = DecodingConfig(max_new_tokens=16)
    return m


def test_the_ensemble_on_ctranslate2_is_shaped_as_on_torch(tiny_model, ct2_model):
    """Every member on CTranslate2 (seeded sampling included); no encoder pass outside it unless the
    embeddings or MC-dropout members need the states."""
    from xlgen.active.ensemble import member_backends

    cfg = EnsembleConfig(max_new_tokens=8, batch_size=4)
    assert [b.name for b in member_backends(ct2_model, cfg.members)] == ["ctranslate2"] * 3
    want = decode_ensemble(tiny_model, TEXTS, cfg)
    calls = count_encoder_calls(ct2_model)
    got = decode_ensemble(ct2_model, TEXTS, cfg, embeddings=False)
    assert calls[0] == 0 and got.embeddings is None
    assert got.n_members == want.n_members == 3
    assert [[len(c) for c in m] for m in got.candidates] == [[len(c) for c in m] for m in want.candidates]  # 5, 1, 1
    assert len(got.member_labels[2]) == len(got.votes) == len(got.labels) == len(TEXTS)
    assert [c[0].labels for c in got.candidates[0]] == [c[0].labels for c in want.candidates[0]]  # the best beam
    assert decode_ensemble(ct2_model, TEXTS, cfg, embeddings=False).candidates == got.candidates  # seeded
    with_emb = decode_ensemble(ct2_model, TEXTS, cfg)
    assert calls[0] == 2  # the torch encoder, once per batch of 4, for the embeddings
    assert with_emb.candidates == got.candidates
    np.testing.assert_allclose(with_emb.embeddings, want.embeddings, atol=1e-6)
    mc = decode_ensemble(ct2_model, TEXTS, EnsembleConfig(max_new_tokens=8, batch_size=4, mc_dropout=1), embeddings=False)
    assert calls[0] == 4 and mc.n_members == 4 and not ct2_model.model.training  # states for the MC member, in eval mode


def test_members_take_the_fastest_backend_and_share_states_where_it_reads_them(ct2_model):
    """Every member, sampling included, goes to the fastest backend that serves it: CTranslate2 ahead
    of a backend reading encoder states (ONNX Runtime; here torch standing in), with no encoder pass
    outside it. Where the states-reading backend is the fastest, the members share one encoder pass."""
    from xlgen.active.ensemble import member_backends
    from xlgen.backends import Backends
    from xlgen.backends.torch_backend import TorchBackend

    (ct2,) = ct2_model.backend.members
    stamp = ct2_model.backend.stamp
    reads = TorchBackend(ct2_model.t5, ct2_model.tokenizer.eos_id, ct2_model.tokenizer.pad_id)
    cfg = EnsembleConfig(max_new_tokens=8, batch_size=4)
    ct2_model.backend = Backends((ct2, reads), stamp)
    assert member_backends(ct2_model, cfg.members) == [ct2, ct2, ct2]
    calls = count_encoder_calls(ct2_model)
    out = decode_ensemble(ct2_model, TEXTS, cfg, embeddings=False)
    assert calls[0] == 0 and out.embeddings is None
    ct2_model.backend = Backends((reads, ct2), stamp)
    assert member_backends(ct2_model, cfg.members) == [reads, reads, reads]
    out = decode_ensemble(ct2_model, TEXTS, cfg, embeddings=False)
    assert calls[0] == 2 and out.embeddings is None  # one pass per batch of 4, shared by the three members
    assert [[len(c) for c in m] for m in out.candidates] == [[5] * len(TEXTS), [1] * len(TEXTS), [1] * len(TEXTS)]
