"""Decoding: greedy, beam and sampling, each giving every generated label a score.

A label's score is the probability mass of the returned beams that contain it (greedy: the one
sequence's probability), or, for sampling, the fraction of samples that contain it (the Monte Carlo
estimate of the same quantity). Sequence log-probabilities are recomputed by one teacher-forced
decoder pass, without any length penalty, so every strategy and backend scores alike.

This module is pure (no torch): the settings, the candidates and what is computed from them. The
decoding itself runs in :mod:`xlgen.backends`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from xlgen.config import opt

STRATEGIES = ("greedy", "beam", "sample")
BACKENDS = ("auto", "torch", "onnxruntime", "ctranslate2")
"""Decoding backends by name (:func:`xlgen.backends.load_backend`); ``auto`` is the fastest valid export
present, else torch. Here, in the torch-free module, so that settings and command lines can offer them."""
TEMPERATURE_RANGE = (0.01, 100.0)
"""Sampling temperatures accepted. Below 0.01 sampling is greedy decoding in all but name, and far
below it the scaled logits overflow (5e-324 turns them into inf and the probabilities into NaN);
above 100 the distribution is flat noise."""


@dataclass(frozen=True)
class DecodingConfig:
    """How to decode.

    Attributes:
        strategy: ``greedy``, ``beam`` or ``sample``.
        num_beams: Beams for ``beam``; every beam is returned and scored.
        num_samples: Sequences drawn for ``sample``.
        temperature: Sampling temperature.
        top_k: Sampling from the k most likely tokens only; 0 turns it off.
        top_p: Nucleus sampling mass; 1.0 turns it off.
        max_new_tokens: Longest generated target, in tokens.
        batch_size: Documents per forward pass.
        keep_new_labels: Keep generated labels outside the label space (flagged ``new``); drop
            them if false.
        min_labels: Labels every document keeps whatever the threshold (the best-scored first).
        seed: Seed for sampling, so that repeated calls agree.
    """

    # ``request``: the field is a request option of the service's tagging endpoint, within these
    # bounds (``()`` for a field with choices or a flag); the command line offers every field
    strategy: str = opt("beam", "decoding strategy", choices=STRATEGIES, request=())
    num_beams: int = opt(5, "beams for beam search; every beam is returned and scored", request=(1, 64))
    num_samples: int = opt(10, "sequences drawn per document when sampling", request=(1, 256))
    temperature: float = opt(1.0, "sampling temperature", request=TEMPERATURE_RANGE)
    top_k: int = opt(0, "sample from the k most likely tokens only; 0 turns it off")
    top_p: float = opt(1.0, "nucleus sampling mass; 1.0 turns it off")
    max_new_tokens: int = opt(64, "longest generated label sequence, in tokens")
    batch_size: int = opt(32, "documents per forward pass")
    keep_new_labels: bool = opt(True, "keep generated labels outside the label space, flagged as new", request=())
    min_labels: int = opt(1, "labels every document keeps whatever the threshold", request=(0, 10_000))
    seed: int = opt(0, "seed for sampling, so that repeated calls agree")

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown decoding strategy {self.strategy!r}; choose one of {', '.join(STRATEGIES)}")
        if self.num_beams < 1 or self.num_samples < 1 or self.batch_size < 1 or self.max_new_tokens < 1:
            raise ValueError("num_beams, num_samples, batch_size and max_new_tokens must be positive")
        low, high = TEMPERATURE_RANGE
        if not low <= self.temperature <= high:
            raise ValueError(f"temperature must lie in [{low:g}, {high:g}]")
        if not 0 < self.top_p <= 1:
            raise ValueError("top_p must lie in (0, 1]")
        if self.top_k < 0 or self.min_labels < 0:
            raise ValueError("top_k and min_labels must not be negative")

    @property
    def num_return(self) -> int:
        return {"greedy": 1, "beam": self.num_beams, "sample": self.num_samples}[self.strategy]


@dataclass(frozen=True)
class Candidate:
    """One generated sequence.

    Attributes:
        labels: Its labels, in generation order, without duplicates.
        logprob: Sum of its token log-probabilities (eos included).
        n_tokens: Its length in tokens (eos included).
    """

    labels: tuple[str, ...]
    logprob: float
    n_tokens: int

    @property
    def norm_logprob(self) -> float:
        """Length-normalised log-probability."""
        return self.logprob / max(self.n_tokens, 1)


@dataclass
class Prediction:
    """Labels of one document with scores, best first.

    Attributes:
        labels: Labels above the threshold (at least ``min_labels``).
        scores: Score of each of ``labels``.
        new: Whether each label lies outside the label space.
        all_scores: Every proposed label's score, cut or not (for P@k and threshold tuning), best first.
        candidates: The generated sequences (empty when nothing was generated).
        sources: Label -> what proposed it (``generator``, and the retriever's sources for a model
            whose guidance fuses scores); empty means the generator alone.
    """

    labels: list[str]
    scores: list[float]
    new: list[bool]
    all_scores: dict[str, float] = field(default_factory=dict)
    candidates: list[Candidate] = field(default_factory=list)
    sources: dict[str, list[str]] = field(default_factory=dict)

    def recut(self, threshold: float, min_labels: int, known: Callable[[str], bool]) -> Prediction:
        """The same scores cut at another threshold; ``known(label)`` says whether a label is in the label space."""
        kept = cut(self.all_scores, threshold, min_labels)
        return Prediction([k for k, _ in kept], [v for _, v in kept], [not known(k) for k, _ in kept], self.all_scores,
                          self.candidates, self.sources)

    def sources_of(self, label: str) -> list[str]:
        """What proposed ``label`` (the generator when the prediction records no sources)."""
        return self.sources.get(label, ["generator"]) if self.sources else ["generator"]


def label_scores(candidates: Sequence[Candidate], strategy: str) -> dict[str, float]:
    """Score of every label in ``candidates``, best first.

    For ``sample`` the score is the fraction of samples containing the label; otherwise it is the
    summed probability of the sequences containing it (at most 1).
    """
    scores: dict[str, float] = {}
    if not candidates:
        return scores
    for c in candidates:
        weight = 1.0 / len(candidates) if strategy == "sample" else math.exp(c.logprob)
        for label in c.labels:
            scores[label] = scores.get(label, 0.0) + weight
    return dict(sorted(((k, min(v, 1.0)) for k, v in scores.items()), key=lambda kv: -kv[1]))


def cut(scores: dict[str, float], threshold: float, min_labels: int) -> list[tuple[str, float]]:
    """Labels with score >= ``threshold``, but at least the ``min_labels`` best."""
    ranked = sorted(scores.items(), key=lambda kv: -kv[1])
    kept = [kv for kv in ranked if kv[1] >= threshold]
    return kept if len(kept) >= min_labels else ranked[:min_labels]
