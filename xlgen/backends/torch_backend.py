"""The reference backend: transformers' ``generate``, then one teacher-forced pass for exact scores.

The only backend that runs a PEFT-wrapped model as it is and decodes with dropout on (MC dropout).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from transformers.modeling_outputs import BaseModelOutput

from xlgen.backends.base import Backend, Generated
from xlgen.decoding import DecodingConfig, generation_kwargs, sequence_logprobs


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
            **generation_kwargs(cfg, self.eos_id, self.pad_id),
        )
        seqs = out if isinstance(out, torch.Tensor) else out.sequences  # (batch * n_ret, tgt_len)
        n_ret = cfg.num_return
        logprob, n_tok = sequence_logprobs(
            self.model, states.repeat_interleave(n_ret, dim=0), mask.repeat_interleave(n_ret, dim=0), seqs, self.eos_id
        )  # (batch * n_ret,) each
        tokens = [row[1 : 1 + n] for row, n in zip(seqs.tolist(), n_tok.tolist(), strict=True)]
        return Generated(tokens, logprob.double().cpu().numpy())
