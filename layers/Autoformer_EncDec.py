"""Autoformer encoder and decoder (Wu et al., NeurIPS 2021): auto-correlation blocks with series
decomposition after every sub-layer, so the seasonal part flows through attention and the trend is
accumulated separately in the decoder. Shapes: [B, L, d_model] in and out unless stated.
"""
import torch
import torch.nn.functional as F
from torch import nn

from layers.AutoCorrelation import AutoCorrelationLayer
from layers.SeriesDecomposition import SeriesDecomposition


class SeasonalLayerNorm(nn.Module):
    """LayerNorm followed by removing the mean over time (the seasonal part has no level)."""

    def __init__(self, d_model: int):
        super().__init__()
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        normalised = self.norm(x)
        return normalised - normalised.mean(dim=1, keepdim=True)


class _FeedForward(nn.Module):
    """Position-wise feed-forward as two 1x1 convolutions."""

    def __init__(self, d_model: int, d_ff: int, dropout: float, activation: str):
        super().__init__()
        self.expand = nn.Conv1d(d_model, d_ff, kernel_size=1, bias=False)
        self.contract = nn.Conv1d(d_ff, d_model, kernel_size=1, bias=False)
        self.dropout = nn.Dropout(dropout)
        self.activation = F.relu if activation == "relu" else F.gelu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.dropout(self.activation(self.expand(x.transpose(1, 2))))
        return self.dropout(self.contract(hidden).transpose(1, 2))


class EncoderLayer(nn.Module):
    def __init__(self, attention: AutoCorrelationLayer, d_model: int, d_ff: int, moving_avg: int, dropout: float, activation: str):
        super().__init__()
        self.attention = attention
        self.feed_forward = _FeedForward(d_model, d_ff, dropout, activation)
        self.decomposition1, self.decomposition2 = SeriesDecomposition(moving_avg), SeriesDecomposition(moving_avg)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, _ = self.decomposition1(x + self.dropout(self.attention(x, x, x)))
        x, _ = self.decomposition2(x + self.feed_forward(x))
        return x


class Encoder(nn.Module):
    def __init__(self, layers: list[EncoderLayer], norm: nn.Module):
        super().__init__()
        self.layers, self.norm = nn.ModuleList(layers), norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return self.norm(x)


class DecoderLayer(nn.Module):
    """Returns the seasonal part [B, L, d_model] and this layer's trend [B, L, c_out]."""

    def __init__(
        self,
        self_attention: AutoCorrelationLayer,
        cross_attention: AutoCorrelationLayer,
        d_model: int,
        c_out: int,
        d_ff: int,
        moving_avg: int,
        dropout: float,
        activation: str,
    ):
        super().__init__()
        self.self_attention, self.cross_attention = self_attention, cross_attention
        self.feed_forward = _FeedForward(d_model, d_ff, dropout, activation)
        self.decompositions = nn.ModuleList(SeriesDecomposition(moving_avg) for _ in range(3))
        self.dropout = nn.Dropout(dropout)
        self.trend_projection = nn.Conv1d(d_model, c_out, kernel_size=3, padding=1, padding_mode="circular", bias=False)

    def forward(self, x: torch.Tensor, cross: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, trend1 = self.decompositions[0](x + self.dropout(self.self_attention(x, x, x)))
        x, trend2 = self.decompositions[1](x + self.dropout(self.cross_attention(x, cross, cross)))
        x, trend3 = self.decompositions[2](x + self.feed_forward(x))
        trend = self.trend_projection((trend1 + trend2 + trend3).transpose(1, 2)).transpose(1, 2)
        return x, trend


class Decoder(nn.Module):
    def __init__(self, layers: list[DecoderLayer], norm: nn.Module, projection: nn.Module):
        super().__init__()
        self.layers, self.norm, self.projection = nn.ModuleList(layers), norm, projection

    def forward(self, x: torch.Tensor, cross: torch.Tensor, trend: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> seasonal [B, L, c_out], trend [B, L, c_out]."""
        for layer in self.layers:
            x, layer_trend = layer(x, cross)
            trend = trend + layer_trend
        return self.projection(self.norm(x)), trend
