"""Batch selection: top-b, noise dropping, diversity, sub-sampling and the per-model-version cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xlgen.active.ensemble import EnsembleConfig
from xlgen.active.selection import ScoreCache, SelectionConfig, diverse, drop_noise, select_batch, top_b
from xlgen.data import Document
from xlgen.decoding import DecodingConfig

POOL = [Document(str(i), t) for i, t in enumerate(
    ["I love it", "so sad today", "what?!", "thank you so much", "this is awful", "haha nice", "I am scared",
     "ok", "congrats!", "why would you do that", "great job", "I miss her"])]
SMALL = EnsembleConfig(
    members=(DecodingConfig(num_beams=3), DecodingConfig(strategy="sample", num_samples=3, seed=1),
             DecodingConfig(strategy="sample", num_samples=3, temperature=0.8, seed=2)),
    max_new_tokens=6,
)


def test_top_b_and_drop_noise():
    s = np.array([0.1, 0.9, 0.5, 0.9, 0.3])
    assert top_b(s, 3).tolist() == [1, 3, 2]  # ties keep pool order
    assert drop_noise(top_b(s, 5), 0.2).tolist() == [3, 2, 4, 0]


def test_diverse_takes_the_best_of_each_cluster():
    emb = np.array([[0, 0], [0, 0.1], [0, 0.2], [10, 10], [10, 10.1]], dtype=float)
    scores = np.array([0.9, 0.8, 0.7, 0.2, 0.1])
    candidates = top_b(scores, 5)
    assert top_b(scores, 2).tolist() == [0, 1]  # top-b takes two near-duplicates
    assert diverse(scores, emb, candidates, 2).tolist() == [0, 3]


def test_config_validation():
    for bad in ({"strategy": "nope"}, {"batch_size": 0}, {"drop_top": 1.0}, {"pool_sample": 0}):
        with pytest.raises(ValueError):
            SelectionConfig(**bad)


@pytest.mark.parametrize("strategy", ["random", "subword", "margin", "vote"])
def test_select_batch(tiny_model, strategy):
    sel = select_batch(tiny_model, POOL, SelectionConfig(strategy=strategy, batch_size=4, ensemble=SMALL))
    assert len(sel.ids) == 4 and len(set(sel.ids)) == 4
    assert sel.ids == [POOL[i].id for i in sel.indices]
    assert sel.scores == sorted(sel.scores, reverse=True)
    assert sel.n_scored == len(POOL) and sel.seconds > 0
    assert len(sel.suggestions) == 4  # a vote may leave a document without labels, so none is required
    assert all(isinstance(x, str) and 0.0 <= v <= 1.0 for labels in sel.suggestions for x, v in labels)
    if strategy in ("random", "subword"):
        assert not any(sel.suggestions)  # these decode nothing


def test_cache_per_model_version(tiny_model):
    calls = [0]
    tiny_model.t5.get_encoder().register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    cache = ScoreCache()
    first = select_batch(tiny_model, POOL, SelectionConfig(strategy="vote", batch_size=3, ensemble=SMALL), cache)
    n = calls[0]
    again = select_batch(tiny_model, POOL, SelectionConfig(strategy="beal_adapted", batch_size=3, ensemble=SMALL), cache)
    assert calls[0] == n and again.cached and not first.cached  # same model: decoded once for both strategies
    beams = select_batch(tiny_model, POOL, SelectionConfig(strategy="margin", batch_size=3, ensemble=SMALL), cache)
    assert beams.cached and calls[0] == n  # the ensemble's first member is the reference beam search
    version = tiny_model.weights_version()
    assert version == tiny_model.version != ""  # the loaded directory's version, not a digest of every weight
    with torch.no_grad():
        next(tiny_model.model.parameters()).add_(0.01)
    assert tiny_model.weights_version() != version  # weights changed in place: a new version
    select_batch(tiny_model, POOL, SelectionConfig(strategy="vote", batch_size=3, ensemble=SMALL), cache)
    assert calls[0] > n


def test_pool_sample_and_diversity(tiny_model):
    cfg = SelectionConfig(strategy="margin", batch_size=3, pool_sample=8, diversity=True, candidate_factor=2, ensemble=SMALL)
    sel = select_batch(tiny_model, POOL, cfg)
    assert sel.n_scored == 8 and len(sel.indices) == 3 and len(set(sel.indices)) == 3


def test_beal_decodes_stochastic_passes_of_the_whole_network(tiny_model):
    """T passes with dropout on differ from each other (the encoder too is perturbed); the same seed
    repeats them; the model is back in eval mode afterwards; the deterministic ablation needs no pass."""
    from xlgen.active.ensemble import mc_passes

    tiny_model.t5.config.dropout_rate = 0.3
    for m in tiny_model.t5.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.3
    texts = [d.text for d in POOL[:4]]
    cfg = EnsembleConfig(members=(DecodingConfig(num_beams=3),), mc_passes=3, max_new_tokens=6)
    passes = mc_passes(tiny_model, texts, cfg, seed=0)
    assert len(passes) == 3 and all(len(p) == 4 for p in passes)
    assert passes[0] != passes[1]  # dropout on
    assert mc_passes(tiny_model, texts, cfg, seed=0) == passes  # seeded
    assert not tiny_model.model.training
    encoder_calls = []
    hook = tiny_model.t5.get_encoder().register_forward_hook(lambda *a: encoder_calls.append(1))
    try:
        mc_passes(tiny_model, texts, cfg, seed=1)
    finally:
        hook.remove()
    assert len(encoder_calls) >= 3  # the encoder runs in every pass: no state shared between passes
    sel = select_batch(tiny_model, POOL, SelectionConfig(strategy="beal", batch_size=3, ensemble=cfg))
    assert len(sel.ids) == 3
    det = select_batch(tiny_model, POOL, SelectionConfig(strategy="beal_det", batch_size=3, ensemble=cfg))
    assert len(det.ids) == 3


def test_coreset_and_dal_read_the_labelled_documents(tiny_model):
    labelled = POOL[:3]
    pool = POOL[3:]
    for name in ("coreset", "dal"):
        sel = select_batch(tiny_model, pool, SelectionConfig(strategy=name, batch_size=4), labelled=labelled)
        assert len(sel.ids) == 4 and len(set(sel.ids)) == 4 and not set(sel.ids) & {d.id for d in labelled}
    # the same pool against another labelled set: other scores (the labelled set is in the cache key)
    cache = ScoreCache()
    a = select_batch(tiny_model, pool, SelectionConfig(strategy="coreset", batch_size=3), cache, labelled=labelled)
    b = select_batch(tiny_model, pool, SelectionConfig(strategy="coreset", batch_size=3), cache, labelled=POOL[:1])
    assert a.scores != b.scores  # the labelled set is part of the score, not cached away
