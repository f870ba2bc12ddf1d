"""The three graphs the ONNX Runtime backend runs, as thin modules over a stock T5.

* ``encoder``: ``(input_ids, attention_mask) -> states``, the T5 encoder as it is;
* ``cross``: ``states -> (key, value)`` of every decoder layer's cross-attention, computed once
  per batch instead of once per step;
* ``decoder``: one decoding step with a self-attention cache: ``(input_ids, attention_mask,
  past keys/values, cross keys/values) -> (log-probs, present keys/values)``.

The step graph calls the T5's own submodules (layer norms, projections, relative position bias,
feed-forward); only the attention glue between them is written out, because the transformers
cache objects do not export. :func:`check_step` compares it with the stock decoder.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import T5ForConditionalGeneration


class EncoderGraph(nn.Module):
    """The T5 encoder: ``(batch, src_len)`` ids and mask to ``(batch, src_len, d_model)`` states."""

    def __init__(self, t5: T5ForConditionalGeneration) -> None:
        super().__init__()
        self.encoder = t5.get_encoder()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (batch, src_len, d)


def _heads(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    """``(rows, len, n_heads * d_kv)`` to ``(rows, n_heads, len, d_kv)``."""
    return x.view(x.shape[0], x.shape[1], n_heads, -1).transpose(1, 2)


class CrossGraph(nn.Module):
    """Cross-attention keys and values of every decoder layer, each ``(batch, n_heads, src_len, d_kv)``."""

    def __init__(self, t5: T5ForConditionalGeneration) -> None:
        super().__init__()
        blocks: Any = t5.get_decoder().block
        self.layers = nn.ModuleList(block.layer[1].EncDecAttention for block in blocks)
        self.n_heads = t5.config.num_heads

    def forward(self, states: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out: list[torch.Tensor] = []
        layers: Any = self.layers
        for attn in layers:
            out += [_heads(attn.k(states), self.n_heads), _heads(attn.v(states), self.n_heads)]
        return tuple(out)


class DecoderStepGraph(nn.Module):
    """One decoding step of the T5 decoder over cached keys and values.

    Inputs: ``input_ids (rows, 1)``, ``attention_mask (rows, src_len)`` of the source, then per
    layer the self-attention ``past_key``, ``past_value`` ``(rows, n_heads, past_len, d_kv)``,
    then per layer the cross-attention ``cross_key``, ``cross_value`` ``(rows, n_heads, src_len, d_kv)``.
    Outputs: ``logprobs (rows, vocab)`` (log-softmax of the next-token logits), then per layer
    ``present_key``, ``present_value`` ``(rows, n_heads, past_len + 1, d_kv)``.
    """

    def __init__(self, t5: T5ForConditionalGeneration) -> None:
        super().__init__()
        self.decoder = t5.get_decoder()
        self.lm_head = t5.lm_head
        self.n_layers = len(self.decoder.block)
        self.n_heads = t5.config.num_heads
        scale = getattr(t5.config, "scale_decoder_outputs", t5.config.tie_word_embeddings)
        self.output_scale = t5.config.d_model**-0.5 if scale else 1.0

    @staticmethod
    def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        # T5 does not scale the dot product; the position bias and the mask come in ``bias``
        scores = torch.matmul(q, k.transpose(2, 3)) + bias  # (rows, heads, 1, keys)
        weights = torch.softmax(scores.float(), dim=-1).to(q.dtype)
        out = torch.matmul(weights, v)  # (rows, heads, 1, d_kv)
        return out.transpose(1, 2).reshape(out.shape[0], 1, -1)  # (rows, 1, heads * d_kv)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, *cache: torch.Tensor) -> tuple[torch.Tensor, ...]:
        past, cross = cache[: 2 * self.n_layers], cache[2 * self.n_layers :]
        h = self.decoder.embed_tokens(input_ids)  # (rows, 1, d)
        past_len = past[0].shape[2]
        first = self.decoder.block[0].layer[0].SelfAttention
        self_bias = first.compute_bias(1, past_len + 1, device=h.device, past_seen_tokens=past_len)  # (1, heads, 1, past_len + 1)
        mask = attention_mask[:, None, None, :].to(h.dtype)  # (rows, 1, 1, src_len)
        cross_bias = (1.0 - mask) * torch.finfo(h.dtype).min
        present: list[torch.Tensor] = []
        for i, block in enumerate(self.decoder.block):
            sa = block.layer[0]
            x = sa.layer_norm(h)
            attn = sa.SelfAttention
            k = torch.cat([past[2 * i], _heads(attn.k(x), self.n_heads)], dim=2)  # (rows, heads, past_len + 1, d_kv)
            v = torch.cat([past[2 * i + 1], _heads(attn.v(x), self.n_heads)], dim=2)
            present += [k, v]
            h = h + attn.o(self._attend(_heads(attn.q(x), self.n_heads), k, v, self_bias))
            ca = block.layer[1]
            x = ca.layer_norm(h)
            q = _heads(ca.EncDecAttention.q(x), self.n_heads)
            h = h + ca.EncDecAttention.o(self._attend(q, cross[2 * i], cross[2 * i + 1], cross_bias))
            h = block.layer[-1](h)  # the feed-forward sublayer, residual included
        h = self.decoder.final_layer_norm(h) * self.output_scale
        logits = self.lm_head(h)[:, 0, :]  # (rows, vocab)
        return (torch.log_softmax(logits.float(), dim=-1), *present)


def io_names(n_layers: int) -> dict[str, list[str]]:
    """Input and output names of the three graphs."""
    past = [f"past_{kind}_{i}" for i in range(n_layers) for kind in ("key", "value")]
    cross = [f"cross_{kind}_{i}" for i in range(n_layers) for kind in ("key", "value")]
    present = [f"present_{kind}_{i}" for i in range(n_layers) for kind in ("key", "value")]
    return {
        "encoder_in": ["input_ids", "attention_mask"],
        "encoder_out": ["states"],
        "cross_in": ["states"],
        "cross_out": cross,
        "decoder_in": ["input_ids", "attention_mask", *past, *cross],
        "decoder_out": ["logprobs", *present],
    }


@torch.inference_mode()
def check_step(t5: T5ForConditionalGeneration, atol: float = 1e-4) -> float:
    """Largest difference between :class:`DecoderStepGraph` and the stock decoder's next-token
    log-probs over three steps of a random input; raises if above ``atol``."""
    g = torch.Generator().manual_seed(0)
    vocab = t5.config.vocab_size
    src = torch.randint(3, vocab, (2, 7), generator=g)
    mask = torch.ones_like(src)
    mask[1, 5:] = 0
    tgt = torch.cat([torch.zeros(2, 1, dtype=torch.long), torch.randint(3, vocab, (2, 2), generator=g)], dim=1)
    states = EncoderGraph(t5)(src, mask)
    ref = torch.log_softmax(t5(encoder_outputs=(states,), attention_mask=mask, decoder_input_ids=tgt).logits.float(), -1)
    step, cross = DecoderStepGraph(t5), CrossGraph(t5)(states)
    h, d = t5.config.num_heads, t5.config.d_kv
    past: tuple[torch.Tensor, ...] = tuple(torch.zeros(2, h, 0, d) for _ in range(2 * step.n_layers))
    worst = 0.0
    for t in range(tgt.shape[1]):
        logp, *present = step(tgt[:, t : t + 1], mask, *past, *cross)
        worst = max(worst, float((logp - ref[:, t]).abs().max()))
        past = tuple(present)
    if worst > atol:
        raise RuntimeError(f"the exported decoder step differs from the T5 decoder by {worst:.2e}")
    return worst
