"""PAttn (Tan et al., "Are Language Models Actually Useful for Time Series Forecasting?", NeurIPS 2024,
https://arxiv.org/abs/2406.16964; code: BennyTMT/LLMsForTimeSeries, PAttn/models/PAttn.py): the paper's
LLM-free baseline, patching and one attention layer.

    x [B, T, N] --RevIN--> series [B, N, T] --replicate-pad stride, unfold--> patches [B, N, P, patch_len]
    --Linear(patch_len, d_model)--> [B*N, P, d_model] --Tan's attention layer--> [B*N, P, d_model]
    --flatten, Linear(P * d_model, pred_len)--> [B, N, pred_len] --RevIN denorm--> [B, pred_len, N]

Channel independent; P = (seq_len - patch_len) // stride + 2. Tan's code fixes the stride at
patch_len // 2, which the defaults (16, 8) give; the attention layer is layers/LLMAblations.TanAttention
(8 heads whatever --n_heads, as in Tan's code). Tan's scripts use d_model 768.
"""
import torch
from torch import nn

from layers.LLMAblations import TanAttention
from layers.StandardNorm import Normalize
from models import ForecastOutput
from utils.settings.models import PAttnConfig


class Model(nn.Module):
    def __init__(self, config: PAttnConfig):
        super().__init__()
        if config.seq_len < config.patch_len:
            raise ValueError(f"--seq_len ({config.seq_len}) must be at least --patch_len ({config.patch_len})")
        self.patch_len, self.stride = config.patch_len, config.stride
        patches = (config.seq_len - config.patch_len) // config.stride + 2
        self.normalize = Normalize(config.enc_in, affine=False)
        self.padding = nn.ReplicationPad1d((0, config.stride))
        self.patch_projection = nn.Linear(config.patch_len, config.d_model)
        self.attention = TanAttention(config.d_model)
        self.head = nn.Linear(patches * config.d_model, config.pred_len)

    def forward(self, x_enc: torch.Tensor, x_mark_enc=None, x_dec=None, x_mark_dec=None) -> ForecastOutput:
        batch, _, n_vars = x_enc.shape
        series = self.normalize(x_enc, "norm").permute(0, 2, 1)  # [B, N, T]
        patches = self.padding(series).unfold(dimension=-1, size=self.patch_len, step=self.stride)  # [B, N, P, patch_len]
        tokens = self.patch_projection(patches).flatten(0, 1)  # [B*N, P, d_model]
        hidden = self.attention(tokens).reshape(batch, n_vars, -1)  # [B, N, P * d_model]
        forecast = self.head(hidden)  # [B, N, pred_len]
        return ForecastOutput(self.normalize(forecast.permute(0, 2, 1), "denorm"))  # [B, pred_len, N]
