"""Moving-average trend / seasonal decomposition (Autoformer, Wu et al. 2021; DLinear, Zeng et al. 2023).

x [B, L, C] -> (seasonal [B, L, C], trend [B, L, C]) with x = seasonal + trend exactly.
The ends are padded by repeating the first/last value so the trend keeps length L.
"""
import torch
from torch import nn


class MovingAverage(nn.Module):
    def __init__(self, kernel_size: int):
        super().__init__()
        if kernel_size < 1:
            raise ValueError(f"--moving_avg must be >= 1, got {kernel_size}")
        self.kernel_size = kernel_size
        self.pool = nn.AvgPool1d(kernel_size, stride=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        front = x[:, :1].repeat(1, (self.kernel_size - 1) // 2, 1)
        back = x[:, -1:].repeat(1, self.kernel_size // 2, 1)
        padded = torch.cat([front, x, back], dim=1)  # [B, L + kernel_size - 1, C]
        return self.pool(padded.transpose(1, 2)).transpose(1, 2)  # [B, L, C]


class SeriesDecomposition(nn.Module):
    def __init__(self, kernel_size: int):
        super().__init__()
        self.moving_average = MovingAverage(kernel_size)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        trend = self.moving_average(x)
        return x - trend, trend
