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
from transformers.modeling_outputs import BaseModelOutput

from xlgen.config import opt
from xlgen.tokenizer import Tokenizer

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


def generate_candidates(
    model: Any,
    tok: Tokenizer,
    inputs: Sequence[Sequence[int]],
    cfg: DecodingConfig,
    device: torch.device | str = "cpu",
    encoder_cache: dict[int, torch.Tensor] | None = None,
    progress: bool = False,
) -> list[list[Candidate]]:
    """Generates ``cfg.num_return`` candidates per input with transformers' ``generate``, best first.

    The torch backend under the one decoding loop of :func:`xlgen.backends.decode`: inputs sorted by
    length, the encoder run once per batch (its states serve generation and rescoring), exact
    sequence log-probabilities by one teacher-forced pass.

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
    from xlgen.backends.batching import decode  # the backends build on this module
    from xlgen.backends.torch_backend import TorchBackend

    return decode(TorchBackend(model, tok.eos_id, tok.pad_id, str(device)), tok, inputs, cfg, encoder_cache, progress)


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
