"""The corpus-statistics embedding initialisation: the PMI's truncated SVD without a dense token x label matrix."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from xlgen.initialization import pmi_components


def dense_pmi(counts: np.ndarray, n_tok: np.ndarray, prior: np.ndarray, smoothing: float) -> np.ndarray:
    """The formula as the dense path computes it."""
    return np.log((counts + smoothing * prior) / (n_tok[:, None] + smoothing) / prior)  # (vocab, n_labels)


def test_sparse_plus_rank_one_form_gives_the_dense_pmis_components() -> None:
    rng = np.random.default_rng(0)
    vocab, n_labels, n_docs, smoothing, k = 300, 500, 2000, 5.0, 12
    x = sp.random(n_docs, vocab, density=0.05, random_state=1, format="csr")
    x.data[:] = 1.0
    y = sp.csr_matrix((np.ones(n_docs), (np.arange(n_docs), rng.integers(0, n_labels, n_docs))), shape=(n_docs, n_labels))
    counts = (x.T @ y).tocsr()  # (vocab, n_labels)
    n_tok = np.asarray(x.sum(axis=0)).ravel()
    prior = np.asarray(y.sum(axis=0)).ravel() / n_docs
    prior = np.where(prior > 0, prior, 1.0 / n_docs)
    pmi = dense_pmi(counts.toarray(), n_tok, prior, smoothing)
    u, s, _ = np.linalg.svd(pmi, full_matrices=False)
    exact = u[:, :k] * s[:k]  # (vocab, k)
    # converged (many power iterations), the components are the exact ones up to sign
    got = pmi_components(counts, n_tok, prior, smoothing, k, seed=0, n_iter=60)
    assert got.shape == (vocab, k)
    np.testing.assert_allclose(np.linalg.norm(got, axis=0)[:4], s[:4], rtol=1e-6)
    for j in range(4):
        assert abs(got[:, j] @ exact[:, j]) / (s[j] ** 2) > 0.9999
    # at the default five iterations, as scikit-learn's TruncatedSVD: the dominant component exactly, the
    # others within a few percent on this flat random spectrum
    fast = pmi_components(counts, n_tok, prior, smoothing, k, seed=0)
    np.testing.assert_allclose(np.linalg.norm(fast[:, 0]), s[0], rtol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(fast, axis=0), s[:k], rtol=0.05)
    np.testing.assert_array_equal(fast, pmi_components(counts, n_tok, prior, smoothing, k, seed=0))  # seeded
