"""Input embeddings: values (convolutional token embedding), calendar features, positions.

Shapes: values [B, L, C] -> [B, L, d_model]; time marks [B, L, F] -> [B, L, d_model].
"""
import math
from typing import Optional

import torch
from torch import nn

from layers.AddOn import AddOn, AddOnOutput, SeriesContext, Stage
from utils.timefeatures import time_feature_count


class TokenEmbedding(nn.Module):
    """Conv1d over time (kernel 3, circular padding) mapping C variables to d_model channels."""

    def __init__(self, c_in: int, d_model: int):
        super().__init__()
        self.convolution = nn.Conv1d(c_in, d_model, kernel_size=3, padding=1, padding_mode="circular", bias=False)
        nn.init.kaiming_normal_(self.convolution.weight, mode="fan_in", nonlinearity="leaky_relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.convolution(x.transpose(1, 2)).transpose(1, 2)  # [B, L, d_model]


class PositionalEmbedding(nn.Module):
    """Sinusoidal positions (Vaswani et al., 2017), a fixed buffer."""

    def __init__(self, d_model: int, max_len: int = 5000):
        super().__init__()
        position = torch.arange(max_len).float().unsqueeze(1)
        frequency = torch.exp(torch.arange(0, d_model, 2).float() * -(math.log(10000.0) / d_model))
        table = torch.zeros(max_len, d_model)
        table[:, 0::2] = torch.sin(position * frequency)
        table[:, 1::2] = torch.cos(position * frequency)[:, : d_model // 2]
        self.register_buffer("table", table, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.table[: x.size(1)].unsqueeze(0)  # [1, L, d_model]


class _FixedEmbedding(nn.Module):
    """Embedding table initialised with sinusoids and never trained."""

    def __init__(self, size: int, d_model: int):
        super().__init__()
        self.embedding = nn.Embedding(size, d_model)
        self.embedding.weight.data.copy_(PositionalEmbedding(d_model, size).table)
        self.embedding.weight.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embedding(x)


class TemporalEmbedding(nn.Module):
    """Calendar fields [month, day, weekday, hour, quarter-hour] (embed fixed/learned) -> sum of embeddings."""

    def __init__(self, d_model: int, embed: str, freq: str):
        super().__init__()
        table = _FixedEmbedding if embed == "fixed" else nn.Embedding
        self.use_minutes = time_feature_count(freq) >= 5
        self.month, self.day, self.weekday, self.hour = table(13, d_model), table(32, d_model), table(7, d_model), table(24, d_model)
        if self.use_minutes:
            self.minute = table(4, d_model)

    def forward(self, x_mark: torch.Tensor) -> torch.Tensor:
        fields = x_mark.long()
        total = self.month(fields[..., 0]) + self.day(fields[..., 1]) + self.weekday(fields[..., 2]) + self.hour(fields[..., 3])
        if self.use_minutes:
            total = total + self.minute(fields[..., 4])
        return total


class TimeFeatureEmbedding(nn.Module):
    """Continuous `timeF` features -> d_model by a linear map."""

    def __init__(self, d_model: int, freq: str):
        super().__init__()
        self.projection = nn.Linear(time_feature_count(freq), d_model, bias=False)

    def forward(self, x_mark: torch.Tensor) -> torch.Tensor:
        return self.projection(x_mark)


class DataEmbedding(nn.Module):
    """Values + calendar (+ positions unless `positional=False`, as Autoformer uses), then dropout."""

    def __init__(self, c_in: int, d_model: int, embed: str, freq: str, dropout: float, positional: bool = True):
        super().__init__()
        self.value = TokenEmbedding(c_in, d_model)
        self.position = PositionalEmbedding(d_model) if positional else None
        self.temporal = TimeFeatureEmbedding(d_model, freq) if embed == "timeF" else TemporalEmbedding(d_model, embed, freq)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, x_mark: torch.Tensor) -> torch.Tensor:
        embedded = self.value(x) + self.temporal(x_mark)
        if self.position is not None:
            embedded = embedded + self.position(x)
        return self.dropout(embedded)  # [B, L, d_model]


class PatchEmbedding(nn.Module):
    """Split each series into overlapping patches and embed them (PatchTST, Nie et al., ICLR 2023).

    The series is right-padded by `stride` copies of its last value so that the end is covered,
    giving P = (seq_len - patch_len) // stride + 2 patches.
    x [B, N, T] -> ([B * N, P, d_model], N)
    """

    def __init__(self, d_model: int, patch_len: int, stride: int, dropout: float):
        super().__init__()
        if patch_len <= 0 or stride <= 0:
            raise ValueError(f"--patch_len ({patch_len}) and --stride ({stride}) must be positive")
        self.patch_len, self.stride = patch_len, stride
        self.padding = nn.ReplicationPad1d((0, stride))
        self.value_embedding = TokenEmbedding(patch_len, d_model)
        self.dropout = nn.Dropout(dropout)

    @staticmethod
    def patch_count(seq_len: int, patch_len: int, stride: int) -> int:
        if seq_len < patch_len:
            raise ValueError(f"--seq_len ({seq_len}) must be at least --patch_len ({patch_len})")
        return (seq_len - patch_len) // stride + 2

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, int]:
        n_vars = x.shape[1]
        patches = self.padding(x).unfold(dimension=-1, size=self.patch_len, step=self.stride)  # [B, N, P, patch_len]
        patches = patches.reshape(-1, patches.shape[2], self.patch_len)  # [B * N, P, patch_len]
        return self.dropout(self.value_embedding(patches)), n_vars


class StandardPatchEmbedding(PatchEmbedding, AddOn):
    """Time-LLM's PATCH_EMBEDDING stage when no add-on replaces it: x [B, N, T] -> [B*N, P, d_model]."""

    stage = Stage.PATCH_EMBEDDING

    def __init__(self, config):
        super().__init__(config.d_model, config.patch_len, config.stride, config.dropout)

    def forward(self, x: torch.Tensor, context: Optional[SeriesContext] = None) -> AddOnOutput:
        return AddOnOutput(super().forward(x)[0])
