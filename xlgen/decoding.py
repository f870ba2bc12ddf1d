"""Decoding: greedy, beam and sampling, each giving every generated label a score.

A label's score is the probability mass of the returned beams that contain it (greedy: the one
sequence's probability), or, for sampling, the fraction of samples that contain it (the Monte Carlo
estimate of the same quantity). Sequence log-probabilities are recomputed by one teacher-forced
decoder pass, without any length penalty, so every strategy and backend scores alike.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers.modeling_outputs import BaseModelOutput

from xlgen.config import opt
from xlgen.tokenizer import Tokenizer, split_generated

STRATEGIES = ("greedy", "beam", "sample")


@dataclass(frozen=True)
class DecodingConfig:
    """How to decode.

    Attributes:
        strategy: ``greedy``, ``beam`` or ``sample``.
        num_beams: Beams for ``beam``; every beam is returned and scored.
        num_samples: Sequences drawn for ``sample``.
        temperature: Sampling temperature.
        top_k: Sampling from the k most likely tokens only; 0 turns it off.
        top_p: Nucleus sampling mass; 1.0 turns it off.
        max_new_tokens: Longest generated target, in tokens.
        batch_size: Documents per forward pass.
        keep_new_labels: Keep generated labels outside the label space (flagged ``new``); drop
            them if false.
        min_labels: Labels every document keeps whatever the threshold (the best-scored first).
        seed: Seed for sampling, so that repeated calls agree.
    """

    strategy: str = opt("beam", "decoding strategy", choices=STRATEGIES)
    num_beams: int = opt(5, "beams for beam search; every beam is returned and scored")
    num_samples: int = opt(10, "sequences drawn per document when sampling")
    temperature: float = opt(1.0, "sampling temperature")
    top_k: int = opt(0, "sample from the k most likely tokens only; 0 turns it off")
    top_p: float = opt(1.0, "nucleus sampling mass; 1.0 turns it off")
    max_new_tokens: int = opt(64, "longest generated label sequence, in tokens")
    batch_size: int = opt(32, "documents per forward pass")
    keep_new_labels: bool = opt(True, "keep generated labels outside the label space, flagged as new")
    min_labels: int = opt(1, "labels every document keeps whatever the threshold")
    seed: int = opt(0, "seed for sampling, so that repeated calls agree")

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown decoding strategy {self.strategy!r}; choose one of {', '.join(STRATEGIES)}")
        if self.num_beams < 1 or self.num_samples < 1 or self.batch_size < 1 or self.max_new_tokens < 1:
            raise ValueError("num_beams, num_samples, batch_size and max_new_tokens must be positive")
        if self.temperature <= 0:
            raise ValueError("temperature must be positive")
        if not 0 < self.top_p <= 1:
            raise ValueError("top_p must lie in (0, 1]")
        if self.top_k < 0 or self.min_labels < 0:
            raise ValueError("top_k and min_labels must not be negative")

    @property
    def num_return(self) -> int:
        return {"greedy": 1, "beam": self.num_beams, "sample": self.num_samples}[self.strategy]


@dataclass(frozen=True)
class Candidate:
    """One generated sequence.

    Attributes:
        labels: Its labels, in generation order, without duplicates.
        logprob: Sum of its token log-probabilities (eos included).
        n_tokens: Its length in tokens (eos included).
    """

    labels: tuple[str, ...]
    logprob: float
    n_tokens: int

    @property
    def norm_logprob(self) -> float:
        """Length-normalised log-probability."""
        return self.logprob / max(self.n_tokens, 1)


@dataclass
class Prediction:
    """Labels of one document with scores, best first.

    Attributes:
        labels: Labels above the threshold (at least ``min_labels``).
        scores: Score of each of ``labels``.
        new: Whether each label lies outside the label space.
        all_scores: Every generated label's score, cut or not (for P@k and threshold tuning).
        candidates: The sequences the scores came from.
    """

    labels: list[str]
    scores: list[float]
    new: list[bool]
    all_scores: dict[str, float] = field(default_factory=dict)
    candidates: list[Candidate] = field(default_factory=list)


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


def generation_kwargs(cfg: DecodingConfig, eos_id: int, pad_id: int) -> dict:
    kw: dict = {
        "max_new_tokens": cfg.max_new_tokens,
        "num_return_sequences": cfg.num_return,
        "eos_token_id": eos_id,
        "pad_token_id": pad_id,
        "decoder_start_token_id": pad_id,
    }
    if cfg.strategy == "beam":
        kw.update(num_beams=cfg.num_beams, do_sample=False, early_stopping=True)
    elif cfg.strategy == "sample":
        kw.update(do_sample=True, num_beams=1, temperature=cfg.temperature, top_k=cfg.top_k or None, top_p=cfg.top_p)
    else:
        kw.update(do_sample=False, num_beams=1)
    return kw


def sequence_logprobs(
    model: torch.nn.Module,
    encoder_states: torch.Tensor,
    attention_mask: torch.Tensor,
    sequences: torch.Tensor,
    eos_id: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact log-probabilities of generated sequences by one teacher-forced decoder pass.

    Args:
        model: The T5 model.
        encoder_states: Encoder output, ``(n_seq, src_len, d_model)``, one row per sequence.
        attention_mask: ``(n_seq, src_len)``.
        sequences: ``generate`` output, ``(n_seq, tgt_len)``, starting with the decoder start id.
        eos_id: End of sequence; tokens after the first eos do not count.

    Returns:
        ``(logprob, n_tokens)``, each ``(n_seq,)``.
    """
    decoder_input, target = sequences[:, :-1], sequences[:, 1:]
    out = model(
        encoder_outputs=BaseModelOutput(last_hidden_state=encoder_states),
        attention_mask=attention_mask,
        decoder_input_ids=decoder_input,
    )
    logp = torch.log_softmax(out.logits.float(), dim=-1)  # (n_seq, tgt_len - 1, vocab)
    token_logp = logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)  # (n_seq, tgt_len - 1)
    is_eos = (target == eos_id).long()
    # a position counts while no eos came before it: the cumulative eos count, shifted right by one
    before_eos = torch.cumsum(is_eos, dim=1) - is_eos == 0  # (n_seq, tgt_len - 1)
    return (token_logp * before_eos).sum(dim=1), before_eos.sum(dim=1)  # (n_seq,), (n_seq,)


@torch.inference_mode()
def generate_candidates(
    model: Any,
    tok: Tokenizer,
    inputs: Sequence[Sequence[int]],
    cfg: DecodingConfig,
    device: torch.device | str = "cpu",
    encoder_cache: dict[int, torch.Tensor] | None = None,
    progress: bool = False,
) -> list[list[Candidate]]:
    """Generates ``cfg.num_return`` candidates per input, best first.

    Inputs are sorted by length so that each batch pads little; the encoder runs once per batch and
    its states serve both generation and rescoring.

    Args:
        model: A T5 model (not wrapped).
        tok: Its tokenizer.
        inputs: Encoded inputs (see :func:`xlgen.tokenizer.encode_input`).
        cfg: Decoding settings.
        device: Where the model lives.
        encoder_cache: If given, encoder states per input index are read from and stored in it, so
            that several decoding settings over the same inputs encode each input once.
        progress: Show a progress bar over documents.
    """
    order = sorted(range(len(inputs)), key=lambda i: len(inputs[i]))
    results: list[list[Candidate]] = [[] for _ in inputs]
    gen_kw = generation_kwargs(cfg, tok.eos_id, tok.pad_id)
    n_ret = cfg.num_return
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(cfg.seed)
    bar = tqdm(total=len(inputs), desc=f"decode ({cfg.strategy})", unit="doc", disable=not progress, leave=False)
    try:
        for start in range(0, len(order), cfg.batch_size):
            idx = order[start : start + cfg.batch_size]
            ids, mask = pad_batch([inputs[i] for i in idx], tok.pad_id, device)
            states = _encode(model, ids, mask, idx, encoder_cache)  # (batch, src_len, d_model)
            out = model.generate(
                encoder_outputs=BaseModelOutput(last_hidden_state=states), attention_mask=mask, **gen_kw
            )
            seqs = out if isinstance(out, torch.Tensor) else out.sequences  # (batch * n_ret, tgt_len)
            rep_states = states.repeat_interleave(n_ret, dim=0)  # (batch * n_ret, src_len, d_model)
            rep_mask = mask.repeat_interleave(n_ret, dim=0)
            logprob, n_tok = sequence_logprobs(model, rep_states, rep_mask, seqs, tok.eos_id)
            seqs_l, logprob_l, n_tok_l = seqs.tolist(), logprob.tolist(), n_tok.tolist()
            for j, doc_i in enumerate(idx):
                cands = [
                    Candidate(tuple(split_generated(tok, seqs_l[k][1:])), logprob_l[k], int(n_tok_l[k]))
                    for k in range(j * n_ret, (j + 1) * n_ret)
                ]
                cands.sort(key=lambda c: -c.logprob)
                results[doc_i] = cands
            bar.update(len(idx))
    finally:
        bar.close()
        torch.random.set_rng_state(generator_state)
    return results


def _encode(
    model: Any,
    ids: torch.Tensor,
    mask: torch.Tensor,
    idx: Sequence[int],
    cache: dict[int, torch.Tensor] | None,
) -> torch.Tensor:
    if cache is not None and all(i in cache for i in idx):
        rows = [cache[i] for i in idx]
        width = ids.shape[1]
        return torch.stack([torch.nn.functional.pad(r, (0, 0, 0, width - r.shape[0])) for r in rows])
    states = model.get_encoder()(input_ids=ids, attention_mask=mask).last_hidden_state  # (batch, src_len, d)
    if cache is not None:
        lengths = mask.sum(dim=1).tolist()
        for row, i in enumerate(idx):
            cache[i] = states[row, : lengths[row]]
    return states


def label_scores(candidates: Sequence[Candidate], strategy: str) -> dict[str, float]:
    """Score of every label in ``candidates``, best first.

    For ``sample`` the score is the fraction of samples containing the label; otherwise it is the
    summed probability of the sequences containing it (at most 1).
    """
    scores: dict[str, float] = {}
    if not candidates:
        return scores
    for c in candidates:
        weight = 1.0 / len(candidates) if strategy == "sample" else math.exp(c.logprob)
        for label in c.labels:
            scores[label] = scores.get(label, 0.0) + weight
    return dict(sorted(((k, min(v, 1.0)) for k, v in scores.items()), key=lambda kv: -kv[1]))


def cut(scores: dict[str, float], threshold: float, min_labels: int) -> list[tuple[str, float]]:
    """Labels with score >= ``threshold``, but at least the ``min_labels`` best."""
    ranked = sorted(scores.items(), key=lambda kv: -kv[1])
    kept = [kv for kv in ranked if kv[1] >= threshold]
    return kept if len(kept) >= min_labels else ranked[:min_labels]
