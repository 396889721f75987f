"""DLinear (Zeng et al., "Are Transformers Effective for Time Series Forecasting?", AAAI 2023,
https://arxiv.org/abs/2205.13504): a moving-average decomposition, then one linear map over time
for the seasonal part and one for the trend, shared across variables or one per variable
(`--individual 1`).
"""
import torch
from torch import nn

from layers.SeriesDecomposition import SeriesDecomposition


class Model(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.pred_len = config.pred_len
        self.decomposition = SeriesDecomposition(config.moving_avg)
        self.individual = bool(config.individual)
        n_maps = config.enc_in if self.individual else 1
        self.seasonal = nn.ModuleList(self._time_linear(config.seq_len, config.pred_len) for _ in range(n_maps))
        self.trend = nn.ModuleList(self._time_linear(config.seq_len, config.pred_len) for _ in range(n_maps))

    @staticmethod
    def _time_linear(seq_len: int, pred_len: int) -> nn.Linear:
        # Averaging initialisation, as in the paper's code: every output starts as the input mean.
        linear = nn.Linear(seq_len, pred_len)
        linear.weight.data.fill_(1.0 / seq_len)
        return linear

    def forward(self, x_enc: torch.Tensor, x_mark_enc=None, x_dec=None, x_mark_dec=None) -> torch.Tensor:
        seasonal, trend = self.decomposition(x_enc)
        seasonal, trend = seasonal.transpose(1, 2), trend.transpose(1, 2)  # [B, C, seq_len]
        if self.individual:
            forecast = torch.stack(
                [self.seasonal[c](seasonal[:, c]) + self.trend[c](trend[:, c]) for c in range(seasonal.shape[1])], dim=1
            )
        else:
            forecast = self.seasonal[0](seasonal) + self.trend[0](trend)  # [B, C, pred_len]
        return forecast.transpose(1, 2)  # [B, pred_len, C]
