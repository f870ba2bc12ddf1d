"""Each acquisition function on hand-made decoding outputs whose right order is known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from xlgen.active.acquisition import NEEDS, STRATEGIES, PoolOutputs, get_strategy
from xlgen.decoding import Candidate


def beams(*norm_logprobs: float, n_tokens: int = 4) -> list[Candidate]:
    return [Candidate(("x",), lp * n_tokens, n_tokens) for lp in norm_logprobs]


def outputs_with_beams(*docs: list[Candidate]) -> PoolOutputs:
    return PoolOutputs([f"doc {i}" for i in range(len(docs))], beams=list(docs))


def outputs_with_members(*members: list[dict[str, float]]) -> PoolOutputs:
    return PoolOutputs([f"doc {i}" for i in range(len(members[0]))], members=list(members))


def test_registry_names_and_docstrings():
    assert set(STRATEGIES) == {"random", "subword", "margin", "entropy", "cluster", "vote", "variance", "beal_adapted", "beal", "beal_det", "bald",
                               "label_entropy", "coreset", "dal", "cvirs", "alps"}
    for name, cls in STRATEGIES.items():
        s = get_strategy(name)
        assert s.name == name and s.needs in NEEDS
        assert "s(x)" in (cls.__doc__ or ""), f"{name} documents no formula"
    with pytest.raises(ValueError, match="unknown acquisition"):
        get_strategy("nope")


def test_random_is_seeded_and_shaped():
    out = PoolOutputs(["a", "b", "c", "d"])
    a, b = get_strategy("random", seed=3).score(out), get_strategy("random", seed=3).score(out)
    assert a.shape == (4,) and np.array_equal(a, b)
    assert not np.array_equal(a, get_strategy("random", seed=4).score(out))


def test_subword_ratio():
    out = PoolOutputs(["common words", "rare wordsmithery"], n_pieces=np.array([2, 7]))
    assert get_strategy("subword").score(out).tolist() == [1.0, 3.5]
    with pytest.raises(ValueError, match="n_pieces"):
        get_strategy("subword").score(PoolOutputs(["x"]))


def test_beam_margin_orders_by_the_normalised_gap():
    confident, torn, single = beams(-0.1, -2.0), beams(-0.5, -0.6, -3.0), beams(-0.2)
    s = get_strategy("margin").score(outputs_with_beams(confident, torn, single))
    assert s[1] > s[0] > s[2] == -np.inf
    assert s[1] == pytest.approx(-0.1)


def test_beam_margin_normalises_length_itself():
    # raw sums: -4.0 (8 tokens) vs -1.0 (1 token) -> normalised -0.5 vs -1.0: the long one is best
    long_best = [Candidate(("a", "b"), -4.0, 8), Candidate(("a",), -1.0, 1)]
    s = get_strategy("margin").score(outputs_with_beams(long_best))
    assert s[0] == pytest.approx(-0.5)


def test_nbest_entropy():
    uniform, peaked = beams(-1.0, -1.0, -1.0), beams(-0.01, -5.0, -6.0)
    s = get_strategy("entropy").score(outputs_with_beams(uniform, peaked, []))
    assert s[0] == pytest.approx(math.log(3))
    assert s[0] > s[1] > 0 and s[2] == 0


def test_vote_disagreement():
    agree = [{"a": 0.9}, {"a": 0.8}]
    split = [{"a": 0.9}, {"b": 0.7}]
    m1, m2 = [agree[0], split[0]], [agree[1], split[1]]
    s = get_strategy("vote").score(outputs_with_members(m1, m2))
    assert s[0] == pytest.approx(0.0, abs=1e-9)
    assert s[1] == pytest.approx(math.log(2))  # each label has half the votes: maximal entropy


def test_vote_disagreement_grows_with_disagreement():
    three = [[{"a": 1, "b": 1}], [{"a": 1, "b": 1}], [{"a": 1}]]  # b: 2/3 of the votes
    thirds = [[{"a": 1}], [{"b": 1}], [{"c": 1}]]  # each label 1/3
    s_three = get_strategy("vote").score(outputs_with_members(*three))[0]
    s_thirds = get_strategy("vote").score(outputs_with_members(*thirds))[0]
    h = -(1 / 3) * math.log(1 / 3) - (2 / 3) * math.log(2 / 3)
    assert s_three == pytest.approx(h / 2) and s_thirds == pytest.approx(h)


def test_label_set_variance():
    members = [
        [{"a": 1, "b": 1}, {"a": 1}, {}],
        [{"a": 1, "b": 1}, {"b": 1}, {}],
        [{"a": 1, "b": 1}, {"a": 1, "b": 1}, {}],
    ]
    s = get_strategy("variance").score(outputs_with_members(*members))
    # doc 1: J({a},{b}) = 0, J({a},{a,b}) = J({b},{a,b}) = 1/2 -> 1 - 1/3
    assert s.tolist() == pytest.approx([0.0, 2 / 3, 0.0])


def test_expected_confidence_puts_the_least_confident_first():
    confident = {"a": 1.0}
    unsure = {"a": 0.4, "b": 0.3}
    s = get_strategy("beal_adapted").score(outputs_with_members([confident, unsure], [confident, unsure]))
    assert s[0] == pytest.approx(-1.0)  # R(1) / log2(2)
    expected = (2**0.4 - 1) + (2**0.3 - 1) / math.log2(3)
    assert s[1] == pytest.approx(-expected)
    assert s[1] > s[0]


def test_ensemble_strategies_need_members():
    for name in ("vote", "variance", "beal_adapted"):
        with pytest.raises(ValueError, match="members"):
            get_strategy(name).score(PoolOutputs(["x"]))


def test_subword_counts_pieces_of_the_pretrained_vocabulary() -> None:
    from xlgen.encoders.packaged import wordpiece_counts

    counts = wordpiece_counts(["the cat sat", "electroencephalography", ""])
    assert counts[0] == 3 and counts[1] > 3 and counts[2] == 0  # common words are one piece each; a rare one splits


def test_beal_expected_confidence_follows_the_paper() -> None:
    from xlgen.active.acquisition import expected_confidence

    r = lambda y: 2.0**y - 1.0  # noqa: E731 - the paper's relevance
    # two passes over one document: mean relevance ranks a (0.9, 0.7) first, b (0.2, 0.6) second, c (0, 0.1) third
    passes = [[{"a": 0.9, "b": 0.2}], [{"a": 0.7, "b": 0.6, "c": 0.1}]]
    want = ((r(0.9) / 1 + r(0.2) / 2) + (r(0.7) / 1 + r(0.6) / 2 + r(0.1) / 3)) / 2
    assert expected_confidence(passes, 1)[0] == pytest.approx(want)
    # every label of the document counts, not only those above a threshold; no label: confidence 0
    assert expected_confidence([[{}]], 1)[0] == 0.0
    confident, unsure = {"a": 0.95}, {"a": 0.5, "b": 0.45}
    s = get_strategy("beal").score(PoolOutputs(["x", "y"], passes=[[confident, unsure], [confident, unsure]]))
    assert s[1] > s[0]  # the less confident document first
    assert get_strategy("beal_det").needs == "beams" and get_strategy("beal").needs == "passes"


def test_bald_is_zero_when_the_passes_agree_and_grows_with_their_disagreement() -> None:
    agree = {"a": 0.7}
    s = get_strategy("bald").score(PoolOutputs(["x", "y"], passes=[[agree, {"a": 0.95}], [agree, {"a": 0.05}]]))
    assert s[0] == pytest.approx(0.0, abs=1e-9) and s[1] > 0.4  # H(0.5) - H(0.95) = 0.49 nats


def test_coreset_takes_the_farthest_documents_one_after_the_other() -> None:
    pool = np.array([[1.0, 0.0], [0.99, 0.1], [0.0, 1.0], [0.1, 0.99], [-1.0, 0.0]])  # (n_docs, dim)
    labelled = np.array([[1.0, 0.0]])
    outputs = PoolOutputs(list("abcde"), embeddings=pool, labelled_embeddings=labelled)
    strategy = get_strategy("coreset")
    d = strategy.score(outputs)
    assert d[0] == pytest.approx(0.0, abs=1e-6) and d.argmax() == 4  # the opposite direction is farthest
    picked = strategy.pick(outputs, np.arange(5), 2).tolist()
    assert picked == [4, 2]  # then the one farthest from both the labelled and the first pick, not its near twin
    assert strategy.pick(outputs, np.array([1, 3]), 5).tolist() == [3, 1]  # only candidates, at most all of them


def test_dal_prefers_documents_unlike_the_labelled_ones() -> None:
    rng = np.random.default_rng(0)
    labelled = rng.normal([3.0, 0.0], 0.3, size=(30, 2))
    pool = np.concatenate([rng.normal([3.0, 0.0], 0.3, size=(5, 2)), rng.normal([-3.0, 0.0], 0.3, size=(5, 2))])
    s = get_strategy("dal").score(PoolOutputs([str(i) for i in range(10)], embeddings=pool, labelled_embeddings=labelled))
    assert s[5:].min() > s[:5].max()


def test_cvirs_ranks_uncertain_and_inconsistent_documents_first() -> None:
    cvirs = get_strategy("cvirs")
    probs = [{"a": 0.49, "b": 0.45}, {"a": 0.99, "b": 0.01}, {"a": 0.02, "b": 0.97}]
    u = cvirs.score(PoolOutputs(["x", "y", "z"], passes=[probs]))
    assert u.argmax() == 0  # margins closest to 0 on both labels
    # the labelled documents all carry {a}: predicting {b} is inconsistent with them, predicting {a} is not
    s = cvirs.score(PoolOutputs(["x", "y", "z"], passes=[probs], labelled_labels=[{"a"}, {"a"}]))
    assert s[1] == pytest.approx(0.0) and s[2] > 0.0 and s[0] > 0.0


def test_label_entropy_sums_the_labels_binary_entropies() -> None:
    s = get_strategy("label_entropy")
    probs = [{"a": 0.5, "b": 0.5}, {"a": 0.5}, {"a": 0.99, "b": 0.01}, {}]
    scores = s.score(PoolOutputs(["w", "x", "y", "z"], passes=[probs]))
    assert scores[0] == pytest.approx(2 * np.log(2)) and scores[1] == pytest.approx(np.log(2))
    assert scores[2] == pytest.approx(2 * -(0.99 * np.log(0.99) + 0.01 * np.log(0.01)))
    assert scores[3] == 0.0
    assert list(np.argsort(-scores)) == [0, 1, 2, 3]  # torn over two labels, then one, then sure, then nothing
    with pytest.raises(ValueError, match="passes"):
        s.score(PoolOutputs(["x"]))
