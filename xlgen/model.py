"""The model directory: everything needed to predict, saved and loaded as one.

A directory holds ``xlgen.json`` (model settings, decoding defaults, tuned threshold, data hash,
metrics), ``labels.json`` (label space with train counts), the tokenizer, and the T5 weights
(``model.safetensors`` + ``config.json``) or, for LoRA on a pretrained base, the peft adapter
(``adapter_config.json`` + ``adapter_model.safetensors``). A guided model (``bcl``, ``mcg``, ...) also
holds ``guidance/``: whatever its guidance kind saves (see :mod:`xlgen.guidance`), its settings in
``xlgen.json``. ``XLGenModel.load(path)`` gives back exactly what ``save(path)`` wrote.

The directory is also a Hugging Face model directory: ``AutoTokenizer`` and
``AutoModelForSeq2SeqLM`` (``AutoPeftModelForSeq2SeqLM`` for LoRA) load it, ``generation_config.json``
holds the decoding defaults (``cluster_generation_config.json`` the ``mcg`` first stage), and
``README.md`` is a model card saying how to prompt the model and parse its output
(:mod:`xlgen.model_card`). Format 1 kept the tokenizer in ``tokenizer/``, a LoRA adapter in
``adapter/``, the label clustering in ``clusters/`` and BCL's head in ``cluster_head.safetensors``;
:meth:`XLGenModel.load` reads both layouts.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from transformers import T5ForConditionalGeneration

from xlgen.backends import decode, load_backend, pick, weights_stamp
from xlgen.backends.batching import length_batches, pad_batch
from xlgen.backends.torch_backend import TorchBackend, generation_config
from xlgen.decoding import Candidate, DecodingConfig, Prediction, cut, label_scores
from xlgen.digests import model_version, state_digest
from xlgen.files import atomic_dir
from xlgen.fusion import Fused, GeneratorGate
from xlgen.guidance import VARIANTS, Guidance, Plan, label_inputs, load_guidance
from xlgen.guidance.head import masked_mean
from xlgen.labels import ORDERS, LabelSpace
from xlgen.model_card import model_card
from xlgen.modeling import base_model
from xlgen.tokenizer import Tokenizer, load_tokenizer

SCORINGS = ("fused", "generator", "retriever")
"""How :meth:`XLGenModel.predict` scores labels."""

FORMAT_VERSION = 2
"""2: tokenizer, adapter at the root, guidance in ``guidance/``; 1 (still read): ``tokenizer/``, ``adapter/``,
``clusters/`` and ``cluster_head.safetensors``."""


@dataclass(frozen=True)
class ModelSettings:
    """What a model was built and trained as.

    Attributes:
        source: Preset name (``preset:cpu``) or the pretrained name or path it started from.
        variant: ``base`` (no guidance) or a guidance kind of :data:`xlgen.guidance.GUIDANCE`:
            ``bcl`` (an auxiliary multi-cluster head trained beside generation), ``mcg``
            (generates the document's cluster tokens first, then the labels with those tokens
            appended to the input).
        max_input_length: Input ids per document, task prefix and eos included.
        max_target_length: Target ids per document.
        label_order: Target order used in training (see :data:`xlgen.labels.ORDERS`).
        lora: Whether the weights are a LoRA adapter over ``source``.
        backbone: What reads the document (:data:`xlgen.backbone.BACKBONES`): ``t5``, the T5's own
            encoder over the tokenizer's ids; or ``sentence-encoder``, the retriever's frozen pretrained
            sentence encoder, whose token states are the T5's input (:mod:`xlgen.backbone`; needs the
            ``retrieval`` variant, whose retriever holds that encoder).
    """

    source: str = "preset:cpu"
    variant: str = "base"
    max_input_length: int = 128
    max_target_length: int = 64
    label_order: str = "frequency"
    lora: bool = False
    backbone: str = "t5"

    def __post_init__(self) -> None:
        from xlgen.backbone import BACKBONES

        if self.backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {self.backbone!r}; choose one of {', '.join(BACKBONES)}")
        if self.backbone == "sentence-encoder" and (self.variant != "retrieval" or self.lora):
            raise ValueError("the sentence-encoder backbone needs the retrieval variant (its retriever holds the encoder) and no LoRA")
        if self.label_order not in ORDERS:
            raise ValueError(f"unknown label order {self.label_order!r}; choose one of {', '.join(ORDERS)}")
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown variant {self.variant!r}")
        if self.max_input_length < 4 or self.max_target_length < 2:
            raise ValueError("max_input_length must be at least 4 and max_target_length at least 2")


@dataclass
class XLGenModel:
    """A trained label generator with its tokenizer, label space, guidance and decoding defaults.

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
        guidance: What conditions generation beyond the text (``None`` for ``base``).
        backend: The exported inference backends decoding goes through, fastest first (see
            :mod:`xlgen.backends`); None decodes with the torch model, which also serves what they cannot.
        version: Identifies these weights and settings: the saved directory's
            :func:`xlgen.digests.model_version`, or a digest of the weights in memory.
        data_license: License of the training data (a Hugging Face license id such as
            ``apache-2.0``) for the model card; empty when unknown.
        generator_gate: A ``retrieval`` model's dev decision whether to serve its generator stage
            (:func:`xlgen.fusion.gate_generator`); None: it does (models saved before the gate).
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
    guidance: Guidance | None = None
    backend: Any = field(default=None, repr=False)
    version: str = ""
    data_license: str = ""
    generator_gate: GeneratorGate | None = None

    def __post_init__(self) -> None:
        # Generated text goes back to a label through the tokenizer's own normalisation, so a
        # label that SentencePiece normalises (spacing, width) is still recognised.
        self._canonical = {self.tokenizer.decode(self.tokenizer.encode(x)).strip(): x for x in self.label_space.labels}
        kind = self.guidance.name if self.guidance is not None else "base"
        if kind != self.settings.variant:
            raise ValueError(f"a {self.settings.variant} model needs {self.settings.variant} guidance, not {kind}")
        if self.guidance is not None and hasattr(self.guidance, "check"):
            self.guidance.check(self)

    @property
    def t5(self) -> T5ForConditionalGeneration:
        return base_model(self.model)

    def to(self, device: str) -> XLGenModel:
        self.model.to(device)
        if self.guidance is not None:
            self.guidance.to(device)
        self.device = device
        return self

    def weights_version(self) -> str:
        """:attr:`version` while the weights are those it was set for; else (unset, or the weights
        changed in place since, e.g. by training) a digest of the weights in memory and the threshold."""
        stamp = weights_stamp(self.model)
        if not self.version or getattr(self, "_version_stamp", stamp) != stamp:
            self.version = state_digest(self.model, repr(self.threshold))[:12]
        self._version_stamp = stamp
        return self.version

    # ------------------------------------------------------------------------------- inputs

    def plan(self, texts: Sequence[str], given: Sequence[Any] | None = None, report: bool = False) -> Plan:
        """What the guidance prepares for ``texts`` (an empty plan for ``base``); see
        :meth:`xlgen.guidance.base.Guidance.plan`."""
        if self.guidance is None:
            if given is not None:
                raise ValueError("a base model takes no guidance inputs (given)")
            return Plan()
        return self.guidance.plan(self, texts, given, report)

    @property
    def serves_generator(self) -> bool:
        """Whether default tagging (``scoring="fused"``) runs the generator: False where the dev gate turned
        it off, and the retriever stage alone is served."""
        return self.generator_gate is None or self.generator_gate.serve

    @property
    def reads_encoder_states(self) -> bool:
        """Whether the document is read by the retriever's sentence encoder (the ``sentence-encoder`` backbone)."""
        return self.settings.backbone == "sentence-encoder"

    def encode_inputs(self, texts: Sequence[str], given: Sequence[Any] | None = None, plan: Plan | None = None) -> list[list[int]]:
        """Label-task inputs of ``texts``: each text with its guidance suffix (``plan``'s, else a
        new plan; ``given``: what to condition on instead of predicting it, e.g. gold clusters).

        On the ``sentence-encoder`` backbone each is an :class:`xlgen.backbone.EmbeddedInput`: ``<text>``
        placeholders carrying the plan's token states, then the suffix."""
        plan = plan if plan is not None else self.plan(texts, given)
        if self.reads_encoder_states:
            from xlgen.backbone import embedded_inputs

            return list(embedded_inputs(self.tokenizer, plan.extra["states"], plan.suffixes, self.settings.max_input_length))
        return label_inputs(self, texts, plan.suffixes)

    def _memory(self, ids: torch.Tensor, mask: torch.Tensor, inputs: Sequence[Any]) -> torch.Tensor:
        """The T5 encoder's output over a padded batch ``(batch, len)`` of ``inputs`` (its own ids, or on the
        ``sentence-encoder`` backbone the token states at the ``<text>`` positions): ``(batch, len, d_model)``."""
        if not self.reads_encoder_states:
            return self.t5.get_encoder()(input_ids=ids, attention_mask=mask).last_hidden_state
        from xlgen.backbone import TEXT, memory, padded_states

        if any(not hasattr(x, "states") for x in inputs):
            raise ValueError("a sentence-encoder model decodes inputs that carry their token states (encode_inputs)")
        states = padded_states(inputs, ids.shape[1], self.t5.config.d_model).to(ids.device)  # (batch, len, d_model)
        return memory(self.t5, ids, mask, states, self.tokenizer.token_id(TEXT))

    def encoded_batches(self, inputs: Sequence[Sequence[int]], batch_size: int = 32) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Encoder states ``(batch, len, d_model)`` with their masks ``(batch, len)`` of encoded
        ``inputs``, batch by batch, in order (call under ``torch.inference_mode``)."""
        self.model.eval()
        for start in range(0, len(inputs), batch_size):
            part = inputs[start : start + batch_size]
            ids, mask = pad_batch(part, self.tokenizer.pad_id, self.device)
            yield self._memory(ids, mask, part), mask

    @torch.inference_mode()
    def guidance_embeddings(self, texts: Sequence[str]) -> np.ndarray | None:
        """The guidance's pretrained document vectors (see :meth:`Guidance.document_embeddings`), or None."""
        return self.guidance.document_embeddings(texts) if self.guidance is not None else None

    def embeddings(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """Document vectors for diversity and similarity: the guidance's pretrained sentence-encoder
        vectors when it holds an encoder (retrieval), else mean-pooled T5 encoder states of the texts'
        label inputs: ``(n_texts, dim)``."""
        if (pretrained := self.guidance_embeddings(texts)) is not None:
            return pretrained
        self.model.eval()
        with torch.inference_mode():
            out = [masked_mean(states, mask).float().cpu()  # (batch, d_model)
                   for states, mask in self.encoded_batches(self.encode_inputs(texts), batch_size)]
        return torch.cat(out).numpy() if out else np.zeros((0, self.t5.config.d_model), dtype=np.float32)  # (n_texts, d_model)

    def canonical(self, label: str) -> str:
        return self._canonical.get(label, label)

    # ------------------------------------------------------------------------------- decoding

    def predict(
        self,
        texts: Sequence[str],
        decoding: DecodingConfig | None = None,
        threshold: float | None = None,
        progress: bool = False,
        given: Sequence[Any] | None = None,
        plan: Plan | None = None,
        should_stop: Callable[[], bool] | None = None,
        scoring: str = "fused",
        dropout: bool = False,
    ) -> list[Prediction]:
        """Labels with scores for each text.

        Args:
            texts: Documents.
            decoding: Overrides the model's default decoding.
            threshold: Overrides the tuned threshold.
            progress: Show a progress bar.
            given: What the guidance conditions on instead of predicting it (``mcg``: the gold
                clusters, the oracle).
            plan: A plan the guidance already made for ``texts``.
            should_stop: Checked between decoding batches (see :func:`xlgen.backends.decode`).
            scoring: ``fused`` (the generator's scores with whatever the guidance fuses in: the
                retrieval guidance's calibrated probabilities), ``generator`` (beam mass alone) or
                ``retriever`` (the guidance's own scores, no decoding at all). The tuned threshold
                belongs to ``fused``; the others need their own.
            dropout: Decode with dropout on in the whole network (one stochastic pass of MC dropout,
                on torch); the model is left in that mode, the caller switches it back.

        Raises:
            xlgen.backends.Cancelled: When ``should_stop`` returned True.
        """
        if scoring not in SCORINGS:
            raise ValueError(f"unknown scoring {scoring!r}; choose one of {', '.join(SCORINGS)}")
        if scoring == "fused" and not self.serves_generator:
            scoring = "retriever"  # the dev gate: the generator did not earn its cost
        cfg = decoding or self.decoding
        thr = self.threshold if threshold is None else threshold
        if self.model.training != dropout:  # a walk over every module otherwise, on each call
            self.model.train(dropout)
        if plan is None and scoring == "retriever" and self.guidance is not None and self.reads_encoder_states:
            plan = self.guidance.plan(self, texts, given, states=False)  # type: ignore[call-arg]  # no generator reads states
        plan = plan if plan is not None else self.plan(texts, given)
        if scoring == "retriever":
            fused = self.guidance.rescore(self, plan, None, use_generator=False) if self.guidance is not None else None
            if fused is None:
                raise ValueError(f"scoring 'retriever' needs a model whose guidance scores labels (variant retrieval), not {self.settings.variant}")
            return [self._fused_prediction(Prediction([], [], []), f, cfg, thr) for f in fused]
        cands = self.candidates(self.encode_inputs(texts, given, plan), cfg, progress=progress, should_stop=should_stop)
        preds = [self.to_prediction(c, cfg, thr) for c in cands]
        if scoring == "fused" and self.guidance is not None:
            fused = self.guidance.rescore(self, plan, [p.all_scores for p in preds])
            if fused is not None:
                preds = [self._fused_prediction(p, f, cfg, thr) for p, f in zip(preds, fused, strict=True)]
        return preds

    def _fused_prediction(self, pred: Prediction, fused: Fused, cfg: DecodingConfig, threshold: float) -> Prediction:
        scores = fused.scores
        if not cfg.keep_new_labels:
            scores = {k: v for k, v in scores.items() if k in self.label_space}
        return Prediction([], [], [], scores, pred.candidates, fused.sources).recut(threshold, cfg.min_labels, self.knows)

    def knows(self, label: str) -> bool:
        """Whether ``label`` is in the label space."""
        return label in self.label_space

    def candidates(
        self,
        inputs: Sequence[Sequence[int]],
        cfg: DecodingConfig,
        encoder_cache: dict[int, torch.Tensor] | None = None,
        progress: bool = False,
        should_stop: Callable[[], bool] | None = None,
    ) -> list[list[Candidate]]:
        """``cfg.num_return`` scored candidates per encoded input, best first (see
        :func:`xlgen.backends.decode`): the one place every decoding goes through.

        Runs on :attr:`backend` when it can serve ``cfg`` now, else on the torch model (MC dropout,
        weights changed since the export was loaded)."""
        backend = pick(self.backend, self.model, cfg) or TorchBackend(self.generator, self.tokenizer.eos_id, self.tokenizer.pad_id, self.device)
        if self.reads_encoder_states:  # the decoder reads the memory over the token states: made here, once per input
            encoder_cache = self._fill_memory(inputs, encoder_cache if encoder_cache is not None else {}, cfg.batch_size)
        return decode(backend, self.tokenizer, inputs, cfg, encoder_cache=encoder_cache, progress=progress, should_stop=should_stop)

    def _fill_memory(self, inputs: Sequence[Any], cache: dict[int, torch.Tensor], batch_size: int) -> dict[int, torch.Tensor]:
        """``cache`` with the memory of every input it lacks (:meth:`_memory`, in length-sorted batches), rows cut to
        their own length, as :func:`xlgen.backends.decode` caches encoder states."""
        todo = [i for i in range(len(inputs)) if i not in cache]
        with torch.inference_mode():
            for idx in length_batches([len(inputs[i]) for i in todo], batch_size):
                rows = [inputs[todo[j]] for j in idx]
                ids, mask = pad_batch(rows, self.tokenizer.pad_id, self.device)
                states = self._memory(ids, mask, rows)  # (batch, len, d_model)
                for r, j in enumerate(idx):
                    cache[todo[j]] = states[r, : len(rows[r])]
        return cache

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

    # ---------------------------------------------------------------------------- persistence

    def save(self, path: str | Path) -> None:
        """Writes the model directory atomically: into a temporary sibling, then renamed over ``path``."""
        path = Path(path)
        with atomic_dir(path) as tmp:
            if self.settings.lora:
                self.model.save_pretrained(str(tmp))
                _point_adapter_at_base(tmp, self.settings.source)
            else:
                self.t5.save_pretrained(str(tmp))
            self.tokenizer.save(tmp, max_length=self.settings.max_input_length)
            tok = self.tokenizer
            generation_config(self.decoding, tok.eos_id, tok.pad_id).save_pretrained(str(tmp))
            for name, cfg in (self.guidance.generation_configs() if self.guidance is not None else {}).items():
                generation_config(cfg, tok.eos_id, tok.pad_id).save_pretrained(str(tmp), config_file_name=name)
            self.label_space.save(tmp / "labels.json")
            meta: dict[str, Any] = {
                "format_version": FORMAT_VERSION,
                "settings": asdict(self.settings),
                "decoding": asdict(self.decoding),
                "threshold": self.threshold,
                "data_hash": self.data_hash,
                "metrics": self.metrics,
                "data_license": self.data_license,
            }
            if self.generator_gate is not None:
                meta["generator"] = self.generator_gate.to_dict()
            if self.guidance is not None:
                (tmp / "guidance").mkdir()
                meta["guidance"] = self.guidance.save(tmp / "guidance")
            (tmp / "xlgen.json").write_text(json.dumps(meta, indent=1))
            (tmp / "README.md").write_text(model_card(self))  # replaces the card peft writes beside an adapter
        self.version = model_version(path)

    def export(self, path: str | Path, backend: str, quantization: str = "float32", compute_type: str = "auto",
               onnx_quantization: str = "float32") -> Path:
        """Writes ``backend``'s export into the saved model directory ``path`` (this model's
        directory: the export records the digest of its weight files); a LoRA model is merged first,
        on a copy. See :func:`xlgen.backends.export.export`."""
        from xlgen.backends.export import export

        t5 = self.t5
        if self.settings.lora:
            import copy

            t5 = copy.deepcopy(self.model).merge_and_unload()
        return export(t5.eval(), self.tokenizer, path, backend, quantization=quantization, compute_type=compute_type,
                      reads_states=self.reads_encoder_states, onnx_quantization=onnx_quantization)

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu", backend: str = "auto") -> XLGenModel:
        """Loads a model directory written by :meth:`save` (format 2, or format 1's layout).

        ``backend`` picks the inference backend (:func:`xlgen.backends.load_backend`): ``auto`` is
        the fastest valid export in ``path`` (``xlgen export``), else torch.

        Raises:
            FileNotFoundError: If ``path`` is no model directory, or ``backend`` names one with no export.
            ModelDirError: If ``xlgen.json`` or the weights cannot be read.
            xlgen.backends.StaleExport: If ``backend`` names an export of other weights.
        """
        path = Path(path)
        if not (path / "xlgen.json").is_file():
            raise FileNotFoundError(f"{path}: not a model directory (no xlgen.json)")
        meta = read_model_meta(path / "xlgen.json")
        settings = meta["settings"]
        tok = load_tokenizer(path)
        model: torch.nn.Module
        try:
            if settings.lora:
                from peft import PeftModel

                from xlgen.modeling import load_pretrained

                adapter = path if (path / "adapter_config.json").is_file() else path / "adapter"  # format 2, or 1
                model = PeftModel.from_pretrained(load_pretrained(settings.source, len(tok)), str(adapter))
            else:
                model = T5ForConditionalGeneration.from_pretrained(str(path))
        except (OSError, ValueError, RuntimeError, SafetensorError) as e:
            raise ModelDirError(f"{path}: cannot load the model weights ({e})") from e
        model.eval()
        out = cls(
            model=model,
            tokenizer=tok,
            label_space=LabelSpace.load(path / "labels.json"),
            settings=settings,
            decoding=meta["decoding"],
            threshold=meta["threshold"],
            data_hash=meta["data_hash"],
            metrics=meta["metrics"],
            guidance=_load_guidance(path, settings.variant, meta),
            version=model_version(path),
            data_license=meta["data_license"],
            generator_gate=meta["generator"],
        )
        out = out.to(device)
        out.backend = load_backend(path, out, backend, device)
        return out


class ModelDirError(ValueError):
    """A model directory whose description (``xlgen.json``) or weights cannot be read."""


def read_model_meta(file: str | Path) -> dict[str, Any]:
    """``xlgen.json`` with its settings and decoding configs built and checked.

    Raises:
        ModelDirError: If it is not valid JSON or lacks or mistypes a field.
    """
    file = Path(file)
    try:
        meta = json.loads(file.read_text(encoding="utf-8"))
        return {
            "settings": ModelSettings(**meta["settings"]),
            "decoding": DecodingConfig(**meta["decoding"]),
            "threshold": float(meta["threshold"]),
            "data_hash": str(meta["data_hash"]),
            "metrics": dict(meta.get("metrics") or {}),
            "data_license": str(meta.get("data_license") or ""),
            "guidance": dict(meta["guidance"]) if "guidance" in meta else None,
            "generator": GeneratorGate.from_dict(meta["generator"]) if meta.get("generator") else None,
            "clusters": dict(meta.get("clusters") or {}),  # format 1's guidance settings
        }
    except json.JSONDecodeError as e:
        raise ModelDirError(f"{file}: not valid JSON ({e})") from e
    except UnicodeDecodeError as e:
        raise ModelDirError(f"{file}: not UTF-8 text ({e})") from e
    except KeyError as e:
        raise ModelDirError(f"{file}: missing field {e}") from e
    except (TypeError, ValueError, AttributeError) as e:
        raise ModelDirError(f"{file}: {e}") from e


def export_model(path: str | Path, backend: str, quantization: str = "float32", compute_type: str = "auto",
                 onnx_quantization: str = "float32") -> Path:
    """Loads the model directory ``path`` and writes ``backend``'s export into it (``xlgen export``).

    Raises:
        FileNotFoundError: If ``path`` is no model directory.
        ModelDirError: If it cannot be read.
        ImportError: If ``backend``'s library is not installed.
    """
    from xlgen.backends.export import check_installed

    check_installed(backend)
    return XLGenModel.load(path, backend="torch").export(path, backend, quantization=quantization, compute_type=compute_type,
                                                         onnx_quantization=onnx_quantization)


def _load_guidance(path: Path, variant: str, meta: dict[str, Any]) -> Guidance | None:
    """The saved guidance; format 1 kept the clustering in ``clusters/`` and BCL's head beside the weights."""
    if variant == "base":
        return None
    try:
        if meta["guidance"] is not None:
            return load_guidance(variant, path / "guidance", meta["guidance"])
        legacy = dict(meta["clusters"])
        if variant == "bcl":
            legacy["head_file"] = str(path / "cluster_head.safetensors")
        return load_guidance(variant, path / "clusters", legacy)
    except (OSError, KeyError, TypeError, ValueError, SafetensorError) as e:
        raise ModelDirError(f"{path}: cannot load its {variant} guidance ({type(e).__name__}: {e})") from e


def _point_adapter_at_base(directory: Path, source: str) -> None:
    """Makes ``adapter_config.json`` name the base model as peft's Auto classes will look for it:
    an absolute path for a local directory (a relative one would depend on the working directory)."""
    if not Path(source).is_dir():
        return
    config_file = directory / "adapter_config.json"
    config = json.loads(config_file.read_text())
    config["base_model_name_or_path"] = str(Path(source).resolve())
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
