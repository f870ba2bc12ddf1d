"""TF-IDF + one-vs-rest logistic regression: the reference every quality benchmark prints beside ours.

The threshold is tuned on dev for micro-F1 exactly as for the generator (one global threshold on
the per-label probabilities, at least one label per document), and the same evaluator scores it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier
from sklearn.preprocessing import MultiLabelBinarizer

from xlgen.data import Document
from xlgen.decoding import cut
from xlgen.labels import LabelSpace
from xlgen.metrics import evaluate_predictions, tune_threshold


def _top_scores(proba: np.ndarray, classes: Sequence[str], k: int = 20) -> list[dict[str, float]]:
    top = np.argsort(-proba, axis=1)[:, :k]  # (n_docs, k)
    return [{classes[j]: float(proba[i, j]) for j in row} for i, row in enumerate(top)]


def _vectorizer() -> TfidfVectorizer:
    return TfidfVectorizer(ngram_range=(1, 2), min_df=2, max_features=300_000, sublinear_tf=True)


def tfidf_logreg(train: Sequence[Document], dev: Sequence[Document], test: Sequence[Document], c: float = 8.0,
                 n_jobs: int | None = None, solver: str = "liblinear", max_iter: int = 100) -> dict:
    """Fits on train (one binary problem per label), tunes the threshold on dev, returns test metrics
    and the fit time.

    Args:
        train: Train documents; dev: threshold tuning; test: scored.
        c: Inverse L2 strength of every logistic regression.
        n_jobs: Processes (liblinear: one label each; lbfgs: blocks of labels, threads).
        solver: ``liblinear`` (scikit-learn's one-vs-rest, one label at a time to convergence) or
            ``lbfgs``: the same models fitted by the linear retriever source's solver, L-BFGS over
            blocks of labels (:mod:`xlgen.encoders.sources.linear`), ``max_iter`` iterations: minutes
            on thousands of labels where liblinear takes hours.
        max_iter: L-BFGS iterations (``lbfgs``).
    """
    started = time.time()
    vec = _vectorizer()
    x_train = vec.fit_transform([d.text for d in train])
    x_dev, x_test = (vec.transform([d.text for d in docs]) for docs in (dev, test))
    if solver == "lbfgs":
        from xlgen.encoders.sources.linear import OvrModel

        mlb = MultiLabelBinarizer(sparse_output=True)
        y = mlb.fit_transform([d.labels for d in train])
        ovr = OvrModel.fit(x_train, y, c, n_jobs or 1, solver="lbfgs", dense_cols=0, max_iter=max_iter)

        def proba(x: object) -> np.ndarray:
            return 1.0 / (1.0 + np.exp(-(np.asarray(x @ ovr.weights.T) + ovr.bias)))  # (n, n_labels)
    elif solver == "liblinear":
        mlb = MultiLabelBinarizer()
        y = mlb.fit_transform([d.labels for d in train])
        clf = OneVsRestClassifier(LogisticRegression(C=c, max_iter=1000, solver="liblinear"), n_jobs=n_jobs)
        from joblib import parallel_config

        with parallel_config(max_nbytes=None):  # no read-only memory maps: liblinear writes into its input copies
            clf.fit(x_train, y)
        proba = clf.predict_proba
    else:
        raise ValueError(f"solver {solver!r} is neither liblinear nor lbfgs")
    fit_s = time.time() - started
    classes = list(mlb.classes_)
    dev_scores = _top_scores(proba(x_dev), classes)
    thr, dev_f1 = tune_threshold([d.labels for d in dev], dev_scores, 1)
    test_scores = _top_scores(proba(x_test), classes)
    pred = [[x for x, _ in cut(s, thr, 1)] for s in test_scores]
    space = LabelSpace.from_documents(train)
    counts = space.train_counts()
    metrics = evaluate_predictions([d.labels for d in test], pred, test_scores, counts)
    return {"metrics": metrics, "train_s": fit_s, "threshold": thr, "dev_micro_f1": dev_f1, "test_scores": test_scores}
