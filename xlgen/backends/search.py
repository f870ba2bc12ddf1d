"""Greedy, beam and sampling search in numpy over any next-token model (see :class:`Stepper`).

The beam search reproduces transformers' ``generate(num_beams=k, early_stopping=True)``: at each
step the ``2k`` best continuations of a document's beams are kept; those ending in eos (or at the
length limit) and ranked among the first ``k`` join the finished hypotheses, scored by their
log-probability over ``length ** length_penalty``; the ``k`` best unfinished ones go on; a
document is done once it holds ``k`` finished hypotheses. Finished documents leave the batch, so
the step model computes live rows only (transformers computes every row to the end).

Every sequence comes back with the exact sum of its token log-probabilities under the step model
(eos included, no length penalty), so no rescoring pass is needed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from xlgen.backends.base import Generated

NEG = -1.0e9  # the "impossible" score transformers uses


class Stepper(Protocol):
    """A decoder with a cache, one row per live sequence."""

    def step(self, tokens: np.ndarray) -> np.ndarray:
        """Feeds one token per row, ``(rows,)``; returns next-token log-probs, ``(rows, vocab)``."""
        ...

    def select(self, rows: np.ndarray) -> None:
        """Keeps (and reorders, repeats) the cached rows ``rows``, ``(new_rows,)`` indices into the old rows."""
        ...


@dataclass(frozen=True)
class SearchSettings:
    """Token ids and limits of one search.

    Attributes:
        start_id: Decoder start id (T5: pad).
        eos_id: End of sequence.
        max_new_tokens: Longest generated sequence, eos included.
        length_penalty: Exponent of the length that beam search divides finished scores by.
    """

    start_id: int
    eos_id: int
    max_new_tokens: int
    length_penalty: float = 1.0


def _topk(x: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest entries of each row, largest first: ``(rows, k)``.

    torch's top-k, as ``generate`` uses (same ties), on the array's own memory; several times
    faster than numpy's argpartition on rows of beams x vocabulary.
    """
    return torch.topk(torch.from_numpy(np.ascontiguousarray(x)), k, dim=1).indices.numpy()


def _walk(model: Stepper, n_rows: int, s: SearchSettings, choose: Callable[[np.ndarray], np.ndarray]) -> Generated:
    """One sequence per row, ``choose`` picking each next token from the ``(live, vocab)`` log-probs;
    the log-probs summed are the model's own."""
    tokens = [[] for _ in range(n_rows)]  # type: list[list[int]]
    logprob = np.zeros(n_rows, dtype=np.float64)
    live = np.arange(n_rows)  # original row of each live row
    last = np.full(n_rows, s.start_id, dtype=np.int64)
    for _ in range(s.max_new_tokens):
        logp = model.step(last)  # (live, vocab)
        nxt = choose(logp)  # (live,)
        logprob[live] += logp[np.arange(len(live)), nxt]
        for r, t in zip(live.tolist(), nxt.tolist(), strict=True):
            tokens[r].append(t)
        going = nxt != s.eos_id
        if not going.all():
            keep = np.flatnonzero(going)
            if len(keep) == 0:
                break
            model.select(keep)
            live, nxt = live[keep], nxt[keep]
        last = nxt
    return Generated(tokens, logprob)


def greedy(model: Stepper, n_rows: int, s: SearchSettings) -> Generated:
    """The most likely token at each step, one sequence per row."""
    return _walk(model, n_rows, s, lambda logp: logp.argmax(axis=1))


def draw(logp: np.ndarray, rng: np.random.Generator, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0) -> np.ndarray:
    """One token per row, drawn from the distribution transformers' temperature, top-k and top-p
    warpers make of ``logp`` (in that order): ``(rows, vocab)`` log-probs to ``(rows,)`` ids."""
    scores = torch.from_numpy(logp)
    if temperature != 1.0:
        scores = scores / temperature
    ids = None
    if 0 < top_k < scores.shape[1]:
        scores, ids = torch.topk(scores, top_k, dim=1)  # (rows, top_k), most likely first
    elif top_p < 1.0:
        scores, ids = torch.sort(scores, dim=1, descending=True)
    probs = torch.softmax(scores.double(), dim=1)
    if top_p < 1.0:
        # transformers drops a token while its mass and that of every less likely one stays <= 1 - top_p
        tail = probs.flip(1).cumsum(1).flip(1)  # (rows, candidates)
        drop = tail <= 1.0 - top_p
        drop[:, 0] = False  # the most likely token always stays
        probs = probs.masked_fill(drop, 0.0)
    cdf = probs.cumsum(1)  # (rows, candidates)
    u = torch.from_numpy(rng.random(len(cdf))) * cdf[:, -1]
    pick = torch.searchsorted(cdf, u[:, None]).clamp_(max=cdf.shape[1] - 1)  # (rows, 1)
    return (pick if ids is None else ids.gather(1, pick)).squeeze(1).numpy()


def sample(model: Stepper, n_rows: int, s: SearchSettings, rng: np.random.Generator,
           temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0) -> Generated:
    """One sampled sequence per row; the log-probs are the model's own, before warping."""
    return _walk(model, n_rows, s, lambda logp: draw(logp, rng, temperature, top_k, top_p))


def beam(model: Stepper, n_docs: int, k: int, s: SearchSettings) -> Generated:
    """Beam search with ``k`` beams per document; every finished hypothesis is returned, best first.

    ``model`` starts with ``n_docs * k`` rows, document by document.
    """
    lp = s.length_penalty
    width = 2 * k  # continuations kept per step: room for k to finish and k to go on
    L = s.max_new_tokens
    run_seq = np.zeros((n_docs, k, L), dtype=np.int64)
    run_sum = np.full((n_docs, k), NEG, dtype=np.float32)  # accumulated log-probs, the search's own float32
    run_sum[:, 0] = 0.0
    fin_seq = np.zeros((n_docs, k, L), dtype=np.int64)
    fin_len = np.zeros((n_docs, k), dtype=np.int64)
    fin_score = np.full((n_docs, k), NEG, dtype=np.float32)
    fin_sum = np.full((n_docs, k), NEG, dtype=np.float64)  # an empty slot has probability 0
    fin_done = np.zeros((n_docs, k), dtype=bool)
    # exact sums per running beam, in float64 beside the float32 search scores
    run_exact = np.zeros((n_docs, k), dtype=np.float64)
    live = np.arange(n_docs)  # documents still searching
    last = np.full(n_docs * k, s.start_id, dtype=np.int64)
    top_mask = np.arange(width) < k  # (width,)
    for t in range(L):
        n_live = len(live)
        logp = model.step(last).reshape(n_live, k, -1)  # (live, k, vocab)
        vocab = logp.shape[2]
        acc = (logp + run_sum[live][:, :, None]).reshape(n_live, k * vocab)  # (live, k * vocab)
        top = _topk(acc, width)  # (live, width)
        top_lp = np.take_along_axis(acc, top, axis=1)  # (live, width)
        src_beam, tok = top // vocab, top % vocab  # (live, width)
        rows = np.arange(n_live)[:, None]
        top_exact = run_exact[live][rows, src_beam] + logp[rows, src_beam, tok].astype(np.float64)  # (live, width)
        top_seq = run_seq[live][rows, src_beam]  # (live, width, L)
        top_seq[:, :, t] = tok
        hits = (tok == s.eos_id) | (t + 1 >= L)  # (live, width)

        # the k best unfinished continuations go on
        going_lp = top_lp + hits.astype(np.float32) * NEG
        nxt = _topk(going_lp, k)  # (live, k)
        run_seq[live] = np.take_along_axis(top_seq, nxt[:, :, None], axis=1)
        run_sum[live] = np.take_along_axis(going_lp, nxt, axis=1)
        run_exact[live] = np.take_along_axis(top_exact, nxt, axis=1)

        # finished continuations among the first k compete for the finished slots
        just = hits & top_mask[None, :]
        cand = top_lp / np.float32((t + 1) ** lp)
        cand = cand + (~just).astype(np.float32) * NEG  # (live, width)
        m_score = np.concatenate([fin_score[live], cand], axis=1)  # (live, k + width)
        best = _topk(m_score, k)  # (live, k)
        m_seq = np.concatenate([fin_seq[live], top_seq], axis=1)
        m_len = np.concatenate([fin_len[live], np.full((n_live, width), t + 1)], axis=1)
        m_sum = np.concatenate([fin_sum[live], top_exact], axis=1)
        m_done = np.concatenate([fin_done[live], just], axis=1)
        fin_seq[live] = np.take_along_axis(m_seq, best[:, :, None], axis=1)
        fin_score[live] = np.take_along_axis(m_score, best, axis=1)
        fin_len[live] = np.take_along_axis(m_len, best, axis=1)
        fin_sum[live] = np.take_along_axis(m_sum, best, axis=1)
        fin_done[live] = np.take_along_axis(m_done, best, axis=1)

        going = ~fin_done[live].all(axis=1)  # (live,)
        if not going.any() or t + 1 >= L:
            break
        keep = np.flatnonzero(going)
        # cache rows of the kept documents, each beam taking its source beam's cache
        new_rows = (keep[:, None] * k + np.take_along_axis(src_beam, nxt, axis=1)[keep]).reshape(-1)  # (kept * k,)
        model.select(new_rows)
        live = live[keep]
        last = run_seq[live][:, :, t].reshape(-1)
    tokens = [fin_seq[d, j, : fin_len[d, j]].tolist() for d in range(n_docs) for j in range(k)]
    return Generated(tokens, fin_sum.reshape(-1))
