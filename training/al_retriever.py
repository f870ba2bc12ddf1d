"""The generator-free learner of an active-learning simulation: the label retriever and its calibrated stage.

A ``retrieval`` model scores labels in two stages: the label retriever's sources (kNN votes over the
labelled documents, similarity to the label's text, the TF-IDF ⊕ encoder linear ranker) calibrated
into one probability per label (the fusion's retriever stage), then the generator. The first stage
alone needs no gradient steps: a round refits the sources and the calibrator on the documents
labelled so far (the pool's embeddings come from the on-disk cache, computed once), so a simulation
can afford pools of thousands of documents, three seeds and ten rounds on a CPU. It is the model that
``fused without generator`` rows of ``benchmarks/quality.py`` measure; every round trains it the same
way from scratch, so the full-pool reference is trained by the same recipe, to convergence (a convex
fit, no schedule to cut short).

What it can score: probabilities of every candidate label (``cvirs``, ``beal_det``, ``label_entropy``), ``T`` passes with
dropout on in the sentence encoder (``beal``, ``bald``: the whole network of this learner is the
encoder; the sources and the calibrator are deterministic), document vectors (``coreset``, ``dal``,
diversity) and text (``random``, ``subword``). The strategies that read generated sequences
(``margin``, ``entropy``, the ensemble's ``vote``, ``variance``, ``beal_adapted``, ``alps``) need the
generator and are refused (:func:`xlgen.active.selection.unsupported`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from xlgen.backends.batching import length_batches
from xlgen.data import Document
from xlgen.decoding import cut
from xlgen.encoders import EmbeddingCache, LabelRetriever, RetrieverConfig, SentenceEncoder
from xlgen.encoders.retriever import train_fingerprint
from xlgen.fusion import Fusion, fit_retriever_stage
from xlgen.metrics import evaluate_predictions, tune_threshold


@dataclass
class RetrieverStageModel:
    """The retriever stage of a ``retrieval`` model, as an active-learning learner.

    Attributes:
        retriever: The label retriever fitted on the labelled documents.
        fusion: Its calibrated retriever stage (no generator stage).
        threshold: The probability threshold tuned on dev for micro-F1.
        min_labels: Labels every document gets at least.
        tuned_on: Digest of the dev documents the threshold was tuned on.
    """

    retriever: LabelRetriever
    fusion: Fusion
    threshold: float
    min_labels: int = 1
    tuned_on: str = ""
    generator_free: ClassVar[bool] = True
    """Read by :mod:`xlgen.active.selection`: decode through :meth:`label_probabilities`, not beams."""
    guidance: ClassVar[None] = None

    def weights_version(self) -> str:
        """What identifies this model's scores: what it was fitted from (the labelled documents, the
        retriever's settings, the encoder's weights and numerics, the dev documents its threshold was
        tuned on), not the floats fitted from them.

        The floats carry rounding that depends on more than the documents: a float32 encoder rounds a
        vector differently with the batch it was computed in (the embedding cache keeps whichever came
        first), and the linear source's L-BFGS, stopped after ``linear_max_iter`` iterations, turns a
        2e-7 change of one vector into a 3e-4 change of its scores and so of the tuned threshold. Two fits
        of the same documents are the same model to that tolerance and share cached scores.
        """
        parts = [self.retriever.fingerprint, repr(self.retriever.config), self.retriever.encoder.cache_key,
                 str(self.min_labels), self.tuned_on]
        return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]

    def label_probabilities(self, texts: Sequence[str], vectors: np.ndarray | None = None) -> list[dict[str, float]]:
        """Per text, every candidate label's calibrated probability, best first (``vectors``: their
        embeddings, ``(n, dim)``, when already computed)."""
        candidates = self.retriever.score(list(texts), vectors=vectors)
        return [f.scores for f in self.fusion.fuse(candidates, self.retriever.counts, None)]

    def embeddings(self, texts: Sequence[str], batch_size: int | None = None) -> np.ndarray:
        """Unit sentence-encoder vectors of ``texts``, ``(n, dim)``, through the embedding cache."""
        return self.retriever.embed(list(texts))

    def dropout_passes(self, texts: Sequence[str], passes: int, seed: int = 0, batch_size: int = 64) -> list[list[dict[str, float]]]:
        """``passes`` stochastic passes: the sentence encoder (torch, dropout on, no cache) embeds the
        texts anew in each pass, and the retriever and its stage score them: ``[pass][doc]`` -> every
        candidate label's probability."""
        encoder = self.retriever.encoder
        st = encoder.model  # the SentenceTransformer
        texts = list(texts)
        lengths = [len(x) for x in st.tokenizer(texts, truncation=True, max_length=encoder.max_seq_length)["input_ids"]]
        batches = list(length_batches(lengths, batch_size))  # similar lengths together: little padding
        preprocess = getattr(st, "preprocess", None) or st.tokenize
        state = torch.random.get_rng_state()
        out: list[list[dict[str, float]]] = []
        try:
            st.train()
            for t in range(passes):
                torch.manual_seed(1_000_003 * seed + 7_919 * (t + 1))
                vectors = np.zeros((len(texts), encoder.dim), dtype=np.float32)  # (n, dim)
                with torch.no_grad():
                    for idx in batches:
                        emb = st(preprocess([texts[i] for i in idx]))["sentence_embedding"]  # (batch, dim)
                        vectors[idx] = torch.nn.functional.normalize(emb, dim=1).numpy()
                out.append(self.label_probabilities(texts, vectors))
        finally:
            st.eval()
            torch.random.set_rng_state(state)
        return out


def fit_stage_model(docs: Sequence[Document], dev: Sequence[Document], encoder: SentenceEncoder, cache: EmbeddingCache,
                    config: RetrieverConfig, min_labels: int = 1) -> RetrieverStageModel:
    """Fits the retriever on ``docs``, its stage on their leak-free candidates, and the threshold on ``dev``."""
    retriever = LabelRetriever.fit(docs, config=config, encoder=encoder, cache=cache)
    candidates = retriever.score_train(docs)
    stage = fit_retriever_stage(candidates, [d.labels for d in docs], retriever.counts)
    model = RetrieverStageModel(retriever, Fusion(stage, None, config.candidates), 0.5, min_labels, train_fingerprint(dev))
    model.threshold, _ = tune_threshold([d.labels for d in dev], model.label_probabilities([d.text for d in dev]), min_labels)
    return model


def evaluate_stage_model(model: RetrieverStageModel, test: Sequence[Document]) -> dict[str, float]:
    """Micro- and macro-F1 of ``model`` on ``test`` at its threshold."""
    scores = model.label_probabilities([d.text for d in test])
    pred = [[x for x, _ in cut(s, model.threshold, model.min_labels)] for s in scores]
    m = evaluate_predictions([d.labels for d in test], pred, scores, model.retriever.counts)
    return {"micro_f1": m["micro_f1"], "macro_f1": m["macro_f1"]}
