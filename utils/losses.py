"""Training losses selected by `--loss`.

All take (forecast [B, H, C], target [B, H, C]) and optionally the input window and a mask of
valid target values (M4 series are padded). SMAPE/MASE/MAPE follow the N-BEATS / Time-Series-Library
definitions; divisions by zero count as zero instead of producing inf/nan.
"""
from typing import Optional

import torch
from torch import nn


def _divide_no_nan(numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    result = numerator / denominator
    return torch.where(torch.isfinite(result), result, torch.zeros_like(result))


class ForecastLoss(nn.Module):
    """Base: subclasses implement `elementwise` or override `forward`."""

    def forward(self, forecast, target, insample: Optional[torch.Tensor] = None, mask: Optional[torch.Tensor] = None):
        values = self.elementwise(forecast, target)
        if mask is None:
            return values.mean()
        return (values * mask).sum() / mask.sum().clamp_min(1)


class MSELoss(ForecastLoss):
    def elementwise(self, forecast, target):
        return (forecast - target) ** 2


class MAELoss(ForecastLoss):
    def elementwise(self, forecast, target):
        return (forecast - target).abs()


class MAPELoss(ForecastLoss):
    def elementwise(self, forecast, target):
        return _divide_no_nan((forecast - target).abs(), target.abs())


class SMAPELoss(ForecastLoss):
    def elementwise(self, forecast, target):
        return 200.0 * _divide_no_nan((forecast - target).abs(), forecast.detach().abs() + target.abs())


class MASELoss(ForecastLoss):
    """Absolute error scaled by the in-sample seasonal naive error at `frequency` (per series)."""

    def __init__(self, frequency: int = 1):
        super().__init__()
        self.frequency = frequency

    def forward(self, forecast, target, insample: Optional[torch.Tensor] = None, mask: Optional[torch.Tensor] = None):
        if insample is None:
            raise ValueError("MASE needs the input window (insample)")
        seasonal_error = (insample[:, self.frequency:] - insample[:, : -self.frequency]).abs().mean(dim=1, keepdim=True)
        values = _divide_no_nan((forecast - target).abs(), seasonal_error)
        if mask is None:
            return values.mean()
        return (values * mask).sum() / mask.sum().clamp_min(1)


class SmoothL1Loss(ForecastLoss):
    """Huber-like: squared below an absolute error of 1, linear above (iTransformer notes' main loss)."""

    def elementwise(self, forecast, target):
        return nn.functional.smooth_l1_loss(forecast, target, reduction="none")


LOSSES = {"MSE": MSELoss, "MAE": MAELoss, "MAPE": MAPELoss, "SMAPE": SMAPELoss, "MASE": MASELoss, "SmoothL1": SmoothL1Loss}


def build_loss(name: str, frequency: int = 1) -> ForecastLoss:
    if name not in LOSSES:
        raise ValueError(f"--loss {name!r} is not known; valid: {', '.join(LOSSES)}")
    return MASELoss(frequency) if name == "MASE" else LOSSES[name]()


# ------------------------------------------------------------------- regulariser terms of the notes
def orthogonality_penalty(matrix: torch.Tensor) -> torch.Tensor:
    """||W^T W - I||_F^2 for W [..., n, d] (each trailing matrix), summed over leading dimensions."""
    gram = matrix.transpose(-1, -2) @ matrix
    identity = torch.eye(gram.shape[-1], device=gram.device, dtype=gram.dtype)
    return (gram - identity).pow(2).sum()


def kl_to_uniform(probabilities: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """KL(p || uniform) = sum p log p + log n along `dim`, averaged over the other dimensions; 0 iff p is uniform."""
    n = probabilities.shape[dim]
    entropy_term = (probabilities * probabilities.clamp_min(1e-12).log()).sum(dim=dim)
    return (entropy_term + torch.log(torch.tensor(float(n)))).mean()
