"""One evaluator for a model on a labelled split; training, benchmarks and the service reuse it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from xlgen.data import Document
from xlgen.decoding import DecodingConfig, Prediction
from xlgen.metrics import evaluate_predictions, micro_f1, tune_threshold
from xlgen.model import XLGenModel, cluster_score_dicts


@dataclass
class Evaluation:
    """Metrics with the predictions they came from."""

    metrics: dict[str, float]
    predictions: list[Prediction]


class Evaluator:
    """Evaluates a model on ``docs``; the primary metric is ``micro_f1``.

    Args:
        docs: Labelled documents.
        decoding: Decoding settings; ``None`` uses the model's defaults.
        prefix: Prefix of every metric name (``dev_``, ``test_``).
        progress: Show a progress bar while decoding.
        oracle_clusters: ``mcg``: append the gold clusters instead of predicted ones (the upper
            bound of cluster guidance).

    A ``bcl`` or ``mcg`` model also gets ``cluster_micro_f1`` (predicted against gold clusters)
    and ``cluster_threshold``.
    """

    primary_metric = "micro_f1"

    def __init__(self, docs: Sequence[Document], decoding: DecodingConfig | None = None, prefix: str = "", progress: bool = False,
                 oracle_clusters: bool = False):
        if not docs:
            raise ValueError("nothing to evaluate on")
        self.docs = list(docs)
        self.decoding = decoding
        self.prefix = prefix
        self.progress = progress
        self.oracle_clusters = oracle_clusters

    def run(self, model: XLGenModel, threshold: float | None = None, tune: bool = False, tune_clusters: bool = False) -> Evaluation:
        """Predicts and scores.

        Args:
            model: The model.
            threshold: Overrides the model's threshold.
            tune: Tune the threshold for micro-F1 on these documents and report at the tuned
                value (``threshold`` in the result).
            tune_clusters: Likewise for the cluster threshold (``cluster_threshold`` in the result),
                which then also picks the clusters an ``mcg`` model appends here.
        """
        cfg = self.decoding or model.decoding
        texts, gold = [d.text for d in self.docs], [d.labels for d in self.docs]
        extra, clusters = self._clusters(model, gold, tune_clusters)
        preds = model.predict(texts, cfg, threshold=0.0, progress=self.progress, clusters=clusters)
        scores = [p.all_scores for p in preds]
        thr = model.threshold if threshold is None else threshold
        if tune:
            thr, _ = tune_threshold(gold, scores, cfg.min_labels)
        preds = [model.to_prediction(p.candidates, cfg, thr) for p in preds]
        counts = dict(zip(model.label_space.labels, model.label_space.counts, strict=True))
        metrics = evaluate_predictions(gold, [p.labels for p in preds], scores, counts)
        metrics["threshold"] = thr
        metrics.update(extra)
        return Evaluation({self.prefix + k: v for k, v in metrics.items()}, preds)

    def _clusters(self, model: XLGenModel, gold: Sequence[Sequence[str]], tune: bool) -> tuple[dict[str, float], list[list[int]] | None]:
        """Cluster metrics, and the clusters an ``mcg`` model should append (``None``: its own)."""
        if model.clusters is None:
            if self.oracle_clusters:
                raise ValueError("oracle clusters need a model with label clusters (variant mcg)")
            return {}, None
        gold_c = [[str(c) for c in model.clusters.clusters_of(g)] for g in gold]
        if self.oracle_clusters:
            return {}, [[int(c) for c in g] for g in gold_c]
        probs = model.cluster_probabilities([d.text for d in self.docs])  # (n_docs, n_clusters)
        thr = model.cluster_threshold
        if tune:
            thr, _ = tune_threshold(gold_c, cluster_score_dicts(probs), 1)
        pred_c = model.clusters_above(probs, thr)
        extra = {"cluster_micro_f1": micro_f1(gold_c, [[str(c) for c in p] for p in pred_c]), "cluster_threshold": thr}
        return extra, pred_c if model.settings.variant == "mcg" else None

    def __call__(self, model: XLGenModel, threshold: float | None = None) -> dict[str, float]:
        return self.run(model, threshold).metrics

