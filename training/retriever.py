"""Fine-tuning the retriever's encoders (optional; slow on a CPU, minutes on a GPU).

* :func:`fine_tune_bi_encoder`: the sentence encoder trained on (document, label text) pairs with
  sentence-transformers' MultipleNegativesRankingLoss: for a batch of B pairs,

      loss = -1/B sum_i log( exp(s * cos(d_i, t_i)) / sum_j exp(s * cos(d_i, t_j)) ),   s = 20,

  every other pair's label text is a negative, so a batch must not hold one label twice (the library's
  no-duplicates batch sampler). The result is a sentence-transformers directory: load it with
  ``SentenceEncoder.load(path)`` and fit a retriever on it, whose ``label_text`` source then scores with
  trained label vectors (and ``knn`` with trained document vectors).
  Annotators' binary answers (:class:`Answer`) join as a second dataset: a *yes* is one more (document,
  label text) pair; a *no* becomes a hard negative in the direction the new-label questions are asked,
  the triplet (label text, a document known to carry the label, the document answered *no*), so that
  the loss pushes the rejected document below a positive one for that label's query, beside the
  in-batch negatives.
* :func:`train_cross_encoder`: a cross-encoder initialised from the encoder's BERT weights (no pretrained
  cross-encoder is available offline) with a new one-logit head, trained with binary cross-entropy on
  (document, label text) pairs: each gold label a positive, negatives drawn from the retriever's leak-free
  top 100 candidates that are not gold. :class:`~xlgen.encoders.reranker.CrossEncoderReranker` scores a
  retriever's top candidates with it.

Caveat: the fine-tuned bi-encoder has seen every train document, so candidates it gives for train
documents are not leak-free (folds of the bi-encoder would be needed for that).
"""

from __future__ import annotations

import math
import random
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from xlgen.data import Document
from xlgen.devices import bf16_supported, resolve_device
from xlgen.encoders import EncoderConfig, LabelRetriever, LabelText, SentenceEncoder
from xlgen.encoders.label_texts import label_name_text
from xlgen.extras import require


@dataclass(frozen=True)
class BiEncoderConfig:
    """Bi-encoder fine-tuning settings."""

    output_dir: str
    """Where the fine-tuned sentence-transformers directory is written."""
    epochs: float = 1.0
    """Passes over the (document, label) pairs."""
    batch_size: int = 64
    """Pairs per batch: the in-batch negatives of each pair are the other B - 1 label texts."""
    lr: float = 5e-5
    """Peak learning rate (AdamW, linear decay after warm-up)."""
    warmup_ratio: float = 0.1
    """Share of the steps spent warming up."""
    max_seq_length: int = 128
    """Document tokens seen while training (label texts are short)."""
    max_pairs: int | None = None
    """Train on a random subset of this many pairs (None: all)."""
    seed: int = 0
    """Seed of the sampling, the batches and the initialisation of new weights."""

    def __post_init__(self) -> None:
        if self.epochs <= 0 or self.batch_size < 2 or self.lr <= 0 or self.max_seq_length < 8:
            raise ValueError("epochs and lr must be > 0, batch_size >= 2, max_seq_length >= 8")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError("warmup_ratio must be in [0, 1)")


@dataclass(frozen=True)
class CrossEncoderConfig:
    """Cross-encoder training settings."""

    output_dir: str
    """Where the cross-encoder directory is written."""
    epochs: float = 1.0
    """Passes over the labelled pairs."""
    batch_size: int = 32
    """Pairs per batch."""
    lr: float = 3e-5
    """Peak learning rate."""
    warmup_ratio: float = 0.1
    """Share of the steps spent warming up."""
    max_length: int = 192
    """Tokens of a (document, label text) pair."""
    negatives: int = 4
    """Negatives per document, sampled from its retriever candidates that are not gold."""
    candidates: int = 100
    """How many retriever candidates per source the negatives are drawn from."""
    max_docs: int | None = None
    """Train on a random subset of this many documents (None: all)."""
    seed: int = 0
    """Seed of the sampling and the new head."""

    def __post_init__(self) -> None:
        if self.epochs <= 0 or self.batch_size < 1 or self.lr <= 0 or self.negatives < 1 or self.candidates < 1:
            raise ValueError("epochs and lr must be > 0, batch_size, negatives and candidates >= 1")


def label_training_text(text: LabelText) -> str:
    """The text a label is trained as: its name as words, then its description if any."""
    name = label_name_text(text.label)
    return f"{name}: {text.description}" if text.description else name


def document_label_pairs(docs: Sequence[Document], label_texts: Mapping[str, LabelText] | None = None,
                         max_pairs: int | None = None, seed: int = 0) -> tuple[list[str], list[str]]:
    """One (document text, label text) pair per gold label of each document, optionally subsampled."""
    label_texts = label_texts or {}
    pairs = [(d.text, label_training_text(label_texts.get(x, LabelText(x)))) for d in docs for x in d.labels]
    if max_pairs is not None and len(pairs) > max_pairs:
        pairs = random.Random(seed).sample(pairs, max_pairs)
    return [a for a, _ in pairs], [b for _, b in pairs]


@dataclass(frozen=True)
class Answer:
    """An annotator's binary answer: does the document ``text`` carry ``label``?"""

    text: str
    label: str
    answer: bool


def read_answers(path: str | Path) -> list[Answer]:
    """Binary answers from JSON Lines of ``{"text": str, "label": str, "answer": bool}`` (other keys ignored).

    Raises:
        ValueError: Naming the line and the field of a malformed record (``DataError``, a ``ValueError``, for a
            line that is not a JSON object or a file that cannot be read).
    """
    from xlgen.data import iter_records

    out = []
    for where, _, rec in iter_records(path):
        for key, kind in (("text", str), ("label", str), ("answer", bool)):
            if not isinstance(rec.get(key), kind) or (kind is str and not rec[key].strip()):
                raise ValueError(f"{where}: field {key!r} must be a {'non-empty string' if kind is str else 'boolean'}")
        out.append(Answer(rec["text"], rec["label"].strip(), rec["answer"]))
    return out


def answer_examples(docs: Sequence[Document], answers: Sequence[Answer], label_texts: Mapping[str, LabelText] | None = None,
                    max_pairs: int | None = None, seed: int = 0) -> dict[str, dict[str, list[str]]]:
    """The fine-tuning datasets, as columns.

    * ``pairs``: ``anchor`` document, ``positive`` label text: one per gold label of ``docs`` (subsampled to
      ``max_pairs``: the replay of what the encoder must keep) and one per *yes* answer (always all).
    * ``hard_negatives`` (only when there is a *no* answer whose label has a positive): ``anchor`` label text,
      ``positive`` a document known to carry the label (its *yes* answers first, then ``docs``, taken in
      turn), ``negative`` the document answered *no*.
    """
    label_texts = label_texts or {}

    def text_of(label: str) -> str:
        return label_training_text(label_texts.get(label, LabelText(label)))

    anchors, positives = document_label_pairs(docs, label_texts, max_pairs, seed)
    yes = [a for a in answers if a.answer]
    seen = set(zip(anchors, positives, strict=True))
    for a in yes:  # a yes already among the sampled pairs (its document in docs with the label) is not doubled
        if (a.text, text_of(a.label)) not in seen:
            seen.add((a.text, text_of(a.label)))
            anchors.append(a.text)
            positives.append(text_of(a.label))
    out = {"pairs": {"anchor": anchors, "positive": positives}}
    rng = random.Random(seed)
    known: dict[str, list[str]] = {}
    for a in yes:
        known.setdefault(a.label, []).append(a.text)
    wanted = {a.label for a in answers if not a.answer}
    for d in docs:
        for x in d.labels:
            if x in wanted:
                known.setdefault(x, []).append(d.text)
    taken: dict[str, int] = {}
    rows: dict[str, list[str]] = {"anchor": [], "positive": [], "negative": []}
    for a in answers:
        pos = [t for t in dict.fromkeys(known.get(a.label, [])) if t != a.text]
        if a.answer or not pos:
            continue
        k = taken.get(a.label, rng.randrange(len(pos)))
        taken[a.label] = k + 1
        rows["anchor"].append(text_of(a.label))
        rows["positive"].append(pos[k % len(pos)])
        rows["negative"].append(a.text)
    if rows["anchor"]:
        out["hard_negatives"] = rows
    return out


def _training_args(cls, output_dir: str, epochs: float, batch_size: int, lr: float, warmup_ratio: float, seed: int,
                   **extra):  # type: ignore[no-untyped-def]
    # transformers 5 reads a float in [0, 1) of warmup_steps as the share of the steps (warmup_ratio is deprecated)
    return cls(output_dir=output_dir, num_train_epochs=epochs, per_device_train_batch_size=batch_size, learning_rate=lr,
               warmup_steps=float(warmup_ratio), seed=seed, save_strategy="no", report_to="none", logging_steps=50,
               use_cpu=resolve_device() == "cpu", bf16=bf16_supported(resolve_device()),
               **extra)


def fine_tune_bi_encoder(encoder: str, docs: Sequence[Document], config: BiEncoderConfig,
                         label_texts: Mapping[str, LabelText] | None = None, answers: Sequence[Answer] = (),
                         progress: bool = True) -> Path:
    """Fine-tunes a sentence encoder on (document, label text) pairs with in-batch negatives, and on
    annotators' binary answers (see :func:`answer_examples`).

    Args:
        encoder: The encoder to start from (name as ``SentenceEncoder.load`` takes it; its digest is checked).
        docs: Labelled train documents (``config.max_pairs`` of their pairs are used).
        config: Training settings.
        label_texts: Descriptions of labels (default: their names).
        answers: Binary answers: a yes is a pair, a no a hard negative.
        progress: Show the trainer's progress bar.

    Returns:
        The output directory, a sentence-transformers model.

    Raises:
        ValueError: If there is no pair to train on.
    """
    require("finetune", "fine-tuning the sentence encoder")
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.base.sampler import BatchSamplers
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    examples = answer_examples(docs, answers, label_texts, config.max_pairs, config.seed)
    if not examples["pairs"]["anchor"]:
        raise ValueError("no (document, label) pair to fine-tune the encoder on")
    torch.manual_seed(config.seed)
    model = SentenceEncoder.load(EncoderConfig(name=encoder, backend="torch")).model
    model.max_seq_length = config.max_seq_length
    data: Any = {name: Dataset.from_dict(cols) for name, cols in examples.items()}
    steps = config.epochs * sum(math.ceil(len(cols["anchor"]) / config.batch_size) for cols in examples.values())
    # warm-up starts at a learning rate of 0: a run of a few steps (a handful of answers, no replay) would learn
    # nothing from its first step, or at all with one step
    warmup = config.warmup_ratio if steps >= 10 else 0.0
    if len(data) == 1:
        data = data["pairs"]
    with tempfile.TemporaryDirectory(prefix="xlgen-bi-encoder-") as work:
        args = _training_args(SentenceTransformerTrainingArguments, work, config.epochs, config.batch_size, config.lr,
                              warmup, config.seed, batch_sampler=BatchSamplers.NO_DUPLICATES,
                              disable_tqdm=not progress)
        trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=data, loss=MultipleNegativesRankingLoss(model))
        trainer.train()
    model.save(config.output_dir)
    return Path(config.output_dir)


def cross_encoder_pairs(retriever: LabelRetriever, docs: Sequence[Document], config: CrossEncoderConfig
                        ) -> tuple[list[str], list[str], list[float]]:
    """Labelled (document, label text) pairs: every gold label (1) and ``negatives`` non-gold labels (0)
    drawn from the document's leak-free retriever candidates (``score_train``)."""
    rng = np.random.default_rng(config.seed)
    cands = retriever.score_train(docs, top=config.candidates)
    texts = {t.label: label_training_text(t) for t in retriever.label_texts}
    rows = np.arange(len(docs))
    if config.max_docs is not None and len(docs) > config.max_docs:
        rows = np.sort(rng.choice(len(docs), config.max_docs, replace=False))
    first, second, labels = [], [], []
    sets = cands.label_sets()
    for i in rows.tolist():
        gold = set(docs[i].labels)
        pool = [x for x in sets[i] if x not in gold]
        negs = [pool[j] for j in rng.choice(len(pool), min(config.negatives, len(pool)), replace=False)] if pool else []
        for x, y in [(g, 1.0) for g in sorted(gold)] + [(n, 0.0) for n in negs]:
            first.append(docs[i].text)
            second.append(texts.get(x, label_name_text(x)))
            labels.append(y)
    return first, second, labels


def train_cross_encoder(encoder: str, retriever: LabelRetriever, docs: Sequence[Document], config: CrossEncoderConfig) -> Path:
    """Trains a cross-encoder re-ranker from the encoder's BERT weights.

    Args:
        encoder: The sentence encoder whose transformer initialises the cross-encoder.
        retriever: A retriever fitted on ``docs`` in this process (its leak-free candidates give the negatives).
        docs: The retriever's train documents.
        config: Training settings.

    Returns:
        The output directory, a sentence-transformers CrossEncoder.
    """
    require("finetune", "training the cross-encoder")
    from datasets import Dataset
    from sentence_transformers.cross_encoder import CrossEncoder, CrossEncoderTrainer, CrossEncoderTrainingArguments
    from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss

    torch.manual_seed(config.seed)
    source = SentenceEncoder.load(EncoderConfig(name=encoder, backend="torch"))
    first, second, labels = cross_encoder_pairs(retriever, docs, config)
    data = Dataset.from_dict({"document": first, "label_text": second, "label": labels})
    with tempfile.TemporaryDirectory(prefix="xlgen-cross-encoder-") as work:
        init = Path(work) / "init"
        source.model[0].auto_model.save_pretrained(init)  # the BERT alone: the one-logit head is new
        source.model.tokenizer.save_pretrained(init)
        model = CrossEncoder(str(init), num_labels=1, max_length=config.max_length, local_files_only=True)
        args = _training_args(CrossEncoderTrainingArguments, str(Path(work) / "trainer"), config.epochs, config.batch_size,
                              config.lr, config.warmup_ratio, config.seed)
        CrossEncoderTrainer(model=model, args=args, train_dataset=data, loss=BinaryCrossEntropyLoss(model)).train()
    model.save(config.output_dir)
    return Path(config.output_dir)
