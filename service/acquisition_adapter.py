"""Acquisition for ``POST /v1/al/next-batch``: scores and suggested labels of pool documents by a
named strategy of the ``xlgen.acquisition`` registry (higher score = annotate first), scored through
``xlgen.selection.score_pool``, which decodes only what a strategy needs and caches per model version.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from xlgen.acquisition import STRATEGIES
from xlgen.data import Document
from xlgen.model import XLGenModel
from xlgen.selection import ScoreCache, SelectionConfig, score_pool

Suggestions = list[list[tuple[str, float]]]
CACHE_ENTRIES = 32  # decoded pool samples kept per process (the library's cache has no bound of its own)
DEFAULT = "margin"


def names() -> list[str]:
    """Every strategy name the service accepts."""
    return sorted(STRATEGIES)


def default_name() -> str:
    """The beam-margin strategy: one beam search per document, the cheapest model-based one."""
    return DEFAULT


def new_cache() -> ScoreCache:
    """A per-process score cache."""
    return ScoreCache()


def unsupported(model: XLGenModel, strategy: str) -> str | None:
    """Why ``model`` cannot run ``strategy`` (``None`` when it can)."""
    if STRATEGIES[strategy].needs == "clusters" and model.clusters is None:
        return f"strategy {strategy!r} needs a model with label clusters (variant bcl or mcg); the served model is {model.settings.variant}"
    return None


def rank(model: XLGenModel, docs: Sequence[tuple[str, str]], strategy: str, seed: int = 0,
         cache: ScoreCache | None = None) -> tuple[np.ndarray, Suggestions]:
    """Acquisition scores and suggested ``(label, score)`` lists of pool documents ``(id, text)``.

    Runs the model: call it on the model thread.

    Raises:
        KeyError: On an unknown strategy name.
    """
    if strategy not in STRATEGIES:
        raise KeyError(strategy)
    if cache is not None and len(cache.decoded) > CACHE_ENTRIES:
        cache.clear()
    cfg = SelectionConfig(strategy=strategy, batch_size=max(1, len(docs)), seed=seed)
    scores, decoded, _ = score_pool(model, [Document(i, t) for i, t in docs], cfg, cache)
    scores = np.asarray(scores, dtype=float)  # (n_docs,)
    if scores.shape != (len(docs),):
        raise ValueError(f"strategy {strategy!r} gave {scores.shape} scores for {len(docs)} documents")
    return np.nan_to_num(scores, nan=-1e9, posinf=1e9, neginf=-1e9), [list(s) for s in decoded.suggestions]
