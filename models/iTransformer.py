"""iTransformer (Liu et al., "iTransformer: Inverted Transformers Are Effective for Time Series
Forecasting", ICLR 2024, https://arxiv.org/abs/2310.06625).

    x [B, T, C] --RevIN--> each variable's whole series is one token: Linear(T -> d_model) [B, C, d_model]
      (the time-feature series x_mark [B, T, F] are F more tokens, as in the paper's code)
      --> transformer encoder across variables (attention over tokens = over variables, LayerNorm)
      --> per-variable projection Linear(d_model -> pred_len) on the C variable tokens
      --> [B, pred_len, C] --> RevIN denorm
"""
import torch
from torch import nn

from layers.StandardNorm import Normalize
from layers.Transformer_EncDec import Encoder, EncoderLayer


class Model(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.normalize = Normalize(config.enc_in, affine=False)
        self.embedding = nn.Linear(config.seq_len, config.d_model)
        self.dropout = nn.Dropout(config.dropout)
        self.encoder = Encoder(
            [EncoderLayer(config.d_model, config.n_heads, config.d_ff, config.dropout, config.activation) for _ in range(config.e_layers)],
            final_norm=nn.LayerNorm(config.d_model),
        )
        self.projection = nn.Linear(config.d_model, config.pred_len)

    def forward(self, x_enc: torch.Tensor, x_mark_enc=None, x_dec=None, x_mark_dec=None) -> torch.Tensor:
        n_vars = x_enc.shape[2]
        x_enc = self.normalize(x_enc, "norm")
        series = x_enc.transpose(1, 2)  # [B, C, T]
        if x_mark_enc is not None:
            series = torch.cat([series, x_mark_enc.transpose(1, 2)], dim=1)  # [B, C + F, T]
        tokens, _ = self.encoder(self.dropout(self.embedding(series)))  # [B, C + F, d_model]
        forecast = self.projection(tokens[:, :n_vars]).transpose(1, 2)  # [B, pred_len, C]
        return self.normalize(forecast, "denorm")
