"""The one interface of every kind of guidance: what conditions generation beyond the document's text.

A guidance may

* append token ids to each label-task input (MCG: the predicted cluster tokens; retrieval: the
  retriever's candidate labels): :meth:`Guidance.plan` returns them as :attr:`Plan.suffixes`;
* add training examples of another task and targets for them (MCG's cluster task):
  :meth:`Guidance.training_examples`, :meth:`Guidance.target`;
* train an extra head with an extra loss beside generation (BCL): :attr:`Guidance.head`,
  :meth:`Guidance.batch_extras`, :meth:`Guidance.loss`;
* report per-document scores of its own (cluster probabilities, for the ``cluster`` acquisition
  function): :attr:`Plan.cluster_probs` when asked with ``report=True``;
* add metrics of its own to an evaluation, and tune its own settings on dev:
  :meth:`Guidance.evaluate`, :meth:`Guidance.adopt`;
* save and load what it needs inside the model directory: :meth:`Guidance.save`, :meth:`Guidance.load`.

Kinds are registered by name in :mod:`xlgen.guidance`; a new kind is one module and one registry
entry. A guidance never imports :mod:`xlgen.model`: it reads the model through :class:`GuidedModel`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np
import torch
from torch import nn

from xlgen.data import Document
from xlgen.decoding import Candidate, DecodingConfig
from xlgen.fusion import Fused
from xlgen.labels import LabelSpace
from xlgen.tokenizer import TASK_LABELS, Tokenizer, encode_input


class GuidedModel(Protocol):
    """What a guidance reads of the model it conditions (:class:`xlgen.model.XLGenModel`)."""

    tokenizer: Tokenizer
    label_space: LabelSpace
    settings: Any
    device: str

    def candidates(self, inputs: Sequence[Sequence[int]], cfg: DecodingConfig, encoder_cache: dict[int, torch.Tensor] | None = None,
                   progress: bool = False) -> list[list[Candidate]]: ...

    def encoded_batches(self, inputs: Sequence[Sequence[int]], batch_size: int = 32) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...


@dataclass
class Plan:
    """What a guidance prepared for a batch of texts before their labels are decoded.

    Attributes:
        suffixes: Token ids appended to each text's label-task input (``None``: nothing).
        cluster_probs: ``(n_texts, n_clusters)`` cluster probabilities, when the guidance has
            clusters and was asked to report them.
        extra: Anything else a guidance hands on (e.g. retrieved candidates with their scores).
    """

    suffixes: list[list[int]] | None = None
    cluster_probs: np.ndarray | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Example:
    """One training example.

    Attributes:
        input_ids: The encoded input, task prefix and eos included.
        doc: Index of its document in the training split.
        task: ``labels`` (the label target) or a task of the guidance, whose :meth:`Guidance.target`
            builds the target.
    """

    input_ids: list[int]
    doc: int
    task: str = "labels"


def label_inputs(model: GuidedModel, texts: Sequence[str], suffixes: Sequence[Sequence[int]] | None = None) -> list[list[int]]:
    """Label-task inputs of ``texts``, each with its suffix (none by default)."""
    n = model.settings.max_input_length
    if suffixes is None:
        return [encode_input(model.tokenizer, t, n, TASK_LABELS) for t in texts]
    if len(suffixes) != len(texts):
        raise ValueError("one suffix per text")
    return [encode_input(model.tokenizer, t, n, TASK_LABELS, s) for t, s in zip(texts, suffixes, strict=True)]


class Guidance(ABC):
    """A kind of guidance (see the module docstring).

    Attributes:
        name: Registry name, also the model's ``variant``.
        reports: What :meth:`plan` can report when asked (``cluster_probs``).
        head: An extra module trained beside the T5 (``None``: none).
    """

    name: ClassVar[str] = ""
    reports: ClassVar[tuple[str, ...]] = ()
    head: nn.Module | None = None

    @abstractmethod
    def plan(self, model: GuidedModel, texts: Sequence[str], given: Sequence[Any] | None = None, report: bool = False) -> Plan:
        """Prepares ``texts`` for decoding.

        Args:
            model: The model being guided.
            texts: Documents.
            given: Per text, what to condition on instead of predicting it (gold clusters: the
                oracle); the kind decides what it takes.
            report: Also fill the plan's reports (:attr:`reports`).
        """

    # ---------------------------------------------------------------------------------- training

    def training_examples(self, model: GuidedModel, docs: Sequence[Document]) -> list[Example]:
        """Every training example of ``docs``, tokenised once: one label example per document by default."""
        return [Example(ids, i) for i, ids in enumerate(label_inputs(model, [d.text for d in docs]))]

    def target(self, model: GuidedModel, example: Example, doc: Document) -> list[int] | None:
        """The target of an example of this guidance's own task (``None``: the label target)."""
        return None

    def batch_extras(self, docs: Sequence[Document]) -> dict[str, torch.Tensor]:
        """Tensors the extra loss needs, per batch of documents (empty by default)."""
        return {}

    def loss(self, encoder_states: torch.Tensor, mask: torch.Tensor, extras: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]] | None:
        """The extra training loss of a batch (``None``: none), with its parts for the progress bar.

        Args:
            encoder_states: ``(batch, src_len, d_model)``.
            mask: ``(batch, src_len)``.
            extras: What :meth:`batch_extras` gave for the batch.
        """
        return None

    def rescore(self, model: GuidedModel, plan: Plan, generated: Sequence[Mapping[str, float]] | None,
                use_generator: bool = True) -> list[Fused] | None:
        """Final label scores from the generator's (``generated``: per text, label -> beam mass; ``None``
        when it did not run) and what the guidance knows (``None``: the generator's scores stand).

        ``use_generator`` false: the guidance's own scores alone, for a model scored without its generator."""
        return None

    def calibrate(self, model: GuidedModel, docs: Sequence[Document]) -> list[dict[str, float]] | None:
        """Fits the guidance's score calibration on labelled ``docs`` (dev), after the generator is
        trained; returns each document's out-of-fold scores, on which the threshold is tuned (``None``:
        nothing to calibrate)."""
        return None

    # ------------------------------------------------------------------------------- evaluation

    def evaluate(self, model: GuidedModel, docs: Sequence[Document], tune: bool = False, oracle: bool = False) -> tuple[dict[str, float], Plan | None]:
        """Metrics of the guidance itself on labelled ``docs``, and the plan to decode them with
        (``oracle``: conditioned on the gold labels' guidance, the upper bound).

        Returns:
            ``(metrics, plan)``; ``plan`` is ``None`` when decoding should plan by itself.
        """
        if oracle:
            raise ValueError(f"{self.name} guidance has no oracle")
        return {}, None

    def adopt(self, metrics: dict[str, float], prefix: str = "") -> None:
        """Takes the settings :meth:`evaluate` tuned (``metrics`` as it returned them, ``prefix`` before each name).

        Nothing to take by default."""
        return None

    # ------------------------------------------------------------------------------ persistence

    @abstractmethod
    def save(self, directory: Path) -> dict[str, Any]:
        """Writes the files the guidance needs into ``directory`` (a folder of the model directory);
        returns its settings, which :meth:`load` gets back."""

    @classmethod
    @abstractmethod
    def load(cls, directory: Path, meta: dict[str, Any]) -> Guidance:
        """Reads what :meth:`save` wrote."""

    def generation_configs(self) -> dict[str, DecodingConfig]:
        """Decoding settings of the guidance's own generation steps, by the file name that holds them
        (as transformers ``GenerationConfig``) at the model directory's root, so that plain
        transformers code can run them too (none by default)."""
        return {}

    def to(self, device: str) -> Guidance:
        if self.head is not None:
            self.head.to(device)
        return self

    has_document_embeddings: ClassVar[bool] = False
    """Whether :meth:`document_embeddings` gives vectors."""

    def document_embeddings(self, texts: Sequence[str]) -> np.ndarray | None:
        """Document vectors of a pretrained encoder the guidance holds, ``(n_texts, dim)``, for
        batch diversity and other uses of document similarity; None when it holds none (the model's
        own encoder states serve then)."""
        return None

    def describe(self) -> dict[str, Any]:
        """A few facts for ``/v1/model`` and logs."""
        return {"kind": self.name}
