"""TimeXer (Wang et al., "TimeXer: Empowering Transformers for Time Series Forecasting with Exogenous
Variables", NeurIPS 2024, https://arxiv.org/abs/2402.19072).

    x [B, T, C] --normalise-->
      endogenous: the target (features MS: the last variable; M: every variable in turn)
        -> non-overlapping patches -> Linear + learned positions, plus one learned global token
        [B*E, P + 1, d_model]
      exogenous: every input variable's whole series (and the time-feature series) as one token each
        (Linear(T -> d_model), as iTransformer) [B, C_x, d_model]
      e_layers x: self-attention over the endogenous patch and global tokens; cross-attention from the
        global token to the exogenous tokens; feed-forward; LayerNorm after each
      --> flatten [P + 1, d_model] -> Linear -> [B, H, E] -> denorm

With features MS the exogenous tokens are the other variables (the target is endogenous); with M
every variable is endogenous once and all variables are exogenous tokens.

Optional regulariser from the notes, not in the paper (`--lambda_attention_orthogonality`, 0: off):
sum over layers of ||W^T W - I||_F^2 for the cross-attention's query, key and value projection
matrices W [d_model, d_model], added as the auxiliary term `attention_orthogonality`.
"""
import torch
from torch import nn

from layers.StandardNorm import Normalize
from models import ForecastOutput
from utils.losses import orthogonality_penalty
from utils.settings.models import TimeXerConfig


class EncoderLayer(nn.Module):
    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float, activation: str):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"--d_model ({d_model}) must be divisible by --n_heads ({n_heads})")
        self.self_attention = nn.MultiheadAttention(d_model, n_heads, dropout=dropout, batch_first=True)
        self.cross_attention = nn.MultiheadAttention(d_model, n_heads, dropout=dropout, batch_first=True)
        self.feed_forward = nn.Sequential(
            nn.Linear(d_model, d_ff), nn.GELU() if activation == "gelu" else nn.ReLU(), nn.Dropout(dropout), nn.Linear(d_ff, d_model)
        )
        self.norms = nn.ModuleList(nn.LayerNorm(d_model) for _ in range(3))
        self.dropout = nn.Dropout(dropout)

    def forward(self, endogenous: torch.Tensor, exogenous: torch.Tensor) -> torch.Tensor:
        """endogenous [B*E, P + 1, d_model] (the global token last), exogenous [B*E, C_x, d_model] -> like endogenous."""
        attended = self.self_attention(endogenous, endogenous, endogenous, need_weights=False)[0]
        endogenous = self.norms[0](endogenous + self.dropout(attended))
        global_token = endogenous[:, -1:]
        informed = self.cross_attention(global_token, exogenous, exogenous, need_weights=False)[0]
        global_token = self.norms[1](global_token + self.dropout(informed))
        endogenous = torch.cat([endogenous[:, :-1], global_token], dim=1)
        return self.norms[2](endogenous + self.dropout(self.feed_forward(endogenous)))


class Model(nn.Module):
    def __init__(self, config: TimeXerConfig):
        super().__init__()
        if config.seq_len % config.patch_len:
            raise ValueError(f"TimeXer: --seq_len ({config.seq_len}) must be a multiple of --patch_len ({config.patch_len}) (non-overlapping patches)")
        self.single_target = config.features == "MS"
        self.patch_len, self.patch_count = config.patch_len, config.seq_len // config.patch_len
        self.normalize = Normalize(config.enc_in, affine=False)
        self.patch_embedding = nn.Linear(config.patch_len, config.d_model, bias=False)
        self.position = nn.Parameter(torch.empty(1, self.patch_count, config.d_model).uniform_(-0.02, 0.02))
        self.global_token = nn.Parameter(torch.randn(1, 1, config.d_model) * 0.02)
        self.variate_embedding = nn.Linear(config.seq_len, config.d_model)
        self.dropout = nn.Dropout(config.dropout)
        self.layers = nn.ModuleList(EncoderLayer(config.d_model, config.n_heads, config.d_ff, config.dropout, config.activation) for _ in range(config.e_layers))
        self.head = nn.Sequential(nn.Flatten(start_dim=-2), nn.Linear(config.d_model * (self.patch_count + 1), config.pred_len), nn.Dropout(config.dropout))
        self.aux_loss_weights = {"attention_orthogonality": getattr(config, "lambda_attention_orthogonality", 0.0)}

    def attention_orthogonality(self) -> torch.Tensor:
        """Sum over layers and the query/key/value projections of ||W^T W - I||_F^2."""
        d_model = self.position.shape[-1]
        return sum(orthogonality_penalty(layer.cross_attention.in_proj_weight.view(3, d_model, d_model)) for layer in self.layers)

    def forward(self, x_enc: torch.Tensor, x_mark_enc=None, x_dec=None, x_mark_dec=None):
        prediction = self.forecast(x_enc, x_mark_enc)
        if not self.aux_loss_weights["attention_orthogonality"]:
            return ForecastOutput(prediction)
        return ForecastOutput(prediction, {"attention_orthogonality": self.attention_orthogonality()})

    def forecast(self, x_enc: torch.Tensor, x_mark_enc=None) -> torch.Tensor:
        """x [B, T, C] -> forecast [B, H, E]."""
        batch = x_enc.shape[0]
        x_enc = self.normalize(x_enc, "norm")
        endogenous_series = x_enc[:, :, -1:] if self.single_target else x_enc  # [B, T, E]
        exogenous_series = x_enc[:, :, :-1] if self.single_target else x_enc  # [B, T, C_x]
        n_endogenous = endogenous_series.shape[2]
        patches = endogenous_series.transpose(1, 2).reshape(batch * n_endogenous, self.patch_count, self.patch_len)
        tokens = self.patch_embedding(patches) + self.position  # [B*E, P, d_model]
        tokens = self.dropout(torch.cat([tokens, self.global_token.expand(len(tokens), -1, -1)], dim=1))  # [B*E, P + 1, d_model]
        variates = exogenous_series.transpose(1, 2)  # [B, C_x, T]
        if x_mark_enc is not None:
            variates = torch.cat([variates, x_mark_enc.transpose(1, 2)], dim=1)  # time features are tokens too
        exogenous = self.dropout(self.variate_embedding(variates)).repeat_interleave(n_endogenous, dim=0)  # [B*E, C_x, d_model]
        for layer in self.layers:
            tokens = layer(tokens, exogenous)
        forecast = self.head(tokens.transpose(1, 2)).reshape(batch, n_endogenous, -1).transpose(1, 2)  # [B, H, E]
        if self.single_target:  # denormalise with the target's statistics
            return forecast * self.normalize.stdev[:, :, -1:] + self.normalize.center[:, :, -1:]
        return self.normalize(forecast, "denorm")
