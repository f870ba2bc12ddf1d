"""The decoding loop every backend runs under: length-sorted, token-capped batches, encoder states
read from and written to a cache, candidates built alike for every backend."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch

from xlgen.backends.base import Backend
from xlgen.decoding import Candidate, DecodingConfig
from xlgen.progress import progress_bar
from xlgen.tokenizer import Tokenizer, split_generated

MAX_BATCH_TOKENS = 16384
"""Padded input tokens per batch: long inputs get smaller batches (32 x 512 tokens at most)."""


def pad_batch(seqs: Sequence[Sequence[int]], pad_id: int, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pads id lists into ``(input_ids, attention_mask)``, both ``(batch, max_len)``."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.as_tensor(list(s), dtype=torch.long)
    mask = (ids != pad_id).long()
    for i, s in enumerate(seqs):  # a pad id inside a sequence is still a real token
        mask[i, : len(s)] = 1
    return ids.to(device), mask.to(device)


class Cancelled(Exception):
    """A decoding stopped between batches because its ``should_stop`` check said so."""


def length_batches(lengths: Sequence[int], batch_size: int, max_tokens: int = MAX_BATCH_TOKENS) -> Iterator[list[int]]:
    """Input indices, shortest first, in batches of at most ``batch_size`` documents and at most
    ``max_tokens`` padded tokens (a longer single document still gets a batch of its own)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batch: list[int] = []
    for i in order:
        # sorted ascending, so the newcomer is the longest: it sets the padded width
        if batch and (len(batch) == batch_size or (len(batch) + 1) * lengths[i] > max_tokens):
            yield batch
            batch = []
        batch.append(i)
    if batch:
        yield batch


def same_length_batches(lengths: Sequence[int], batch_size: int, max_tokens: int = MAX_BATCH_TOKENS) -> Iterator[list[int]]:
    """Input indices in batches of equal length only (no padding), shortest first, each of at most
    ``batch_size`` documents and ``max_tokens`` tokens, and never of one document: a lone one is paired
    with itself (``[i, i]``).

    A row's result then depends on its own input alone where the kernels allow it: a padded batch rounds
    a row differently with its padded width, and a one-row pass takes other kernels than a many-row one.
    Measured on all-MiniLM-L6-v2: torch on the CPU (float32) and CTranslate2 int8 give the same bits for
    a text in any such batch; CTranslate2 float32 still rounds a row by its place in the batch (up to
    2e-7). What is stored once and read by later fits (the embedding cache) should not depend on which
    other texts it was computed with.
    """
    groups: dict[int, list[int]] = {}
    for i, n in enumerate(lengths):
        groups.setdefault(n, []).append(i)
    for n in sorted(groups):
        size = max(2, min(batch_size, max_tokens // max(n, 1)))
        members = groups[n]
        for start in range(0, len(members), size):
            batch = members[start : start + size]
            yield batch if len(batch) > 1 else batch * 2


def per_worker(limit: int, n: int, workers: int) -> int:
    """Items per batch of a call of ``n`` items on ``workers`` workers: ``limit``, smaller when the call is
    too small to give every worker a batch (the service's micro-batches of a few texts), so that no worker
    idles while another does the whole call. ``limit`` 0 (no limit) stays 0."""
    if limit == 0 or workers < 2 or n < 2:
        return limit
    return min(limit, -(-n // workers))


def states_from_cache(cache: dict[int, torch.Tensor] | None, idx: Sequence[int], ids: torch.Tensor) -> torch.Tensor | None:
    """The cached encoder states of the batch ``idx`` padded to the width of its ``(batch, src_len)`` ``ids``,
    ``(batch, src_len, d_model)``; None unless the cache has every row."""
    if cache is None or not all(i in cache for i in idx):
        return None
    width = ids.shape[1]
    rows = [cache[i] for i in idx]
    return torch.stack([torch.nn.functional.pad(r, (0, 0, 0, width - r.shape[0])) for r in rows]).to(ids.device)


def _cached_states(
    backend: Backend, ids: torch.Tensor, mask: torch.Tensor, idx: Sequence[int], cache: dict[int, torch.Tensor] | None
) -> torch.Tensor:
    """Encoder states of a batch, ``(batch, src_len, d_model)``, from the cache where it has every row."""
    cached = states_from_cache(cache, idx, ids)
    if cached is not None:
        return cached
    states = backend.encode(ids, mask)  # (batch, src_len, d_model)
    if cache is not None:
        lengths = mask.sum(dim=1).tolist()
        for row, i in enumerate(idx):
            cache[i] = states[row, : lengths[row]]
    return states


@torch.inference_mode()
def decode(
    backend: Backend,
    tok: Tokenizer,
    inputs: Sequence[Sequence[int]],
    cfg: DecodingConfig,
    encoder_cache: dict[int, torch.Tensor] | None = None,
    progress: bool = False,
    max_batch_tokens: int = MAX_BATCH_TOKENS,
    should_stop: Callable[[], bool] | None = None,
) -> list[list[Candidate]]:
    """``cfg.num_return`` candidates per encoded input, best first, by ``backend``.

    Args:
        backend: The backend.
        tok: The tokenizer.
        inputs: Encoded inputs (see :func:`xlgen.tokenizer.encode_input`).
        cfg: Decoding settings.
        encoder_cache: Encoder states per input index, read and filled, so that several decoding
            settings over the same inputs encode each input once.
        progress: Show a progress bar over documents.
        max_batch_tokens: Padded input tokens per batch.
        should_stop: Called before every batch; when it returns True the decoding stops there
            (nobody waits for its result any more, e.g. a request that timed out).

    Raises:
        Cancelled: When ``should_stop`` returned True.
    """
    results: list[list[Candidate]] = [[] for _ in inputs]
    n_ret = cfg.num_return
    rng = np.random.default_rng(cfg.seed)
    torch_state = torch.random.get_rng_state()  # seeded per call, and given back after
    torch.random.default_generator.manual_seed(cfg.seed)
    if torch.cuda.is_initialized():  # torch.manual_seed would also queue a lazy seeding of every absent device per call
        torch.cuda.manual_seed_all(cfg.seed)
    bar = progress_bar(total=len(inputs), desc=f"decode ({cfg.strategy}, {backend.name})", unit="doc", disable=not progress, leave=False)
    done = 0
    try:
        for idx in length_batches([len(x) for x in inputs], cfg.batch_size, max_batch_tokens):
            if should_stop is not None and should_stop():
                raise Cancelled(f"decoding stopped with {done} of {len(inputs)} documents done")
            ids, mask = pad_batch([inputs[i] for i in idx], tok.pad_id, backend.input_device)  # (batch, src_len) each
            states = None
            if backend.needs_states or encoder_cache is not None:
                states = _cached_states(backend, ids, mask, idx, encoder_cache)
            gen = backend.generate(ids, mask, states, cfg, rng)
            logprob = gen.logprob.tolist()
            for j, doc in enumerate(idx):
                cands = [
                    Candidate(tuple(split_generated(tok, gen.tokens[k])), float(logprob[k]), len(gen.tokens[k]))
                    for k in range(j * n_ret, (j + 1) * n_ret)
                ]
                cands.sort(key=lambda c: -c.logprob)
                results[doc] = cands
            done += len(idx)
            bar.update(len(idx))
    finally:
        bar.close()
        torch.random.set_rng_state(torch_state)
        backend.release(rng)
    return results
