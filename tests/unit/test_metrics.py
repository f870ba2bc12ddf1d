import itertools
import math
import random

import numpy as np
import pytest
from sklearn.metrics import f1_score
from sklearn.preprocessing import MultiLabelBinarizer

from xlgen.decoding import cut
from xlgen.metrics import evaluate_predictions, f1_at_k, macro_f1, micro_f1, precision_at_k, tune_threshold

LABELS = [f"l{i}" for i in range(12)]


def _random_case(rng, n=40):
    gold = [rng.sample(LABELS, rng.randint(1, 4)) for _ in range(n)]
    pred = [rng.sample(LABELS, rng.randint(0, 4)) for _ in range(n)]
    return gold, pred


@pytest.mark.parametrize("seed", range(10))
def test_f1_matches_sklearn(seed):
    rng = random.Random(seed)
    gold, pred = _random_case(rng)
    mlb = MultiLabelBinarizer(classes=LABELS).fit([LABELS])
    y, p = mlb.transform(gold), mlb.transform(pred)
    assert micro_f1(gold, pred) == pytest.approx(f1_score(y, p, average="micro", zero_division=0))
    present = [i for i in range(len(LABELS)) if y[:, i].any()]
    expected_macro = f1_score(y[:, present], p[:, present], average="macro", zero_division=0)
    assert macro_f1(gold, pred) == pytest.approx(expected_macro)


def test_precision_and_f1_at_k_by_hand():
    gold = [["a", "b"], ["c"]]
    scores = [{"a": 0.9, "x": 0.8, "b": 0.1}, {"y": 0.5}]
    assert precision_at_k(gold, scores, 1) == pytest.approx((1 + 0) / 2)
    assert precision_at_k(gold, scores, 3) == pytest.approx((2 / 3 + 0) / 2)
    # doc 1 top-1 {a} vs {a, b}: F1 = 2*1/(1+2); doc 2: 0
    assert f1_at_k(gold, scores, 1) == pytest.approx((2 / 3) / 2)


@pytest.mark.parametrize("seed", range(5))
def test_tuned_threshold_is_the_best_on_a_grid(seed):
    rng = random.Random(seed)
    gold = [rng.sample(LABELS, rng.randint(1, 3)) for _ in range(30)]
    scores = [{x: round(rng.random(), 2) for x in rng.sample(LABELS, 5)} for _ in range(30)]
    thr, best = tune_threshold(gold, scores, min_labels=1)
    pred = [[x for x, _ in cut(s, thr, 1)] for s in scores]
    assert micro_f1(gold, pred) == pytest.approx(best)
    for t in np.linspace(0, 1.01, 103):
        grid_pred = [[x for x, _ in cut(s, t, 1)] for s in scores]
        assert micro_f1(gold, grid_pred) <= best + 1e-12


def test_cut_keeps_min_labels():
    s = {"a": 0.2, "b": 0.1}
    assert cut(s, 0.5, 1) == [("a", 0.2)]
    assert cut(s, 0.5, 0) == []
    assert cut(s, 0.15, 1) == [("a", 0.2)]


def test_evaluator_dict_has_tail_buckets_and_new_labels():
    gold = [["a"], ["b"], ["c"], ["zero"]]
    pred = [["a"], ["b", "brand-new"], ["x"], ["zero"]]
    scores = [dict.fromkeys(p, 1.0) for p in pred]
    counts = {"a": 10, "b": 1, "c": 3, "x": 7}
    m = evaluate_predictions(gold, pred, scores, counts)
    assert m["n_new_labels"] == 2  # "brand-new" and "zero" are outside the train label space
    assert m["macro_f1_tail_gt5"] == 1.0 and m["n_labels_tail_gt5"] == 1  # only "a" is gold among >5
    assert m["macro_f1_tail_1"] == 1.0  # "b" found; the extra "brand-new" is a false positive of its own label
    assert m["macro_f1_tail_2_5"] == 0.0
    assert m["macro_f1_tail_0"] == 1.0
    assert m["macro_f1_n_labels"] == 4
    assert all(isinstance(v, float) for v in m.values())
    assert set(itertools.chain(["p_at_1", "f1_at_5", "micro_f1", "macro_f1"])) <= set(m)


# ------------------------------------------------------------------- nDCG@k and PSP@k, by hand

RANKING_GOLD = [["a", "b"], ["c"]]
RANKING_SCORES = [{"a": 0.9, "x": 0.8, "y": 0.7, "b": 0.1}, {"y": 0.5, "c": 0.4}]
RANKING_COUNTS = {"a": 4, "b": 1, "x": 3, "y": 2}  # "c" never seen in train
N_TRAIN = 10


def _q(n_l: int) -> float:
    """Jain et al. (2016): 1 + C (N_l + B)^-A with C = (ln N - 1)(B + 1)^A, A = 0.55, B = 1.5, N = 10."""
    return 1 + (math.log(N_TRAIN) - 1) * 2.5**0.55 * (n_l + 1.5) ** -0.55


def test_ndcg_at_k_by_hand():
    # doc 1 ranks a, x, y: one hit at rank 1 of two gold labels; doc 2 ranks y, c: its one gold label at rank 2
    doc1_at3 = 1 / (1 + 1 / math.log2(3))
    doc2_at3 = (1 / math.log2(3)) / 1
    m = evaluate_predictions(RANKING_GOLD, [["a"], ["y"]], RANKING_SCORES, RANKING_COUNTS, ks=(1, 3), n_train=N_TRAIN)
    assert m["ndcg_at_1"] == pytest.approx((1 + 0) / 2)
    assert m["ndcg_at_3"] == pytest.approx((doc1_at3 + doc2_at3) / 2)
    assert m["ndcg_at_3"] == pytest.approx(0.622038, abs=1e-6)


def test_psp_at_k_by_hand():
    assert _q(1) == pytest.approx(math.log(N_TRAIN))  # a label seen once weighs ln N
    q_a, q_b, q_c = _q(4), _q(1), _q(0)
    assert q_c > q_b > q_a  # rarer labels weigh more
    m = evaluate_predictions(RANKING_GOLD, [["a"], ["y"]], RANKING_SCORES, RANKING_COUNTS, ks=(1, 3), n_train=N_TRAIN)
    # normalised PSP@k: the weights of the hits in the top k over the best weights the gold sets allow, summed over documents
    assert m["psp_at_1"] == pytest.approx((q_a + 0) / (q_b + q_c))
    assert m["psp_at_3"] == pytest.approx((q_a / 3 + q_c / 3) / ((q_b + q_a) / 3 + q_c / 3))
    assert m["psp_at_3"] == pytest.approx(0.664937, abs=1e-5)


def test_psp_needs_the_train_size():
    m = evaluate_predictions(RANKING_GOLD, [["a"], ["y"]], RANKING_SCORES, RANKING_COUNTS)
    assert "ndcg_at_5" in m and not any(k.startswith("psp_") for k in m)
    with pytest.raises(ValueError, match="cannot hold"):
        evaluate_predictions(RANKING_GOLD, [["a"], ["y"]], RANKING_SCORES, RANKING_COUNTS, n_train=3)


@pytest.mark.parametrize("seed", range(3))
def test_precision_at_k_agrees_with_napkinxc(seed):
    from napkinxc.metrics import precision_at_k as napkin_precision

    rng = random.Random(seed)
    gold, _ = _random_case(rng)
    scores = [{x: rng.random() for x in rng.sample(LABELS, 6)} for _ in gold]
    ids = {x: i for i, x in enumerate(LABELS)}
    from xlgen.metrics import ranked

    expected = napkin_precision([[ids[x] for x in g] for g in gold], [[ids[x] for x in ranked(s)] for s in scores], k=5)
    assert [precision_at_k(gold, scores, k) for k in range(1, 6)] == pytest.approx(list(expected))
