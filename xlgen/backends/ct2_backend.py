"""CTranslate2 backend: the model converted by :func:`xlgen.backends.export.export`, int8 on CPU and
bfloat16 on CUDA by default.

The converted vocabulary is the ids themselves (``"17"`` is id 17), so inputs go in and sequences
come out as ids. Beam search runs with transformers' length penalty (1.0) so that it keeps the
same hypotheses as ``generate``; CTranslate2's score is the sum of the token log-probs divided by
``length ** length_penalty``, which gives the exact sum back.

Sampling draws ``num_samples`` sequences per document with transformers' warpers (temperature,
top-k, top-p: CTranslate2 applies top-k before the temperature, which selects the same tokens, and
keeps the same top-p nucleus); with ``return_scores`` its score is the sum of the model's own token
log-probs, before any warping, as the other backends report. CTranslate2 has no per-call seed: its
random generator is per worker thread, seeded from ``ctranslate2.set_random_seed`` when the thread
first samples. So every decoding call (every ``rng`` the decoding loop passes) samples on fresh
one-worker translators, one per sampling worker (``workers``, the beam-search workers' count), each
with its own seed drawn from ``rng``, and seeded under a process-wide lock right after setting that
seed, by its first share (one translator) or by sampling one token (several, which then decode their
shares at once). A batch's documents are dealt out to them in turn (document ``i`` to translator
``i mod workers``) and the translators decode their shares at once; each continues its own stream over
the later batches of the call. The same seed therefore gives the same samples in any call and process
(with the same batches and threads); loading a translator costs about as much as decoding one small
batch. On CUDA (untested) CTranslate2 seeds its curand
states the same way, but seeds them again from the process-wide seed when a larger batch needs more.

Several samples of a document cost more work here than on the backends reading shared encoder
states: CTranslate2 encodes on every call and computes the cross-attention keys and values of each
sample anew. Decoded in chunks of :data:`CHUNK_DOCS` documents it is still the faster on CPU, so an
ensemble's sampling members run here too (:func:`xlgen.active.ensemble.member_backends`).

CTranslate2 encodes by itself, so an encoder cache is filled (for embeddings, and for the backends
decoding the other ensemble members) by the encoder it is given, the torch one.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from xlgen.backends.base import Backend, Generated
from xlgen.backends.batching import per_worker
from xlgen.decoding import DecodingConfig
from xlgen.devices import torch_threads_kept

_SEED_LOCK = threading.Lock()
"""Held from ``ctranslate2.set_random_seed`` until the fresh translator has sampled once (the seed is process-wide)."""

SAMPLERS_KEPT = 64
"""Decoding calls whose sampling translators are kept at most (the most recent ones): a call's go when
it ends (:meth:`CT2Backend.release`); this bounds what calls that never end would hold. A call evicted
while still running would sample on from new seeds."""

CHUNK_DOCS = 8
"""Documents per CTranslate2 forward pass inside one call (``max_batch_size``): a call's batch is
decoded in chunks of this many documents. Measured on the cpu preset, int8, one thread, batches of 32
length-sorted documents, against the whole batch in one pass (``benchmarks/inference.py --unchunked``):
the ``vote`` ensemble (beam-5 and two 5-sample members) 1.42x faster on Reuters' 112-token inputs and
1.14x on GoEmotions' 21-token inputs, beam-5 tagging 1.09x and 1.04x. With several samples a batch is
many rows (documents x samples), and a chunk also keeps a sample that runs to ``max_new_tokens`` from
holding the whole batch's other rows. On several threads the chunks of beam search go to as many
one-thread workers (one worker with several intra-op threads was slower, and slower still on chunks)."""


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
        threads: CPU threads (0: CTranslate2's default). Beam search and greedy decoding run them as
            that many one-thread workers sharing out a call's chunks (CTranslate2's ``inter_threads``);
            sampling runs as that many one-worker, one-thread translators, each seeded and given its
            own share of every batch, so that a seed gives the same samples.
        chunk_docs: Documents per forward pass inside a call (0: the whole batch at once); default
            :data:`CHUNK_DOCS` on CPU, the whole batch on a GPU.
        workers: Overrides the number of workers, of beam search and of sampling (1: one worker with
            ``threads`` intra-op threads for beam search, one one-thread sampling translator).
        sampling_workers: Overrides the number of sampling translators (default: ``workers``).
    """

    name = "ctranslate2"
    needs_states = False

    def __init__(self, path: str | Path, eos_id: int, length_penalty: float = 1.0,
                 encoder: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
                 device: str = "cpu", compute_type: str = "auto", threads: int = 0, chunk_docs: int | None = None,
                 workers: int | None = None, sampling_workers: int | None = None) -> None:
        import ctranslate2

        on_cuda = device.startswith("cuda") and ctranslate2.get_cuda_device_count() > 0
        self.device = device if on_cuda else "cpu"
        self.input_device = "cpu"
        self.compute_type = compute_type_for(self.device, compute_type)
        index = int(device.split(":")[1]) if on_cuda and ":" in device else 0
        # on several CPU threads, beam search and greedy run as that many one-thread workers, each on its
        # own chunks of the batch; sampling runs as that many translators of one one-thread worker, each
        # given its own share of the documents (a random generator is per worker thread, seeded when the
        # worker first samples: workers of one translator would make the samples depend on which took which
        # chunk; one thread on chunks was faster than two threads on whole batches)
        if workers is None:
            workers = threads if not on_cuda and threads > 1 else 1
        if workers < 1:
            raise ValueError("workers must be positive")
        common = {"device": "cuda" if on_cuda else "cpu", "device_index": index, "compute_type": self.compute_type}
        options = {**common, "intra_threads": 1 if workers > 1 else threads, "inter_threads": workers}
        sampling = {**common, "intra_threads": threads if on_cuda or threads < 1 else 1, "inter_threads": 1}
        with torch_threads_kept():
            self.translator = ctranslate2.Translator(str(path), **options)

        def load_sampler() -> Any:
            with torch_threads_kept():
                return ctranslate2.Translator(str(path), **sampling)

        self._load: Callable[[], Any] = load_sampler
        self.vocab_size = len(json.loads((Path(path) / "shared_vocabulary.json").read_text()))
        if chunk_docs is not None and chunk_docs < 0:
            raise ValueError("chunk_docs must not be negative")
        # chunks on CPU (the beam workers share them out)
        self.chunk_docs = (CHUNK_DOCS if not on_cuda and threads >= 1 else 0) if chunk_docs is None else chunk_docs
        self.eos_id, self.length_penalty, self.encoder = eos_id, length_penalty, encoder
        self.workers = workers
        self.sampling_workers = workers if sampling_workers is None else sampling_workers
        if self.sampling_workers < 1:
            raise ValueError("sampling_workers must be positive")
        # decoding call (its rng, held so that its id stays its own) -> its sampling translators' seeds and
        # the translators (None until their first share)
        self._samplers: OrderedDict[int, tuple[np.random.Generator, list[int], list[Any]]] = OrderedDict()
        self._samplers_lock = threading.Lock()

    def supports(self, cfg: DecodingConfig) -> bool:
        return True

    def encode(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.encoder is None:
            raise RuntimeError("this CTranslate2 backend was given no encoder to fill an encoder cache with")
        return self.encoder(ids, mask)  # (batch, src_len, d_model)

    def _sample(self, source: list[list[str]], rng: np.random.Generator, **options: Any) -> list[Any]:
        """``translate_batch`` on the sampling translators of the decoding call ``rng`` belongs to, the
        documents dealt out in turn and decoded at once. A translator is loaded and seeded under the
        process-wide lock before its first share (its seed drawn from ``rng`` when the call first samples)."""
        import ctranslate2

        seeds: list[int]
        translators: list[Any]
        with self._samplers_lock:
            kept = self._samplers.get(id(rng))
            if kept is not None and kept[0] is rng:
                self._samplers.move_to_end(id(rng))
                _, seeds, translators = kept
            else:
                # 2**32 - 1 is CTranslate2's "no seed"
                seeds = [int(rng.integers(0, 2**32 - 1)) for _ in range(self.sampling_workers)]
                translators = [None] * self.sampling_workers
                self._samplers[id(rng)] = (rng, seeds, translators)
                while len(self._samplers) > SAMPLERS_KEPT:
                    self._samplers.popitem(last=False)
        def seeded(j: int, first: list[list[str]], **first_options: Any) -> list[Any]:
            """Loads translator ``j`` and samples ``first`` on it right after setting its seed, under the
            lock: its worker thread seeds its generator on that first sampling."""
            with _SEED_LOCK:
                ctranslate2.set_random_seed(seeds[j])
                translators[j] = self._load()
                return translators[j].translate_batch(first, **first_options)

        n = len(translators)
        if n == 1:  # one translator: its first share is its seeding call, synchronously (no futures per call)
            if translators[0] is None:
                return seeded(0, source, **options)
            return translators[0].translate_batch(source, **options)
        shares = [source[j::n] for j in range(n)]
        for j, share in enumerate(shares):
            if share and translators[j] is None:  # seeded by one token of one document: the shares then run at once
                seeded(j, share[:1], beam_size=1, sampling_topk=2, max_decoding_length=1, max_input_length=0)
        running = [translators[j].translate_batch(share, asynchronous=True, **options) if share else [] for j, share in enumerate(shares)]
        results = [[r.result() for r in pending] for pending in running]
        return [results[i % n][i // n] for i in range(len(source))]

    def release(self, rng: np.random.Generator) -> None:
        with self._samplers_lock:
            kept = self._samplers.get(id(rng))
            if kept is not None and kept[0] is rng:
                del self._samplers[id(rng)]

    def chunk_size(self, n_docs: int) -> int:
        """Documents per forward pass of a call of ``n_docs``: :attr:`chunk_docs`, cut so that every beam worker
        gets a chunk of a small call (:func:`~xlgen.backends.batching.per_worker`; 0: the whole call at once)."""
        return per_worker(self.chunk_docs, n_docs, self.workers)

    def generate(
        self, ids: torch.Tensor, mask: torch.Tensor, states: torch.Tensor | None, cfg: DecodingConfig, rng: np.random.Generator
    ) -> Generated:
        lengths = mask.sum(dim=1).tolist()
        source = [[str(t) for t in row[:n]] for row, n in zip(ids.tolist(), lengths, strict=True)]
        common = {"max_decoding_length": cfg.max_new_tokens, "min_decoding_length": 0, "return_end_token": True, "return_scores": True,
                  "max_input_length": 0,  # like generate: eos may come first, inputs are never cut
                  "max_batch_size": self.chunk_docs}
        shared = {**common, "max_batch_size": self.chunk_size(len(source))}  # beam and greedy: the workers share the chunks
        repeat = 1
        if cfg.strategy == "beam":
            lp = self.length_penalty
            results = self.translator.translate_batch(
                source, beam_size=cfg.num_beams, num_hypotheses=cfg.num_beams, length_penalty=lp, **shared)
        elif cfg.strategy == "sample" and cfg.top_k != 1:
            lp = 0.0
            # top_k 0 (off) or beyond the vocabulary: the whole distribution, as transformers' warper
            top_k = cfg.top_k if cfg.top_k < self.vocab_size else 0
            results = self._sample(source, rng, beam_size=1, num_hypotheses=cfg.num_samples, length_penalty=lp,
                                   sampling_topk=top_k, sampling_topp=cfg.top_p, sampling_temperature=cfg.temperature, **common)
        else:  # greedy, or sampling from the single most likely token: every sample is the greedy sequence
            lp = 0.0
            repeat = cfg.num_return
            results = self.translator.translate_batch(source, beam_size=1, num_hypotheses=1, length_penalty=lp, **shared)
        tokens: list[list[int]] = []
        logprob: list[float] = []
        for r in results:
            for hyp, score in zip(r.hypotheses, r.scores, strict=True):
                seq = [int(t) for t in hyp]
                tokens += [list(seq) for _ in range(repeat)]
                logprob += [score * max(len(hyp), 1) ** lp] * repeat
        return Generated(tokens, np.asarray(logprob, dtype=np.float64))

    def describe(self) -> str:
        return f"ctranslate2 ({self.compute_type} on {self.device})"
