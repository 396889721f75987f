"""Resampling along the sequence axis as a product with a fixed matrix: linear interpolation and
adaptive average pooling, with PyTorch's own weights.

Why not F.interpolate / F.adaptive_avg_pool1d directly: on CUDA their backward passes accumulate with
atomic additions, whose order varies from run to run, so training with them is not reproducible
(`torch.use_deterministic_algorithms(True)` refuses them). A matrix product has a deterministic
backward everywhere. The matrices are those functions applied once to an identity matrix, so the
results equal theirs up to float rounding.

Shapes: values [S, L, d] -> [S, length, d].
"""
from functools import lru_cache

import torch
from torch.nn import functional as F


@lru_cache(maxsize=64)
def _matrix(kind: str, source: int, target: int) -> torch.Tensor:
    """[target, source]: row t holds the weights of output position t over the source positions."""
    identity = torch.eye(source, dtype=torch.float64).unsqueeze(0)  # [1, source (as channels), source]
    if kind == "average":
        weights = F.adaptive_avg_pool1d(identity, target)
    else:
        weights = F.interpolate(identity, size=target, mode="linear", align_corners=kind == "linear_aligned")
    return weights[0].T.contiguous()  # [target, source]


def _apply(kind: str, values: torch.Tensor, length: int) -> torch.Tensor:
    matrix = _matrix(kind, values.shape[1], length).to(device=values.device, dtype=values.dtype)
    return torch.einsum("ts,bsd->btd", matrix, values)


def interpolate_linear(values: torch.Tensor, length: int, align_corners: bool = False) -> torch.Tensor:
    """values [S, L, d] -> [S, length, d], as F.interpolate(mode="linear") along L."""
    return _apply("linear_aligned" if align_corners else "linear", values, length)


def adaptive_average(values: torch.Tensor, length: int) -> torch.Tensor:
    """values [S, L, d] -> [S, length, d], as F.adaptive_avg_pool1d along L."""
    return _apply("average", values, length)
