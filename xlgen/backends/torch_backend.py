"""The reference backend: transformers' ``generate``, then one teacher-forced pass for exact scores.

The only backend that runs a PEFT-wrapped model as it is and decodes with dropout on (MC dropout).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from transformers.modeling_outputs import BaseModelOutput

from xlgen.backends.base import Backend, Generated
from xlgen.decoding import DecodingConfig


def generation_kwargs(cfg: DecodingConfig, eos_id: int, pad_id: int) -> dict:
    """``generate`` options for ``cfg`` (``top_k`` 0 is passed as it is, which turns top-k off: left
    unset, transformers would apply its default of 50)."""
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
        kw.update(do_sample=True, num_beams=1, temperature=cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p)
    else:
        kw.update(do_sample=False, num_beams=1)
    return kw


def generation_config(cfg: DecodingConfig, eos_id: int, pad_id: int) -> Any:
    """``cfg`` as a transformers ``GenerationConfig`` (a model directory's ``generation_config.json``):
    plain ``generate`` runs the same search and returns its best sequence, where xlgen returns and
    scores all ``cfg.num_return`` of them."""
    from transformers import GenerationConfig

    kw = generation_kwargs(cfg, eos_id, pad_id)
    kw.pop("num_return_sequences")
    return GenerationConfig(**kw)


def decoder_cache() -> Any:
    """An empty key/value cache whose layers grow with the decoder's.

    transformers sizes the cache it makes for ``generate`` by ``config.num_hidden_layers``, which for T5
    is the encoder's layer count: a T5 with more decoder layers than encoder layers (the
    ``sentence-encoder`` backbone's one reader layer under two decoder layers) would index past its end.
    """
    from transformers.cache_utils import DynamicCache, EncoderDecoderCache

    return EncoderDecoderCache(DynamicCache(), DynamicCache())


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


class TorchBackend(Backend):
    """Decodes with a torch T5 (plain or PEFT-wrapped).

    Args:
        model: The module whose ``generate`` to call.
        eos_id: End of sequence.
        pad_id: Padding, also the decoder start id.
        device: Where ``model`` lives.
    """

    name = "torch"

    def __init__(self, model: Any, eos_id: int, pad_id: int, device: str = "cpu") -> None:
        self.model = model
        self.eos_id, self.pad_id = eos_id, pad_id
        self.device = self.input_device = str(device)

    def encode(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.model.get_encoder()(input_ids=ids, attention_mask=mask).last_hidden_state  # (batch, src_len, d)

    def generate(
        self, ids: torch.Tensor, mask: torch.Tensor, states: torch.Tensor | None, cfg: DecodingConfig, rng: np.random.Generator
    ) -> Generated:
        if states is None:
            states = self.encode(ids, mask)
        out = self.model.generate(
            encoder_outputs=BaseModelOutput(last_hidden_state=states),
            attention_mask=mask,
            cache=decoder_cache(),
            **generation_kwargs(cfg, self.eos_id, self.pad_id),
        )
        seqs = out if isinstance(out, torch.Tensor) else out.sequences  # (batch * n_ret, tgt_len)
        n_ret = cfg.num_return
        logprob, n_tok = sequence_logprobs(
            self.model, states.repeat_interleave(n_ret, dim=0), mask.repeat_interleave(n_ret, dim=0), seqs, self.eos_id
        )  # (batch * n_ret,) each
        tokens = [row[1 : 1 + n] for row, n in zip(seqs.tolist(), n_tok.tolist(), strict=True)]
        return Generated(tokens, logprob.double().cpu().numpy())
