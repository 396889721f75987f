"""Time-LLM's head stage: the LLM's hidden states at the patch positions -> the forecast.

    hidden [B, N, d_ff, P] (the first d_ff features of the last P positions) --flatten--> [B, N, d_ff*P]
      --> Linear(d_ff*P -> pred_len), dropout --> forecast [B, N, pred_len] in RevIN units
"""
import torch
from torch import nn


class FlattenHead(nn.Module):
    """Flatten the last two dims and project to the horizon: [B, N, d_ff, P] -> [B, N, pred_len]."""

    def __init__(self, in_features: int, pred_len: int, dropout: float):
        super().__init__()
        self.flatten = nn.Flatten(start_dim=-2)
        self.linear = nn.Linear(in_features, pred_len)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.linear(self.flatten(x)))
