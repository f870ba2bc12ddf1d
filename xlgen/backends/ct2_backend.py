"""CTranslate2 backend: the model converted by :func:`xlgen.backends.export.export`, int8 on CPU and
bfloat16 on CUDA by default.

The converted vocabulary is the ids themselves (``"17"`` is id 17), so inputs go in and sequences
come out as ids. Beam search runs with transformers' length penalty (1.0) so that it keeps the
same hypotheses as ``generate``; CTranslate2's score is the sum of the token log-probs divided by
``length ** length_penalty``, which gives the exact sum back. Sampling is left to the other
backends: CTranslate2's ignores the seed. CTranslate2 encodes by itself, so an encoder cache is
filled (for embeddings, and for the backends decoding the other ensemble members) by the encoder
it is given, the torch one.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from xlgen.backends.base import Backend, Generated
from xlgen.decoding import DecodingConfig


def compute_type_for(device: str, compute_type: str = "auto") -> str:
    """``auto``: int8 on CPU, bfloat16 on CUDA."""
    if compute_type != "auto":
        return compute_type
    return "bfloat16" if device.startswith("cuda") else "int8"


class CT2Backend(Backend):
    """Decodes with a CTranslate2 translator.

    Args:
        path: The export folder.
        eos_id: End of sequence.
        length_penalty: Beam search length penalty (transformers' default 1.0).
        encoder: Encoder states of a padded batch, for encoder caches (CTranslate2 keeps its own).
        device: ``cpu`` or ``cuda[:N]``.
        compute_type: CTranslate2 compute type; ``auto``: int8 on CPU, bfloat16 on CUDA.
        threads: Intra-op threads (0: CTranslate2's default).
    """

    name = "ctranslate2"
    needs_states = False

    def __init__(self, path: str | Path, eos_id: int, length_penalty: float = 1.0,
                 encoder: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
                 device: str = "cpu", compute_type: str = "auto", threads: int = 0) -> None:
        import ctranslate2

        on_cuda = device.startswith("cuda") and ctranslate2.get_cuda_device_count() > 0
        self.device = device if on_cuda else "cpu"
        self.input_device = "cpu"
        self.compute_type = compute_type_for(self.device, compute_type)
        index = int(device.split(":")[1]) if on_cuda and ":" in device else 0
        self.translator = ctranslate2.Translator(
            str(path), device="cuda" if on_cuda else "cpu", device_index=index, compute_type=self.compute_type,
            intra_threads=threads, inter_threads=1,
        )
        self.eos_id, self.length_penalty, self.encoder = eos_id, length_penalty, encoder

    def supports(self, cfg: DecodingConfig) -> bool:
        # its sampling ignores the seed (OpenNMT/CTranslate2#1757), and repeated calls must agree
        return cfg.strategy != "sample"

    def encode(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.encoder is None:
            raise RuntimeError("this CTranslate2 backend was given no encoder to fill an encoder cache with")
        return self.encoder(ids, mask)  # (batch, src_len, d_model)

    def generate(
        self, ids: torch.Tensor, mask: torch.Tensor, states: torch.Tensor | None, cfg: DecodingConfig, rng: np.random.Generator
    ) -> Generated:
        if not self.supports(cfg):
            raise ValueError(f"the CTranslate2 backend does not run {cfg.strategy!r} decoding")
        lengths = mask.sum(dim=1).tolist()
        source = [[str(t) for t in row[:n]] for row, n in zip(ids.tolist(), lengths, strict=True)]
        common = {"max_decoding_length": cfg.max_new_tokens, "min_decoding_length": 0, "return_end_token": True, "return_scores": True,
                  "max_input_length": 0}  # like generate: eos may come first, inputs are never cut
        if cfg.strategy == "beam":
            lp = self.length_penalty
            results = self.translator.translate_batch(
                source, beam_size=cfg.num_beams, num_hypotheses=cfg.num_beams, length_penalty=lp, **common)
        else:
            lp = 0.0
            results = self.translator.translate_batch(source, beam_size=1, num_hypotheses=1, length_penalty=lp, **common)
        tokens: list[list[int]] = []
        logprob: list[float] = []
        for r in results:
            for hyp, score in zip(r.hypotheses, r.scores, strict=True):
                tokens.append([int(t) for t in hyp])
                logprob.append(score * max(len(hyp), 1) ** lp)
        return Generated(tokens, np.asarray(logprob, dtype=np.float64))

    def describe(self) -> str:
        return f"ctranslate2 ({self.compute_type} on {self.device})"
