"""One evaluator for a model on a labelled split; training, benchmarks and the service reuse it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from xlgen.data import Document
from xlgen.decoding import DecodingConfig, Prediction
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
    """

    primary_metric = "micro_f1"

    def __init__(self, docs: Sequence[Document], decoding: DecodingConfig | None = None, prefix: str = "", progress: bool = False):
        if not docs:
            raise ValueError("nothing to evaluate on")
        self.docs = list(docs)
        self.decoding = decoding
        self.prefix = prefix
        self.progress = progress

    def run(self, model: XLGenModel, threshold: float | None = None, tune: bool = False) -> Evaluation:
        """Predicts and scores.

        Args:
            model: The model.
            threshold: Overrides the model's threshold.
            tune: Tune the threshold for micro-F1 on these documents and report at the tuned
                value (``threshold`` in the result).
        """
        cfg = self.decoding or model.decoding
        preds = model.predict([d.text for d in self.docs], cfg, threshold=0.0, progress=self.progress)
        gold = [d.labels for d in self.docs]
        scores = [p.all_scores for p in preds]
        thr = model.threshold if threshold is None else threshold
        if tune:
            thr, _ = tune_threshold(gold, scores, cfg.min_labels)
        preds = [model.to_prediction(p.candidates, cfg, thr) for p in preds]
        counts = dict(zip(model.label_space.labels, model.label_space.counts, strict=True))
        metrics = evaluate_predictions(gold, [p.labels for p in preds], scores, counts)
        metrics["threshold"] = thr
        return Evaluation({self.prefix + k: v for k, v in metrics.items()}, preds)

    def __call__(self, model: XLGenModel, threshold: float | None = None) -> dict[str, float]:
        return self.run(model, threshold).metrics

