"""Batch selection: which pool documents to annotate next.

``select_batch(model, pool, SelectionConfig(strategy="vote", batch_size=100))`` decodes what the
strategy needs, scores the pool (:mod:`xlgen.active.acquisition`) and picks the batch:

1. optionally score only a random ``pool_sample`` of a large pool;
2. optionally drop the top ``drop_top`` share of the scores (the most uncertain are often noise);
3. top-b, or with ``diversity`` cluster the encoder embeddings of the ``candidate_factor * b``
   best candidates into ``b`` clusters (K-means) and take the highest-scored of each.

Decoding outputs and scores are cached per model version (:attr:`xlgen.model.XLGenModel.version`:
the saved directory's version, or a digest of the weights and threshold computed once), so
strategies that share a model, or repeated calls, decode the pool once.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from xlgen.active.acquisition import NEEDS, PoolOutputs, get_strategy, serves
from xlgen.active.ensemble import EnsembleConfig, decode_ensemble, mc_passes
from xlgen.data import Document
from xlgen.decoding import Candidate, cut
from xlgen.model import XLGenModel


@dataclass(frozen=True)
class SelectionConfig:
    """How to pick the next batch.

    Attributes:
        strategy: Acquisition function name (see :data:`xlgen.active.acquisition.STRATEGIES`).
        batch_size: Documents to select.
        diversity: Cluster the best candidates' encoder embeddings and take the most uncertain per
            cluster, instead of plain top-b.
        candidate_factor: With ``diversity``, cluster the ``candidate_factor * batch_size`` best.
        pool_sample: Score only a random sample of this many pool documents (``None``: all).
        drop_top: Share of the highest scores dropped as likely noise, in [0, 1).
        seed: Seed of random scores, sub-sampling and K-means.
        ensemble: The ensemble decoding the ``ensemble`` strategies read; its first member is the
            reference beam search of the ``beams`` strategies.
    """

    strategy: str = "vote"
    batch_size: int = 100
    diversity: bool = False
    candidate_factor: int = 5
    pool_sample: int | None = None
    drop_top: float = 0.0
    seed: int = 0
    ensemble: EnsembleConfig = field(default_factory=EnsembleConfig)

    def __post_init__(self) -> None:
        get_strategy(self.strategy)  # raises for an unknown name
        if self.batch_size < 1 or self.candidate_factor < 1:
            raise ValueError("batch_size and candidate_factor must be positive")
        if self.pool_sample is not None and self.pool_sample < 1:
            raise ValueError("pool_sample must be positive")
        if not 0.0 <= self.drop_top < 1.0:
            raise ValueError("drop_top must lie in [0, 1)")


@dataclass
class Selection:
    """The chosen documents, best first.

    Attributes:
        indices: Positions in the pool.
        ids: Their document ids.
        scores: Their acquisition scores.
        suggestions: Per chosen document, the model's labels with scores (vote fractions for an
            ensemble), for annotators; empty where the strategy decoded nothing.
        seconds: What computing the scores cost (decoding + scoring), even when they came from the cache.
        n_scored: Documents scored.
        cached: Whether the decoding outputs came from the cache.
    """

    indices: list[int]
    ids: list[str]
    scores: list[float]
    suggestions: list[list[tuple[str, float]]]
    seconds: float
    n_scored: int
    cached: bool = False


@dataclass
class _Decoded:
    outputs: PoolOutputs
    suggestions: list[list[tuple[str, float]]]
    seconds: float


class ScoreCache:
    """Decoding outputs and scores per (model version, documents, settings); keep one per process or
    per simulation and pass it to every :func:`select_batch` call."""

    def __init__(self) -> None:
        self.decoded: dict[tuple, _Decoded] = {}
        self.scores: dict[tuple, tuple[np.ndarray, float]] = {}
        self.hits = 0

    def clear(self) -> None:
        self.decoded.clear()
        self.scores.clear()


PROBABILITY_STRATEGIES = ("cvirs", "beal_det", "label_entropy")
"""Strategies of need ``beams`` that read only the label probabilities (``PoolOutputs.passes``), which a
generator-free model (``generator_free``, e.g. :class:`xlgen.training.al_retriever.RetrieverStageModel`) gives too."""


def unsupported(model: XLGenModel, strategy: str) -> str | None:
    """Why ``model`` cannot run the acquisition function ``strategy`` (``None`` when it can)."""
    needs = get_strategy(strategy).needs
    if getattr(model, "generator_free", False):
        if needs in ("none", "passes") or strategy in PROBABILITY_STRATEGIES:
            return None
        return (f"strategy {strategy!r} reads generated sequences, which a model without a generator does not produce; "
                f"without one: random, subword, coreset, dal, {', '.join(PROBABILITY_STRATEGIES)}, beal, bald")
    if needs == "clusters" and (model.guidance is None or "cluster_probs" not in model.guidance.reports):
        return (f"strategy {strategy!r} needs a model whose guidance has label clusters (variant bcl or mcg); "
                f"this model is {model.settings.variant}")
    return None


def subword_counts(model: XLGenModel, texts: Sequence[str]) -> np.ndarray:
    """Pieces per text for the ``subword`` strategy: the pretrained WordPiece vocabulary when the
    packaged encoder is installed, else the model's own tokenizer: ``(n_texts,)``."""
    from xlgen.encoders.packaged import EncoderUnavailableError, wordpiece_counts

    try:
        return wordpiece_counts(texts)
    except EncoderUnavailableError:
        return np.array([len(model.tokenizer.encode(t)) for t in texts])


def decode_pool(model: XLGenModel, texts: Sequence[str], needs: str, ensemble: EnsembleConfig, embeddings: bool,
                seed: int = 0) -> _Decoded:
    """Decodes as much as ``needs`` asks (``none``, ``beams``, ``clusters``, ``ensemble`` or ``passes``;
    ``seed`` seeds the dropout of ``passes``)."""
    if needs not in NEEDS:
        raise ValueError(f"unknown need {needs!r}")
    started = time.perf_counter()
    texts = list(texts)
    outputs = PoolOutputs(texts, n_pieces=subword_counts(model, texts))
    suggestions: list[list[tuple[str, float]]] = [[] for _ in texts]
    if getattr(model, "generator_free", False):
        return _decode_generator_free(model, outputs, needs, ensemble, embeddings, seed, started)
    if needs == "passes":
        outputs.passes = mc_passes(model, texts, ensemble, seed)
    elif needs == "ensemble":
        out = decode_ensemble(model, texts, ensemble, embeddings=embeddings)
        outputs.beams, outputs.members, outputs.embeddings = out.candidates[0], out.member_labels, out.embeddings
        suggestions = out.labels
    elif needs in ("beams", "clusters", "surprisal"):
        cfg = ensemble.member_configs()[0]
        model.model.eval()
        cache: dict[int, torch.Tensor] = {}
        # the guidance plans once: its report (cluster probabilities) and the inputs come from one pass
        plan = model.plan(texts, report=needs == "clusters")
        outputs.cluster_probs = plan.cluster_probs  # (n, n_clusters) or None
        inputs = model.encode_inputs(texts, plan=plan)
        beams = model.candidates(inputs, cfg, encoder_cache=cache)
        if needs == "surprisal":  # the encoder cache holds torch's states unless an export decoded
            outputs.surprisal = surprisal_vectors(model, inputs, beams, cfg.max_new_tokens, cfg.batch_size,
                                                  cache if model.backend is None else None)
        preds = [model.to_prediction(c, cfg, model.threshold) for c in beams]
        outputs.beams = beams
        outputs.members = [[dict(zip(p.labels, p.scores, strict=True)) for p in preds]]
        outputs.passes = [[dict(p.all_scores) for p in preds]]  # the deterministic pass (dropout off)
        suggestions = [list(zip(p.labels, p.scores, strict=True)) for p in preds]
        if texts and not (model.guidance is not None and model.guidance.has_document_embeddings):  # else on demand, below
            outputs.embeddings = torch.stack([cache[i].float().mean(0) for i in range(len(texts))]).numpy()  # (n, d)
    if embeddings and outputs.embeddings is None:
        outputs.embeddings = model.embeddings(texts, ensemble.batch_size)
    return _Decoded(outputs, suggestions, time.perf_counter() - started)


def _decode_generator_free(model: Any, outputs: PoolOutputs, needs: str, ensemble: EnsembleConfig, embeddings: bool,
                           seed: int, started: float) -> _Decoded:
    """:func:`decode_pool` of a model without a generator: its label probabilities are the deterministic
    pass (and the one member, cut at its threshold); ``passes`` asks for ``ensemble.mc_passes`` passes with
    dropout on (``model.dropout_passes``)."""
    texts = outputs.texts
    probs = model.label_probabilities(texts) if needs != "none" else []
    cuts = [cut(p, model.threshold, model.min_labels) for p in probs]
    if needs == "passes":
        outputs.passes = model.dropout_passes(texts, ensemble.mc_passes, seed)
    elif needs != "none":
        outputs.passes = [probs]
        outputs.members = [[dict(c) for c in cuts]]
    if embeddings:
        outputs.embeddings = model.embeddings(texts)
    suggestions = cuts if cuts else [[] for _ in texts]
    return _Decoded(outputs, suggestions, time.perf_counter() - started)


@torch.inference_mode()
def surprisal_vectors(model: XLGenModel, inputs: Sequence[Sequence[int]], beams: Sequence[Sequence[Candidate]], length: int,
                      batch_size: int = 32, encoder_cache: dict[int, torch.Tensor] | None = None) -> np.ndarray:
    """ALPS's surprisal from the generator (see :class:`xlgen.active.acquisition.ALPS`): per document, the
    teacher-forced negative log-likelihood of each target id of its best beam (its labels through
    :func:`xlgen.tokenizer.encode_target`, at most ``length`` ids), by the torch model on the encoded
    ``inputs`` the beams were decoded from, 0 after the target's end: ``(n_docs, length)``.
    ``encoder_cache``: the documents' encoder states, else the torch encoder runs."""
    from transformers.modeling_outputs import BaseModelOutput

    from xlgen.backends.batching import pad_batch, states_from_cache
    from xlgen.tokenizer import encode_target

    tok = model.tokenizer
    out = np.zeros((len(inputs), length))
    targets = [encode_target(tok, list(b[0].labels) if b else [], length) for b in beams]
    model.model.eval()
    for start in range(0, len(inputs), batch_size):
        idx = range(start, min(start + batch_size, len(inputs)))
        ids, mask = pad_batch([inputs[i] for i in idx], tok.pad_id, model.device)  # (batch, src_len) each
        states = states_from_cache(encoder_cache, idx, ids)  # (batch, src_len, d_model)
        if states is None:
            states = model.t5.get_encoder()(input_ids=ids, attention_mask=mask).last_hidden_state
        target, _ = pad_batch([targets[i] for i in idx], tok.pad_id, model.device)  # (batch, tgt_len)
        start_ids = torch.full_like(target[:, :1], tok.pad_id)  # T5's decoder start is the pad id
        logits = model.generator(encoder_outputs=BaseModelOutput(last_hidden_state=states), attention_mask=mask,
                                 decoder_input_ids=torch.cat([start_ids, target[:, :-1]], dim=1)).logits
        nll = -torch.log_softmax(logits.float(), dim=-1).gather(-1, target.unsqueeze(-1)).squeeze(-1)  # (batch, tgt_len)
        for row, i in enumerate(idx):
            out[i, : len(targets[i])] = nll[row, : len(targets[i])].cpu().numpy()
    return out  # (n_docs, length)


def _vectors(model: XLGenModel, docs: Sequence[Document]) -> np.ndarray | None:
    """Document vectors of ``docs`` as the pool gets them (see :meth:`XLGenModel.embeddings`), None for none."""
    return model.embeddings([d.text for d in docs]) if docs else None


def score_pool(
    model: XLGenModel, docs: Sequence[Document], cfg: SelectionConfig, cache: ScoreCache | None = None,
    labelled: Sequence[Document] = (),
) -> tuple[np.ndarray, _Decoded, float]:
    """Scores ``docs`` with ``cfg.strategy``, cached by model version; ``labelled`` are the documents
    labelled so far, which Core-Set and DAL compare the pool with.

    Returns:
        ``(scores (n_docs,), decoded outputs, seconds)``, the seconds being what decoding and scoring
        cost when computed (also on a cache hit).
    """
    if why := unsupported(model, cfg.strategy):
        raise ValueError(why)
    cache = cache if cache is not None else ScoreCache()
    strategy = get_strategy(cfg.strategy, cfg.seed)
    ids = hashlib.sha256("\x00".join(d.id for d in docs).encode()).hexdigest()
    # the seed only changes what the dropout passes decode
    key = (model.weights_version(), ids, strategy.needs, repr(cfg.ensemble), cfg.diversity, cfg.seed if strategy.needs == "passes" else 0)
    # richer outputs of the same model serve too: the ensemble's first member is the reference beam search
    richer = [(*key[:2], n, *key[3:]) for n in NEEDS if serves(n, strategy.needs)]
    decoded = next((cache.decoded[k] for k in richer if k in cache.decoded), None)
    if decoded is None:
        decoded = decode_pool(model, [d.text for d in docs], strategy.needs, cfg.ensemble,
                              cfg.diversity or strategy.uses_embeddings, cfg.seed)
        cache.decoded[key] = decoded
    else:
        cache.hits += 1
    if strategy.uses_embeddings and decoded.outputs.embeddings is None:
        decoded.outputs.embeddings = model.embeddings([d.text for d in docs])  # (n_docs, dim)
    skey: tuple = (*key, cfg.strategy, cfg.seed)
    if strategy.uses_labelled:
        vectors = _vectors(model, labelled) if strategy.uses_embeddings else None
        decoded = _Decoded(replace(decoded.outputs, labelled_embeddings=vectors, labelled_labels=[set(d.labels) for d in labelled]),
                           decoded.suggestions, decoded.seconds)
        skey = (*skey, hashlib.sha256("\x00".join(d.id for d in labelled).encode()).hexdigest())
    if skey not in cache.scores:
        started = time.perf_counter()
        scores = strategy.score(decoded.outputs)  # (n_docs,)
        cache.scores[skey] = (scores, time.perf_counter() - started)
    scores, seconds = cache.scores[skey]
    return scores, decoded, decoded.seconds + seconds


def top_b(scores: np.ndarray, b: int) -> np.ndarray:
    """Indices of the ``b`` highest scores, best first (ties keep pool order)."""
    return np.argsort(-scores, kind="stable")[:b]


def drop_noise(order: np.ndarray, share: float) -> np.ndarray:
    """``order`` (best first) without its first ``share``."""
    return order[int(round(share * len(order))) :]


def diverse(scores: np.ndarray, embeddings: np.ndarray, candidates: np.ndarray, b: int, seed: int = 0) -> np.ndarray:
    """The highest-scored candidate of each of ``b`` K-means clusters of the candidates' embeddings.

    Args:
        scores: All scores, ``(n_docs,)``.
        embeddings: All embeddings, ``(n_docs, d)``.
        candidates: Candidate indices, best first.
        b: Batch size.
        seed: K-means seed.

    Returns:
        ``b`` indices (fewer if there are fewer candidates), best first.
    """
    from sklearn.cluster import KMeans

    if len(candidates) <= b:
        return candidates
    km = KMeans(n_clusters=b, n_init=1, random_state=seed).fit(embeddings[candidates])
    chosen: list[int] = []
    for c in range(b):
        members = candidates[km.labels_ == c]
        if len(members):
            chosen.append(int(members[np.argmax(scores[members])]))
    rest = [int(i) for i in candidates if int(i) not in set(chosen)]  # empty clusters: fill by score
    picked = np.array(chosen + rest[: b - len(chosen)])
    return picked[np.argsort(-scores[picked], kind="stable")]


def pick_batch(order: np.ndarray, scores: np.ndarray, embeddings: np.ndarray | None, cfg: SelectionConfig) -> np.ndarray:
    """The batch from the candidates ``order`` (best first, noise dropped): with ``cfg.diversity`` and
    embeddings, the best of each K-means cluster of the ``candidate_factor * batch_size`` best; else the
    first ``batch_size``."""
    if cfg.diversity and embeddings is not None:
        return diverse(scores, embeddings, order[: cfg.candidate_factor * cfg.batch_size], cfg.batch_size, cfg.seed)
    return order[: cfg.batch_size]


def select_batch(
    model: XLGenModel, pool: Sequence[Document], cfg: SelectionConfig, cache: ScoreCache | None = None,
    labelled: Sequence[Document] = (),
) -> Selection:
    """The next ``cfg.batch_size`` documents of ``pool`` to annotate, most useful first.

    Args:
        model: The current model.
        pool: Unlabelled documents (labels, if any, are ignored).
        cfg: Strategy and batch settings.
        cache: Reused across calls to skip decoding a pool twice under the same model version.
        labelled: The documents labelled so far (Core-Set and DAL compare the pool with them).
    """
    pool = list(pool)
    if cfg.pool_sample is not None and cfg.pool_sample < len(pool):
        sub = np.sort(np.random.default_rng(cfg.seed).choice(len(pool), cfg.pool_sample, replace=False))
    else:
        sub = np.arange(len(pool))
    cache = cache if cache is not None else ScoreCache()
    hits = cache.hits
    scores, decoded, seconds = score_pool(model, [pool[i] for i in sub], cfg, cache, labelled)
    order = drop_noise(top_b(scores, len(scores)), cfg.drop_top)
    strategy = get_strategy(cfg.strategy, cfg.seed)
    batch = strategy.pick(decoded.outputs, order, cfg.batch_size) if strategy.picks_batch else None
    picked = batch if batch is not None else pick_batch(order, scores, decoded.outputs.embeddings, cfg)
    return Selection(
        indices=[int(sub[i]) for i in picked],
        ids=[pool[int(sub[i])].id for i in picked],
        scores=[float(scores[i]) for i in picked],
        suggestions=[decoded.suggestions[i] for i in picked],
        seconds=seconds,
        n_scored=len(sub),
        cached=cache.hits > hits,
    )
