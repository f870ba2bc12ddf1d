"""Guidance in training: building a run's guidance (:mod:`xlgen.guidance`), keeping it up to date
with labels first seen later, and the training loss around the model and the guidance.

The loss is the token cross-entropy of the targets plus whatever extra loss the guidance trains
(``bcl``: ``lambda * BCE`` of its multi-cluster head against the document's clusters); the examples
and targets come from the guidance too (``mcg``: a cluster-task example per document).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from xlgen.clustering import ClusterConfig, assign_new_labels, build_clusters
from xlgen.data import Document
from xlgen.fusion import Fusion, fit_retriever_stage
from xlgen.guidance import Guidance
from xlgen.guidance.bcl import HEAD_FILE, BCLGuidance
from xlgen.guidance.cluster import ClusterGuidance
from xlgen.guidance.clusters import LabelClusters
from xlgen.guidance.head import ClusterHead
from xlgen.guidance.mcg import MCGGuidance
from xlgen.guidance.retrieval import RetrievalGuidance
from xlgen.training.config import TrainConfig

log = logging.getLogger("xlgen.train")


def prepare_clusters(cfg: TrainConfig, train: Sequence[Document], work_dir: Path) -> tuple[LabelClusters, Path | None]:
    """The run's label clustering and its featuriser folder.

    In order: ``--clusters``; else the clustering of ``--base-model`` when it is an xlgen model
    directory that has one; else K-means built here on the train split (saved in ``work_dir``, so a
    resumed run reads the same one). Train labels the clustering lacks go to their nearest centroid.
    """
    base_clusters = [Path(cfg.base_model or "") / sub for sub in ("guidance", "clusters")]  # model directory formats 2 and 1
    if cfg.clusters:
        source = Path(cfg.clusters)
    elif cfg.base_model and any((p / "clusters.json").is_file() for p in base_clusters):
        source = next(p for p in base_clusters if (p / "clusters.json").is_file())
    elif (work_dir / "clusters.json").is_file():
        source = work_dir
    else:
        model = {"encoder": cfg.base_model, "sentence": cfg.encoder}.get(cfg.cluster_features)
        cc = ClusterConfig(n_clusters=cfg.n_clusters, features=cfg.cluster_features, features_model=model, seed=cfg.seed)
        built, built_features = build_clusters(train, cc, work_dir=work_dir / ".features")
        built.save(work_dir, built_features)
        source = work_dir
    clusters = LabelClusters.load(source)
    features_dir = source / "features"
    features = features_dir if features_dir.is_dir() else None
    added = assign_new_labels(clusters, train, features_dir=features) if features else {}
    missing = {x for d in train for x in d.labels} - set(clusters.assignment)
    if missing:
        raise ValueError(f"{len(missing)} train labels have no cluster and the clustering has no featuriser to place them")
    if added:
        log.info("%d labels new to the clustering placed at their nearest centroid", len(added))
    return clusters, features


def build_guidance(cfg: TrainConfig, train: Sequence[Document], d_model: int, work_dir: Path) -> Guidance | None:
    """The guidance of a new run (``None`` for ``base``); ``work_dir`` keeps what it builds, so a
    resumed run reads the same one.

    A ``bcl`` run whose ``--base-model`` is an xlgen model directory of the same clustering continues
    that model's head.
    """
    if cfg.variant == "base":
        return None
    if cfg.variant == "retrieval":
        return build_retrieval(cfg, train, work_dir)
    clusters, features = prepare_clusters(cfg, train, work_dir / "clusters")
    if cfg.variant == "mcg":
        return MCGGuidance(clusters, features=features)
    if cfg.variant == "bcl":
        head = ClusterHead(d_model, clusters.n_clusters)
        base_head = Path(cfg.base_model or "") / "guidance" / HEAD_FILE
        if not base_head.is_file():
            base_head = Path(cfg.base_model or "") / HEAD_FILE  # model directory format 1
        if cfg.base_model and base_head.is_file():
            from safetensors.torch import load_file

            state = load_file(str(base_head))
            if state["proj.weight"].shape == head.proj.weight.shape:  # the same clustering: continue its head
                head.load_state_dict(state)
        return BCLGuidance(clusters, head, cfg.bcl_lambda, features)
    raise ValueError(f"no training recipe for guidance {cfg.variant!r}")


def fine_tuned_encoder(cfg: TrainConfig, train: Sequence[Document], work_dir: Path) -> Path:
    """The run's sentence encoder fine-tuned on ``cfg.encoder_pairs`` train pairs and the answers of
    ``cfg.encoder_answers`` (the no answers only with ``cfg.encoder_hard_negatives``;
    :func:`xlgen.training.retriever.fine_tune_bi_encoder`), kept in
    ``work_dir/encoder``: a resumed run, and the other processes of a distributed one, read it there."""
    from xlgen.encoders.label_texts import read_label_file
    from xlgen.files import atomic_dir
    from xlgen.training.retriever import BiEncoderConfig, fine_tune_bi_encoder, read_answers

    done = work_dir / "encoder"
    if (done / "modules.json").is_file():
        log.info("fine-tuned encoder reused from %s", done)
        return done
    answers = [a for a in (read_answers(cfg.encoder_answers) if cfg.encoder_answers else []) if a.answer or cfg.encoder_hard_negatives]
    texts = read_label_file(cfg.label_file) if cfg.label_file else None
    log.info("fine-tuning the encoder %s on %d train pairs and %d answers (%d no)", cfg.encoder,
             min(cfg.encoder_pairs, sum(len(d.labels) for d in train)), len(answers), sum(not a.answer for a in answers))
    with atomic_dir(done) as tmp:  # whole or absent
        bcfg = BiEncoderConfig(output_dir=str(tmp), epochs=cfg.encoder_epochs, max_pairs=cfg.encoder_pairs, seed=cfg.seed)
        fine_tune_bi_encoder(cfg.encoder, train, bcfg, texts, answers, progress=cfg.progress)
    return done


def build_retrieval(cfg: TrainConfig, train: Sequence[Document], work_dir: Path) -> RetrievalGuidance:
    """Fits the label retriever on the train split (embeddings through the on-disk cache), scores the
    train documents leak free, fits the fusion's retriever stage on those candidates, and keeps them
    as the generator's training inputs. With ``--fine-tune-encoder`` the encoder is fine-tuned first
    (:func:`fine_tuned_encoder`), and the saved retriever carries it."""
    from xlgen.encoders import EmbeddingCache, EncoderConfig, LabelRetriever, RetrieverConfig, SentenceEncoder

    encoder = str(fine_tuned_encoder(cfg, train, work_dir)) if cfg.fine_tune_encoder else cfg.encoder
    rcfg = RetrieverConfig(sources=cfg.retriever_sources, encoder=encoder, encoder_quantization=cfg.encoder_quantization,
                           candidates=cfg.retriever_candidates, seed=cfg.seed)
    cache = EmbeddingCache()
    loaded = SentenceEncoder.load(EncoderConfig(name=encoder, quantization=cfg.encoder_quantization))
    states = None
    if cfg.backbone == "sentence-encoder":  # one pass: the token states for the generator, the vectors into the cache
        from xlgen.training.states import train_states

        states = train_states(cfg, train, loaded, cache, work_dir / "token_states")
    retriever = LabelRetriever.fit(train, cfg.label_file, config=rcfg, encoder=loaded, cache=cache, progress=cfg.progress)
    log.info("retriever fitted: %s", {k: round(v, 1) for k, v in retriever.fit_seconds.items()})
    candidates = retriever.score_train(train)
    stage = fit_retriever_stage(candidates, [d.labels for d in train], retriever.counts)
    return RetrievalGuidance(retriever, Fusion(stage, None, rcfg.candidates), cfg.candidates_in_input, train_candidates=candidates,
                             generator_features=cfg.fusion_features, train_states=states)


def refresh_guidance(guidance: Guidance | None, docs: Sequence[Document]) -> None:
    """Keeps a guidance up to date with labels first seen in ``docs`` (annotations revealed since it
    was built): a cluster guidance places them at their nearest centroid."""
    if isinstance(guidance, ClusterGuidance):
        assign_new_labels(guidance.clusters, docs, features_dir=guidance.features)


class Objective(nn.Module):
    """The training loss of one batch, around the model and its guidance's head.

    Holding both as submodules lets accelerate prepare (and DDP synchronise) them as one module.

    Args:
        model: The T5 (or peft-wrapped T5).
        guidance: The model's guidance, if any (its head, extra inputs and loss).
        label_smoothing: Label smoothing of the generation loss.
        text_id: The ``<text>`` id of a ``sentence-encoder`` generator, whose batches carry token states.
    """

    def __init__(self, model: nn.Module, guidance: Guidance | None = None, label_smoothing: float = 0.0, text_id: int | None = None):
        super().__init__()
        self.model, self.head = model, guidance.head if guidance is not None else None
        self.guidance, self.label_smoothing, self.text_id = guidance, label_smoothing, text_id

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor,
                **extras: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """``(loss, parts)``; ``labels`` ``(batch, tgt_len)`` with -100 at padding; ``extras`` are
        the guidance's batch tensors, and on the ``sentence-encoder`` backbone ``text_states`` ``(batch, src_len,
        width)``, the frozen token states the ``<text>`` positions take."""
        text_states = extras.pop("text_states", None)
        if text_states is not None:
            from xlgen.backbone import input_embeddings
            from xlgen.modeling import base_model

            if self.text_id is None:
                raise ValueError("token states in a batch of a model without a <text> id")
            embeds = input_embeddings(base_model(self.model), input_ids, text_states, self.text_id)
            out = self.model(inputs_embeds=embeds, attention_mask=attention_mask, labels=labels)  # (batch, src_len, width) in
        else:
            out = self.model(input_ids=input_ids, attention_mask=attention_mask, labels=labels)
        logits = out.logits  # (batch, tgt_len, vocab)
        xent = F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=-100, label_smoothing=self.label_smoothing)
        extra = self.guidance.loss(out.encoder_last_hidden_state, attention_mask, extras) if self.guidance is not None else None
        if extra is None:
            return xent, {"xent": xent.item()}
        term, parts = extra
        return xent + term, {"xent": xent.item(), **parts}
