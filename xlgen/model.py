"""The model directory: everything needed to predict, saved and loaded as one.

A directory holds ``xlgen.json`` (model settings, decoding defaults, tuned threshold, data hash,
metrics), ``labels.json`` (label space with train counts), ``tokenizer/``, and the T5 weights
(``model.safetensors`` + ``config.json``) or, for LoRA on a pretrained base, ``adapter/``.
A ``bcl`` or ``mcg`` model also holds ``clusters/`` (the label clustering, see
:mod:`xlgen.clusters`) and, for ``bcl``, ``cluster_head.safetensors``.
``XLGenModel.load(path)`` gives back exactly what ``save(path)`` wrote.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import T5ForConditionalGeneration

from xlgen.cluster_head import ClusterHead
from xlgen.clusters import LabelClusters
from xlgen.decoding import Candidate, DecodingConfig, Prediction, cut, label_scores, pad_batch
from xlgen.labels import ORDERS, LabelSpace
from xlgen.modeling import base_model
from xlgen.tokenizer import TASK_CLUSTERS, TASK_LABELS, Tokenizer, cluster_token, encode_input, load_tokenizer

FORMAT_VERSION = 1
VARIANTS = ("base", "bcl", "mcg")
_CLUSTER_TOKEN = re.compile(r"^<c(\d+)>$")


def cluster_score_dicts(probs: np.ndarray) -> list[dict[str, float]]:
    """Rows of cluster probabilities ``(n_texts, n_clusters)`` -> ``{cluster id: probability}`` of the
    clusters with a non-zero score (the form the threshold tools take)."""
    return [{str(c): float(p) for c, p in enumerate(row) if p > 0} for row in probs]


@dataclass(frozen=True)
class ModelSettings:
    """What a model was built and trained as.

    Attributes:
        source: Preset name (``preset:cpu``) or the pretrained name or path it started from.
        variant: ``base``; ``bcl`` (an auxiliary multi-cluster head trained beside generation);
            ``mcg`` (generates the document's cluster tokens first, then the labels with those
            tokens appended to the input).
        max_input_length: Input ids per document, task prefix and eos included.
        max_target_length: Target ids per document.
        label_order: Target order used in training (see :data:`xlgen.labels.ORDERS`).
        lora: Whether the weights are a LoRA adapter over ``source``.
    """

    source: str = "preset:cpu"
    variant: str = "base"
    max_input_length: int = 128
    max_target_length: int = 64
    label_order: str = "frequency"
    lora: bool = False

    def __post_init__(self) -> None:
        if self.label_order not in ORDERS:
            raise ValueError(f"unknown label order {self.label_order!r}; choose one of {', '.join(ORDERS)}")
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown variant {self.variant!r}")
        if self.max_input_length < 4 or self.max_target_length < 2:
            raise ValueError("max_input_length must be at least 4 and max_target_length at least 2")


@dataclass
class XLGenModel:
    """A trained label generator with its tokenizer, label space and decoding defaults.

    Attributes:
        model: The T5 (or peft-wrapped T5).
        tokenizer: Its tokenizer.
        label_space: Train labels with counts.
        settings: How it was built.
        decoding: Default decoding settings.
        threshold: Score threshold tuned on dev (0 keeps every generated label).
        data_hash: Hash of the training data.
        metrics: Metrics recorded at save time (dev and test).
        device: Where the model runs.
        clusters: Label clustering (``bcl`` and ``mcg``).
        cluster_features: Folder of the clustering's featuriser (places labels first seen later).
        cluster_head: The multi-cluster head (``bcl``).
        cluster_decoding: How ``mcg`` generates cluster tokens (its first stage).
        cluster_threshold: Score a cluster needs to be appended to the ``mcg`` input (at least the
            best cluster always is); tuned on dev for cluster micro-F1.
        backend: The exported inference backends decoding goes through, fastest first (see
            :mod:`xlgen.backends`); None decodes with the torch model, which also serves what they cannot.
    """

    model: Any
    tokenizer: Tokenizer
    label_space: LabelSpace
    settings: ModelSettings = field(default_factory=ModelSettings)
    decoding: DecodingConfig = field(default_factory=DecodingConfig)
    threshold: float = 0.0
    data_hash: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    device: str = "cpu"
    clusters: LabelClusters | None = None
    cluster_features: Path | None = None
    cluster_head: ClusterHead | None = None
    cluster_decoding: DecodingConfig = field(default_factory=lambda: DecodingConfig(strategy="beam", num_beams=5, max_new_tokens=32))
    cluster_threshold: float = 0.5
    backend: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        # Generated text goes back to a label through the tokenizer's own normalisation, so a
        # label that SentencePiece normalises (spacing, width) is still recognised.
        self._canonical = {self.tokenizer.decode(self.tokenizer.encode(x)).strip(): x for x in self.label_space.labels}
        if self.settings.variant != "base" and self.clusters is None:
            raise ValueError(f"a {self.settings.variant} model needs its label clusters")
        if self.settings.variant == "bcl" and self.cluster_head is None:
            raise ValueError("a bcl model needs its cluster head")
        if self.clusters is not None and self.clusters.n_clusters > self.tokenizer.n_cluster_tokens:
            raise ValueError(f"{self.clusters.n_clusters} clusters but only {self.tokenizer.n_cluster_tokens} cluster tokens")

    @property
    def t5(self) -> T5ForConditionalGeneration:
        return base_model(self.model)

    def to(self, device: str) -> XLGenModel:
        self.model.to(device)
        if self.cluster_head is not None:
            self.cluster_head.to(device)
        self.device = device
        return self

    def encode_inputs(self, texts: Sequence[str], clusters: Sequence[Sequence[int]] | None = None) -> list[list[int]]:
        """Label-task inputs. An ``mcg`` model appends each text's cluster tokens: ``clusters`` if
        given (gold clusters: the oracle), else its own first-stage prediction."""
        n = self.settings.max_input_length
        if self.settings.variant != "mcg":
            return [encode_input(self.tokenizer, t, n, TASK_LABELS) for t in texts]
        if clusters is None:
            clusters = self.predict_clusters(texts)
        if len(clusters) != len(texts):
            raise ValueError("one cluster list per text")
        return [encode_input(self.tokenizer, t, n, TASK_LABELS, self.cluster_suffix(c)) for t, c in zip(texts, clusters, strict=True)]

    def cluster_suffix(self, clusters: Sequence[int]) -> list[int]:
        """Cluster token ids appended to an ``mcg`` label input (and its cluster target, less eos)."""
        return [self.tokenizer.token_id(cluster_token(c)) for c in sorted(set(clusters))]

    def cluster_target(self, clusters: Sequence[int]) -> list[int]:
        """First-stage ``mcg`` target: the cluster tokens in id (= frequency) order, joined by the
        label separator, then eos, so that decoding splits them like labels."""
        ids: list[int] = []
        for t in self.cluster_suffix(clusters):
            ids += ([self.tokenizer.sep_id] if ids else []) + [t]
        return ids + [self.tokenizer.eos_id]

    @torch.inference_mode()
    def cluster_probabilities(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """``(n_texts, n_clusters)`` cluster probabilities: the ``bcl`` head's sigmoid, or for
        ``mcg`` the probability mass of the first-stage beams that contain the cluster token (0 for
        a cluster no beam generated).

        Raises:
            ValueError: For a ``base`` model, which knows no clusters.
        """
        if self.clusters is None:
            raise ValueError("this model has no label clusters (variant base)")
        probs = np.zeros((len(texts), self.clusters.n_clusters), dtype=np.float32)
        if self.cluster_head is not None:
            self.cluster_head.eval()
            rows = [torch.sigmoid(self.cluster_head(states, mask)).float().cpu()  # (batch, n_clusters)
                    for states, mask in self.encoded_batches(texts, batch_size)]
            return torch.cat(rows).numpy() if rows else probs  # (n_texts, n_clusters)
        self.model.eval()
        n = self.settings.max_input_length
        inputs = [encode_input(self.tokenizer, t, n, TASK_CLUSTERS) for t in texts]
        for i, cands in enumerate(self.candidates(inputs, self.cluster_decoding)):
            for token, v in label_scores(cands, self.cluster_decoding.strategy).items():
                m = _CLUSTER_TOKEN.match(token.strip())
                if m and int(m.group(1)) < self.clusters.n_clusters:
                    probs[i, int(m.group(1))] = v
        return probs

    def encoded_batches(self, texts: Sequence[str], batch_size: int = 32) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Encoder states ``(batch, len, d_model)`` with their masks ``(batch, len)``, batch by batch,
        in text order (call under ``torch.inference_mode``)."""
        self.model.eval()
        inputs = self.encode_inputs(texts)
        encoder = self.t5.get_encoder()
        for start in range(0, len(inputs), batch_size):
            ids, mask = pad_batch(inputs[start : start + batch_size], self.tokenizer.pad_id, self.device)
            yield encoder(input_ids=ids, attention_mask=mask).last_hidden_state, mask

    def predict_clusters(self, texts: Sequence[str], threshold: float | None = None) -> list[list[int]]:
        """Clusters scored at least ``threshold`` (default: the tuned one), at least the best one."""
        return self.clusters_above(self.cluster_probabilities(texts), threshold)

    def clusters_above(self, probs: np.ndarray, threshold: float | None = None) -> list[list[int]]:
        """Per row of ``probs`` ``(n_texts, n_clusters)``: the clusters scored at least ``threshold``
        (default: the tuned one), at least the best scored one; a row scoring no cluster gets none."""
        thr = self.cluster_threshold if threshold is None else threshold
        return [sorted(int(c) for c, _ in cut(s, thr, 1)) for s in cluster_score_dicts(probs)]

    def canonical(self, label: str) -> str:
        return self._canonical.get(label, label)

    def predict(
        self,
        texts: Sequence[str],
        decoding: DecodingConfig | None = None,
        threshold: float | None = None,
        progress: bool = False,
        clusters: Sequence[Sequence[int]] | None = None,
    ) -> list[Prediction]:
        """Labels with scores for each text.

        Args:
            texts: Documents.
            decoding: Overrides the model's default decoding.
            threshold: Overrides the tuned threshold.
            progress: Show a progress bar.
            clusters: ``mcg`` only: the clusters to append instead of predicting them (the oracle).
        """
        cfg = decoding or self.decoding
        thr = self.threshold if threshold is None else threshold
        self.model.eval()
        cands = self.candidates(self.encode_inputs(texts, clusters), cfg, progress=progress)
        return [self.to_prediction(c, cfg, thr) for c in cands]

    def candidates(
        self,
        inputs: Sequence[Sequence[int]],
        cfg: DecodingConfig,
        encoder_cache: dict[int, torch.Tensor] | None = None,
        progress: bool = False,
    ) -> list[list[Candidate]]:
        """``cfg.num_return`` scored candidates per encoded input, best first (see
        :func:`xlgen.decoding.generate_candidates`): the one place every decoding goes through.

        Runs on :attr:`backend` when it can serve ``cfg`` now, else on the torch model (MC dropout,
        weights changed since the export was loaded)."""
        from xlgen.backends import decode, pick
        from xlgen.backends.torch_backend import TorchBackend

        backend = pick(self.backend, self.model, cfg) or TorchBackend(self.generator, self.tokenizer.eos_id, self.tokenizer.pad_id, self.device)
        return decode(backend, self.tokenizer, inputs, cfg, encoder_cache=encoder_cache, progress=progress)

    @property
    def generator(self) -> torch.nn.Module:
        """The module whose ``generate`` to call (peft models generate through their wrapper)."""
        return self.model if self.settings.lora else self.t5

    def to_prediction(self, cands: Sequence[Any], cfg: DecodingConfig, threshold: float) -> Prediction:
        cands = [replace(c, labels=tuple(dict.fromkeys(self.canonical(x) for x in c.labels))) for c in cands]
        scores = label_scores(cands, cfg.strategy)
        if not cfg.keep_new_labels:
            scores = {k: v for k, v in scores.items() if k in self.label_space}
        kept = cut(scores, threshold, cfg.min_labels)
        return Prediction(
            labels=[k for k, _ in kept],
            scores=[v for _, v in kept],
            new=[k not in self.label_space for k, _ in kept],
            all_scores=scores,
            candidates=list(cands),
        )

    def save(self, path: str | Path) -> None:
        """Writes the model directory atomically: into a temporary sibling, then renamed over ``path``."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
        try:
            if self.settings.lora:
                self.model.save_pretrained(str(tmp / "adapter"))
            else:
                self.t5.save_pretrained(str(tmp))
            self.tokenizer.save(tmp / "tokenizer")
            self.label_space.save(tmp / "labels.json")
            meta: dict[str, Any] = {
                "format_version": FORMAT_VERSION,
                "settings": asdict(self.settings),
                "decoding": asdict(self.decoding),
                "threshold": self.threshold,
                "data_hash": self.data_hash,
                "metrics": self.metrics,
            }
            if self.clusters is not None:
                self.clusters.save(tmp / "clusters", self.cluster_features)
                meta["clusters"] = {"threshold": self.cluster_threshold, "decoding": asdict(self.cluster_decoding)}
            if self.cluster_head is not None:
                from safetensors.torch import save_file

                save_file({k: v.detach().cpu().contiguous() for k, v in self.cluster_head.state_dict().items()},
                          str(tmp / "cluster_head.safetensors"))
                meta["clusters"]["head"] = {"d_model": self.cluster_head.d_model, "n_clusters": self.cluster_head.n_clusters}
            (tmp / "xlgen.json").write_text(json.dumps(meta, indent=1))
            if path.exists():
                old = path.with_name(f".{path.name}.old")
                shutil.rmtree(old, ignore_errors=True)
                os.replace(path, old)
                os.replace(tmp, path)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu", backend: str = "auto") -> XLGenModel:
        """Loads a model directory written by :meth:`save`.

        ``backend`` picks the inference backend (:func:`xlgen.backends.load_backend`): ``auto`` is
        the fastest valid export in ``path`` (``xlgen export``), else torch.

        Raises:
            FileNotFoundError: If ``path`` is no model directory, or ``backend`` names one with no export.
        """
        path = Path(path)
        if not (path / "xlgen.json").is_file():
            raise FileNotFoundError(f"{path}: not a model directory (no xlgen.json)")
        meta = json.loads((path / "xlgen.json").read_text())
        settings = ModelSettings(**meta["settings"])
        tok = load_tokenizer(path / "tokenizer")
        model: torch.nn.Module
        if settings.lora:
            from peft import PeftModel

            from xlgen.modeling import load_pretrained

            model = PeftModel.from_pretrained(load_pretrained(settings.source, len(tok)), str(path / "adapter"))
        else:
            model = T5ForConditionalGeneration.from_pretrained(str(path))
        model.eval()
        clusters, head, guide = None, None, meta.get("clusters") or {}
        if (path / "clusters").is_dir():
            clusters = LabelClusters.load(path / "clusters")
        if guide.get("head"):
            from safetensors.torch import load_file

            head = ClusterHead(guide["head"]["d_model"], guide["head"]["n_clusters"])
            head.load_state_dict(load_file(str(path / "cluster_head.safetensors")))
            head.eval()
        features = path / "clusters" / "features"
        out = cls(
            model=model,
            tokenizer=tok,
            label_space=LabelSpace.load(path / "labels.json"),
            settings=settings,
            decoding=DecodingConfig(**meta["decoding"]),
            threshold=float(meta["threshold"]),
            data_hash=meta["data_hash"],
            metrics=meta.get("metrics", {}),
            clusters=clusters,
            cluster_features=features if features.is_dir() else None,
            cluster_head=head,
        )
        if guide:
            out.cluster_threshold = float(guide["threshold"])
            out.cluster_decoding = DecodingConfig(**guide["decoding"])
        out = out.to(device)
        from xlgen.backends import load_backend

        out.backend = load_backend(path, out, backend, device)
        return out
