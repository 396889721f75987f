"""DLinear (Zeng et al., "Are Transformers Effective for Time Series Forecasting?", AAAI 2023,
https://arxiv.org/abs/2205.13504): a moving-average decomposition, then one linear map over time
for the seasonal part and one for the trend, shared across variables or one per variable
(`--individual 1`).

Optional regulariser from the notes, not in the paper (`--lambda_trend_residual`, 0: off): the MSE
of the trend branch's forecast alone against the true future, so the trend branch carries the level
and slope by itself; it is added to the loss as the auxiliary term `trend_residual`.
"""
import torch
from torch import nn

from layers.SeriesDecomposition import SeriesDecomposition
from models import ForecastOutput
from utils.settings.models import DLinearConfig


class Model(nn.Module):
    def __init__(self, config: DLinearConfig):
        super().__init__()
        self.pred_len = config.pred_len
        self.decomposition = SeriesDecomposition(config.moving_avg)
        self.individual = bool(config.individual)
        n_maps = config.enc_in if self.individual else 1
        self.seasonal = nn.ModuleList(self._time_linear(config.seq_len, config.pred_len) for _ in range(n_maps))
        self.trend = nn.ModuleList(self._time_linear(config.seq_len, config.pred_len) for _ in range(n_maps))
        self.aux_loss_weights = {"trend_residual": getattr(config, "lambda_trend_residual", 0.0)}

    @staticmethod
    def _time_linear(seq_len: int, pred_len: int) -> nn.Linear:
        # Averaging initialisation, as in the paper's code: every output starts as the input mean.
        linear = nn.Linear(seq_len, pred_len)
        linear.weight.data.fill_(1.0 / seq_len)
        return linear

    def _per_variable(self, maps: nn.ModuleList, series: torch.Tensor) -> torch.Tensor:
        """series [B, C, seq_len] -> [B, C, pred_len] with the shared map or one map per variable."""
        if self.individual:
            return torch.stack([maps[c](series[:, c]) for c in range(series.shape[1])], dim=1)
        return maps[0](series)

    def forward(self, x_enc: torch.Tensor, x_mark_enc=None, x_dec=None, x_mark_dec=None):
        seasonal, trend = self.decomposition(x_enc)
        seasonal, trend = seasonal.transpose(1, 2), trend.transpose(1, 2)  # [B, C, seq_len]
        trend_forecast = self._per_variable(self.trend, trend).transpose(1, 2)  # [B, pred_len, C]
        forecast = self._per_variable(self.seasonal, seasonal).transpose(1, 2) + trend_forecast
        if not self.aux_loss_weights["trend_residual"]:
            return ForecastOutput(forecast)
        return ForecastOutput(forecast, supervised_terms=lambda future: ({"trend_residual": (trend_forecast - future).pow(2).mean()}, {}))
