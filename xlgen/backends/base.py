"""The interface every inference backend implements, and what it returns."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from xlgen.decoding import DecodingConfig


@dataclass
class Generated:
    """Sequences generated for a batch of ``n_docs`` documents, ``num_return`` each, grouped by document.

    Attributes:
        tokens: Generated ids of each sequence (no decoder start id), up to and including the
            first eos (a sequence cut by the length limit has none).
        logprob: Exact sum of each sequence's token log-probabilities, eos included, no length
            penalty: ``(n_docs * num_return,)``.
    """

    tokens: list[list[int]]
    logprob: np.ndarray

    @property
    def norm_logprob(self) -> np.ndarray:
        """Length-normalised log-probabilities, ``(n_seq,)``."""
        lengths = np.array([max(len(t), 1) for t in self.tokens], dtype=np.float64)
        return self.logprob / lengths


class Backend(ABC):
    """Runs a T5 for encoding and generation.

    Attributes:
        name: Registry name.
        needs_states: Whether :meth:`generate` reads the encoder states (otherwise it encodes by
            itself, and :meth:`encode` runs only to fill an encoder cache).
        device: Where it runs (``cpu``, ``cuda``, ``cuda:N``).
        input_device: Where the batches it takes (ids, mask, encoder states) live.
    """

    name: ClassVar[str]
    needs_states: ClassVar[bool] = True
    device: str = "cpu"
    input_device: str = "cpu"

    def supports(self, cfg: DecodingConfig) -> bool:
        """Whether :meth:`generate` can run ``cfg`` (else the caller falls back to torch)."""
        return True

    @abstractmethod
    def encode(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Encoder states of a padded batch: ``(batch, src_len)`` ids and mask to ``(batch, src_len, d_model)``."""

    @abstractmethod
    def generate(
        self, ids: torch.Tensor, mask: torch.Tensor, states: torch.Tensor | None, cfg: DecodingConfig, rng: np.random.Generator
    ) -> Generated:
        """``cfg.num_return`` sequences per document of a padded batch.

        Args:
            ids: ``(batch, src_len)`` input ids.
            mask: ``(batch, src_len)`` attention mask.
            states: Encoder states ``(batch, src_len, d_model)`` when :attr:`needs_states` (or when
                an encoder cache had them).
            cfg: Decoding settings.
            rng: Random numbers for sampling, seeded once per decoding call.
        """

    def release(self, rng: np.random.Generator) -> None:  # noqa: B027 - most backends keep nothing per call
        """Called once the decoding call that passed ``rng`` to :meth:`generate` has ended (whether
        it finished or not): whatever the backend kept for that call can go."""

    def describe(self) -> str:
        """One line for logs: the name and how it runs."""
        return f"{self.name} on {self.device}"
