"""The linear source's L-BFGS solver: the labels' L2 logistic regressions fitted together reach the
same optimum as liblinear fitting them one at a time (offline, synthetic data)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from xlgen.encoders import RetrieverConfig
from xlgen.encoders.sources.linear import LABEL_BLOCK, OvrModel


def _problem(n: int = 400, vocab: int = 60, dense: int = 8, labels: int = 5, seed: int = 0) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    rng = np.random.default_rng(seed)
    tfidf = sp.random(n, vocab, density=0.08, random_state=seed, dtype=np.float32, format="csr")
    emb = rng.normal(size=(n, dense)).astype(np.float32)
    x = sp.hstack([tfidf, sp.csr_matrix(emb)], format="csr", dtype=np.float32)
    truth = rng.normal(size=(vocab + dense, labels))
    logits = np.asarray(x @ truth) + rng.normal(scale=0.5, size=(n, labels))
    y = sp.csr_matrix((logits > np.quantile(logits, 0.7, axis=0)).astype(np.float32))
    return x, y


def _objective(x: sp.csr_matrix, y: np.ndarray, w: np.ndarray, b: np.ndarray, c: float) -> np.ndarray:
    """Each label's C * sum BCE + ||w||^2 / 2 (the bias unpenalised), ``(n_labels,)``."""
    z = np.asarray(x @ w.T, dtype=np.float64) + b
    return c * (np.logaddexp(0, z) - y * z).sum(axis=0) + 0.5 * (w.astype(np.float64) ** 2).sum(axis=1)


def test_lbfgs_reaches_the_liblinear_optimum() -> None:
    x, y = _problem()
    yd = np.asarray(y.todense())
    c = 1.0
    joint = OvrModel.fit(x, y, c, jobs=1, solver="lbfgs", dense_cols=8, max_iter=500)
    ref = OvrModel.fit(x, y, c, jobs=1, solver="liblinear")
    assert joint.weights.shape == ref.weights.shape == (5, 68)
    ours, theirs = _objective(x, yd, joint.weights, joint.bias, c), _objective(x, yd, ref.weights, ref.bias, c)
    # liblinear also penalises its bias, so its solution can only be as good as ours on this objective
    assert np.all(ours <= theirs * 1.001 + 1e-6), (ours, theirs)
    agree = np.corrcoef(np.asarray(x @ joint.weights.T).ravel(), np.asarray(x @ ref.weights.T).ravel())[0, 1]
    assert agree > 0.99


def test_label_blocks_give_the_same_model_as_one_fit() -> None:
    x, y = _problem(labels=LABEL_BLOCK + 3, seed=1)
    whole = OvrModel.fit(x, y, 1.0, jobs=2, solver="lbfgs", dense_cols=8, max_iter=300)
    assert whole.weights.shape == (LABEL_BLOCK + 3, 68) and whole.bias.shape == (LABEL_BLOCK + 3,)
    # the labels are independent problems: fitting the last three alone gives the same weights
    tail = OvrModel.fit(x, y[:, LABEL_BLOCK:], 1.0, jobs=1, solver="lbfgs", dense_cols=8, max_iter=300)
    np.testing.assert_allclose(whole.weights[LABEL_BLOCK:], tail.weights, atol=1e-4)


def test_a_label_without_positives_gets_a_low_score() -> None:
    x, y = _problem()
    y = sp.hstack([y, sp.csr_matrix((x.shape[0], 1), dtype=np.float32)], format="csr")
    model = OvrModel.fit(x, y, 1.0, jobs=1, solver="lbfgs", dense_cols=8)
    assert (model.scores(x, top=6).toarray()[:, -1] < 0.01).all()


def test_unknown_solver_is_refused() -> None:
    with pytest.raises(ValueError, match="linear_solver"):
        RetrieverConfig(linear_solver="sgd")
    with pytest.raises(ValueError, match="linear_max_iter"):
        RetrieverConfig(linear_max_iter=0)
