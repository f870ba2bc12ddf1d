"""Corpus-statistics initialisation of the token embeddings of a T5 built from scratch.

Without pretrained weights a small T5 spends its first epochs learning which words matter for
which labels. This module computes that knowledge in seconds from the training data alone and
writes it into the (tied) token embedding matrix:

* token-label association: smoothed pointwise mutual information between a token occurring in a
  document (its text or its target) and each label, reduced by truncated SVD;
* token co-occurrence: latent semantic analysis (truncated SVD of the TF-IDF token-document matrix).

Because T5 ties input and output embeddings, a label's own pieces and the words that predict it
start near each other, so the decoder's first guesses already follow the input. Remaining
dimensions keep their random initialisation; every column is scaled to the random init's spread.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import TfidfTransformer

from xlgen.data import Document
from xlgen.tokenizer import Tokenizer, encode_target


def _doc_token_matrix(token_lists: Sequence[Sequence[int]], vocab_size: int) -> sp.csr_matrix:
    rows = np.repeat(np.arange(len(token_lists)), [len(t) for t in token_lists])
    cols = np.fromiter((i for t in token_lists for i in t), dtype=np.int64, count=len(rows))
    return sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(len(token_lists), vocab_size))


DENSE_PMI_LIMIT = 1 << 26
"""Largest token x label matrix (entries) formed densely; above it the PMI's truncated SVD runs on its
sparse-plus-rank-one form (:func:`pmi_components`). At 8,000 tokens this is about 8,400 labels; a dense
PMI of 10^5 labels took 8,000 x 10^5 float64 per copy (6.4 GB, several copies at once)."""


def pmi_components(counts: sp.csr_matrix, n_tok: np.ndarray, prior: np.ndarray, smoothing: float, k: int, seed: int = 0,
                   n_iter: int = 5, oversamples: int = 10) -> np.ndarray:
    """The first ``k`` components (``U * Sigma``) of the smoothed PMI matrix without forming it.

    With ``c`` the co-occurrence counts, ``n`` a token's document count and ``p`` a label's prior,

        pmi[t, l] = log((c + s p_l) / (n_t + s)) - log p_l = a_t + log1p(c / (s p_l)),   a_t = log(s / (n_t + s)),

    where the second term is 0 wherever ``c`` is: the matrix is ``a 1^T`` plus a sparse matrix, and the
    randomised range finder of Halko et al. (as scikit-learn's ``TruncatedSVD``: ``n_iter`` LU-normalised
    power iterations, ``oversamples`` extra columns) needs only products with it and its transpose.

    Args:
        counts: ``(vocab, n_labels)`` co-occurrence counts.
        n_tok: ``(vocab,)`` documents per token.
        prior: ``(n_labels,)`` share of documents per label.
        smoothing: The pseudo-count.
        k: Components.
        seed: Seed of the random start.

    Returns:
        ``(vocab, k)`` float64, each component's sign fixed so that its largest entry is positive.
    """
    import scipy.linalg

    a = np.log(smoothing / (n_tok + smoothing))  # (vocab,)
    part = counts.tocsr().astype(np.float64)
    part.data = np.log1p(part.data / (smoothing * prior[part.indices]))  # (vocab, n_labels), sparse

    def times(q: np.ndarray) -> np.ndarray:  # pmi @ q
        return a[:, None] * q.sum(axis=0, keepdims=True) + part @ q  # (vocab, r)

    def rtimes(q: np.ndarray) -> np.ndarray:  # pmi.T @ q
        return (a @ q)[None, :] + part.T @ q  # (n_labels, r)

    rng = np.random.default_rng(seed)
    q = rng.standard_normal((part.shape[1], k + oversamples))  # (n_labels, r)
    for _ in range(n_iter):
        q = scipy.linalg.lu(times(q), permute_l=True)[0]  # (vocab, r)
        q = scipy.linalg.lu(rtimes(q), permute_l=True)[0]  # (n_labels, r)
    q = scipy.linalg.qr(times(q), mode="economic")[0]  # (vocab, r)
    u, sigma, _ = scipy.linalg.svd(rtimes(q).T, full_matrices=False)  # (r, r), (r,)
    out = (q @ u[:, :k]) * sigma[:k]  # (vocab, k)
    signs = np.sign(out[np.abs(out).argmax(axis=0), np.arange(k)])
    return out * np.where(signs == 0, 1.0, signs)


def corpus_embeddings(
    docs: Sequence[Document], tok: Tokenizer, labels: Sequence[str], dim: int, seed: int = 0, smoothing: float = 5.0
) -> tuple[np.ndarray, np.ndarray]:
    """Token features from the training data.

    Args:
        docs: Training documents.
        tok: The tokenizer.
        labels: The label space (column order of the association part).
        dim: Features to return per token (at most).
        seed: Seed of the SVDs.
        smoothing: Pseudo-count pulling rare tokens' label distribution to the prior.

    Returns:
        ``(features, known)``: ``(vocab, k)`` features with ``k <= dim`` and a ``(vocab,)`` mask of
        the tokens seen in the data (others keep their random init).
    """
    vocab = len(tok)
    label_index = {x: i for i, x in enumerate(labels)}
    tokens = [tok.encode(d.text) + encode_target(tok, d.labels) for d in docs]
    x = _doc_token_matrix(tokens, vocab)  # (n_docs, vocab) counts
    x.data[:] = 1.0  # presence
    y = sp.csr_matrix(
        (np.ones(sum(len(d.labels) for d in docs), dtype=np.float32),
         (np.repeat(np.arange(len(docs)), [len(d.labels) for d in docs]),
          [label_index[x] for d in docs for x in d.labels])),
        shape=(len(docs), len(labels)),
    )
    n_tok = np.asarray(x.sum(axis=0)).ravel()  # (vocab,)
    prior = np.asarray(y.sum(axis=0)).ravel() / max(len(docs), 1)  # (n_labels,)
    k_assoc = max(1, min(dim // 2, len(labels) - 1, vocab - 1))
    if vocab * len(labels) > DENSE_PMI_LIMIT and len(labels) > k_assoc + 1:
        assoc = pmi_components((x.T @ y).tocsr(), n_tok, prior, smoothing, k_assoc, seed)  # (vocab, k_assoc)
    else:
        counts = np.asarray((x.T @ y).todense())  # (vocab, n_labels) co-occurrence
        p_label_given_tok = (counts + smoothing * prior) / (n_tok[:, None] + smoothing)  # (vocab, n_labels)
        pmi = np.log(p_label_given_tok / prior)  # (vocab, n_labels)
        if len(labels) > k_assoc + 1:
            assoc = TruncatedSVD(k_assoc, random_state=seed).fit_transform(pmi)  # (vocab, k_assoc)
        else:
            assoc = pmi[:, :k_assoc]
    k_lsa = max(1, min(dim - assoc.shape[1], dim // 4, len(docs) - 1))
    tfidf = TfidfTransformer(sublinear_tf=True).fit_transform(_doc_token_matrix(tokens, vocab))  # (n_docs, vocab)
    lsa = TruncatedSVD(k_lsa, random_state=seed).fit_transform(tfidf.T.tocsr())  # (vocab, k_lsa)
    feats = np.concatenate([assoc, lsa], axis=1)  # (vocab, k)
    known = n_tok > 0
    mu, sd = feats[known].mean(axis=0), feats[known].std(axis=0) + 1e-6
    return ((feats - mu) / sd).astype(np.float32), known


@torch.no_grad()
def init_embeddings(model: Any, docs: Sequence[Document], tok: Tokenizer, labels: Sequence[str], seed: int = 0) -> int:
    """Writes corpus features into the first columns of the shared token embeddings.

    Returns:
        How many embedding dimensions were set.
    """
    emb = model.get_input_embeddings().weight  # (vocab, d_model)
    feats, known = corpus_embeddings(docs, tok, labels, emb.shape[1], seed)
    scale = float(emb.std())
    k = feats.shape[1]
    rows = torch.from_numpy(np.flatnonzero(known))
    emb[rows, :k] = torch.from_numpy(feats[known]).to(emb.dtype) * scale
    return k
