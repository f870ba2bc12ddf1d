"""The model directory: everything needed to predict, saved and loaded as one.

A directory holds ``xlgen.json`` (model settings, decoding defaults, tuned threshold, data hash,
metrics), ``labels.json`` (label space with train counts), ``tokenizer/``, and the T5 weights
(``model.safetensors`` + ``config.json``) or, for LoRA on a pretrained base, ``adapter/``.
``XLGenModel.load(path)`` gives back exactly what ``save(path)`` wrote.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from transformers import T5ForConditionalGeneration

from xlgen.decoding import DecodingConfig, Prediction, cut, generate_candidates, label_scores
from xlgen.labels import ORDERS, LabelSpace
from xlgen.modeling import base_model
from xlgen.tokenizer import TASK_LABELS, Tokenizer, encode_input, load_tokenizer

FORMAT_VERSION = 1


@dataclass(frozen=True)
class ModelSettings:
    """What a model was built and trained as.

    Attributes:
        source: Preset name (``preset:cpu``) or the pretrained name or path it started from.
        variant: ``base``, ``bcl`` or ``mcg``.
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
        if self.variant not in ("base", "bcl", "mcg"):
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

    def __post_init__(self) -> None:
        # Generated text goes back to a label through the tokenizer's own normalisation, so a
        # label that SentencePiece normalises (spacing, width) is still recognised.
        self._canonical = {self.tokenizer.decode(self.tokenizer.encode(x)).strip(): x for x in self.label_space.labels}

    @property
    def t5(self) -> T5ForConditionalGeneration:
        return base_model(self.model)

    def to(self, device: str) -> XLGenModel:
        self.model.to(device)
        self.device = device
        return self

    def encode_inputs(self, texts: Sequence[str]) -> list[list[int]]:
        return [encode_input(self.tokenizer, t, self.settings.max_input_length, TASK_LABELS) for t in texts]

    def canonical(self, label: str) -> str:
        return self._canonical.get(label, label)

    def predict(
        self,
        texts: Sequence[str],
        decoding: DecodingConfig | None = None,
        threshold: float | None = None,
        progress: bool = False,
    ) -> list[Prediction]:
        """Labels with scores for each text.

        Args:
            texts: Documents.
            decoding: Overrides the model's default decoding.
            threshold: Overrides the tuned threshold.
            progress: Show a progress bar.
        """
        cfg = decoding or self.decoding
        thr = self.threshold if threshold is None else threshold
        self.model.eval()
        cands = generate_candidates(self.generator, self.tokenizer, self.encode_inputs(texts), cfg, self.device, progress=progress)
        return [self.to_prediction(c, cfg, thr) for c in cands]

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
            meta = {
                "format_version": FORMAT_VERSION,
                "settings": asdict(self.settings),
                "decoding": asdict(self.decoding),
                "threshold": self.threshold,
                "data_hash": self.data_hash,
                "metrics": self.metrics,
            }
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
    def load(cls, path: str | Path, device: str = "cpu") -> XLGenModel:
        """Loads a model directory written by :meth:`save`.

        Raises:
            FileNotFoundError: If ``path`` is no model directory.
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
        out = cls(
            model=model,
            tokenizer=tok,
            label_space=LabelSpace.load(path / "labels.json"),
            settings=settings,
            decoding=DecodingConfig(**meta["decoding"]),
            threshold=float(meta["threshold"]),
            data_hash=meta["data_hash"],
            metrics=meta.get("metrics", {}),
        )
        return out.to(device)
