"""Fused label scores: one probability per (document, label) from every source that proposed it.

Two small logistic calibrators, stacked:

1. **Retriever stage** (:class:`RetrieverCalibrator`): per candidate of the label retriever
   (:class:`xlgen.encoders.Candidates`), the features are each source's score, its reciprocal rank
   (0 outside its top K), the score's gap to the document's best score of that source, how many
   sources propose the label, and the label's log train count (so that the calibrator learns how far
   to trust, say, label-text similarity for a rare label); with their pairwise products. It is
   fitted on the train documents' leak-free candidates (:meth:`xlgen.encoders.LabelRetriever.score_train`:
   kNN without the document itself, the linear ranker cross-fitted), many more examples than dev holds.
2. **Generator stage** (:class:`GeneratorCalibrator`): per label proposed by the retriever or the
   generator, the retriever stage's logit and the generator's beam mass for the label (and whether and
   at which rank it generated it). Fitted on dev, which the generator never trained on, so that it
   learns how much to trust the generator there; it is a handful of weights, so dev suffices.

Both are plain logistic regressions over standardised features, fitted with scikit-learn and stored as
JSON (weights, means, scales), so a model directory holds no pickled code.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

GENERATOR = "generator"
"""Source name of the label generator in a prediction's ``sources``."""


def _sigmoid(v: float) -> float:
    """The logistic function without overflow (``math.exp`` raises beyond about 709)."""
    return 1.0 / (1.0 + math.exp(-v)) if v >= 0 else math.exp(v) / (1.0 + math.exp(v))


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


@dataclass
class LogisticCalibrator:
    """``p = sigmoid(w . z + b)`` over standardised features ``z = (x - mean) / scale``, with optional
    pairwise products of the standardised base features.

    Attributes:
        names: Feature names (the base features, before products).
        pairs: Whether pairwise products are added.
        mean: ``(n_features,)`` of the expanded features.
        scale: ``(n_features,)``.
        weights: ``(n_features,)``.
        bias: The intercept.
        c: Inverse L2 strength used in fitting.
    """

    names: tuple[str, ...]
    pairs: bool = False
    mean: np.ndarray = field(default_factory=lambda: np.zeros(0))
    scale: np.ndarray = field(default_factory=lambda: np.ones(0))
    weights: np.ndarray = field(default_factory=lambda: np.zeros(0))
    bias: float = 0.0
    c: float = 1.0

    def expand(self, x: np.ndarray) -> np.ndarray:
        """Base features ``(n, len(names))`` -> model features (with the pairwise products)."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != len(self.names):
            raise ValueError(f"expected {len(self.names)} features, got shape {x.shape}")
        if not self.pairs:
            return x
        i, j = np.triu_indices(x.shape[1])
        return np.column_stack([x, x[:, i] * x[:, j]])  # (n, f + f (f + 1) / 2)

    def fit(self, x: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None) -> LogisticCalibrator:
        """Fits on base features ``x`` ``(n, f)`` and 0/1 targets ``y`` ``(n,)``."""
        from sklearn.linear_model import LogisticRegression

        z = self.expand(x)
        self.mean = z.mean(axis=0)
        self.scale = np.where(z.std(axis=0) > 1e-12, z.std(axis=0), 1.0)
        y = np.asarray(y).astype(int)
        if y.min() == y.max():  # one class only: a constant probability
            self.weights, self.bias = np.zeros(z.shape[1]), float(_logit(np.array([y.mean()]))[0])
            return self
        lr = LogisticRegression(C=self.c, max_iter=5000).fit((z - self.mean) / self.scale, y, sample_weight=sample_weight)
        self.weights, self.bias = lr.coef_[0].astype(np.float64), float(lr.intercept_[0])
        return self

    def logit(self, x: np.ndarray) -> np.ndarray:
        """``(n,)`` log-odds of base features ``x`` ``(n, f)``."""
        if len(x) == 0:
            return np.zeros(0)
        return ((self.expand(x) - self.mean) / self.scale) @ self.weights + self.bias

    def predict(self, x: np.ndarray) -> np.ndarray:
        """``(n,)`` probabilities."""
        from scipy.special import expit

        return expit(self.logit(x))  # no overflow warning at very negative log-odds

    def to_dict(self) -> dict[str, Any]:
        return {"names": list(self.names), "pairs": self.pairs, "mean": self.mean.tolist(), "scale": self.scale.tolist(),
                "weights": self.weights.tolist(), "bias": self.bias, "c": self.c}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LogisticCalibrator:
        return cls(tuple(d["names"]), bool(d["pairs"]), np.asarray(d["mean"], dtype=np.float64),
                   np.asarray(d["scale"], dtype=np.float64), np.asarray(d["weights"], dtype=np.float64), float(d["bias"]),
                   float(d.get("c", 1.0)))


def retriever_feature_names(sources: Sequence[str]) -> tuple[str, ...]:
    return (*(f"{s}_score" for s in sources), *(f"{s}_inv_rank" for s in sources), *(f"{s}_gap" for s in sources),
            "n_proposing", "log_count")


def retriever_features(candidates: Any, counts: Mapping[str, int]) -> np.ndarray:
    """Features of every candidate row: ``(n_rows, 3 * n_sources + 2)`` (see :func:`retriever_feature_names`).

    Args:
        candidates: :class:`xlgen.encoders.Candidates`.
        counts: Train count per label (0 or absent: never seen in train).
    """
    s = candidates.scores.astype(np.float64)  # (n_rows, n_sources)
    r = candidates.ranks
    inv = np.where(r <= candidates.top, 1.0 / np.maximum(r, 1), 0.0)  # (n_rows, n_sources)
    best = np.zeros_like(s)
    for i in range(len(candidates)):
        a, b = candidates.offsets[i], candidates.offsets[i + 1]
        if b > a:
            best[a:b] = s[a:b].max(axis=0, keepdims=True)
    n_prop = (r <= candidates.top).sum(axis=1, keepdims=True).astype(np.float64)  # (n_rows, 1)
    log_count = np.log1p([counts.get(candidates.labels[j], 0) for j in candidates.label_ids])[:, None]  # (n_rows, 1)
    return np.column_stack([s, inv, s - best, n_prop, log_count])


def gold_targets(candidates: Any, gold: Sequence[Sequence[str]]) -> np.ndarray:
    """``(n_rows,)`` 1 where the row's label is one of its document's gold labels."""
    sets = [set(g) for g in gold]
    return np.array([candidates.labels[j] in sets[i] for i, j in zip(candidates.doc_index, candidates.label_ids, strict=True)],
                    dtype=np.int8)


GENERATOR_FEATURES = ("retriever_logit", "generator_mass", "generated", "generator_inv_rank", "retrieved")
"""The generator stage's base features (a calibrator saved with other names computes those instead)."""
GENERATOR_FEATURE_SETS: dict[str, tuple[str, ...]] = {
    "base": GENERATOR_FEATURES,
    "counts": (*GENERATOR_FEATURES, "log_count"),
    "document": (*GENERATOR_FEATURES, "retriever_gap", "generator_gap", "n_generated"),
    "counts+document": (*GENERATOR_FEATURES, "log_count", "retriever_gap", "generator_gap", "n_generated"),
}
"""Named feature sets of the generator stage: ``log_count`` is the label's log train count (how far to
trust each source for a rare label); the ``document`` features place the label within its document (the
gap of its retriever logit and of its beam mass to the document's best, and how many labels the
generator produced)."""


def generator_feature_names(features: str) -> tuple[str, ...]:
    """The feature names of the set ``features`` (a key of :data:`GENERATOR_FEATURE_SETS`).

    Raises:
        ValueError: For an unknown set.
    """
    if features not in GENERATOR_FEATURE_SETS:
        raise ValueError(f"unknown generator-stage features {features!r}; choose one of {', '.join(GENERATOR_FEATURE_SETS)}")
    return GENERATOR_FEATURE_SETS[features]


def document_generator_features(names: Sequence[str], logits: Mapping[str, float], generated: Mapping[str, float],
                                counts: Mapping[str, int]) -> tuple[list[str], np.ndarray]:
    """One document's generator-stage features, ``names`` in order, for every label the retriever
    (``logits``: its retriever-stage log-odds) or the generator (``generated``: beam mass, best first)
    proposed: the retriever's logit (a low constant when it did not propose the label), the beam mass,
    whether and at which rank the label was generated, whether it was retrieved, and those of
    :data:`GENERATOR_FEATURE_SETS`.

    Returns:
        ``(labels, (len(labels), len(names)) features)``.
    """
    labels = list(dict.fromkeys([*logits, *generated]))
    rank = {x: k + 1 for k, x in enumerate(generated)}
    best_logit = max(logits.values(), default=-8.0)
    best_mass = max(generated.values(), default=0.0)
    rows = []
    for x in labels:
        logit = logits.get(x, -8.0)
        mass = generated.get(x, 0.0)
        f = {"retriever_logit": logit, "generator_mass": mass, "generated": float(x in rank),
             "generator_inv_rank": 1.0 / rank[x] if x in rank else 0.0, "retrieved": float(x in logits),
             "log_count": math.log1p(counts.get(x, 0)), "retriever_gap": logit - best_logit,
             "generator_gap": mass - best_mass, "n_generated": float(len(generated))}
        rows.append([f[n] for n in names])
    return labels, np.asarray(rows, dtype=np.float64).reshape(len(labels), len(names))


@dataclass
class Fused:
    """One document's fused label probabilities with the sources that proposed each label.

    Attributes:
        scores: Label -> fused probability, best first.
        sources: Label -> names of the sources that proposed it (retriever sources within their top
            K, and ``generator``).
    """

    scores: dict[str, float]
    sources: dict[str, list[str]]


@dataclass
class Fusion:
    """The two stacked calibrators and how they combine.

    Attributes:
        retriever: Retriever stage.
        generator: Generator stage (``None``: fused without the generator, the retriever stage alone).
        top: Candidates each retriever source proposes (its K).
    """

    retriever: LogisticCalibrator
    generator: LogisticCalibrator | None = None
    top: int = 20

    def retriever_probabilities(self, candidates: Any, counts: Mapping[str, int]) -> np.ndarray:
        """``(n_rows,)`` retriever-stage probability of every candidate row."""
        return self.retriever.predict(retriever_features(candidates, counts))

    def fuse(self, candidates: Any, counts: Mapping[str, int], generated: Sequence[Mapping[str, float]] | None,
             use_generator: bool = True) -> list[Fused]:
        """Fused probabilities of every document.

        Args:
            candidates: The retriever's candidates of the documents.
            counts: Train count per label.
            generated: Per document, the generator's label scores (beam mass), best first; ``None``
                when the generator did not run.
            use_generator: Apply the generator stage (when there is one and ``generated`` is given).
        """
        r_logit = self.retriever.logit(retriever_features(candidates, counts))  # (n_rows,)
        top = candidates.top
        stage2 = use_generator and self.generator is not None and generated is not None
        docs: list[tuple[dict[str, float], dict[str, list[str]]]] = []  # per document: label scores, proposing sources
        blocks: list[np.ndarray] = []  # stage 2: each document's feature rows, scored in one call below
        for i in range(len(candidates)):
            a, b = candidates.offsets[i], candidates.offsets[i + 1]
            logits: dict[str, float] = {}
            sources: dict[str, list[str]] = {}
            for row in range(a, b):
                label = candidates.labels[candidates.label_ids[row]]
                logits[label] = float(r_logit[row])
                sources[label] = [s for j, s in enumerate(candidates.sources) if candidates.ranks[row, j] <= top]
            gen = dict(generated[i]) if generated is not None else {}
            for label in gen:
                sources.setdefault(label, []).append(GENERATOR)
            if stage2:
                assert self.generator is not None
                labels, feats = document_generator_features(self.generator.names, logits, gen, counts)
                blocks.append(feats)
                scores = dict.fromkeys(labels, 0.0)
            else:
                scores = {x: _sigmoid(v) for x, v in logits.items()}
                for label, mass in gen.items():  # a generated label the retriever missed keeps the generator's mass
                    scores.setdefault(label, mass)
            docs.append((scores, sources))
        if stage2 and blocks:
            assert self.generator is not None
            probs = iter(self.generator.predict(np.concatenate(blocks)).tolist())  # (sum of labels,)
            for scores, _ in docs:
                for x in scores:  # the document's labels, in the order of its feature rows
                    scores[x] = next(probs)
        out: list[Fused] = []
        for scores, sources in docs:
            ranked = dict(sorted(scores.items(), key=lambda kv: -kv[1]))
            out.append(Fused(ranked, {x: sources.get(x, []) for x in ranked}))
        return out

    def save(self, path: str | Path) -> None:
        d = {"top": self.top, "retriever": self.retriever.to_dict(),
             "generator": self.generator.to_dict() if self.generator is not None else None}
        Path(path).write_text(json.dumps(d, indent=1))

    @classmethod
    def load(cls, path: str | Path) -> Fusion:
        d = json.loads(Path(path).read_text())
        gen = LogisticCalibrator.from_dict(d["generator"]) if d.get("generator") else None
        return cls(LogisticCalibrator.from_dict(d["retriever"]), gen, int(d["top"]))


STAGE_MAX_ROWS = 2_000_000
"""Candidate rows the retriever stage is fitted on at most: a random subset of whole documents above it. 2M
leaves the bundled datasets whole (GoEmotions: 43k train documents, about 1.2M rows) and bounds a large train
split's feature matrix at 1.2 GB; at 400,000 one main job scored 0.011 test macro-F1 below another without the
cap, a difference within what two main jobs of the same code differ by (0.007)."""


def stage_documents(candidates: Any, max_rows: int, seed: int = 0) -> np.ndarray | None:
    """The indices (in order) of a random subset of documents whose candidates hold at most ``max_rows`` rows,
    or None when every row fits."""
    if len(candidates.label_ids) <= max_rows:
        return None
    sizes = np.diff(np.asarray(candidates.offsets))
    order = np.random.default_rng(seed).permutation(len(sizes))
    return np.sort(order[: max(1, int(np.searchsorted(np.cumsum(sizes[order]), max_rows, side="right")))])


def fit_retriever_stage(candidates: Any, gold: Sequence[Sequence[str]], counts: Mapping[str, int], c: float = 1.0,
                        max_rows: int = STAGE_MAX_ROWS, seed: int = 0) -> LogisticCalibrator:
    """The retriever stage, fitted on leak-free candidates of labelled documents.

    Its 77 weights (the base features and their pairwise products, for three sources) need far fewer rows than
    a large train split's candidates give (10^6 documents x up to 60 candidates): above ``max_rows`` it is
    fitted on the candidates of a random subset of documents (``seed``), each document's rows together, since
    the features place a label within its document. The fit's time and its feature matrix (float64, 77
    columns: 0.6 KB per row) stay bounded whatever the train split's size."""
    cal = LogisticCalibrator(retriever_feature_names(candidates.sources), pairs=True, c=c)
    keep = stage_documents(candidates, max_rows, seed)
    if keep is not None:  # before the features: a row's features read only its own document's rows
        candidates, gold = candidates.documents(keep), [gold[i] for i in keep]
    return cal.fit(retriever_features(candidates, counts), gold_targets(candidates, gold))


def generator_rows(fusion: Fusion, candidates: Any, counts: Mapping[str, int], generated: Sequence[Mapping[str, float]],
                   gold: Sequence[Sequence[str]] | None = None, names: Sequence[str] = GENERATOR_FEATURES
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Generator-stage features (``names``) of every (document, label) the retriever or the generator proposed.

    Returns:
        ``(x (n, len(names)), y (n,) gold membership or zeros, doc (n,) document index, labels (n,))``.
    """
    r_logit = fusion.retriever.logit(retriever_features(candidates, counts))
    xs, ys, docs, labels = [], [], [], []
    for i in range(len(candidates)):
        a, b = candidates.offsets[i], candidates.offsets[i + 1]
        logits = {candidates.labels[candidates.label_ids[r]]: float(r_logit[r]) for r in range(a, b)}
        g = set(gold[i]) if gold is not None else set()
        doc_labels, x = document_generator_features(names, logits, dict(generated[i]), counts)
        xs.append(x)
        ys += [int(label in g) for label in doc_labels]
        docs += [i] * len(doc_labels)
        labels += doc_labels
    x_all = np.concatenate(xs) if xs else np.zeros((0, len(names)))
    return x_all, np.asarray(ys), np.asarray(docs), labels


def fit_generator_stage(fusion: Fusion, candidates: Any, counts: Mapping[str, int], generated: Sequence[Mapping[str, float]],
                        gold: Sequence[Sequence[str]], folds: int = 5, seed: int = 0, c: float = 1.0,
                        features: str = "base") -> tuple[LogisticCalibrator, list[dict[str, float]]]:
    """The generator stage fitted on dev, and its out-of-fold fused scores of the dev documents (each
    document scored by a stage fitted on the other folds), on which the threshold is tuned without
    the optimism of scoring the documents it was fitted on.

    Args:
        features: A key of :data:`GENERATOR_FEATURE_SETS`.

    Returns:
        ``(calibrator fitted on every dev document, out-of-fold scores per document)``.
    """
    names = generator_feature_names(features)
    x, y, doc, labels = generator_rows(fusion, candidates, counts, generated, gold, names)
    n_docs = len(candidates)
    fold_of = np.random.default_rng(seed).permutation(n_docs) % max(2, min(folds, n_docs))
    oof = np.zeros(len(y))
    for f in np.unique(fold_of):
        held = fold_of[doc] == f
        cal = LogisticCalibrator(names, pairs=True, c=c).fit(x[~held], y[~held])
        oof[held] = cal.predict(x[held])
    scores: list[dict[str, float]] = [{} for _ in range(n_docs)]
    for i, label, p in zip(doc.tolist(), labels, oof.tolist(), strict=True):
        scores[i][label] = p
    final = LogisticCalibrator(names, pairs=True, c=c).fit(x, y)
    return final, [dict(sorted(s.items(), key=lambda kv: -kv[1])) for s in scores]


GATE_MARGIN = 0.002
"""Dev micro-F1 the generator stage must add over the same calibration without it to be served: below
that, a difference is within what two fits of one model differ by, and the generator costs most of the
tagging time."""
GATE_MACRO_MARGIN = 0.01
"""Dev macro-F1 the generator stage may add instead, as long as it costs no micro-F1 beyond ``GATE_MARGIN``: on
a dataset whose retriever is near its ceiling in micro-F1 (Reuters-21578: 0.916 on dev) the generator's gain is
in the rare labels (+0.023 dev macro-F1 there), which is what a long tail asks of it."""


@dataclass(frozen=True)
class GeneratorGate:
    """Whether a ``retrieval`` model serves its generator stage, and the dev numbers that decided it.

    Attributes:
        serve: Tag with the generator (the fused scores); else with the retriever stage alone.
        mode: ``auto`` (decided on dev), ``always`` or ``never`` (``xlgen train --generator``).
        reason: One sentence for the training log, the model card and ``/v1/model``.
        dev_fused: Out-of-fold dev ``{"micro_f1", "macro_f1"}`` of the fused scores.
        dev_without: The same for the same calibration without the generator's features.
    """

    serve: bool = True
    mode: str = "always"
    reason: str = ""
    dev_fused: dict[str, float] = field(default_factory=dict)
    dev_without: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"serve": self.serve, "mode": self.mode, "reason": self.reason, "dev_fused": dict(self.dev_fused),
                "dev_without": dict(self.dev_without)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GeneratorGate:
        return cls(bool(d["serve"]), str(d.get("mode", "always")), str(d.get("reason", "")),
                   {k: float(v) for k, v in dict(d.get("dev_fused") or {}).items()},
                   {k: float(v) for k, v in dict(d.get("dev_without") or {}).items()})


def gate_generator(mode: str, gold: Sequence[Sequence[str]], fused: Sequence[Mapping[str, float]],
                   without: Sequence[Mapping[str, float]], min_labels: int = 1, margin: float = GATE_MARGIN,
                   macro_margin: float = GATE_MACRO_MARGIN) -> GeneratorGate:
    """Decides whether the generator stage earns its place, from out-of-fold dev scores.

    Args:
        mode: ``auto`` (serve it if its dev micro-F1 beats ``without``'s by more than ``margin``, or if its dev
            macro-F1 does by more than ``macro_margin`` while its micro-F1 is no more than ``margin`` below),
            ``always`` or ``never``.
        gold: Dev labels.
        fused: Out-of-fold fused dev scores (the generator stage refitted fold by fold).
        without: The same refit with the generator's features zero.
        min_labels: Labels every document keeps.
        margin: See :data:`GATE_MARGIN`.
        macro_margin: See :data:`GATE_MACRO_MARGIN`.
    """
    from xlgen.decoding import cut
    from xlgen.metrics import macro_f1, micro_f1, tune_threshold

    def scored(scores: Sequence[Mapping[str, float]]) -> dict[str, float]:
        threshold, micro = tune_threshold(gold, scores, min_labels)
        pred = [[x for x, _ in cut(dict(s), threshold, min_labels)] for s in scores]
        labels = sorted({x for g in gold for x in g})
        return {"micro_f1": float(micro_f1(gold, pred)), "macro_f1": float(macro_f1(gold, pred, labels)), "threshold": threshold}

    a, b = scored(fused), scored(without)
    gain = a["micro_f1"] - b["micro_f1"]
    numbers = (f"dev micro-F1 {a['micro_f1']:.4f} with the generator against {b['micro_f1']:.4f} without it under the same "
               f"calibration ({gain:+.4f}; macro-F1 {a['macro_f1']:.4f} against {b['macro_f1']:.4f})")
    if mode == "always":
        return GeneratorGate(True, mode, f"generator served (--generator always): {numbers}", a, b)
    if mode == "never":
        return GeneratorGate(False, mode, "retriever stage alone (--generator never)", a, b)
    if mode != "auto":
        raise ValueError(f"unknown generator gate {mode!r}; choose auto, always or never")
    if gain > margin:
        return GeneratorGate(True, mode, f"generator served: {numbers}", a, b)
    macro_gain = a["macro_f1"] - b["macro_f1"]
    if macro_gain > macro_margin and gain >= -margin:
        return GeneratorGate(True, mode, f"generator served for the rare labels: {numbers}; macro-F1 {macro_gain:+.4f} above the "
                                         f"margin {macro_margin} at no micro-F1 cost beyond {margin}", a, b)
    return GeneratorGate(False, mode, f"retriever stage alone, the generator does not earn its cost: {numbers}, "
                                      f"neither micro-F1 above the margin {margin} nor macro-F1 above {macro_margin}", a, b)
