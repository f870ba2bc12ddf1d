"""Retrieval-guided generation: the label retriever's best candidates appended to the T5 input, and the
generator's labels fused with the retriever's scores.

The retriever (:class:`xlgen.encoders.LabelRetriever`: kNN votes over train documents, similarity to
each label's text, a linear ranker over TF-IDF and embeddings) proposes candidates for a document;
the retriever stage of the fusion (:mod:`xlgen.fusion`) orders them by probability, and the best
``k_input`` are appended to the label-task input, each after a ``<sep>``, as MCG appends cluster
tokens::

    <labels> text <sep> earn <sep> acq <sep> money-fx </s>  ->  earn <sep> acq </s>

so that the generator learns when to copy, reorder, drop or add labels. Training candidates are leak
free (:meth:`xlgen.encoders.LabelRetriever.score_train`: kNN leaves the document out of its own
neighbours, the linear ranker scores each document with a model fitted on the other folds), otherwise
the generator would learn to copy perfect lists.

After decoding, every label the retriever or the generator proposed gets one fused probability
(:meth:`xlgen.fusion.Fusion.fuse`) with the sources that proposed it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from xlgen.data import Document
from xlgen.fusion import Fused, Fusion
from xlgen.guidance.base import Example, Guidance, GuidedModel, Plan, label_inputs

CACHE_ENV = "XLGEN_EMBEDDING_CACHE"
"""``0`` keeps a loaded model's query embeddings out of the on-disk cache (the service sets it)."""


class RetrievalGuidance(Guidance):
    """Candidate labels in the input; fused scores out.

    Args:
        retriever: The fitted label retriever.
        fusion: The calibrators (its generator stage is fitted on dev after training).
        k_input: Candidates appended to the input.
        max_suffix_tokens: At most this many tokens of candidates (whole labels only); the text is
            cut to make room (see :func:`xlgen.tokenizer.encode_input`).
        train_candidates: Leak-free candidates of the training documents (only while training).
        generator_features: The generator stage's feature set (a key of
            :data:`xlgen.fusion.GENERATOR_FEATURE_SETS`), used when it is fitted on dev.
        train_states: The sentence encoder's token states of the training documents (``states[i]``:
            ``(n_tokens, width)``), for a ``sentence-encoder`` generator (only while training).
    """

    name = "retrieval"
    reports = ("candidates",)

    def __init__(self, retriever: Any, fusion: Fusion, k_input: int = 10, max_suffix_tokens: int = 48,
                 train_candidates: Any = None, generator_features: str = "base", train_states: Any = None) -> None:
        from xlgen.fusion import generator_feature_names

        if k_input < 1 or max_suffix_tokens < 2:
            raise ValueError("k_input must be positive and max_suffix_tokens at least 2")
        generator_feature_names(generator_features)  # an unknown set fails here, not after training
        self.generator_features = generator_features
        self.retriever, self.fusion = retriever, fusion
        self.k_input, self.max_suffix_tokens = k_input, max_suffix_tokens
        self.train_candidates, self.train_states = train_candidates, train_states
        self.without_generator: list[dict[str, float]] | None = None
        self._pieces: dict[int, dict[str, list[int]]] = {}

    @property
    def counts(self) -> Mapping[str, int]:
        return self.retriever.counts

    # --------------------------------------------------------------------------------- inputs

    def ordered(self, candidates: Any) -> list[list[str]]:
        """Each document's candidate labels, most probable first (the retriever stage)."""
        probs = self.fusion.retriever_probabilities(candidates, self.counts)  # (n_rows,)
        out = []
        for i in range(len(candidates)):
            a, b = candidates.offsets[i], candidates.offsets[i + 1]
            order = np.argsort(-probs[a:b], kind="stable")
            out.append([candidates.labels[candidates.label_ids[a + j]] for j in order])
        return out

    def suffix(self, model: GuidedModel, labels: Sequence[str]) -> list[int]:
        """``<sep> label <sep> label ...``: the first ``k_input`` labels that fit ``max_suffix_tokens``."""
        tok, ids = model.tokenizer, list[int]()
        memo = self._pieces.setdefault(id(tok), {})  # one encoding per label, not per (document, label)
        for label in labels[: self.k_input]:
            piece = memo.get(label)
            if piece is None:
                piece = memo[label] = [tok.sep_id, *tok.encode(label)]
            if len(ids) + len(piece) > self.max_suffix_tokens:
                break
            ids += piece
        return ids

    def plan(self, model: GuidedModel, texts: Sequence[str], given: Sequence[Any] | None = None, report: bool = False,
             states: bool = True) -> Plan:
        """Scores ``texts`` with the retriever (``given``: candidate label lists to append instead,
        e.g. the gold labels: the oracle) and appends the best candidates; on the ``sentence-encoder``
        backbone the plan also holds the token states of the encoder pass (``states`` False: no generator
        will read them, the retriever's vectors alone are computed)."""
        if given is not None and len(given) != len(texts):
            raise ValueError("one candidate list per text")
        extra: dict[str, Any] = {}
        vectors = None
        if states and getattr(model.settings, "backbone", "t5") == "sentence-encoder":
            # one pass of the sentence encoder: its pooled vectors for the retriever, its token states for the generator
            vectors, extra["states"] = self.retriever.encoder.encode_states(list(texts), cache=self.retriever.cache)
        if given is not None:
            return Plan(suffixes=[self.suffix(model, list(g)) for g in given], extra=extra)
        candidates = self.retriever.score(list(texts), vectors=vectors)
        extra["candidates"] = candidates
        return Plan(suffixes=[self.suffix(model, c) for c in self.ordered(candidates)], extra=extra)

    def training_examples(self, model: GuidedModel, docs: Sequence[Document]) -> list[Example]:
        """One label example per document, its leak-free candidates appended."""
        if self.train_candidates is None or len(self.train_candidates) != len(docs):
            raise ValueError("retrieval guidance trains on the leak-free candidates of its own training documents")
        suffixes = [self.suffix(model, c) for c in self.ordered(self.train_candidates)]
        if getattr(model.settings, "backbone", "t5") == "sentence-encoder":
            from xlgen.backbone import text_input

            if self.train_states is None or len(self.train_states) != len(docs):
                raise ValueError("a sentence-encoder generator trains on the token states of its own training documents")
            n = model.settings.max_input_length
            return [Example(text_input(model.tokenizer, int(self.train_states.offsets[i + 1] - self.train_states.offsets[i]), sx, n), i)
                    for i, sx in enumerate(suffixes)]
        return [Example(ids, i) for i, ids in enumerate(label_inputs(model, [d.text for d in docs], suffixes))]

    def text_states(self, doc: int, n: int) -> np.ndarray:
        """The first ``n`` token states of training document ``doc``, ``(n, width)`` (a ``sentence-encoder`` generator)."""
        return self.train_states[doc][:n]

    # --------------------------------------------------------------------------------- scores

    def rescore(self, model: GuidedModel, plan: Plan, generated: Sequence[Mapping[str, float]] | None,
                use_generator: bool = True) -> list[Fused] | None:
        """Fused probabilities (``None`` when the plan holds no candidates, e.g. an oracle plan)."""
        candidates = plan.extra.get("candidates")
        if candidates is None:
            return None
        return self.fusion.fuse(candidates, self.counts, generated, use_generator=use_generator)

    def evaluate(self, model: GuidedModel, docs: Sequence[Document], tune: bool = False, oracle: bool = False) -> tuple[dict[str, float], Plan | None]:
        """``candidate_recall``: the share of gold labels among the appended candidates (the most the
        generator can copy); with ``oracle``, the gold labels are appended instead."""
        texts = [d.text for d in docs]
        if oracle:
            return {}, self.plan(model, texts, given=[list(d.labels) for d in docs])
        plan = self.plan(model, texts)
        ordered = self.ordered(plan.extra["candidates"])
        hits = sum(len(set(d.labels) & set(o[: self.k_input])) for d, o in zip(docs, ordered, strict=True))
        total = sum(len(set(d.labels)) for d in docs)
        return {"candidate_recall": hits / max(total, 1)}, plan

    def calibrate(self, model: GuidedModel, docs: Sequence[Document]) -> list[dict[str, float]]:
        """Fits the fusion's generator stage on ``docs`` (dev: the generator never trained on it) from
        the generator's beam mass and the retriever stage; returns the out-of-fold fused scores.

        Also keeps :attr:`without_generator`: the out-of-fold scores of the same refit with the generator's
        features all zero (the same calibration without what the generator knows), which the dev gate
        compares the fused scores with (:func:`xlgen.fusion.gate_generator`)."""
        from xlgen.fusion import fit_generator_stage

        texts = [d.text for d in docs]
        plan = self.plan(model, texts)
        preds = model.predict(texts, threshold=0.0, plan=plan, scoring="generator")  # type: ignore[attr-defined]
        gold = [d.labels for d in docs]
        stage, oof = fit_generator_stage(self.fusion, plan.extra["candidates"], self.counts, [p.all_scores for p in preds],
                                         gold, features=self.generator_features)
        _, self.without_generator = fit_generator_stage(self.fusion, plan.extra["candidates"], self.counts, [{} for _ in docs],
                                                        gold, features=self.generator_features)
        self.fusion.generator = stage
        return oof

    # ---------------------------------------------------------------------------- persistence

    def save(self, directory: Path) -> dict[str, Any]:
        self.retriever.save(directory / "retriever")
        self.fusion.save(directory / "fusion.json")
        return {"k_input": self.k_input, "max_suffix_tokens": self.max_suffix_tokens, "generator_features": self.generator_features,
                "fit_seconds": {k: round(v, 2) for k, v in getattr(self.retriever, "fit_seconds", {}).items()}}

    @classmethod
    def load(cls, directory: Path, meta: dict[str, Any]) -> RetrievalGuidance:
        from xlgen.encoders import EmbeddingCache, LabelRetriever

        cache = None if os.environ.get(CACHE_ENV, "1") == "0" else EmbeddingCache()
        retriever = LabelRetriever.load(directory / "retriever", cache=cache)
        retriever.fit_seconds = dict(meta.get("fit_seconds") or {})
        return cls(retriever, Fusion.load(directory / "fusion.json"), int(meta["k_input"]), int(meta["max_suffix_tokens"]),
                   generator_features=str(meta.get("generator_features", "base")))

    has_document_embeddings = True

    def document_embeddings(self, texts: Sequence[str]) -> np.ndarray:
        """The retriever's sentence-encoder vectors (normalised; the embedding cache serves repeats)."""
        return self.retriever.embed(texts)

    def describe(self) -> dict[str, Any]:
        return {"kind": self.name, "sources": list(self.retriever.sources), "k_input": self.k_input,
                "encoder": self.retriever.encoder.name, "labels": len(self.retriever.labels),
                "fused_with_generator": self.fusion.generator is not None}
