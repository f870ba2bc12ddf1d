"""One evaluator for a model on a labelled split; training, benchmarks and the service reuse it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from xlgen.data import Document
from xlgen.decoding import DecodingConfig, Prediction
from xlgen.guidance import Plan
from xlgen.metrics import evaluate_predictions, tune_threshold
from xlgen.model import XLGenModel


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
        oracle_clusters: Condition the guidance on the gold labels instead of its predictions
            (``mcg``: the gold clusters appended; ``retrieval``: the gold labels appended as
            candidates; the upper bound of the guidance).
        scoring: How labels are scored (:data:`xlgen.model.SCORINGS`): ``fused`` (default),
            ``generator`` or ``retriever``.

    A guided model also gets its guidance's own metrics (:meth:`xlgen.guidance.base.Guidance.evaluate`:
    ``cluster_micro_f1`` and ``cluster_threshold`` for ``bcl`` and ``mcg``).
    """

    primary_metric = "micro_f1"

    def __init__(self, docs: Sequence[Document], decoding: DecodingConfig | None = None, prefix: str = "", progress: bool = False,
                 oracle_clusters: bool = False, scoring: str = "fused"):
        if not docs:
            raise ValueError("nothing to evaluate on")
        self.docs = list(docs)
        self.decoding = decoding
        self.prefix = prefix
        self.progress = progress
        self.oracle_clusters = oracle_clusters
        self.scoring = scoring

    def run(self, model: XLGenModel, threshold: float | None = None, tune: bool = False, tune_clusters: bool = False) -> Evaluation:
        """Predicts and scores.

        Args:
            model: The model.
            threshold: Overrides the model's threshold.
            tune: Tune the threshold for micro-F1 on these documents and report at the tuned
                value (``threshold`` in the result).
            tune_clusters: Let the guidance tune its own settings on these documents too (the
                cluster threshold of ``bcl`` / ``mcg``, reported as ``cluster_threshold``), which then
                also pick what it conditions on here.
        """
        cfg = self.decoding or model.decoding
        texts, gold = [d.text for d in self.docs], [d.labels for d in self.docs]
        extra, plan = self._guidance(model, tune_clusters)
        preds = model.predict(texts, cfg, threshold=0.0, progress=self.progress, plan=plan, scoring=self.scoring)
        scores = [p.all_scores for p in preds]
        thr = model.threshold if threshold is None else threshold
        if tune:
            thr, _ = tune_threshold(gold, scores, cfg.min_labels)
        preds = [p.recut(thr, cfg.min_labels, model.knows) for p in preds]
        metrics = evaluate_predictions(gold, [p.labels for p in preds], scores, model.label_space.train_counts())
        metrics["threshold"] = thr
        metrics.update(extra)
        return Evaluation({self.prefix + k: v for k, v in metrics.items()}, preds)

    def _guidance(self, model: XLGenModel, tune: bool) -> tuple[dict, Plan | None]:
        """The guidance's own metrics, and the plan to decode with (``None``: the model plans)."""
        if model.guidance is None:
            if self.oracle_clusters:
                raise ValueError("oracle clusters need a guided model (variant mcg)")
            return {}, None
        return model.guidance.evaluate(model, self.docs, tune=tune, oracle=self.oracle_clusters)

    def __call__(self, model: XLGenModel, threshold: float | None = None) -> dict[str, float]:
        return self.run(model, threshold).metrics

