"""The frozen sentence encoder's token states of the training documents, computed once per run.

The ``sentence-encoder`` backbone (:mod:`xlgen.backbone`) trains its generator on the token states of
a frozen encoder: they do not change while it trains, so one pass over the train split gives every
epoch's inputs, and the same pass fills the embedding cache with the pooled vectors the retriever is
then fitted on (:meth:`xlgen.encoders.SentenceEncoder.encode_states`). They are kept on disk as one
float16 matrix (``states.f16``, ``(total tokens, width)``, memory-mapped, so a long-text corpus need
not fit in memory) with each document's row offsets (``offsets.npy``), in the run's checkpoint folder:
a resumed run and the other processes of a distributed one read them there.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from xlgen.files import atomic_dir
from xlgen.progress import progress_bar

log = logging.getLogger("xlgen.train")

CHUNK = 2048
"""Documents encoded between two writes to the matrix."""


class TokenStates:
    """Read access to a store written by :func:`compute_token_states`: ``states[i]`` is document ``i``'s
    ``(n_tokens_i, width)`` float32 token states."""

    def __init__(self, directory: str | Path) -> None:
        directory = Path(directory)
        meta = json.loads((directory / "meta.json").read_text())
        self.width, self.fingerprint = int(meta["width"]), str(meta["fingerprint"])
        self.offsets = np.load(directory / "offsets.npy")  # (n_docs + 1,)
        total = int(self.offsets[-1])
        self._matrix = np.memmap(directory / "states.f16", dtype=np.float16, mode="r", shape=(max(total, 1), self.width))

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> np.ndarray:
        a, b = int(self.offsets[i]), int(self.offsets[i + 1])
        return np.asarray(self._matrix[a:b], dtype=np.float32)  # (n_tokens_i, width)


def compute_token_states(encoder, texts: Sequence[str], directory: str | Path, fingerprint: str,  # type: ignore[no-untyped-def]
                         max_tokens: int, cache=None, progress: bool = False) -> TokenStates:  # type: ignore[no-untyped-def]
    """The token states of ``texts`` (at most ``max_tokens`` per text) in ``directory``, computed unless a
    store of the same ``fingerprint`` is there; the pooled vectors go to ``cache`` on the way.

    Args:
        encoder: The :class:`xlgen.encoders.SentenceEncoder`.
        texts: The train documents' texts, in order.
        directory: The store's folder (written whole or not at all).
        fingerprint: What the store is of (the documents, the encoder); a store of another is recomputed.
        max_tokens: States kept per text (the generator's input length leaves no room for more).
        cache: The embedding cache the retriever reads its vectors from.
        progress: Show a progress bar.
    """
    directory = Path(directory)
    if (directory / "meta.json").is_file():
        found = TokenStates(directory)
        if found.fingerprint == fingerprint and len(found) == len(texts):
            log.info("token states of %d train documents reused from %s", len(found), directory)
            return found
    ids = encoder.model.tokenizer(list(texts), truncation=True, max_length=encoder.max_seq_length)["input_ids"]
    lengths = np.array([min(len(x), max_tokens) for x in ids], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])  # (n_docs + 1,)
    width = encoder.dim
    with atomic_dir(directory) as tmp:
        matrix = np.memmap(tmp / "states.f16", dtype=np.float16, mode="w+", shape=(max(int(offsets[-1]), 1), width))
        with progress_bar(total=len(texts), desc="token states", unit="doc", disable=not progress) as bar:
            for start in range(0, len(texts), CHUNK):
                _, states = encoder.encode_states(list(texts[start : start + CHUNK]), cache=cache)
                for j, s in enumerate(states):
                    i = start + j
                    matrix[offsets[i] : offsets[i + 1]] = s[: lengths[i]]
                bar.update(len(states))
        matrix.flush()
        del matrix
        np.save(tmp / "offsets.npy", offsets)
        (tmp / "meta.json").write_text(json.dumps({"width": width, "fingerprint": fingerprint, "documents": len(texts)}))
    log.info("token states of %d train documents (%d tokens, %.1f MB) in %s", len(texts), offsets[-1],
             offsets[-1] * width * 2 / 1e6, directory)
    return TokenStates(directory)


def train_states(cfg, train: Sequence, encoder, cache, directory: str | Path) -> TokenStates:  # type: ignore[no-untyped-def]
    """The run's :class:`TokenStates` (a :class:`xlgen.training.config.TrainConfig` ``cfg`` of the
    ``sentence-encoder`` backbone): of its train documents, at most ``max_input_length - 1`` per text (the
    generator's input keeps its eos), keyed by the documents and the encoder's weights and numerics."""
    import hashlib

    from xlgen.encoders.retriever import train_fingerprint

    key = hashlib.sha256(f"{train_fingerprint(train)}:{encoder.cache_key}:{cfg.max_input_length}".encode()).hexdigest()[:20]
    return compute_token_states(encoder, [d.text for d in train], directory, key, cfg.max_input_length - 1, cache, cfg.progress)
