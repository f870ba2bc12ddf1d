"""Cold-start active learning for new labels: binary questions ("does this document carry label c?").

A label arrives by name with no labelled document. The retriever ranks pool documents by similarity to
the label's text and keeps the best ``top_n`` per new label as its candidate questions; an acquisition
orders the questions and annotators answer yes or no; every yes becomes an example of the label, and the
label's vector becomes the normalised mean of its name and its positives (the label-text source's
prototype, :func:`xlgen.encoders.retriever.label_vectors`), so the label is found better at once, with
no gradient step.

* :func:`greedy_order`: pick a new label uniformly at random, ask its highest-ranked unasked document,
  repeat (spreads the answers over the new labels, as the label-ranking pipeline does);
* :func:`random_order`: the same questions in random order (the baseline);
* :func:`recall_at_k`: recall@k of a label ranking against gold label sets;
* :func:`rocchio`: the label vectors with the no-answers subtracted (Rocchio's relevance feedback), an
  option of the simulation: measured on reuters21578 it lowers the new labels' recall (the documents
  answered no are the label's nearest neighbours, so subtracting them pulls the vector off its topic),
  which is why the service stores no-answers without moving the vectors.

This module is pure numpy; :mod:`xlgen.training.new_labels` runs the simulation on a dataset.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

ORDERS = ("greedy", "random")


def candidate_questions(scores: np.ndarray, labels: Sequence[str], top_n: int) -> dict[str, list[int]]:
    """The ``top_n`` pool documents of each new label, most similar first.

    Args:
        scores: Similarity of each pool document to each new label, ``(n_pool, n_new)``.
        labels: The new labels, one per column.
        top_n: Questions per label.
    """
    out: dict[str, list[int]] = {}
    for j, label in enumerate(labels):
        order = np.argsort(-scores[:, j], kind="stable")[:top_n]  # (top_n,)
        out[label] = [int(i) for i in order]
    return out


def greedy_order(questions: Mapping[str, Sequence[int]], seed: int = 0) -> list[tuple[str, int]]:
    """Every question, ordered greedily: a label drawn uniformly among those with questions left, then
    its best-ranked unasked document. A document asked for one label may still be asked for another."""
    rng = np.random.default_rng(seed)
    left = {label: list(docs) for label, docs in questions.items() if docs}
    out: list[tuple[str, int]] = []
    while left:
        label = sorted(left)[int(rng.integers(len(left)))]
        out.append((label, left[label].pop(0)))
        if not left[label]:
            del left[label]
    return out


def random_order(questions: Mapping[str, Sequence[int]], seed: int = 0) -> list[tuple[str, int]]:
    """Every question in a uniformly random order."""
    pairs = [(label, d) for label in sorted(questions) for d in questions[label]]
    perm = np.random.default_rng(seed).permutation(len(pairs))
    return [pairs[int(i)] for i in perm]


def order_questions(questions: Mapping[str, Sequence[int]], how: str, seed: int = 0) -> list[tuple[str, int]]:
    """The questions in the order ``how`` (``greedy`` or ``random``) asks them.

    Raises:
        ValueError: For an unknown order.
    """
    if how not in ORDERS:
        raise ValueError(f"unknown question order {how!r}; choose one of {', '.join(ORDERS)}")
    return greedy_order(questions, seed) if how == "greedy" else random_order(questions, seed)


def rocchio(positive_sums: np.ndarray, n_positive: np.ndarray, negative_sums: np.ndarray, n_negative: np.ndarray,
            weight: float) -> np.ndarray:
    """Label vectors ``mean(name, positives) - weight * mean(negatives)`` (a label without negatives keeps its mean).

    Args:
        positive_sums: Name vector plus the sum of the positives' vectors, ``(n_labels, dim)``.
        n_positive: Vectors in each of those sums (1 + positives), ``(n_labels,)``.
        negative_sums: Sum of the vectors of the documents answered no, ``(n_labels, dim)``.
        n_negative: How many, ``(n_labels,)``.
        weight: The negatives' weight (0: the prototype alone).
    """
    mean = positive_sums / np.maximum(n_positive, 1)[:, None]  # (n_labels, dim)
    if weight == 0:
        return mean
    return mean - weight * negative_sums / np.maximum(n_negative, 1)[:, None]


def recall_at_k(scores: np.ndarray, labels: Sequence[str], gold: Sequence[set[str]], only: set[str], k: int = 10) -> float:
    """Mean over documents of the share of their gold labels in ``only`` that rank in their top ``k``.

    Args:
        scores: ``(n_docs, n_labels)`` label scores (all labels compete for the top k).
        labels: The labels, one per column.
        gold: Each document's gold labels.
        only: The labels measured (documents without any of them are left out).
        k: Cut-off.

    Returns:
        The recall, or NaN when no document carries a measured label.
    """
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]  # (n_docs, k)
    values = []
    for i, g in enumerate(gold):
        wanted = g & only
        if wanted:
            hit = {labels[j] for j in top[i]}
            values.append(len(wanted & hit) / len(wanted))
    return float(np.mean(values)) if values else float("nan")
