"""Auto-correlation attention (Autoformer, Wu et al., NeurIPS 2021, https://arxiv.org/abs/2106.13008).

Period-based dependencies: the FFT gives the auto-correlation of queries and keys at every delay;
the top `factor * ln(L)` delays of each sample are kept and the values, rolled by each delay, are
aggregated with softmax weights of their correlations.

Deliberate deviation: the reference implementation picks the delays from the batch mean during
training (a different function from its per-sample inference path), so a sample's training output
depends on its batch-mates. Here both modes use the per-sample delays.
"""
import math

import torch
from torch import nn


class AutoCorrelation(nn.Module):
    def __init__(self, factor: int = 1, dropout: float = 0.1):
        super().__init__()
        self.factor = factor
        self.dropout = nn.Dropout(dropout)

    def aggregate_delays(self, values: torch.Tensor, correlation: torch.Tensor) -> torch.Tensor:
        """values, correlation [B, H, E, L] -> delay-aggregated values [B, H, E, L]."""
        batch, heads, channels, length = values.shape
        top_k = max(1, int(self.factor * math.log(length)))
        mean_correlation = correlation.mean(dim=(1, 2))  # [B, L]
        weights, delays = torch.topk(mean_correlation, top_k, dim=-1)  # [B, top_k]
        weights = torch.softmax(weights, dim=-1)
        doubled = values.repeat(1, 1, 1, 2)  # rolling = reading a window of the doubled series
        base_index = torch.arange(length, device=values.device).view(1, 1, 1, length)
        aggregated = torch.zeros_like(values)
        for i in range(top_k):
            index = (base_index + delays[:, i].view(batch, 1, 1, 1)).expand(batch, heads, channels, length)
            aggregated = aggregated + torch.gather(doubled, -1, index) * weights[:, i].view(batch, 1, 1, 1)
        return aggregated

    def forward(self, queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """queries [B, L, H, E], keys/values [B, S, H, E] -> [B, L, H, E]."""
        length, source_length = queries.shape[1], values.shape[1]
        if length > source_length:
            padding = torch.zeros_like(queries[:, : length - source_length])
            values, keys = torch.cat([values, padding], dim=1), torch.cat([keys, padding], dim=1)
        else:
            values, keys = values[:, :length], keys[:, :length]
        query_spectrum = torch.fft.rfft(queries.permute(0, 2, 3, 1).float(), dim=-1)
        key_spectrum = torch.fft.rfft(keys.permute(0, 2, 3, 1).float(), dim=-1)
        correlation = torch.fft.irfft(query_spectrum * torch.conj(key_spectrum), n=length, dim=-1)  # [B, H, E, L]
        aggregated = self.aggregate_delays(values.permute(0, 2, 3, 1), self.dropout(correlation))
        return aggregated.permute(0, 3, 1, 2).contiguous()  # [B, L, H, E]


class AutoCorrelationLayer(nn.Module):
    """Multi-head wrapper: project to heads, auto-correlate, project back. [B, L, d_model] -> [B, L, d_model]."""

    def __init__(self, correlation: AutoCorrelation, d_model: int, n_heads: int):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"--d_model ({d_model}) must be divisible by --n_heads ({n_heads})")
        self.correlation, self.n_heads = correlation, n_heads
        self.query, self.key, self.value = nn.Linear(d_model, d_model), nn.Linear(d_model, d_model), nn.Linear(d_model, d_model)
        self.out = nn.Linear(d_model, d_model)

    def forward(self, queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        batch, length, _ = queries.shape
        source_length = keys.shape[1]
        heads = self.n_heads
        q = self.query(queries).view(batch, length, heads, -1)
        k = self.key(keys).view(batch, source_length, heads, -1)
        v = self.value(values).view(batch, source_length, heads, -1)
        return self.out(self.correlation(q, k, v).reshape(batch, length, -1))
