"""Multi-label metrics over label sets and label scores, and threshold tuning.

Every function takes plain Python label collections, so they serve the model, baselines and the
active-learning simulation alike.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np

#: Tail buckets by train count: (name, lowest count, highest count).
TAIL_BUCKETS = (("0", 0, 0), ("1", 1, 1), ("2_5", 2, 5), ("gt5", 6, None))


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
) -> dict[str, float]:
    """Every metric of the project in one flat dict.

    Macro-F1 averages over the labels that occur in ``gold`` (``macro_f1_n_labels`` says how many);
    ``macro_f1_tail_<bucket>`` does the same over the gold labels of one train-count bucket (0, 1,
    2-5, more than 5) and is absent when the bucket has no label. ``n_new_labels`` counts predicted
    labels outside the train label space.

    Args:
        gold: Gold label sets.
        pred: Predicted label sets (after the threshold).
        scores: Every scored label of each document (for P@k and F@k).
        train_counts: Train count of each known label.
        ks: The k of P@k and F@k.
    """
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
    for name, lo, hi in TAIL_BUCKETS:
        bucket = [x for x in gold_labels if train_counts.get(x, 0) >= lo and (hi is None or train_counts.get(x, 0) <= hi)]
        if bucket:
            out[f"macro_f1_tail_{name}"] = macro_f1(gold, pred, bucket)
            out[f"n_labels_tail_{name}"] = float(len(bucket))
    return out
