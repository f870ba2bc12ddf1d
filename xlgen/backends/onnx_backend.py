"""ONNX Runtime backend: the exported encoder, cross-attention and decoder-step graphs (see
:mod:`xlgen.backends.onnx_graphs`), driven by the numpy searches of :mod:`xlgen.backends.search`.

Greedy, beam and sampling all run here; sequences come back with their exact log-probabilities,
so there is no rescoring pass. Encoder states come from the encoder cache when it has them.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from xlgen.backends import search
from xlgen.backends.base import Backend, Generated
from xlgen.backends.onnx_graphs import io_names
from xlgen.decoding import DecodingConfig


def session_options(threads: int):  # type: ignore[no-untyped-def]
    """ONNX Runtime session options: every graph optimisation, ``threads`` intra-op threads (0: its default)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return so


def providers(device: str) -> list:
    """CUDA when asked for and onnxruntime-gpu is installed, else CPU."""
    import onnxruntime as ort

    if device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
        index = int(device.split(":")[1]) if ":" in device else 0
        return [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


SMALL_ROWS = 16
"""Decoder rows (documents x beams or samples) up to which a call runs on one intra-op thread: ONNX Runtime's
thread pool costs more than it gives on a one-text beam step (a few 384-wide matrix products), so on two threads a
one-text request decoded 2.3x slower than on one. ``XLGEN_ONNX_SMALL_ROWS`` overrides it (0: always the pool)."""


def small_rows() -> int:
    """:data:`SMALL_ROWS`, or ``XLGEN_ONNX_SMALL_ROWS`` when set."""
    value = os.environ.get("XLGEN_ONNX_SMALL_ROWS", "")
    try:
        return int(value) if value else SMALL_ROWS
    except ValueError:
        raise ValueError(f"XLGEN_ONNX_SMALL_ROWS must be an integer, got {value!r}") from None


class _Stepper:
    """The decoder-step session over a batch's rows: self-attention cache grown by each step,
    cross-attention keys and values re-indexed only when documents leave."""

    def __init__(self, session, names: dict[str, list[str]], mask: np.ndarray, cross: list[np.ndarray],  # type: ignore[no-untyped-def]
                 row_doc: np.ndarray, n_heads: int, d_kv: int) -> None:
        self.session, self.names = session, names
        self.mask, self.cross, self.row_doc = mask, cross, row_doc
        n_rows = len(row_doc)
        self.past = [np.zeros((n_rows, n_heads, 0, d_kv), dtype=np.float32) for _ in cross]

    def step(self, tokens: np.ndarray) -> np.ndarray:
        feed = {"input_ids": tokens.reshape(-1, 1).astype(np.int64), "attention_mask": self.mask}
        feed.update(zip(self.names["decoder_in"][2 : 2 + len(self.past)], self.past, strict=True))
        feed.update(zip(self.names["decoder_in"][2 + len(self.past) :], self.cross, strict=True))
        logprobs, *self.past = self.session.run(None, feed)
        return logprobs  # (rows, vocab)

    def select(self, rows: np.ndarray) -> None:
        self.past = [p[rows] for p in self.past]
        row_doc = self.row_doc[rows]
        # beams of one document share its cross-attention rows: re-index only when the documents change
        if len(row_doc) != len(self.row_doc) or not np.array_equal(row_doc, self.row_doc):
            self.mask = self.mask[rows]
            self.cross = [c[rows] for c in self.cross]
        self.row_doc = row_doc


class OnnxBackend(Backend):
    """Decodes with the ONNX graphs in ``path`` (written by :func:`xlgen.backends.export.export`).

    Args:
        path: The export folder (``encoder.onnx``, ``cross.onnx``, ``decoder.onnx``).
        n_layers: Decoder layers.
        n_heads: Attention heads.
        d_kv: Size of each head.
        start_id: Decoder start id.
        eos_id: End of sequence.
        length_penalty: Beam search length penalty (transformers' default 1.0).
        device: ``cpu`` or ``cuda[:N]`` (with onnxruntime-gpu).
        threads: Intra-op threads (0: ONNX Runtime's default).
    """

    name = "onnxruntime"

    def __init__(self, path: str | Path, n_layers: int, n_heads: int, d_kv: int, start_id: int, eos_id: int,
                 length_penalty: float = 1.0, device: str = "cpu", threads: int = 0) -> None:
        import onnxruntime as ort

        path = Path(path)
        so, prov = session_options(threads), providers(device)
        # a sentence-encoder model's export has no encoder graph: xlgen hands its decoder the memory it computed
        self.encoder = ort.InferenceSession(str(path / "encoder.onnx"), so, providers=prov) if (path / "encoder.onnx").is_file() else None
        self.cross = ort.InferenceSession(str(path / "cross.onnx"), so, providers=prov)
        self.decoder = ort.InferenceSession(str(path / "decoder.onnx"), so, providers=prov)
        # small calls on one thread (see SMALL_ROWS): a second pair of sessions, unless the pool is one thread anyway
        self.small_rows = small_rows() if prov[0] == "CPUExecutionProvider" and threads != 1 else 0
        if self.small_rows:
            one = session_options(1)
            self.cross_one = ort.InferenceSession(str(path / "cross.onnx"), one, providers=prov)
            self.decoder_one = ort.InferenceSession(str(path / "decoder.onnx"), one, providers=prov)
        self.names = io_names(n_layers)
        self.n_heads, self.d_kv = n_heads, d_kv
        self.start_id, self.eos_id, self.length_penalty = start_id, eos_id, length_penalty
        self.device = "cuda" if prov[0] != "CPUExecutionProvider" else "cpu"
        self.input_device = "cpu"

    def encode(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.encoder is None:
            raise ValueError("this ONNX export has no encoder graph (its model's encoder reads token states): pass the encoder states")
        (states,) = self.encoder.run(None, {"input_ids": ids.cpu().numpy(), "attention_mask": mask.cpu().numpy()})
        return torch.from_numpy(states)  # (batch, src_len, d_model)

    def generate(
        self, ids: torch.Tensor, mask: torch.Tensor, states: torch.Tensor | None, cfg: DecodingConfig, rng: np.random.Generator
    ) -> Generated:
        if states is None:
            states = self.encode(ids, mask)
        st = states.detach().float().cpu().numpy()
        n_ret = cfg.num_return
        small = len(st) * n_ret <= self.small_rows
        cross_session, decoder_session = (self.cross_one, self.decoder_one) if small else (self.cross, self.decoder)
        cross = cross_session.run(None, {"states": st})  # per layer key, value: (batch, heads, src_len, d_kv)
        row_doc = np.repeat(np.arange(len(st)), n_ret)  # (batch * n_ret,)
        m = mask.cpu().numpy().astype(np.int64)
        stepper = _Stepper(decoder_session, self.names, m[row_doc], [c[row_doc] for c in cross], row_doc, self.n_heads, self.d_kv)
        s = search.SearchSettings(self.start_id, self.eos_id, cfg.max_new_tokens, self.length_penalty)
        if cfg.strategy == "beam":
            return search.beam(stepper, len(st), cfg.num_beams, s)
        if cfg.strategy == "sample":
            return search.sample(stepper, len(row_doc), s, rng, cfg.temperature, cfg.top_k, cfg.top_p)
        return search.greedy(stepper, len(row_doc), s)

    def describe(self) -> str:
        return f"onnxruntime ({self.decoder.get_providers()[0]})"
