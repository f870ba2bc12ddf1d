"""A sentence encoder: texts in, L2-normalised float32 vectors out.

Loads any sentence-transformers model (a directory or a hub name); by default the packaged
all-MiniLM-L6-v2, whose weights are verified against their published digest and which loads without
touching the network. Two backends compute the same vectors:

* ``torch``: sentence-transformers' own ``encode`` (the reference; the backend on CUDA).
* ``ctranslate2``: the BERT converted to CTranslate2 (float32 by default, int8 optionally), with the
  model's tokenizer and pooling (:mod:`xlgen.encoders.ct2_encoder`); the default on CPU, where it is
  the fastest faithful path measured (``benchmarks/encoder_speed.py``).

Inputs are sorted by token length and batched with a cap on padded tokens, so padding costs little.
With an :class:`~xlgen.encoders.cache.EmbeddingCache`, each distinct text is embedded once per encoder
key across processes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.std import tqdm

from xlgen.backends.batching import length_batches, per_worker, same_length_batches
from xlgen.devices import resolve_device
from xlgen.digests import encoder_digest, module_digest
from xlgen.encoders import ct2_encoder
from xlgen.encoders.cache import EmbeddingCache, cache_root
from xlgen.encoders.config import ENCODER_QUANTIZATIONS
from xlgen.encoders.packaged import (
    DEFAULT_ENCODER,
    EncoderUnavailableError,
    is_packaged,
    packaged_model_dir,
    verify_weights,
)
from xlgen.progress import progress_bar

log = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "ctranslate2")
QUANTIZATIONS = ENCODER_QUANTIZATIONS
DEVICES = ("auto", "cpu", "cuda")
CACHE_CHUNK = 4096
"""Texts embedded between two writes to the embedding cache."""
MAX_BATCH_TOKENS = 8192
"""Padded tokens per batch on the CTranslate2 path on CUDA (64 short texts, or 32 of 256 tokens)."""
CPU_BATCH_TOKENS = 512
"""Padded tokens per batch on the CTranslate2 path on CPU: about twenty short texts or two of 256 tokens
for one thread. Small batches keep a layer's activations in the CPU's caches; with several threads each
one-thread worker takes batches of this size. Measured with ``benchmarks/encoder_speed.py --batch-tokens`` (README,
Pretrained knowledge)."""


@dataclass(frozen=True)
class EncoderConfig:
    """Which encoder to load and how to run it."""

    name: str = DEFAULT_ENCODER
    """``all-MiniLM-L6-v2`` (the packaged default), a sentence-transformers directory, or a hub name."""
    backend: str = "auto"
    """``auto`` (CTranslate2 on CPU when the model allows it, else torch), ``torch`` or ``ctranslate2``."""
    quantization: str = "float32"
    """CTranslate2 weights: ``float32`` (same vectors as torch) or ``int8`` (faster, approximate)."""
    device: str = "auto"
    """``auto`` (CUDA when available), ``cpu`` or ``cuda``."""
    batch_size: int = 64
    """Texts per batch (the CTranslate2 path also caps padded tokens per batch)."""
    batch_tokens: int | None = None
    """Padded tokens per batch on the CTranslate2 path; None: :data:`CPU_BATCH_TOKENS` on CPU, :data:`MAX_BATCH_TOKENS`
    on CUDA. A longer text still gets a batch of its own."""
    max_seq_length: int | None = None
    """Token limit per text; None keeps the model's own (256 for all-MiniLM-L6-v2)."""
    threads: int | None = None
    """CPU threads of the CTranslate2 path (as many one-thread workers, each embedding whole batches); None
    follows ``torch.get_num_threads()``."""

    def __post_init__(self) -> None:
        if not self.name.strip():
            raise ValueError("encoder name is empty")
        if self.backend not in BACKENDS:
            raise ValueError(f"encoder backend {self.backend!r} is not one of {', '.join(BACKENDS)}")
        if self.quantization not in QUANTIZATIONS:
            raise ValueError(f"encoder quantization {self.quantization!r} is not one of {', '.join(QUANTIZATIONS)}")
        if self.device not in DEVICES:
            raise ValueError(f"encoder device {self.device!r} is not one of {', '.join(DEVICES)}")
        if self.batch_size < 1:
            raise ValueError("encoder batch_size must be >= 1")
        if self.batch_tokens is not None and self.batch_tokens < 1:
            raise ValueError("encoder batch_tokens must be >= 1")
        if self.max_seq_length is not None and self.max_seq_length < 2:
            raise ValueError("encoder max_seq_length must be >= 2")
        if self.threads is not None and self.threads < 1:
            raise ValueError("encoder threads must be >= 1")


@dataclass(frozen=True)
class EncoderReference:
    """How a saved artifact names its encoder: not a copy, a name and the digest its weights must have."""

    name: str
    """The name it was loaded by (the packaged alias, a directory or a hub name)."""
    digest: str
    """The weights digest (:func:`~xlgen.digests.encoder_digest`)."""


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(name.rstrip("/")).name or name)[:48] or "encoder"


def _load_model(config: EncoderConfig, device: str) -> tuple[Any, str]:
    from sentence_transformers import SentenceTransformer

    if is_packaged(config.name):
        path = packaged_model_dir()
        digest = verify_weights(path)
        return SentenceTransformer(str(path), device=device, local_files_only=True), digest
    local = Path(config.name).expanduser()
    if local.is_dir():
        if not (local / "modules.json").is_file():
            raise EncoderUnavailableError(f"{local} is not a sentence-transformers directory (no modules.json)")
        digest = encoder_digest(local)
        return SentenceTransformer(str(local), device=device, local_files_only=True), digest
    try:
        model = SentenceTransformer(config.name, device=device)
    except (OSError, ValueError) as e:
        raise EncoderUnavailableError(f"cannot load the encoder {config.name!r}: {e}") from e
    return model, module_digest(model)


class SentenceEncoder:
    """A loaded sentence encoder. Build it with :meth:`load`.

    Attributes:
        config: The configuration it was loaded with.
        model: The ``SentenceTransformer`` (kept for fine-tuning and the torch path).
        digest: Digest of the weights.
        backend: The resolved backend, ``torch`` or ``ctranslate2``.
        device: The resolved device, ``cpu`` or ``cuda``.
    """

    def __init__(self, config: EncoderConfig, model: Any, digest: str, backend: str, device: str,
                 ct2: ct2_encoder.Ct2Encoder | None = None) -> None:
        self.config = config
        self.model = model
        self.digest = digest
        self.backend = backend
        self.device = device
        self._ct2 = ct2

    @classmethod
    def load(cls, config: EncoderConfig | str | None = None, *, conversions_dir: str | Path | None = None) -> SentenceEncoder:
        """Loads an encoder.

        Args:
            config: An :class:`EncoderConfig`, or just the encoder name; None for the packaged default; the name
                ``static`` gives the :class:`~xlgen.encoders.static.StaticEncoder` distilled from it.
            conversions_dir: Where CTranslate2 conversions (and the static distillation) are kept; default
                ``<cache root>/encoders``.

        Raises:
            EncoderUnavailableError: The encoder is not installed or found, or its weights are damaged.
            ValueError: ``backend="ctranslate2"`` for a model that path cannot run.
        """
        if config is None:
            config = EncoderConfig()
        elif isinstance(config, str):
            config = EncoderConfig(name=config)
        from xlgen.encoders.static import StaticEncoder, is_static  # model2vec, distilled from the packaged encoder

        if cls is SentenceEncoder and is_static(config.name):
            # not a subclass (static.py imports nothing of this module's), but the same interface to its users
            return StaticEncoder.load(config, conversions_dir=conversions_dir)  # type: ignore[return-value]
        device = resolve_device(config.device)
        model, digest = _load_model(config, device)
        model.eval()
        if config.max_seq_length is not None:
            model.max_seq_length = config.max_seq_length
        backend = config.backend
        reason = ct2_encoder.unsupported_reason(model)
        if backend == "auto":
            backend = "torch" if device == "cuda" or reason else "ctranslate2"
            if reason and device == "cpu":
                log.info("encoder %s runs on torch: %s", config.name, reason)
        elif backend == "ctranslate2" and reason:
            raise ValueError(f"the encoder {config.name!r} cannot run on CTranslate2: {reason}")
        ct2 = None
        if backend == "ctranslate2":
            root = Path(conversions_dir) if conversions_dir is not None else cache_root() / "encoders"
            target = root / f"{_slug(config.name)}-{digest[:16]}-ct2-{config.quantization}"
            if not (target / "model.bin").is_file():
                log.info("converting encoder %s to CTranslate2 (%s) in %s", config.name, config.quantization, target)
                ct2_encoder.convert(model, target, config.quantization)
            mode = ct2_encoder.pooling_mode(model[1])
            assert mode is not None
            ct2 = ct2_encoder.Ct2Encoder(target, mode, config.quantization, device,
                                         threads=config.threads or torch.get_num_threads())
        return cls(config, model, digest, backend, device, ct2)

    @property
    def name(self) -> str:
        """The name the encoder was loaded by."""
        return self.config.name

    @property
    def dim(self) -> int:
        """Vector dimension."""
        dim = self.model.get_embedding_dimension() if hasattr(self.model, "get_embedding_dimension") else None
        return int(dim if dim is not None else self.model.get_sentence_embedding_dimension())

    @property
    def max_seq_length(self) -> int:
        """Token limit per text."""
        return int(self.model.max_seq_length)

    @property
    def reference(self) -> EncoderReference:
        """Name and digest, for saved artifacts that refer to this encoder."""
        return EncoderReference(self.name, self.digest)

    @property
    def numerics(self) -> str:
        """``float32`` (torch and float32 CTranslate2 agree to rounding) or ``int8``."""
        return "int8" if self.backend == "ctranslate2" and self.config.quantization == "int8" else "float32"

    @property
    def cache_key(self) -> str:
        """Key of this encoder's vectors in an :class:`EmbeddingCache`: the weights digest, the modules'
        settings (token limit, pooling, normalisation) and the numerics; readable name first."""
        modules = [[type(m).__name__, m.get_config_dict() if hasattr(m, "get_config_dict") else {}] for m in self.model]
        signature = json.dumps({"digest": self.digest, "modules": modules, "max_seq_length": self.max_seq_length,
                                "numerics": self.numerics}, sort_keys=True, default=str)
        return f"{_slug(self.name)}-{hashlib.sha256(signature.encode()).hexdigest()[:20]}"

    def encode(self, texts: Sequence[str], *, batch_size: int | None = None, progress: bool = False,
               cache: EmbeddingCache | None = None) -> np.ndarray:
        """Embeds texts.

        Args:
            texts: The texts.
            batch_size: Texts per batch; default the config's.
            progress: Show a progress bar.
            cache: Read vectors from and write new ones to this cache.

        Returns:
            ``(len(texts), dim)`` float32, each row of unit L2 norm.
        """
        texts = list(texts)
        if any(not isinstance(t, str) for t in texts):
            raise TypeError("encode takes a sequence of strings")
        out = np.zeros((len(texts), self.dim), dtype=np.float32)  # (n, dim)
        if not texts:
            return out
        found = np.zeros(len(texts), dtype=bool)
        if cache is not None:
            out, found = cache.get(self.cache_key, texts, self.dim)
        todo = list(dict.fromkeys(t for t, f in zip(texts, found, strict=True) if not f))  # distinct, in order
        if todo:
            size = batch_size or self.config.batch_size
            # one bar over every text still to embed, chunks and batches alike
            with progress_bar(total=len(todo), disable=not progress, desc="embedding", unit="doc") as bar:
                if cache is None:
                    vecs = self._encode(todo, size, bar)
                else:  # stored as they come, so that an interrupted run keeps what it embedded
                    parts = []
                    for start in range(0, len(todo), CACHE_CHUNK):
                        part = todo[start : start + CACHE_CHUNK]
                        # unpadded batches: a stored vector is the same whatever it was embedded with, so a
                        # fit reads the same vectors from a cache filled in one call or in many
                        parts.append(self._encode(part, size, bar, canonical=True))
                        cache.put(self.cache_key, part, parts[-1])
                    vecs = np.concatenate(parts)
            row = {t: i for i, t in enumerate(todo)}
            missing = np.flatnonzero(~found)
            out[missing] = vecs[[row[texts[i]] for i in missing]]
        return out

    def encode_states(self, texts: Sequence[str], *, batch_size: int | None = None, progress: bool = False,
                      cache: EmbeddingCache | None = None) -> tuple[np.ndarray, list[np.ndarray]]:
        """One encoder pass per text for both readers of it: the pooled vectors (the retriever's) and the
        token states they were pooled from (a generator's, :mod:`xlgen.backbone`).

        Args:
            texts: The texts.
            batch_size: Texts per batch; default the config's.
            progress: Show a progress bar.
            cache: Vectors of texts it holds are read from it (the states are computed all the same), those of the
                others written to it; its batches are then the cache's unpadded ones, so that what is stored is what
                :meth:`encode` would store.

        Returns:
            ``(vectors (n, dim) float32 of unit norm, states)``: ``states[i]`` is ``(n_tokens_i, dim)`` float32, the
            special tokens included, truncated at :attr:`max_seq_length`.
        """
        texts = list(texts)
        if any(not isinstance(t, str) for t in texts):
            raise TypeError("encode_states takes a sequence of strings")
        vectors = np.zeros((len(texts), self.dim), dtype=np.float32)  # (n, dim)
        states: list[np.ndarray] = [np.zeros((0, self.dim), dtype=np.float32)] * len(texts)
        if not texts:
            return vectors, states
        ids = self.model.tokenizer(texts, truncation=True, max_length=self.max_seq_length)["input_ids"]
        size = batch_size or self.config.batch_size
        cap = self.config.batch_tokens or (MAX_BATCH_TOKENS if str(self.device).startswith("cuda") else CPU_BATCH_TOKENS)
        lengths = [len(x) for x in ids]
        if cache is not None:
            batches: Any = same_length_batches(lengths, size, cap)
        else:
            batches = length_batches(lengths, per_worker(size, len(texts), self._ct2.workers if self._ct2 else 1), cap)
        if self._ct2 is not None:
            done = self._ct2.embed_batches(ids, batches, states=True)
        else:
            done = ((idx, self._torch_states([texts[i] for i in idx])) for idx in batches)
        with progress_bar(total=len(texts), disable=not progress, desc="encoding", unit="doc") as bar:
            for idx, (vecs, hidden) in done:
                for row, i in enumerate(idx):  # a lone text's batch is [i, i]: both rows are its own
                    vectors[i] = vecs[row]
                    states[i] = np.array(hidden[row, : lengths[i]], dtype=np.float32)
                bar.update(len(set(idx)))
        if cache is not None:
            cached, found = cache.get(self.cache_key, texts, self.dim)
            vectors[found] = cached[found]  # the retriever's own vectors where it has them
            new = list(dict.fromkeys(t for t, f in zip(texts, found, strict=True) if not f))
            if new:
                first = {t: i for i, t in reversed(list(enumerate(texts)))}
                cache.put(self.cache_key, new, vectors[[first[t] for t in new]])
        return vectors, states

    def _torch_states(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """The torch path's ``(vectors (batch, dim), token states (batch, max_len, dim))`` of one batch."""
        st = self.model
        preprocess = getattr(st, "preprocess", None) or st.tokenize
        with torch.inference_mode():
            features = {k: v.to(self.device) if hasattr(v, "to") else v for k, v in preprocess(texts).items()}
            out = st(features)
            vec = torch.nn.functional.normalize(out["sentence_embedding"].float(), dim=1)  # (batch, dim)
            return vec.cpu().numpy(), out["token_embeddings"].float().cpu().numpy()  # (batch, max_len, dim)

    def _encode(self, texts: list[str], batch_size: int, bar: tqdm, canonical: bool = False) -> np.ndarray:
        """Vectors of distinct ``texts``; ``canonical``: in equal-length batches of two or more
        (:func:`~xlgen.backends.batching.same_length_batches`), so that each vector depends on its text alone."""
        if canonical:
            return self._encode_canonical(texts, batch_size, bar)
        if self._ct2 is None:
            parts = []
            for start in range(0, len(texts), 16 * batch_size):  # pieces, so that the bar moves
                with torch.inference_mode():
                    parts.append(np.asarray(self.model.encode(texts[start : start + 16 * batch_size], batch_size=batch_size,
                                                              show_progress_bar=False, normalize_embeddings=True,
                                                              convert_to_numpy=True), dtype=np.float32))
                bar.update(len(parts[-1]))
            return np.concatenate(parts)
        ids = self.model.tokenizer(texts, truncation=True, max_length=self.max_seq_length)["input_ids"]
        out = np.zeros((len(texts), self.dim), dtype=np.float32)  # (n, dim)
        cap = self.config.batch_tokens or (MAX_BATCH_TOKENS if str(self.device).startswith("cuda") else CPU_BATCH_TOKENS)
        batch_size = per_worker(batch_size, len(texts), self._ct2.workers)  # a few texts still give every worker a batch
        for idx, vecs in self._ct2.embed_batches(ids, length_batches([len(x) for x in ids], batch_size, cap)):
            out[idx] = vecs
            bar.update(len(idx))
        return out

    def _encode_canonical(self, texts: list[str], batch_size: int, bar: tqdm) -> np.ndarray:
        ids = self.model.tokenizer(texts, truncation=True, max_length=self.max_seq_length)["input_ids"]
        out = np.zeros((len(texts), self.dim), dtype=np.float32)  # (n, dim)
        cap = self.config.batch_tokens or (MAX_BATCH_TOKENS if str(self.device).startswith("cuda") else CPU_BATCH_TOKENS)
        batches = same_length_batches([len(x) for x in ids], batch_size, cap)
        if self._ct2 is not None:
            done = self._ct2.embed_batches(ids, batches)
        else:
            done = ((idx, self._torch_batch([texts[i] for i in idx])) for idx in batches)
        for idx, vecs in done:
            out[idx] = vecs  # a lone text's batch is [i, i]: both rows are its vector
            bar.update(len(set(idx)))
        return out

    def _torch_batch(self, texts: list[str]) -> np.ndarray:
        with torch.inference_mode():
            return np.asarray(self.model.encode(texts, batch_size=len(texts), show_progress_bar=False, normalize_embeddings=True,
                                                convert_to_numpy=True), dtype=np.float32)
