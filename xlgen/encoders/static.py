"""A static sentence encoder for large pools: model2vec distilled from the packaged all-MiniLM-L6-v2.

A static model keeps one vector per word piece (the teacher's output for that piece alone, reduced by
PCA and weighted by SIF under a Zipf estimate of piece frequencies); a text's vector is the mean of
its pieces' vectors, with no attention at all, so it embeds long documents one to two orders of
magnitude faster than the transformer (``benchmarks/static_encoder.py`` measures both, and what it
costs in quality; ``docs/scale.md`` says when to use it).

The distillation (model2vec's ``distill_from_model``) runs once, offline, from the packaged model's
local folder (:func:`xlgen.encoders.packaged.packaged_model_dir`, weights verified first), and its
result is cached beside the CTranslate2 conversions (``<cache root>/encoders``), keyed by the teacher's
weights digest and the distillation settings, written atomically. Like those conversions, it is a
cache: a saved retriever refers to the static encoder by name and by :func:`static_digest`, which
names what the model is distilled from, not the floats of one distillation.

Select it by the name ``static`` wherever an encoder name is taken (``xlgen train --encoder static``,
:class:`~xlgen.encoders.encoder.EncoderConfig`): :meth:`SentenceEncoder.load
<xlgen.encoders.encoder.SentenceEncoder.load>` returns a :class:`StaticEncoder`, which embeds through
the same ``encode`` (and the same embedding cache) as the transformer.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from xlgen.encoders.cache import EmbeddingCache, cache_root
from xlgen.encoders.config import STATIC_ENCODERS
from xlgen.encoders.packaged import DEFAULT_ENCODER, EncoderUnavailableError, packaged_model_dir, verify_weights
from xlgen.progress import progress_bar

log = logging.getLogger(__name__)

STATIC_ENCODER = "static"
"""The name that selects the static encoder distilled from the packaged one."""
STATIC_ALIASES = frozenset(STATIC_ENCODERS)
DISTILL_SETTINGS: dict[str, Any] = {"pca_dims": 256, "sif_coefficient": 1e-4, "quantize_to": "float32", "pooling": "mean"}
"""model2vec's own defaults (256 PCA dimensions, SIF 1e-4, mean pooling of the teacher's states), stored as
float32 so that the vectors need no conversion at run time."""
MAX_LENGTH = 512
"""Word pieces read per text (model2vec's default): a static model costs per piece, not per pair of them."""
STATIC_BATCH = 1024
"""Texts per tokenizer call and mean: large batches amortise the per-call cost; memory is one batch of ids."""
INSTALL_HINT = "pip install 'xlgen[distill]' (model2vec with its distill extra)"


def is_static(name: str) -> bool:
    """Whether ``name`` selects the static encoder."""
    return name in STATIC_ALIASES


def static_digest(teacher_digest: str) -> str:
    """What a static model is made from: the teacher's weights digest and the distillation settings.

    The distilled floats may differ in the last bits between machines (the teacher's forward pass, the
    PCA), as a CTranslate2 conversion does; an artifact built with one distillation loads with another.
    """
    recipe = json.dumps({"teacher": teacher_digest, "distill": DISTILL_SETTINGS, "max_length": MAX_LENGTH}, sort_keys=True)
    return "static-" + hashlib.sha256(recipe.encode()).hexdigest()


def _import_model2vec() -> Any:
    try:
        import model2vec
    except ImportError as e:
        raise EncoderUnavailableError(f"the static encoder needs model2vec: {INSTALL_HINT}") from e
    return model2vec


def distill_packaged(target: str | Path) -> Path:
    """Distills the packaged all-MiniLM-L6-v2 into ``target``, atomically (written beside it, then renamed;
    a concurrent distillation that finished first keeps its copy). Offline: the teacher is read from its
    local folder only.

    Raises:
        EncoderUnavailableError: model2vec's distill extra is missing, or the teacher is not installed or damaged.
    """
    _import_model2vec()
    try:
        from model2vec.distill import distill_from_model
    except ImportError as e:
        raise EncoderUnavailableError(f"distilling the static encoder needs model2vec's distill extra: {INSTALL_HINT}") from e
    from transformers import AutoModel, AutoTokenizer

    teacher = packaged_model_dir()
    digest = verify_weights(teacher)
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        model = AutoModel.from_pretrained(str(teacher), local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(str(teacher), local_files_only=True)
        # a BERT folder gives the fast tokenizer model2vec asks for (transformers types it as either backend)
        static = distill_from_model(model, tokenizer, device="cpu", **DISTILL_SETTINGS)  # type: ignore[arg-type]
        static.save_pretrained(str(tmp / "model"))
        import model2vec

        (tmp / "model" / "xlgen_encoder.json").write_text(json.dumps(
            {"model2vec": model2vec.__version__, "teacher": DEFAULT_ENCODER, "teacher_digest": digest, "distill": DISTILL_SETTINGS}))
        try:
            os.rename(tmp / "model", target)
        except OSError:
            if not (target / "model.safetensors").is_file():  # another process won the race: keep its copy
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def static_model_dir(conversions_dir: str | Path | None = None) -> tuple[Path, str]:
    """The distilled model's folder (distilled on first use) and its :func:`static_digest`.

    Args:
        conversions_dir: Where converted encoders are kept; default ``<cache root>/encoders``.
    """
    teacher_digest = verify_weights(packaged_model_dir())
    digest = static_digest(teacher_digest)
    root = Path(conversions_dir) if conversions_dir is not None else cache_root() / "encoders"
    target = root / f"{DEFAULT_ENCODER}-{teacher_digest[:16]}-static-{digest[7:19]}"
    if not (target / "model.safetensors").is_file():
        log.info("distilling a static encoder from %s into %s (once, about a minute)", DEFAULT_ENCODER, target)
        distill_packaged(target)
    return target, digest


class StaticEncoder:
    """The static encoder with the interface of :class:`~xlgen.encoders.encoder.SentenceEncoder` that the
    retriever, the embedding cache and the selection read (``encode``, ``name``, ``dim``, ``digest``,
    ``numerics``, ``cache_key``, ``config``, ``backend``, ``device``); ``SentenceEncoder.load`` returns one for
    the names of :data:`STATIC_ALIASES` (this module imports nothing of that one's, so the two stay acyclic).
    What needs the transformer itself (fine-tuning, dropout passes) refuses it. Build it with :meth:`load`.

    On ``threads`` > 1, batches are shared out to as many threads (the tokenizer and numpy's gather and
    mean release the interpreter lock).

    Attributes:
        config: The :class:`~xlgen.encoders.encoder.EncoderConfig` it was loaded with.
        model: model2vec's ``StaticModel``.
        digest: :func:`static_digest`.
        path: The distilled folder.
    """

    backend = "model2vec"
    device = "cpu"

    def __init__(self, config: Any, model: Any, digest: str, path: Path, threads: int = 1) -> None:
        self.config, self.model, self.digest, self.path = config, model, digest, path
        self.threads = max(1, threads)

    @classmethod
    def load(cls, config: Any, *, conversions_dir: str | Path | None = None) -> StaticEncoder:
        """Loads (distilling on first use) the static encoder.

        Args:
            config: An :class:`~xlgen.encoders.encoder.EncoderConfig` that names the static encoder; its backend
                must be ``auto`` and its device ``auto`` or ``cpu``.
            conversions_dir: Where converted encoders are kept.

        Raises:
            ValueError: For a backend or device the static encoder has not.
            EncoderUnavailableError: model2vec is not installed, or the teacher is missing or damaged.
        """
        if not is_static(config.name):
            raise ValueError(f"{config.name!r} does not name the static encoder ({', '.join(sorted(STATIC_ALIASES))})")
        if config.backend != "auto":
            raise ValueError(f"the static encoder runs on model2vec (numpy), not on {config.backend!r}: use backend 'auto'")
        if config.device == "cuda":
            raise ValueError("the static encoder runs on the CPU (a lookup and a mean per text): use device 'auto' or 'cpu'")
        model2vec = _import_model2vec()
        path, digest = static_model_dir(conversions_dir)
        model = model2vec.StaticModel.from_pretrained(str(path), normalize=True,
                                                      max_length=config.max_seq_length or MAX_LENGTH, force_download=False)
        import torch

        return cls(config, model, digest, path, config.threads or torch.get_num_threads())

    @property
    def name(self) -> str:
        """The name the encoder was loaded by."""
        return str(self.config.name)

    @property
    def dim(self) -> int:
        """Vector dimension (the PCA's)."""
        return int(self.model.dim)

    @property
    def max_seq_length(self) -> int:
        """Word pieces read per text."""
        return int(self.model.max_length or MAX_LENGTH)

    @property
    def numerics(self) -> str:
        """The vectors' precision."""
        return "float32"

    @property
    def cache_key(self) -> str:
        """Key of this encoder's vectors in an :class:`~xlgen.encoders.cache.EmbeddingCache`."""
        signature = json.dumps({"digest": self.digest, "max_length": self.max_seq_length, "numerics": self.numerics}, sort_keys=True)
        return f"{STATIC_ENCODER}-{DEFAULT_ENCODER}-{hashlib.sha256(signature.encode()).hexdigest()[:20]}"

    def encode(self, texts: Sequence[str], *, batch_size: int | None = None, progress: bool = False,
               cache: EmbeddingCache | None = None) -> np.ndarray:
        """Embeds texts: the mean of their word pieces' static vectors, L2-normalised.

        Args:
            texts: The texts.
            batch_size: Texts per tokenizer call; default :data:`STATIC_BATCH`.
            progress: Show a progress bar.
            cache: An :class:`~xlgen.encoders.cache.EmbeddingCache` to read from and write to (a static vector costs
                less to compute than to look up, so the retriever passes one only for consistency of the stored
                train vectors).

        Returns:
            ``(len(texts), dim)`` float32, rows of unit norm (a text with no word piece gives a zero row).
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
            vecs = self._encode_static(todo, batch_size or STATIC_BATCH, progress)
            if cache is not None:
                cache.put(self.cache_key, todo, vecs)
            row = {t: i for i, t in enumerate(todo)}
            missing = np.flatnonzero(~found)
            out[missing] = vecs[[row[texts[i]] for i in missing]]
        return out

    def _batch(self, texts: Sequence[str]) -> np.ndarray:
        # one process: model2vec's multiprocessing would fork a pool per call
        vecs = self.model.encode(list(texts), batch_size=len(texts), use_multiprocessing=False, show_progress_bar=False)
        return np.asarray(vecs, dtype=np.float32).reshape(len(texts), self.dim)  # (batch, dim)

    def _encode_static(self, texts: list[str], batch_size: int, progress: bool) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)  # (n, dim)
        starts = range(0, len(texts), batch_size)
        with progress_bar(total=len(texts), disable=not progress, desc="embedding (static)", unit="doc") as bar:
            if self.threads == 1 or len(texts) <= batch_size:
                for s in starts:
                    out[s : s + batch_size] = self._batch(texts[s : s + batch_size])
                    bar.update(min(batch_size, len(texts) - s))
            else:
                with ThreadPoolExecutor(self.threads, thread_name_prefix="xlgen-static") as pool:
                    for s, vecs in zip(starts, pool.map(lambda a: self._batch(texts[a : a + batch_size]), starts), strict=True):
                        out[s : s + len(vecs)] = vecs
                        bar.update(len(vecs))
        return out
