"""Acquisition for ``POST /v1/al/next-batch``: scores and suggested labels of pool documents by a
named strategy (higher score = annotate first).

The library (``xlgen.acquisition`` registry, scored through ``xlgen.selection.score_pool``, which
decodes only what a strategy needs and caches per model version) is used when importable. Without
it a minimal built-in set serves: ``random``, ``beam_margin`` (a small gap between the
length-normalised log-probabilities of the two best beams is uncertain) and ``least_confidence``
(a low probability per token of the best beam is uncertain).

Switch-over point: :func:`_library` is the only place that imports the library; once it is stable,
delete the built-in strategies and :func:`_builtin_rank`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from xlgen.decoding import Prediction
from xlgen.model import XLGenModel

Suggestions = list[list[tuple[str, float]]]
CACHE_ENTRIES = 32  # decoded pool samples kept per process (the library's cache has no bound of its own)


def _random(preds: Sequence[Prediction], rng: np.random.Generator) -> np.ndarray:
    return rng.random(len(preds))  # (n_docs,)


def _beam_margin(preds: Sequence[Prediction], rng: np.random.Generator) -> np.ndarray:
    out = np.empty(len(preds))
    for i, p in enumerate(preds):
        lps = sorted((c.norm_logprob for c in p.candidates), reverse=True)
        out[i] = -(lps[0] - lps[1]) if len(lps) > 1 else -1e9
    return out  # (n_docs,)


def _least_confidence(preds: Sequence[Prediction], rng: np.random.Generator) -> np.ndarray:
    return np.array([1.0 - np.exp(max((c.norm_logprob for c in p.candidates), default=0.0)) for p in preds])  # (n_docs,)


BUILTIN: dict[str, Callable[[Sequence[Prediction], np.random.Generator], np.ndarray]] = {
    "random": _random, "beam_margin": _beam_margin, "least_confidence": _least_confidence,
}


def _library() -> Any | None:
    """``(STRATEGIES, score_pool, SelectionConfig, ScoreCache)`` of the library, or None without it."""
    try:
        from xlgen.acquisition import STRATEGIES
        from xlgen.selection import ScoreCache, SelectionConfig, score_pool
    except ImportError:
        return None
    return STRATEGIES, score_pool, SelectionConfig, ScoreCache


def names() -> list[str]:
    """Every strategy name the service accepts."""
    lib = _library()
    return sorted(lib[0]) if lib else sorted(BUILTIN)


def default_name() -> str:
    """The beam-margin strategy (``margin`` in the library, ``beam_margin`` built in)."""
    return "margin" if "margin" in names() else "beam_margin"


def new_cache() -> Any:
    """A per-process score cache (the library's), or None for the built-in strategies."""
    lib = _library()
    return lib[3]() if lib else None


def _builtin_rank(model: XLGenModel, texts: Sequence[str], strategy: str, seed: int) -> tuple[np.ndarray, Suggestions]:
    preds = model.predict(list(texts))
    scores = np.asarray(BUILTIN[strategy](preds, np.random.default_rng(seed)), dtype=float)  # (n_docs,)
    return scores, [list(zip(p.labels, p.scores, strict=True)) for p in preds]


def rank(model: XLGenModel, docs: Sequence[tuple[str, str]], strategy: str, seed: int = 0, cache: Any = None) -> tuple[np.ndarray, Suggestions]:
    """Acquisition scores and suggested ``(label, score)`` lists of pool documents ``(id, text)``.

    Runs the model: call it on the model thread.

    Raises:
        KeyError: On an unknown strategy name.
    """
    if strategy not in names():
        raise KeyError(strategy)
    lib = _library()
    if lib is None:
        scores, suggestions = _builtin_rank(model, [t for _, t in docs], strategy, seed)
    else:
        from xlgen.data import Document

        _, score_pool, selection_config, _ = lib
        if cache is not None and len(cache.decoded) > CACHE_ENTRIES:
            cache.clear()
        cfg = selection_config(strategy=strategy, batch_size=max(1, len(docs)), seed=seed)
        scores, decoded, _ = score_pool(model, [Document(i, t) for i, t in docs], cfg, cache)
        suggestions = [list(s) for s in decoded.suggestions]
    scores = np.asarray(scores, dtype=float)  # (n_docs,)
    if scores.shape != (len(docs),):
        raise ValueError(f"strategy {strategy!r} gave {scores.shape} scores for {len(docs)} documents")
    return np.nan_to_num(scores, nan=-1e9, posinf=1e9, neginf=-1e9), suggestions
