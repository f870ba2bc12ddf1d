"""The fast CPU path: a sentence-transformers BERT encoder converted to CTranslate2.

CTranslate2's own BERT loader converts the in-memory transformer (token ids in, no tokenizer involved:
the vocabulary is the ids themselves); the sentence-transformers tokenizer still tokenizes, and the
pooling of the model's Pooling module (mean or CLS) is applied to CTranslate2's last hidden states.
The conversion is written once per (weights digest, quantization) into xlgen's cache and reused.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import numpy as np
import torch

from xlgen.devices import torch_threads_kept

POOLING_MODES = ("mean", "cls")
"""Pooling modes the CTranslate2 path reproduces (``pooling_mode_mean_tokens`` / ``_cls_token``)."""


def pooling_mode(module: Any) -> str | None:
    """The pooling of a sentence-transformers Pooling module when the CTranslate2 path reproduces it
    (``mean`` or ``cls`` alone), else None."""
    cfg = module.get_config_dict() if hasattr(module, "get_config_dict") else {}
    mode = cfg.get("pooling_mode")
    if isinstance(mode, str):  # sentence-transformers >= 5 names the mode
        return {"mean": "mean", "cls": "cls"}.get(mode)
    if cfg.get("pooling_mode_mean_tokens") and not any(v for k, v in cfg.items() if k.startswith("pooling_mode_") and k != "pooling_mode_mean_tokens"):
        return "mean"
    if cfg.get("pooling_mode_cls_token") and not any(v for k, v in cfg.items() if k.startswith("pooling_mode_") and k != "pooling_mode_cls_token"):
        return "cls"
    return None


def unsupported_reason(model: Any) -> str | None:
    """Why a SentenceTransformer cannot take the CTranslate2 path, or None if it can.

    Supported: a BERT ``Transformer`` module with a pooler, then a mean or CLS ``Pooling`` module, then
    optionally ``Normalize`` (embeddings are normalised anyway), and the ``fast`` extra's ctranslate2 installed.
    """
    if find_spec("ctranslate2") is None:
        return "ctranslate2 is not installed (the fast extra: pip install 'xlgen[fast]')"
    modules = list(model)
    names = [type(m).__name__ for m in modules]
    if len(modules) < 2 or names[0] != "Transformer" or names[1] != "Pooling" or any(n != "Normalize" for n in names[2:]):
        return f"modules {names} are not Transformer, Pooling[, Normalize]"
    auto = getattr(modules[0], "auto_model", None)
    if auto is None or type(auto.config).__name__ != "BertConfig":
        return "the transformer is not a BERT model"
    if getattr(auto, "pooler", None) is None:
        return "the BERT model has no pooler layer (CTranslate2's BERT spec expects one)"
    if getattr(auto.config, "position_embedding_type", "absolute") != "absolute":
        return "the BERT model does not use absolute position embeddings"
    if pooling_mode(modules[1]) is None:
        return "the pooling is neither mean nor CLS"
    return None


def convert(model: Any, out_dir: str | Path, quantization: str) -> Path:
    """Converts a SentenceTransformer's BERT into a CTranslate2 folder, atomically (written beside the
    target, then renamed, so a concurrent or interrupted conversion never leaves a half folder).

    Args:
        model: A SentenceTransformer that passes :func:`unsupported_reason`.
        out_dir: The target folder.
        quantization: ``float32`` or ``int8``.

    Returns:
        ``out_dir``.
    """
    import ctranslate2
    from ctranslate2.converters import Converter
    from ctranslate2.converters.transformers import BertLoader

    out_dir = Path(out_dir)
    bert = model[0].auto_model
    if not hasattr(bert.config, "position_embedding_type"):
        # transformers 5 dropped the field (BERT is absolute-only there); CTranslate2's loader asserts on it
        bert.config.position_embedding_type = "absolute"
    tokenizer = model.tokenizer

    class _BertConverter(Converter):
        def _load(self):  # type: ignore[no-untyped-def]
            loader = BertLoader()
            spec = loader.get_model_spec(bert)
            loader.set_vocabulary(spec, [str(i) for i in range(bert.config.vocab_size)])
            loader.set_config(spec.config, bert, tokenizer)
            return spec

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        with torch.inference_mode():
            _BertConverter().convert(str(tmp / "model"), quantization=quantization, force=True)
        (tmp / "model" / "xlgen_encoder.json").write_text(json.dumps({"ctranslate2": ctranslate2.__version__,
                                                                       "quantization": quantization}))
        try:
            os.rename(tmp / "model", out_dir)
        except OSError:
            if not (out_dir / "model.bin").is_file():  # another process won the race: keep its copy
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


class Ct2Encoder:
    """Runs a converted encoder and pools its last hidden states like the sentence-transformers model.

    On CPU, ``threads`` are as many one-thread workers (CTranslate2's ``inter_threads``), each taking
    whole batches (:meth:`embed_batches`). On two threads, int8, two workers embedded 1.31x as many
    goemotions test texts per second as one encoder whose two intra-op threads share each batch, and
    1.28x as many reuters21578 ones (``benchmarks/encoder_speed.py --threads 2 --one-worker``; README,
    Pretrained knowledge).

    Args:
        path: The converted folder.
        pooling: ``mean`` or ``cls``.
        quantization: The compute type (``float32`` or ``int8``).
        device: ``cpu`` or ``cuda``.
        threads: CPU threads: one-thread workers on CPU, ``intra_threads`` on CUDA.
        one_worker: One encoder with ``threads`` intra-op threads on CPU too (the former layout, kept for
            the speed benchmark).
    """

    def __init__(self, path: str | Path, pooling: str, quantization: str = "float32", device: str = "cpu",
                 threads: int = 1, one_worker: bool = False) -> None:
        import ctranslate2

        if pooling not in POOLING_MODES:
            raise ValueError(f"pooling {pooling!r} is not one of {POOLING_MODES}")
        if threads < 1:
            raise ValueError("encoder threads must be >= 1")
        self.path, self.pooling = Path(path), pooling
        self.workers = threads if device == "cpu" and not one_worker else 1
        with torch_threads_kept():
            self.encoder = ctranslate2.Encoder(str(path), device=device, compute_type=quantization, inter_threads=self.workers,
                                               intra_threads=1 if self.workers > 1 else threads)
        self._pool: ThreadPoolExecutor | None = None

    def embed_batches(self, ids: Sequence[Sequence[int]], batches: Iterable[Sequence[int]], states: bool = False) -> Iterator[tuple[list[int], Any]]:
        """Embeds ``ids`` batch by batch, the batches shared among the workers.

        Args:
            ids: Token-id lists of every text.
            batches: Index lists into ``ids``, one per forward pass.
            states: Yield ``(vectors, token states)`` per batch (:meth:`embed_ids_with_states`) instead of the vectors.

        Yields:
            ``(indices, vectors)`` per batch, in the order of ``batches``.
        """
        run = self.embed_ids_with_states if states else self.embed_ids
        if self.workers == 1:
            for idx in batches:
                yield list(idx), run([ids[i] for i in idx])
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="xlgen-encoder")
        pending: deque[tuple[list[int], Future[Any]]] = deque()
        for idx in batches:  # at most two batches per worker in flight: memory stays bounded on long inputs
            pending.append((list(idx), self._pool.submit(run, [ids[i] for i in idx])))
            if len(pending) >= 2 * self.workers:
                done, fut = pending.popleft()
                yield done, fut.result()
        while pending:
            done, fut = pending.popleft()
            yield done, fut.result()

    def embed_ids(self, ids: Sequence[Sequence[int]]) -> np.ndarray:
        """Pooled, L2-normalised vectors of a batch of token-id lists (special tokens included).

        Returns:
            ``(batch, dim)`` float32.
        """
        return self.embed_ids_with_states(ids)[0]

    def embed_ids_with_states(self, ids: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
        """One forward pass: the pooled vectors and the token states they were pooled from.

        Returns:
            ``(vectors (batch, dim) float32 of unit norm, states (batch, max_len, dim) float32)``; a row's states
            past its own length are padding.
        """
        out = self.encoder.forward_batch([list(x) for x in ids])
        hidden = np.asarray(out.last_hidden_state, dtype=np.float32)  # (batch, max_len, dim)
        lengths = np.array([len(x) for x in ids])
        if self.pooling == "cls":
            vec = hidden[:, 0]  # (batch, dim)
        else:
            mask = (np.arange(hidden.shape[1])[None, :] < lengths[:, None]).astype(np.float32)  # (batch, max_len)
            vec = np.einsum("bld,bl->bd", hidden, mask) / lengths[:, None]  # (batch, dim)
        norms = np.linalg.norm(vec, axis=1, keepdims=True)
        return (vec / np.maximum(norms, 1e-12)).astype(np.float32), hidden
