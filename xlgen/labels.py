"""The label space: vocabulary, train frequencies, target order, and the positive-unlabeled simulation."""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from xlgen.data import Document
from xlgen.metrics import TrainCounts

ORDERS = ("frequency", "inverse", "random", "given")


@dataclass(frozen=True)
class LabelSpace:
    """Known labels with their train counts.

    Attributes:
        labels: Labels sorted by decreasing train count, ties by the label string; this is also
            each label's rank, used for the ``frequency`` target order.
        counts: Train count of each label, aligned with ``labels``.
        n_documents: How many train documents the counts come from (the N of the propensities behind
            PSP@k); 0 where unknown (label spaces saved before it was recorded).
    """

    labels: tuple[str, ...]
    counts: tuple[int, ...]
    n_documents: int = 0

    def __post_init__(self) -> None:
        if len(self.labels) != len(self.counts):
            raise ValueError("labels and counts differ in length")
        if len(set(self.labels)) != len(self.labels):
            raise ValueError("duplicate labels in the label space")
        object.__setattr__(self, "_rank", {label: i for i, label in enumerate(self.labels)})

    @classmethod
    def from_documents(cls, docs: Iterable[Document]) -> LabelSpace:
        """Counts the labels of ``docs`` (each label once per document)."""
        counter: Counter[str] = Counter()
        n = 0
        for d in docs:
            counter.update(set(d.labels))
            n += 1
        ordered = sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))
        return cls(tuple(k for k, _ in ordered), tuple(v for _, v in ordered), n)

    def __len__(self) -> int:
        return len(self.labels)

    def __contains__(self, label: object) -> bool:
        return label in self._rank  # type: ignore[attr-defined]

    def rank(self, label: str) -> int:
        """Position by decreasing frequency; unknown labels rank after every known one."""
        return self._rank.get(label, len(self.labels))  # type: ignore[attr-defined]

    def count(self, label: str) -> int:
        """Train count of ``label``; 0 for a label outside the space."""
        r = self.rank(label)
        return self.counts[r] if r < len(self.counts) else 0

    def order(self, labels: Sequence[str], how: str = "frequency", rng: random.Random | None = None) -> list[str]:
        """Orders a document's labels for its generation target.

        Args:
            labels: The document's labels.
            how: ``frequency`` (most frequent first, ties by label string), ``inverse`` (rarest
                first), ``random`` (a fresh shuffle from ``rng`` on every call, so every epoch sees
                another order), ``given`` (as in the data).
            rng: Required for ``random``.
        """
        labels = list(dict.fromkeys(labels))
        if how == "frequency":
            return sorted(labels, key=lambda x: (self.rank(x), x))
        if how == "inverse":
            return sorted(labels, key=lambda x: (self.rank(x), x), reverse=True)
        if how == "random":
            if rng is None:
                raise ValueError("order 'random' needs an rng")
            rng.shuffle(labels)
            return labels
        if how == "given":
            return labels
        raise ValueError(f"unknown label order {how!r}; choose one of {', '.join(ORDERS)}")

    def train_counts(self) -> TrainCounts:
        """Each label's train count, with the number of train documents (what the metrics take)."""
        return TrainCounts(dict(zip(self.labels, self.counts, strict=True)), self.n_documents)

    def extend(self, labels: Iterable[str]) -> LabelSpace:
        """Adds labels not yet known, with count 0, after every known label."""
        new = [x for x in dict.fromkeys(labels) if x not in self]
        return replace(self, labels=self.labels + tuple(new), counts=self.counts + (0,) * len(new))

    def to_dict(self) -> dict:
        return {"labels": list(self.labels), "counts": list(self.counts), "n_documents": self.n_documents}

    @classmethod
    def from_dict(cls, d: dict) -> LabelSpace:
        return cls(tuple(d["labels"]), tuple(int(c) for c in d["counts"]), int(d.get("n_documents", 0)))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), ensure_ascii=False, indent=1))

    @classmethod
    def load(cls, path: str | Path) -> LabelSpace:
        return cls.from_dict(json.loads(Path(path).read_text()))


def simulate_pu(docs: Sequence[Document], deficit_rate: float, seed: int = 0) -> list[Document]:
    """Positive-unlabeled simulation: drops a seeded fraction of each document's labels.

    As in the XLGen paper's PU experiments, each document loses ``round(deficit_rate * n)`` of its
    ``n`` labels, keeping at least one, so the training data under-reports positives.

    Args:
        docs: Training documents.
        deficit_rate: Fraction of labels dropped per document, in [0, 1).
        seed: Seed of the choice of dropped labels.
    """
    if not 0.0 <= deficit_rate < 1.0:
        raise ValueError(f"deficit rate must lie in [0, 1), got {deficit_rate}")
    if deficit_rate == 0.0:
        return list(docs)
    rng = random.Random(seed)
    out = []
    for d in docs:
        n = len(d.labels)
        n_drop = min(round(deficit_rate * n), n - 1)
        keep = sorted(rng.sample(range(n), n - n_drop))
        out.append(replace(d, labels=tuple(d.labels[i] for i in keep)))
    return out
