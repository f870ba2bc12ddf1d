"""Synthetic extreme multi-label corpora whose statistics follow real XMC data, deterministic from a seed.

What real XMC corpora (EURLex-4K, Wiki10-31K, AmazonCat-13K, Amazon-670K) share, and what this
generator reproduces:

* **Zipf-distributed label frequencies**: label of rank r is drawn with probability proportional to
  ``1 / (r + offset) ** zipf``, so a few head labels carry much of the mass and most labels sit in the
  tail with one to five documents. Every label still occurs at least once in train (the first
  ``n_labels`` label slots go to each label once, in a seeded order), so the label space of a cell has
  exactly ``n_labels`` labels.
* **Several labels per document**: 1 + Poisson(``labels_per_doc`` - 1), capped at 12.
* **Documents from their labels' topics plus noise**: each label owns ``topic_words`` words of a
  pronounceable vocabulary (its first two form its name); a document's words are drawn, each with
  probability ``signal``, from the topic words of one of its labels, else from the whole vocabulary by
  a Zipf law (the noise of function words and off-topic words).
* **Label names made of words**: ``"<word> <word>"`` (a third word or a number where two collide), so the
  label-text source has something to match.

``python benchmarks/synthetic.py --labels 100000 --docs 100000 --out runs/scale/data`` writes
``train.jsonl``, ``dev.jsonl``, ``test.jsonl`` and ``pool.jsonl`` in the project's format.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

ONSETS = ("b", "c", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "z", "br", "ch", "cr", "dr", "fl",
          "gr", "kl", "pl", "pr", "sh", "sk", "sl", "sp", "st", "str", "th", "tr")
VOWELS = ("a", "e", "i", "o", "u", "ai", "ea", "io", "ou")
CODAS = ("", "", "n", "r", "s", "l", "m", "t", "x", "nd", "st")


@dataclass(frozen=True)
class SyntheticConfig:
    """The shape of a synthetic corpus."""

    n_labels: int = 1000
    """Labels; each occurs in at least one train document."""
    n_train: int = 10_000
    """Train documents."""
    n_dev: int = 1000
    """Dev documents (threshold tuning)."""
    n_test: int = 1000
    """Test documents (tagging throughput)."""
    n_pool: int = 10_000
    """Unlabelled pool documents (next-batch selection)."""
    labels_per_doc: float = 3.0
    """Mean labels per document (1 + Poisson(mean - 1), at most 12)."""
    zipf: float = 1.1
    """Exponent of the label-frequency law."""
    zipf_offset: float = 2.7
    """Offset of the label-frequency law (flattens the very head, as in real corpora)."""
    words_per_doc: int = 40
    """Mean words per document (Poisson)."""
    signal: float = 0.6
    """Share of a document's words drawn from its labels' topic words."""
    topic_words: int = 8
    """Words per label topic (the first two name the label)."""
    vocab_size: int = 30_000
    """Distinct words of the vocabulary."""
    seed: int = 0
    """Seed of everything."""

    def __post_init__(self) -> None:
        for name in ("n_labels", "n_train", "words_per_doc", "topic_words", "vocab_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.labels_per_doc < 1 or not 0 <= self.signal <= 1 or self.zipf <= 0 or self.topic_words < 2:
            raise ValueError("labels_per_doc >= 1, 0 <= signal <= 1, zipf > 0 and topic_words >= 2 are needed")
        if self.n_labels > self.n_train * 12:
            raise ValueError(f"{self.n_labels} labels cannot all occur in {self.n_train} train documents of at most 12 labels")


def vocabulary(size: int, rng: np.random.Generator) -> list[str]:
    """``size`` distinct pronounceable words of two or three syllables."""
    words: dict[str, None] = {}
    while len(words) < size:
        n = 2 * (size - len(words)) + 16
        parts = [np.asarray(p)[rng.integers(0, len(p), (n, 3))] for p in (ONSETS, VOWELS, CODAS)]
        three = rng.random(n) < 0.4
        for i in range(n):
            k = 3 if three[i] else 2
            w = "".join(parts[0][i, j] + parts[1][i, j] for j in range(k)) + parts[2][i, k - 1]
            words.setdefault(w)
            if len(words) == size:
                break
    return list(words)


class SyntheticCorpus:
    """A seeded corpus: label names, topics and frequencies, and documents drawn from them.

    Args:
        config: Its shape.
    """

    def __init__(self, config: SyntheticConfig) -> None:
        self.config = c = config
        rng = np.random.default_rng(c.seed)
        self.words = np.asarray(vocabulary(c.vocab_size, rng), dtype=object)
        word_p = 1.0 / (np.arange(c.vocab_size) + 10.0)
        self.word_p = word_p / word_p.sum()  # (vocab,) noise words, Zipf
        # topic words: the two name words first; collisions of names get a third word, then a number
        self.topics = rng.integers(0, c.vocab_size, (c.n_labels, c.topic_words))  # (n_labels, topic_words)
        names: dict[str, None] = {}
        for j in range(c.n_labels):
            name = f"{self.words[self.topics[j, 0]]} {self.words[self.topics[j, 1]]}"
            if name in names:
                name = f"{name} {self.words[self.topics[j, 2]]}"
            k = 2
            while name in names:
                name, k = f"{name.rsplit(' ', 1)[0]} {k}", k + 1
            names[name] = None
        self.labels = list(names)
        label_p = 1.0 / (np.arange(c.n_labels) + c.zipf_offset) ** c.zipf
        self.label_p = label_p / label_p.sum()  # (n_labels,) label of frequency rank r
        self.rank_to_label = rng.permutation(c.n_labels)  # names do not follow frequency

    def _label_sets(self, n: int, rng: np.random.Generator, cover: bool) -> list[np.ndarray]:
        c = self.config
        sizes = np.minimum(1 + rng.poisson(c.labels_per_doc - 1, n), 12)  # (n,)
        if cover:  # every label once: fill the slots round-robin before the Zipf draws
            while sizes.sum() < c.n_labels:
                sizes = np.minimum(sizes + 1, 12)
        draws = self.rank_to_label[rng.choice(c.n_labels, int(sizes.sum()), p=self.label_p)]  # (slots,)
        if cover:
            slots = rng.permutation(int(sizes.sum()))[: c.n_labels]
            draws[slots] = rng.permutation(c.n_labels)
        return [np.unique(part) for part in np.split(draws, np.cumsum(sizes)[:-1])]

    def documents(self, split: str, n: int) -> Iterator[dict]:
        """``n`` documents of ``split`` (``train`` covers every label), as ``{"id", "text", "labels"}``."""
        c = self.config
        rng = np.random.default_rng([c.seed, sum(map(ord, split))])
        sets = self._label_sets(n, rng, cover=split == "train")
        lengths = np.maximum(rng.poisson(c.words_per_doc, n), 3)  # (n,)
        total = int(lengths.sum())
        owner = np.repeat(np.arange(n), lengths)  # (total,) document of each word
        pick = rng.integers(0, 1 << 30, total)
        label_of_word = np.array([s[p % len(s)] for s, p in zip([sets[i] for i in owner], pick.tolist(), strict=True)])
        topic = self.topics[label_of_word, rng.integers(0, c.topic_words, total)]  # (total,)
        noise = rng.choice(c.vocab_size, total, p=self.word_p)  # (total,)
        ids = np.where(rng.random(total) < c.signal, topic, noise)
        bounds = np.concatenate([[0], np.cumsum(lengths)])
        for i in range(n):
            yield {"id": f"{split}{i}", "text": " ".join(self.words[ids[bounds[i] : bounds[i + 1]]].tolist()),
                   "labels": [self.labels[j] for j in sets[i].tolist()]}

    def write(self, out: str | Path) -> dict[str, int]:
        """Writes the four splits as JSON Lines into ``out``; returns the documents per split."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        c = self.config
        sizes = {"train": c.n_train, "dev": c.n_dev, "test": c.n_test, "pool": c.n_pool}
        for split, n in sizes.items():
            tmp = out / f".{split}.jsonl.tmp"
            with open(tmp, "w", encoding="utf-8") as fh:
                for doc in self.documents(split, n):
                    if split == "pool":
                        doc.pop("labels")
                    fh.write(json.dumps(doc) + "\n")
            tmp.replace(out / f"{split}.jsonl")
        (out / "synthetic.json").write_text(json.dumps(asdict(c), indent=1))
        return sizes


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--labels", type=int, default=1000)
    p.add_argument("--docs", type=int, default=10_000, help="train documents")
    p.add_argument("--dev", type=int, default=1000)
    p.add_argument("--test", type=int, default=1000)
    p.add_argument("--pool", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    cfg = SyntheticConfig(n_labels=a.labels, n_train=a.docs, n_dev=a.dev, n_test=a.test, n_pool=a.pool, seed=a.seed)
    print(SyntheticCorpus(cfg).write(a.out))


if __name__ == "__main__":
    main()
