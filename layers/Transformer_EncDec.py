"""Post-norm transformer encoder shared by the patch and inverted transformers (PatchTST, iTransformer).

    x [B, L, d_model] -> [B, L, d_model]

Each layer: multi-head self-attention, residual, norm; feed-forward (d_ff, activation), residual, norm.
The norm is LayerNorm, or BatchNorm over d_model (PatchTST's choice: it normalises each feature over
batch and tokens, which suits the outliers of time-series patches better than LayerNorm).
"""
import torch
from torch import nn

NORMS = ("layer", "batch")


class _BatchNormOverFeatures(nn.Module):
    """BatchNorm1d over d_model for [B, L, d_model] tokens."""

    def __init__(self, d_model: int):
        super().__init__()
        self.norm = nn.BatchNorm1d(d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.transpose(1, 2)).transpose(1, 2)


def make_norm(kind: str, d_model: int) -> nn.Module:
    if kind not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {kind!r}")
    return nn.LayerNorm(d_model) if kind == "layer" else _BatchNormOverFeatures(d_model)


class EncoderLayer(nn.Module):
    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float, activation: str = "gelu", norm: str = "layer"):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"--d_model ({d_model}) must be divisible by --n_heads ({n_heads})")
        self.attention = nn.MultiheadAttention(d_model, n_heads, dropout=dropout, batch_first=True)
        self.feed_forward = nn.Sequential(
            nn.Linear(d_model, d_ff), nn.GELU() if activation == "gelu" else nn.ReLU(), nn.Dropout(dropout), nn.Linear(d_ff, d_model)
        )
        self.attention_norm, self.feed_forward_norm = make_norm(norm, d_model), make_norm(norm, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, need_weights: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B, L, d_model] -> (x [B, L, d_model], attention [B, L, L] averaged over heads, or None)."""
        attended, weights = self.attention(x, x, x, need_weights=need_weights)
        x = self.attention_norm(x + self.dropout(attended))
        return self.feed_forward_norm(x + self.dropout(self.feed_forward(x))), weights


class Encoder(nn.Module):
    def __init__(self, layers: list[EncoderLayer], final_norm: nn.Module = None):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.final_norm = final_norm

    def forward(self, x: torch.Tensor, need_weights: bool = False) -> tuple[torch.Tensor, list]:
        """x [B, L, d_model] -> (encoded [B, L, d_model], per-layer attention weights when asked)."""
        weights = []
        for layer in self.layers:
            x, layer_weights = layer(x, need_weights)
            weights.append(layer_weights)
        return (self.final_norm(x) if self.final_norm is not None else x), weights
