"""The multi-cluster head of XLGen-BCL: a linear layer on the masked mean of the encoder's states.

It sits beside the stock T5 (never inside a copied T5 class): training adds ``lambda * BCE`` of its
logits against the document's clusters to the generation loss, which shapes the encoder; at
inference it gives each cluster a probability (for cluster-uncertainty acquisition).
"""

from __future__ import annotations

import torch
from torch import nn


def masked_mean(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``states`` ``(batch, len, d)`` over the positions where ``mask`` ``(batch, len)`` is 1."""
    m = mask.unsqueeze(-1).to(states.dtype)  # (batch, len, 1)
    return (states * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)  # (batch, d)


class ClusterHead(nn.Module):
    """Cluster logits from encoder states.

    Args:
        d_model: Encoder width.
        n_clusters: Number of label clusters.
        dropout: Dropout on the pooled states.
    """

    def __init__(self, d_model: int, n_clusters: int, dropout: float = 0.1):
        super().__init__()
        self.d_model, self.n_clusters = d_model, n_clusters
        self.dropout = nn.Dropout(dropout)
        self.proj = nn.Linear(d_model, n_clusters)

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``(batch, n_clusters)`` logits from ``states`` ``(batch, len, d_model)`` and ``mask`` ``(batch, len)``."""
        return self.proj(self.dropout(masked_mean(states, mask)).to(self.proj.weight.dtype))  # (batch, n_clusters)
