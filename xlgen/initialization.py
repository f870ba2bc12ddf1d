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
    counts = np.asarray((x.T @ y).todense())  # (vocab, n_labels) co-occurrence
    n_tok = np.asarray(x.sum(axis=0)).ravel()  # (vocab,)
    prior = np.asarray(y.sum(axis=0)).ravel() / max(len(docs), 1)  # (n_labels,)
    p_label_given_tok = (counts + smoothing * prior) / (n_tok[:, None] + smoothing)  # (vocab, n_labels)
    pmi = np.log(p_label_given_tok / prior)  # (vocab, n_labels)
    k_assoc = max(1, min(dim // 2, len(labels) - 1, vocab - 1))
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
