"""Pretrained sentence encoders and the label retriever over them.

``SentenceEncoder`` embeds texts (packaged all-MiniLM-L6-v2 by default, any sentence-transformers model
by name), ``EmbeddingCache`` keeps the vectors on disk, ``LabelRetriever`` scores candidate labels from
kNN votes, label-text similarity and a linear ranker, returned as ``Candidates``.

Names are imported on first use, so that light modules (the cache, label files) load without torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from xlgen.encoders.cache import EmbeddingCache, cache_root
    from xlgen.encoders.candidates import Candidates
    from xlgen.encoders.config import RetrieverConfig
    from xlgen.encoders.encoder import EncoderConfig, EncoderReference, SentenceEncoder
    from xlgen.encoders.label_texts import LabelText, read_label_file, write_label_file
    from xlgen.encoders.packaged import DEFAULT_ENCODER, EncoderUnavailableError
    from xlgen.encoders.retriever import LabelRetriever

_WHERE = {
    "EmbeddingCache": "cache", "cache_root": "cache", "Candidates": "candidates", "RetrieverConfig": "config",
    "EncoderConfig": "encoder", "EncoderReference": "encoder", "SentenceEncoder": "encoder",
    "LabelText": "label_texts", "read_label_file": "label_texts", "write_label_file": "label_texts",
    "DEFAULT_ENCODER": "packaged", "EncoderUnavailableError": "packaged", "LabelRetriever": "retriever",
}

__all__ = [
    "DEFAULT_ENCODER",
    "Candidates",
    "EmbeddingCache",
    "EncoderConfig",
    "EncoderReference",
    "EncoderUnavailableError",
    "LabelRetriever",
    "LabelText",
    "RetrieverConfig",
    "SentenceEncoder",
    "cache_root",
    "read_label_file",
    "write_label_file",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'xlgen.encoders' has no attribute {name!r}")
    return getattr(importlib.import_module(f"xlgen.encoders.{_WHERE[name]}"), name)
