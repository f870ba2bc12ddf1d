"""ALPS with the generator's own token losses as the surprisal: the vectors, the per-cluster picks, the plumbing."""

from __future__ import annotations

import numpy as np
import torch

from tests.unit import test_retrieval_variant
from xlgen.active.acquisition import NEEDS, PoolOutputs, get_strategy, serves
from xlgen.active.ensemble import EnsembleConfig
from xlgen.active.selection import ScoreCache, SelectionConfig, decode_pool, score_pool, select_batch, surprisal_vectors, top_b
from xlgen.data import Document
from xlgen.decoding import Candidate, DecodingConfig
from xlgen.tokenizer import encode_target

retrieval_run = test_retrieval_variant.retrieval_run  # its fixture: a tiny retrieval model trained once for this module

POOL = [Document(str(i), t) for i, t in enumerate(
    ["I love it", "so sad today", "what?!", "thank you so much", "this is awful", "haha nice", "I am scared",
     "ok", "congrats!", "why would you do that", "great job", "I miss her"])]
REFERENCE = EnsembleConfig(members=(DecodingConfig(num_beams=3),), max_new_tokens=6)


def test_needs_serve_what_they_hold():
    assert NEEDS.index("surprisal") > NEEDS.index("ensemble")
    for need in NEEDS:
        assert serves(need, need)
    assert serves("ensemble", "beams") and serves("clusters", "beams") and serves("beams", "none")
    assert not serves("beams", "clusters") and not serves("passes", "beams") and not serves("ensemble", "passes")
    # the surprisal decode is the reference beam search plus the token losses, without cluster probabilities
    assert serves("surprisal", "beams") and serves("surprisal", "none")
    assert not serves("surprisal", "clusters") and not serves("surprisal", "ensemble")
    assert not any(serves(n, "surprisal") for n in NEEDS if n != "surprisal")


def test_alps_picks_the_document_nearest_each_centroid():
    rng = np.random.default_rng(0)
    directions = np.eye(6)[[0, 2, 4]]  # three well-separated surprisal profiles
    vectors, group = [], []
    for g, d in enumerate(directions):
        for scale in (0.5, 1.0, 2.0, 3.0):  # the norm does not matter: the embeddings are unit vectors
            vectors.append(scale * (d + 0.05 * rng.random(6)))
            group.append(g)
    surprisal = np.array(vectors)  # (12, 6)
    out = PoolOutputs([f"doc {i}" for i in range(len(vectors))], surprisal=surprisal)
    alps = get_strategy("alps", seed=3)
    scores = alps.score(out)
    assert np.allclose(scores, surprisal.sum(axis=1))  # the total surprisal
    picked = alps.pick(out, top_b(scores, len(scores)), 3)
    assert sorted(np.array(group)[picked].tolist()) == [0, 1, 2]  # one per cluster
    unit = surprisal / np.linalg.norm(surprisal, axis=1, keepdims=True)
    for g in range(3):
        members = np.flatnonzero(np.array(group) == g)
        nearest = members[np.argmin(np.linalg.norm(unit[members] - unit[members].mean(axis=0), axis=1))]
        assert nearest in picked  # the K-means centroid of a separated cluster is its members' mean
    assert scores[picked].tolist() == sorted(scores[picked], reverse=True)  # best first
    assert np.array_equal(get_strategy("alps", seed=3).pick(out, top_b(scores, len(scores)), 3), picked)
    # the candidates only: a whole cluster dropped leaves two clusters for three picks, filled by score
    candidates = np.array([i for i in top_b(scores, 12) if group[i] != 0])
    picked = alps.pick(out, candidates, 3)
    assert len(set(picked.tolist())) == 3 and set(picked.tolist()) <= set(candidates.tolist())
    assert {group[i] for i in picked} == {1, 2}
    assert alps.pick(out, candidates[:2], 3).tolist() == candidates[:2].tolist()  # fewer candidates than b: all of them


def test_alps_fills_a_batch_of_identical_vectors():
    out = PoolOutputs([f"doc {i}" for i in range(5)], surprisal=np.ones((5, 4)))
    alps = get_strategy("alps")
    picked = alps.pick(out, top_b(alps.score(out), 5), 3)
    assert len(set(picked.tolist())) == 3


def hand_nll(model, text: str, labels: tuple[str, ...], length: int) -> np.ndarray:
    """The teacher-forced NLL of each target id, computed the plain way: the whole T5 on one document, ``labels=``."""
    ids = torch.tensor([model.encode_inputs([text])[0]])
    target = torch.tensor([encode_target(model.tokenizer, list(labels), length)])
    with torch.no_grad():
        logits = model.t5(input_ids=ids, attention_mask=torch.ones_like(ids), labels=target).logits  # (1, n, vocab)
    nll = -torch.log_softmax(logits.float(), -1)[0].gather(-1, target[0].unsqueeze(-1)).squeeze(-1)
    return np.pad(nll.numpy(), (0, length - target.shape[1]))


def test_surprisal_is_the_teacher_forced_nll_of_the_best_beam(tiny_model):
    texts = ["thank you so much for this", "ok"]
    decoded = decode_pool(tiny_model, texts, "surprisal", REFERENCE, embeddings=False)
    out = decoded.outputs
    assert out.surprisal is not None and out.surprisal.shape == (2, 6) and out.beams is not None
    for i, text in enumerate(texts):
        expected = hand_nll(tiny_model, text, out.beams[i][0].labels, 6)
        assert np.allclose(out.surprisal[i], expected, atol=1e-5)
        n = len(encode_target(tiny_model.tokenizer, list(out.beams[i][0].labels), 6))
        assert (out.surprisal[i, :n] > 0).all() and (out.surprisal[i, n:] == 0).all()
        assert np.isclose(out.surprisal[i].sum(), -out.beams[i][0].logprob, atol=1e-4)  # s(x) = -log p(y_1 | x)
    # a best beam without labels (eos only), and no beam at all: the loss of eos alone
    empty = surprisal_vectors(tiny_model, tiny_model.encode_inputs(texts), [[Candidate((), -1.0, 1)], []], 6)
    for i, text in enumerate(texts):
        assert np.allclose(empty[i], hand_nll(tiny_model, text, (), 6), atol=1e-5) and empty[i, 0] > 0 and not empty[i, 1:].any()
    # without the encoder cache (an exported backend decoded): the torch encoder, the same vectors
    inputs = tiny_model.encode_inputs(texts)
    assert np.allclose(surprisal_vectors(tiny_model, inputs, out.beams, 6, batch_size=1), out.surprisal, atol=1e-5)
    assert out.passes is not None and out.members is not None  # what the beam strategies read is there too


def test_select_batch_with_alps(tiny_model):
    cache = ScoreCache()
    cfg = SelectionConfig(strategy="alps", batch_size=4, seed=5, ensemble=REFERENCE)
    sel = select_batch(tiny_model, POOL, cfg, cache)
    assert len(sel.ids) == 4 and len(set(sel.ids)) == 4
    assert sel.ids == [POOL[i].id for i in sel.indices]
    assert sel.scores == sorted(sel.scores, reverse=True) and all(s > 0 for s in sel.scores)
    assert all(sel.suggestions)  # the reference beam search's labels
    assert select_batch(tiny_model, POOL, cfg, ScoreCache()).ids == sel.ids  # a fixed seed: the same batch
    margin = select_batch(tiny_model, POOL, SelectionConfig(strategy="margin", batch_size=4, ensemble=REFERENCE), cache)
    assert margin.cached  # the surprisal decode holds the reference beam search
    again = select_batch(tiny_model, POOL, SelectionConfig(strategy="alps", batch_size=4, seed=6, ensemble=REFERENCE), cache)
    assert again.cached and len(set(again.ids)) == 4
    noisy = SelectionConfig(strategy="alps", batch_size=4, drop_top=0.25, ensemble=REFERENCE)
    dropped = select_batch(tiny_model, POOL, noisy, cache)
    scores, _, _ = score_pool(tiny_model, POOL, noisy, cache)
    assert len(set(dropped.ids)) == 4 and not set(dropped.indices) & set(top_b(scores, 3).tolist())  # the top quarter dropped


def test_surprisal_of_a_retrieval_model_reads_the_inputs_with_the_candidates(retrieval_run):
    """The teacher-forced pass reads the inputs the beams were decoded from: the text with the retrieved
    candidate labels appended (the plan's suffix), not the bare text."""
    from xlgen.model import XLGenModel

    model = XLGenModel.load(retrieval_run / "run" / "model")
    texts = ["thank you so much!", "this is awful, I hate it"]
    out = decode_pool(model, texts, "surprisal", REFERENCE, embeddings=False).outputs
    assert out.surprisal is not None and out.beams is not None
    for i, text in enumerate(texts):
        assert np.allclose(out.surprisal[i], hand_nll(model, text, out.beams[i][0].labels, 6), atol=1e-5)
    bare = [[model.tokenizer.token_id("<labels>"), *model.tokenizer.encode(t), model.tokenizer.eos_id] for t in texts]
    assert not np.allclose(surprisal_vectors(model, bare, out.beams, 6), out.surprisal, atol=1e-3)
