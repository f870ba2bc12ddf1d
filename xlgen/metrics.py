"""Multi-label metrics over label sets and label scores, and threshold tuning.

Every function takes plain Python label collections, so they serve the model, baselines and the
active-learning simulation alike. The ranking metrics of extreme multi-label classification (nDCG@k,
and PSP@k with the propensity model of Jain et al., 2016) come from ``napkinxc.metrics``, computed on
integer label ids (its helpers do not take string labels everywhere).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np

#: Tail buckets by train count: (name, lowest count, highest count).
TAIL_BUCKETS = (("0", 0, 0), ("1", 1, 1), ("2_5", 2, 5), ("gt5", 6, None))

PROPENSITY_A = 0.55
"""Jain et al. (2016)'s propensity parameter A for data sets other than Wikipedia and Amazon."""
PROPENSITY_B = 1.5
"""Jain et al. (2016)'s propensity parameter B for data sets other than Wikipedia and Amazon."""


class TrainCounts(dict[str, int]):
    """Train count of each label, with the number of train documents they were counted in (the N of
    PSP@k's propensities), so that one argument carries both wherever counts travel.

    Args:
        counts: Train documents of each label.
        n_documents: Train documents in all.
    """

    def __init__(self, counts: Mapping[str, int], n_documents: int) -> None:
        super().__init__(counts)
        self.n_documents = n_documents


def _counts(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> tuple[Counter, Counter, Counter]:
    tp: Counter[str] = Counter()
    fp: Counter[str] = Counter()
    fn: Counter[str] = Counter()
    for g, p in zip(gold, pred, strict=True):
        gs, ps = set(g), set(p)
        tp.update(gs & ps)
        fp.update(ps - gs)
        fn.update(gs - ps)
    return tp, fp, fn


def _f1(tp: float, fp: float, fn: float) -> float:
    denom = 2 * tp + fp + fn
    return 2 * tp / denom if denom else 0.0


def micro_f1(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> float:
    tp, fp, fn = _counts(gold, pred)
    return _f1(sum(tp.values()), sum(fp.values()), sum(fn.values()))


def macro_f1(
    gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]], labels: Sequence[str] | None = None
) -> float:
    """Mean per-label F1 over ``labels``; by default the labels that occur in ``gold``."""
    tp, fp, fn = _counts(gold, pred)
    if labels is None:
        labels = sorted({x for g in gold for x in g})
    if not labels:
        return 0.0
    return float(np.mean([_f1(tp[x], fp[x], fn[x]) for x in labels]))


def ranked(scores: Mapping[str, float]) -> list[str]:
    """Labels by decreasing score, ties by label string (deterministic)."""
    return [k for k, _ in sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))]


def precision_at_k(gold: Sequence[Sequence[str]], scores: Sequence[Mapping[str, float]], k: int) -> float:
    """Mean over documents of |top-k ∩ gold| / k (missing ranks count as misses)."""
    return float(np.mean([len(set(ranked(s)[:k]) & set(g)) / k for g, s in zip(gold, scores, strict=True)]))


def f1_at_k(gold: Sequence[Sequence[str]], scores: Sequence[Mapping[str, float]], k: int) -> float:
    """Mean over documents of the F1 between the top-k labels and the gold set."""
    vals = []
    for g, s in zip(gold, scores, strict=True):
        top = set(ranked(s)[:k])
        hit = len(top & set(g))
        vals.append(2 * hit / (len(top) + len(g)) if (top or g) else 0.0)
    return float(np.mean(vals))


def _label_ids(gold: Sequence[Sequence[str]], scores: Sequence[Mapping[str, float]], k: int,
               train_counts: Mapping[str, int]) -> tuple[dict[str, int], list[list[int]], list[list[int]]]:
    """Integer ids for every label (train labels first), the gold id sets and the top-``k`` id rankings."""
    ids = {label: i for i, label in enumerate(train_counts)}
    for g, s in zip(gold, scores, strict=True):
        for label in (*g, *s):
            ids.setdefault(label, len(ids))
    true = [sorted({ids[x] for x in g}) for g in gold]
    top = [[ids[x] for x in ranked(s)[:k]] for s in scores]
    return ids, true, top


def inverse_propensities(train_counts: Mapping[str, int], n_train: int, labels: Sequence[str],
                         a: float = PROPENSITY_A, b: float = PROPENSITY_B) -> np.ndarray:
    """Jain et al. (2016)'s inverse propensity ``1 + C (N_l + B)^-A``, ``C = (log N - 1)(B + 1)^A``, of each label.

    Args:
        train_counts: Train documents of each label (``N_l``; a label absent from it counts 0).
        n_train: Train documents in all (``N``), at least the largest count.
        labels: The labels to weigh, in id order.
        a: Parameter A.
        b: Parameter B.

    Returns:
        ``(len(labels),)`` weights, rarer labels heavier.
    """
    from napkinxc.metrics import Jain_et_al_inverse_propensity
    from scipy.sparse import csr_matrix

    counts = np.array([train_counts.get(x, 0) for x in labels], dtype=np.int64)
    if n_train < max(int(counts.max(initial=0)), 1):
        raise ValueError(f"{n_train} train documents cannot hold a label seen {int(counts.max(initial=0))} times")
    # napkinxc counts the labels of a train matrix: one whose column l is set in its first N_l rows has
    # exactly these counts over N rows
    rows = np.concatenate([np.arange(c) for c in counts]) if len(counts) else np.zeros(0, np.int64)
    cols = np.repeat(np.arange(len(counts)), counts)
    y = csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n_train, len(counts)))  # (N, n_labels)
    return np.asarray(Jain_et_al_inverse_propensity(y, A=a, B=b), dtype=np.float64)


def ranking_metrics(gold: Sequence[Sequence[str]], scores: Sequence[Mapping[str, float]], ks: Sequence[int],
                    train_counts: Mapping[str, int], n_train: int = 0) -> dict[str, float]:
    """nDCG@k for every k in ``ks``, and PSP@k (normalised, as XMC tables report it) when ``n_train`` is known.

    Labels rank by decreasing score, ties by label string, as for P@k.

    Args:
        gold: Gold label sets.
        scores: Every scored label of each document.
        ks: The k values.
        train_counts: Train count of each known label (the propensities).
        n_train: Train documents in all; 0 leaves PSP@k out (the propensities need it).
    """
    from napkinxc.metrics import ndcg_at_k, psprecision_at_k

    if not gold:
        return {}
    k_max = max(ks)
    ids, true, top = _label_ids(gold, scores, k_max, train_counts)
    out = {}
    ndcg = ndcg_at_k(true, top, k=k_max)  # (k_max,): nDCG at 1..k_max
    for k in ks:
        out[f"ndcg_at_{k}"] = float(ndcg[k - 1])
    if n_train > 0:
        inv_ps = inverse_propensities(train_counts, n_train, list(ids))
        psp = psprecision_at_k(true, top, inv_ps, k=k_max)  # (k_max,): PSP at 1..k_max
        for k in ks:
            out[f"psp_at_{k}"] = float(psp[k - 1])
    return out


def tune_threshold(
    gold: Sequence[Sequence[str]], scores: Sequence[Mapping[str, float]], min_labels: int = 1
) -> tuple[float, float]:
    """The global score threshold that maximises micro-F1, keeping at least ``min_labels`` per document.

    Tries every distinct score as the threshold in one sweep: sorting all (score, hit) pairs once
    makes the sweep O(n log n) in the number of scored labels.

    Returns:
        ``(threshold, micro_f1)``.
    """
    n_gold = sum(len(set(g)) for g in gold)
    forced_tp = forced_n = 0
    rows: list[tuple[float, bool]] = []  # (score, is_hit) of labels subject to the threshold
    for g, s in zip(gold, scores, strict=True):
        gs = set(g)
        r = ranked(s)
        for label in r[:min_labels]:
            forced_n += 1
            forced_tp += label in gs
        rows.extend((s[label], label in gs) for label in r[min_labels:])
    if not rows:
        return 1.0, _f1(forced_tp, forced_n - forced_tp, n_gold - forced_tp)
    rows.sort(key=lambda r: -r[0])
    vals = np.array([r[0] for r in rows])
    hits = np.cumsum([r[1] for r in rows])
    n = np.arange(1, len(rows) + 1)
    tp = forced_tp + hits
    f1 = 2 * tp / (n_gold + forced_n + n)  # 2tp / (2tp + fp + fn) = 2tp / (n_pred + n_gold)
    # a threshold must keep every row with an equal score, so only the last of a run of ties counts
    last_of_tie = np.append(vals[1:] != vals[:-1], True)
    f1 = np.where(last_of_tie, f1, -1.0)
    best = int(np.argmax(f1))
    base = _f1(forced_tp, forced_n - forced_tp, n_gold - forced_tp)
    if base >= f1[best]:
        return float(vals[0]) + 1e-9, base
    return float(vals[best]), float(f1[best])


def evaluate_predictions(
    gold: Sequence[Sequence[str]],
    pred: Sequence[Sequence[str]],
    scores: Sequence[Mapping[str, float]],
    train_counts: Mapping[str, int],
    ks: Sequence[int] = (1, 3, 5),
    n_train: int | None = None,
) -> dict[str, float]:
    """Every metric of the project in one flat dict.

    Macro-F1 averages over the labels that occur in ``gold`` (``macro_f1_n_labels`` says how many);
    ``macro_f1_tail_<bucket>`` does the same over the gold labels of one train-count bucket (0, 1,
    2-5, more than 5) and is absent when the bucket has no label. ``n_new_labels`` counts predicted
    labels outside the train label space. The ranking metrics: P@k, F@k, nDCG@k, and PSP@k
    (:func:`ranking_metrics`) when ``n_train`` is given.

    Args:
        gold: Gold label sets.
        pred: Predicted label sets (after the threshold).
        scores: Every scored label of each document (for P@k, F@k, nDCG@k and PSP@k).
        train_counts: Train count of each known label.
        ks: The k of the ranking metrics.
        n_train: Train documents the counts come from; by default ``train_counts.n_documents`` for
            :class:`TrainCounts`; 0 or unknown leaves PSP@k out.
    """
    if n_train is None:
        n_train = getattr(train_counts, "n_documents", 0)
    gold_labels = sorted({x for g in gold for x in g})
    out = {
        "micro_f1": micro_f1(gold, pred),
        "macro_f1": macro_f1(gold, pred, gold_labels),
        "macro_f1_n_labels": float(len(gold_labels)),
        "n_docs": float(len(gold)),
        "n_new_labels": float(sum(1 for p in pred for x in p if x not in train_counts)),
        "labels_per_doc": float(np.mean([len(p) for p in pred])) if pred else 0.0,
    }
    tp, fp, fn = _counts(gold, pred)
    out["micro_precision"] = sum(tp.values()) / max(sum(tp.values()) + sum(fp.values()), 1)
    out["micro_recall"] = sum(tp.values()) / max(sum(tp.values()) + sum(fn.values()), 1)
    for k in ks:
        out[f"p_at_{k}"] = precision_at_k(gold, scores, k)
        out[f"f1_at_{k}"] = f1_at_k(gold, scores, k)
    out.update(ranking_metrics(gold, scores, ks, train_counts, int(n_train or 0)))
    for name, lo, hi in TAIL_BUCKETS:
        bucket = [x for x in gold_labels if train_counts.get(x, 0) >= lo and (hi is None or train_counts.get(x, 0) <= hi)]
        if bucket:
            out[f"macro_f1_tail_{name}"] = macro_f1(gold, pred, bucket)
            out[f"n_labels_tail_{name}"] = float(len(bucket))
    return out
