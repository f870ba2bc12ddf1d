"""Cross-encoder re-ranking of a retriever's candidates.

A cross-encoder reads the document and the label text together and gives one logit per pair:

    s_ce(d, l) = sigmoid( head( BERT([CLS] d [SEP] text(l) [SEP]) ) )

It is far slower than the retriever (one transformer pass per candidate), so it scores only each
document's best candidates (by best rank over the sources) and joins :class:`Candidates` as one more
source column, ``cross_encoder``. Train one with ``xlgen.training.retriever.train_cross_encoder``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from xlgen.encoders.candidates import Candidates, with_source
from xlgen.encoders.label_texts import LabelText, label_name_text

SOURCE = "cross_encoder"


class CrossEncoderReranker:
    """Scores (document, label text) pairs with a sentence-transformers CrossEncoder.

    Args:
        path: The cross-encoder directory.
        batch_size: Pairs per forward pass.
        device: ``cpu``, ``cuda`` or None (CUDA when available).
    """

    def __init__(self, path: str | Path, batch_size: int = 64, device: str | None = None) -> None:
        from sentence_transformers.cross_encoder import CrossEncoder

        self.model = CrossEncoder(str(path), device=device, local_files_only=True)
        self.batch_size = batch_size

    def rerank(self, texts: Sequence[str], candidates: Candidates, label_texts: Sequence[LabelText], top: int,
               progress: bool = False) -> Candidates:
        """Adds the ``cross_encoder`` column: the pair probability of each document's ``top`` best rows
        (NaN elsewhere, which reads as score 0, rank K + 1).

        Args:
            texts: The documents the candidates belong to.
            candidates: The retriever's candidates of ``texts``.
            label_texts: The retriever's label texts (aligned with ``candidates.labels``).
            top: Rows per document to score (rows are ordered by best rank, so these are the strongest).
            progress: Show a progress bar.
        """
        if len(texts) != len(candidates):
            raise ValueError(f"{len(texts)} texts for {len(candidates)} candidate documents")
        names = [(f"{label_name_text(t.label)}: {t.description}" if t.description else label_name_text(t.label))
                 for t in label_texts]
        rows = np.concatenate([np.arange(candidates.offsets[i], min(candidates.offsets[i] + top, candidates.offsets[i + 1]))
                               for i in range(len(candidates))] or [np.zeros(0, dtype=np.int64)])
        doc = candidates.doc_index
        pairs = [(texts[doc[r]], names[candidates.label_ids[r]]) for r in rows]
        scores = np.full(len(candidates.label_ids), np.nan, dtype=np.float32)
        if pairs:
            import torch

            probs = self.model.predict(pairs, batch_size=self.batch_size, show_progress_bar=progress,
                                       activation_fn=torch.nn.Sigmoid(), convert_to_numpy=True)
            scores[rows] = np.asarray(probs, dtype=np.float32).reshape(-1)
        return with_source(candidates, SOURCE, scores)
