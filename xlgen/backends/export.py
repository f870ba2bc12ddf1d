"""Exporting a model directory's weights for a fast backend, and finding a valid export again.

An export is a subfolder of the model directory (``onnx/`` or ``ct2/``) with a ``backend.json``
manifest: the backend, how its weights are stored, and a digest of the source weights. A LoRA
model is merged into its base first. Loading refuses an export whose digest no longer matches the
weights (:class:`StaleExport`); :meth:`xlgen.model.XLGenModel.save` replaces the whole directory,
so a saved model never carries an export of other weights.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import T5ForConditionalGeneration

from xlgen.digests import weight_files_digest
from xlgen.files import atomic_dir

MANIFEST = "backend.json"
FOLDERS = {"onnxruntime": "onnx", "ctranslate2": "ct2"}
EXPORT_VERSION = 1
QUANTIZATIONS = ("float32", "int8", "int8_float32", "float16", "bfloat16", "int8_bfloat16")
COMPUTE_TYPES = ("auto", "float32", "int8", "int8_float32", "float16", "bfloat16", "int8_bfloat16", "int8_float16")


PACKAGES = {"onnxruntime": ("onnxruntime", "onnx", "onnxscript"), "ctranslate2": ("ctranslate2",)}
"""Modules each backend needs to export and decode."""
INSTALL = {"onnxruntime": "pip install 'xlgen[fast,cpu]' (on CUDA: 'xlgen[fast,gpu]', which brings onnxruntime-gpu)",
           "ctranslate2": "pip install 'xlgen[fast]'"}
"""How to install them (onnxruntime and onnxruntime-gpu are two flavours of one module: install one)."""


def check_installed(backend: str) -> None:
    """Raises ImportError, saying how to install it, if a module ``backend`` needs is missing."""
    import importlib.util

    missing = [m for m in PACKAGES[backend] if importlib.util.find_spec(m) is None]
    if missing:
        raise ImportError(f"the {backend} backend needs {', '.join(missing)}: {INSTALL[backend]}")


class StaleExport(RuntimeError):
    """An export made from other weights than the model directory now holds."""


class UnsupportedExport(ValueError):
    """A backend that cannot serve this kind of model."""


@dataclass(frozen=True)
class ExportInfo:
    """The manifest of one export.

    Attributes:
        backend: ``onnxruntime`` or ``ctranslate2``.
        weights: :func:`xlgen.digests.weight_files_digest` of the model directory it was made from.
        quantization: How the weights are stored (``float32`` for ONNX).
        compute_type: CTranslate2 compute type at load; ``auto`` is int8 on CPU, bfloat16 on CUDA.
        library: Version of the backend's library that wrote it.
        max_abs_diff: Largest log-prob difference to the torch decoder measured at export (ONNX).
        format_version: Layout version of the export folder.
        created: Unix time of the export.
    """

    backend: str
    weights: str
    quantization: str = "float32"
    compute_type: str = "auto"
    library: str = ""
    max_abs_diff: float = 0.0
    format_version: int = EXPORT_VERSION
    created: float = 0.0

    def __post_init__(self) -> None:
        if self.backend not in FOLDERS:
            raise ValueError(f"unknown export backend {self.backend!r}; choose one of {', '.join(FOLDERS)}")
        if self.quantization not in QUANTIZATIONS:
            raise ValueError(f"unknown quantization {self.quantization!r}")
        if self.compute_type not in COMPUTE_TYPES:
            raise ValueError(f"unknown compute type {self.compute_type!r}")


def export_dir(model_dir: str | Path, backend: str) -> Path:
    """Where ``backend``'s export of ``model_dir`` lives."""
    if backend not in FOLDERS:
        raise ValueError(f"no export for backend {backend!r}; choose one of {', '.join(FOLDERS)}")
    return Path(model_dir) / FOLDERS[backend]


def read_export(model_dir: str | Path, backend: str) -> ExportInfo:
    """The manifest of ``backend``'s export of ``model_dir``.

    Raises:
        FileNotFoundError: If there is no export.
        StaleExport: If it was made from other weights, or in an older layout.
    """
    path = export_dir(model_dir, backend) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{path.parent}: no {backend} export (run `xlgen export --model {model_dir} --backend {backend}`)")
    info = ExportInfo(**json.loads(path.read_text()))
    if info.format_version != EXPORT_VERSION:
        raise StaleExport(f"{path.parent}: export format {info.format_version}, this version reads {EXPORT_VERSION}; export again")
    if info.weights != weight_files_digest(model_dir):
        raise StaleExport(f"{path.parent}: exported from other weights than {model_dir} now holds; export again")
    return info


@torch.inference_mode()
def _write_onnx(t5: T5ForConditionalGeneration, out: Path, encoder_graph: bool = True) -> tuple[float, str]:
    """Writes the cross-attention and decoder-step graphs, and the encoder graph unless ``encoder_graph`` is
    False (a ``sentence-encoder`` model, whose encoder reads token states, not ids: xlgen computes that memory
    and hands it to the decoder graphs)."""
    import onnxruntime as ort
    from torch.export import Dim

    from xlgen.backends.onnx_graphs import CrossGraph, DecoderStepGraph, EncoderGraph, check_step, io_names

    t5 = t5.float().cpu()
    diff = check_step(t5)
    cfg = t5.config
    n_layers, heads, d_kv = len(t5.get_decoder().block), int(cfg.num_heads), int(cfg.d_kv)
    names = io_names(n_layers)
    rows, src, past_len = Dim("rows"), Dim("src_len"), Dim("past_len")
    ids = torch.full((2, 5), 3, dtype=torch.long)
    mask = torch.ones_like(ids)
    states = EncoderGraph(t5).eval()(ids, mask)
    cross = CrossGraph(t5)(states)
    past = tuple(torch.zeros(2, heads, 3, d_kv) for _ in range(2 * n_layers))
    common: dict[str, Any] = {"dynamo": True, "external_data": False, "optimize": True, "verbose": False}
    # every graph shares its axes, which the exporter reports once per graph
    warnings.filterwarnings("ignore", message="# The axis name", category=UserWarning)
    if encoder_graph:
        torch.onnx.export(EncoderGraph(t5).eval(), (ids, mask), str(out / "encoder.onnx"), input_names=names["encoder_in"],
                          output_names=names["encoder_out"], dynamic_shapes=({0: rows, 1: src}, {0: rows, 1: src}), **common)
    torch.onnx.export(CrossGraph(t5).eval(), (states,), str(out / "cross.onnx"), input_names=names["cross_in"],
                      output_names=names["cross_out"], dynamic_shapes=({0: rows, 1: src},), **common)
    cache_shapes = tuple([{0: rows, 2: past_len}] * (2 * n_layers) + [{0: rows, 2: src}] * (2 * n_layers))
    torch.onnx.export(DecoderStepGraph(t5).eval(), (ids[:, :1], mask, *past, *cross), str(out / "decoder.onnx"),
                      input_names=names["decoder_in"], output_names=names["decoder_out"],
                      dynamic_shapes={"input_ids": {0: rows}, "attention_mask": {0: rows, 1: src}, "cache": cache_shapes},
                      **common)
    return diff, ort.__version__


def _write_ct2(t5: T5ForConditionalGeneration, out: Path, quantization: str) -> str:
    import ctranslate2
    from ctranslate2.converters import Converter
    from ctranslate2.converters.transformers import T5Loader

    config = t5.config

    class _T5Converter(Converter):
        """CTranslate2's own T5 loader on an in-memory model; the vocabulary is the ids themselves
        (``"0"``, ``"1"``, ...), so that no tokenizer is involved."""

        def _load(self):  # type: ignore[no-untyped-def]
            loader = T5Loader()
            spec = loader.get_model_spec(t5)
            scale = getattr(config, "scale_decoder_outputs", config.tie_word_embeddings)
            spec.decoder.scale_outputs = config.d_model**-0.5 if scale else None
            loader.set_vocabulary(spec, [str(i) for i in range(config.vocab_size)])
            spec.config.bos_token = spec.config.decoder_start_token = str(config.decoder_start_token_id)
            spec.config.eos_token = str(config.eos_token_id)
            spec.config.unk_token = "2"  # SentencePiece's and T5's unk id; never fed, the inputs are ids
            return spec

    with torch.inference_mode():
        _T5Converter().convert(str(out), quantization=quantization, force=True)
    return ctranslate2.__version__


ONNX_QUANTIZATIONS = ("float32", "int8")
"""ONNX graphs' weights: float32 as exported, or int8 (ONNX Runtime's dynamic quantization of the matrix products)."""


def _quantize_onnx(folder: Path) -> None:
    """Replaces every graph in ``folder`` by its dynamically quantized int8 copy (weights int8, activations
    quantized per call): the decoder step of the ``sentence-encoder`` generator ran 1.33x faster on one CPU thread
    with the same best beam on 99.7% of 640 goemotions test documents."""
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.getLogger().setLevel(max(logging.getLogger().level, logging.ERROR))  # its advice to pre-process first is for CNNs
    for graph in sorted(folder.glob("*.onnx")):
        tmp = graph.with_suffix(".int8.onnx")
        quantize_dynamic(str(graph), str(tmp), weight_type=QuantType.QInt8)
        os.replace(tmp, graph)


def export(t5: T5ForConditionalGeneration, tokenizer: Any, model_dir: str | Path, backend: str, quantization: str = "float32",
           compute_type: str = "auto", reads_states: bool = False, onnx_quantization: str = "float32") -> Path:
    """Writes ``backend``'s export of ``t5`` into ``model_dir`` (replacing an older one atomically).

    Args:
        t5: The plain T5 to export (a LoRA model merged first: see
            :meth:`xlgen.model.XLGenModel.export`), in eval mode.
        tokenizer: Its tokenizer (the export feeds ids, so only its special ids are read).
        model_dir: The model directory the weights were saved to; the export records the digest of
            its weight files, so that a later retraining makes it stale.
        backend: ``onnxruntime`` or ``ctranslate2``.
        quantization: Stored weights of CTranslate2.
        compute_type: CTranslate2 compute type recorded for loading (``auto``: int8 on CPU,
            bfloat16 on CUDA).
        onnx_quantization: ONNX graphs' weights (:data:`ONNX_QUANTIZATIONS`).
        reads_states: The model is a ``sentence-encoder`` one: its encoder reads token states, so ONNX gets
            no encoder graph and CTranslate2 (which encodes ids itself) cannot serve it.

    Returns:
        The export folder.

    Raises:
        ImportError: If the backend's library is not installed.
        UnsupportedExport: CTranslate2 for a model that reads token states.
    """
    if reads_states and backend == "ctranslate2":
        raise UnsupportedExport("CTranslate2 decodes from token ids through its own encoder; a sentence-encoder model's "
                                "encoder reads the sentence encoder's token states: export onnxruntime")
    model_dir = Path(model_dir)
    target = export_dir(model_dir, backend)
    check_installed(backend)
    digest = weight_files_digest(model_dir)
    if (t5.config.eos_token_id, t5.config.decoder_start_token_id) != (tokenizer.eos_id, tokenizer.pad_id):
        raise ValueError("the T5's eos / decoder start ids differ from its tokenizer's")
    with atomic_dir(target) as tmp:
        if backend == "onnxruntime":
            diff, library = _write_onnx(t5, tmp, encoder_graph=not reads_states)
            if onnx_quantization == "int8":
                _quantize_onnx(tmp)
            elif onnx_quantization != "float32":
                raise ValueError(f"unknown ONNX quantization {onnx_quantization!r}; choose one of {', '.join(ONNX_QUANTIZATIONS)}")
            info = ExportInfo(backend, digest, onnx_quantization, "auto", library, diff, created=time.time())
        else:
            work = tmp / "model"
            library = _write_ct2(t5, work, quantization)
            for f in work.iterdir():
                os.replace(f, tmp / f.name)
            work.rmdir()
            info = ExportInfo(backend, digest, quantization, compute_type, library, created=time.time())
        (tmp / MANIFEST).write_text(json.dumps(asdict(info), indent=1))
    return target
