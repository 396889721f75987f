"""Reversible instance normalisation (RevIN, Kim et al., ICLR 2022, https://openreview.net/forum?id=cGDAkQo1C0p).

Each series is standardised by its own mean and standard deviation over time before the model and
restored after it, so the model sees level-free inputs and distribution shift between windows is
removed. `norm` stores the statistics of the batch it saw; `denorm` must follow on the same batch.
Shapes: x [B, T, N] -> [B, T, N]; denorm takes [B, H, N].
"""
import torch
from torch import nn


class Normalize(nn.Module):
    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = False, subtract_last: bool = False):
        super().__init__()
        self.eps, self.affine, self.subtract_last = eps, affine, subtract_last
        if affine:
            self.affine_weight = nn.Parameter(torch.ones(num_features))
            self.affine_bias = nn.Parameter(torch.zeros(num_features))

    def forward(self, x: torch.Tensor, mode: str) -> torch.Tensor:
        if mode == "norm":
            self.center = x[:, -1:].detach() if self.subtract_last else x.mean(dim=1, keepdim=True).detach()
            self.stdev = torch.sqrt(x.var(dim=1, keepdim=True, unbiased=False) + self.eps).detach()
            x = (x - self.center) / self.stdev
            return x * self.affine_weight + self.affine_bias if self.affine else x
        if mode == "denorm":
            if self.affine:
                x = (x - self.affine_bias) / (self.affine_weight + self.eps * self.eps)
            return x * self.stdev + self.center
        raise ValueError(f"mode must be 'norm' or 'denorm', got {mode!r}")
