"""Frequency decomposition patch embedding for Time-LLM (`--use_frequency 1`).

    x [B, N, T] --FFT low-pass (frequencies below --trend_cutoff cycles per step)--> trend [B, N, T]
                --x - trend--> seasonal [B, N, T]            (trend + seasonal = x exactly)
      trend    -> patches of 2 x patch_len, stride 2 x stride -> embed -> aligned to the P base patches
      seasonal -> patches of patch_len, stride               -> embed    [B*N, P, d_model]
      fused = Linear([trend ; seasonal])                                  [B*N, P, d_model]
      plain = the raw patches embedded as without this module             [B*N, P, d_model]
      gate  = sigmoid(MLP(periodicity, trend strength)) of each series    [B*N, 1, 1]
      output = gate * fused + (1 - gate) * plain                          [B*N, P, d_model]

The specification's adaptive switch decided from statistics of the whole batch whether to use the
frequency branch, so a series' forecast depended on its batch-mates. Here the decision is a soft,
learned gate per series from that series' own statistics, identical in training and evaluation:
periodicity is the share of spectral energy in its `--top_k_freqs` strongest non-constant
frequencies, trend strength |x_T - x_1| / std(x). The gate's mean is logged (`frequency_gate`).
`dominant_periods` gives each series' strongest periods for plotting and reports.
"""
from typing import Optional

import torch
from torch import nn

from layers.AddOn import AddOn, AddOnOutput, SeriesContext, Stage
from layers.Embed import PatchEmbedding
from layers.Resample import interpolate_linear
from utils.settings.addons import FrequencyConfig


class FrequencyDecomposition(nn.Module):
    """x [..., T] -> (trend, seasonal), each [..., T]: an FFT low-pass and the rest. Time is the last
    axis; given `seq_len`, an input whose last axis is not that long is refused (a [B, T, N] tensor
    would otherwise be filtered along its variables)."""

    def __init__(self, trend_cutoff: float, seq_len: Optional[int] = None):
        super().__init__()
        if not 0 < trend_cutoff < 0.5:
            raise ValueError(f"--trend_cutoff is a frequency in cycles per step, in (0, 0.5); got {trend_cutoff}")
        self.trend_cutoff, self.seq_len = trend_cutoff, seq_len

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        length = x.shape[-1]
        if self.seq_len is not None and length != self.seq_len:
            raise ValueError(f"frequency decomposition takes x [..., T={self.seq_len}] with time last; got {tuple(x.shape)} (transpose [B, T, N] to [B, N, T])")
        spectrum = torch.fft.rfft(x.float(), dim=-1)
        low_pass = (torch.fft.rfftfreq(length, device=x.device) < self.trend_cutoff).to(spectrum.dtype)
        trend = torch.fft.irfft(spectrum * low_pass, n=length, dim=-1).to(x.dtype)
        return trend, x - trend


def spectral_statistics(x: torch.Tensor, top_k: int) -> torch.Tensor:
    """x [S, T] -> [S, 2]: (periodicity = top-k energy share without the mean, trend strength)."""
    amplitude = torch.fft.rfft(x.float(), dim=-1).abs()[:, 1:]  # the constant term is no period
    energy = amplitude.pow(2)
    top = energy.topk(min(top_k, energy.shape[-1]), dim=-1).values.sum(dim=-1)
    periodicity = top / energy.sum(dim=-1).clamp_min(1e-12)
    trend_strength = (x[:, -1] - x[:, 0]).abs() / x.std(dim=-1).clamp_min(1e-5)
    return torch.stack([periodicity, trend_strength], dim=-1)


def dominant_periods(x: torch.Tensor, top_k: int) -> torch.Tensor:
    """x [..., T] -> the periods (in steps) of the top_k strongest non-constant frequencies [..., top_k]."""
    length = x.shape[-1]
    amplitude = torch.fft.rfft(x.float(), dim=-1).abs()[..., 1:]
    frequencies = amplitude.topk(min(top_k, amplitude.shape[-1]), dim=-1).indices + 1  # cycles per window
    return length / frequencies.float()


class FrequencyPatchEmbedding(AddOn):
    """The module docstring's embedding: x [B, N, T] -> [B*N, P, d_model]; diagnostic `frequency_gate`."""

    stage = Stage.PATCH_EMBEDDING

    def __init__(self, config: FrequencyConfig):
        super().__init__()
        if config.top_k_freqs < 1:
            raise ValueError(f"--top_k_freqs must be positive, got {config.top_k_freqs}")
        self.top_k = config.top_k_freqs
        self.decomposition = FrequencyDecomposition(config.trend_cutoff, config.seq_len)
        self.patch_count = PatchEmbedding.patch_count(config.seq_len, config.patch_len, config.stride)
        # The trend varies slowly: twice as long patches; fewer of them, aligned to the base grid below.
        if config.seq_len < 2 * config.patch_len:
            raise ValueError(f"--use_frequency embeds the trend in patches of 2 x --patch_len ({2 * config.patch_len}); --seq_len is {config.seq_len}")
        self.trend_embedding = PatchEmbedding(config.d_model, 2 * config.patch_len, 2 * config.stride, config.dropout)
        self.seasonal_embedding = PatchEmbedding(config.d_model, config.patch_len, config.stride, config.dropout)
        self.plain_embedding = PatchEmbedding(config.d_model, config.patch_len, config.stride, config.dropout)
        self.fusion = nn.Linear(2 * config.d_model, config.d_model)
        self.gate = nn.Sequential(nn.Linear(2, 16), nn.GELU(), nn.Linear(16, 1))

    def forward(self, x: torch.Tensor, context: Optional[SeriesContext] = None) -> AddOnOutput:
        trend, seasonal = self.decomposition(x)
        trend_tokens, _ = self.trend_embedding(trend)  # [B*N, P_trend, d_model]
        # Each trend patch covers two base patches: stretch the coarse sequence onto the base grid.
        trend_tokens = interpolate_linear(trend_tokens, self.patch_count, align_corners=True)  # reproducible on CUDA
        seasonal_tokens, _ = self.seasonal_embedding(seasonal)
        fused = self.fusion(torch.cat([trend_tokens, seasonal_tokens], dim=-1))
        plain, _ = self.plain_embedding(x)
        gate = torch.sigmoid(self.gate(spectral_statistics(x.reshape(-1, x.shape[-1]), self.top_k)))  # [B*N, 1]
        patches = gate.unsqueeze(-1) * fused + (1 - gate.unsqueeze(-1)) * plain
        return AddOnOutput(patches, diagnostics={"frequency_gate": gate.detach().mean()})
