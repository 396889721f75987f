"""PatchTST (Nie et al., "A Time Series is Worth 64 Words", ICLR 2023, https://arxiv.org/abs/2211.14730).

    x [B, T, C] --RevIN--> each variable alone (channel independence) [B*C, T]
      --> patches [B*C, P, patch_len] (end padded by `stride` copies, P = (T - patch_len) // stride + 2)
      --> linear patch embedding + learned positions [B*C, P, d_model]
      --> transformer encoder with BatchNorm (e_layers) --> flatten [B, C, d_model * P]
      --> linear head --> [B, C, pred_len] --> RevIN denorm --> [B, pred_len, C]

The official defaults for ETTh1 (input 336, patch 16, stride 8, d_model 16, 3 layers, 4 heads, d_ff 128,
dropout 0.3) are in scripts/PatchTST_ETTh1.sh.
"""
import torch
from torch import nn

from layers.Embed import PatchEmbedding
from layers.StandardNorm import Normalize
from layers.Transformer_EncDec import Encoder, EncoderLayer


class Model(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.patch_len, self.stride = config.patch_len, config.stride
        self.patch_count = PatchEmbedding.patch_count(config.seq_len, config.patch_len, config.stride)
        self.normalize = Normalize(config.enc_in, affine=False)
        self.padding = nn.ReplicationPad1d((0, config.stride))
        self.patch_embedding = nn.Linear(config.patch_len, config.d_model, bias=False)
        self.position = nn.Parameter(torch.empty(1, self.patch_count, config.d_model).uniform_(-0.02, 0.02))
        self.embedding_dropout = nn.Dropout(config.dropout)
        self.encoder = Encoder([
            EncoderLayer(config.d_model, config.n_heads, config.d_ff, config.dropout, config.activation, norm="batch")
            for _ in range(config.e_layers)
        ])
        # No dropout on the forecast itself: the official ETTh1 setting has head_dropout 0.
        self.head = nn.Sequential(nn.Flatten(start_dim=-2), nn.Linear(config.d_model * self.patch_count, config.pred_len))

    def encode(self, x_enc: torch.Tensor) -> torch.Tensor:
        """Normalised x [B, T, C] -> encoded patches [B, C, P, d_model]."""
        batch, _, n_vars = x_enc.shape
        patches = self.padding(x_enc.transpose(1, 2)).unfold(dimension=-1, size=self.patch_len, step=self.stride)  # [B, C, P, patch_len]
        tokens = self.patch_embedding(patches.reshape(batch * n_vars, self.patch_count, self.patch_len)) + self.position
        encoded, _ = self.encoder(self.embedding_dropout(tokens))  # [B*C, P, d_model]
        return encoded.reshape(batch, n_vars, self.patch_count, -1)

    def forward(self, x_enc: torch.Tensor, x_mark_enc=None, x_dec=None, x_mark_dec=None) -> torch.Tensor:
        x_enc = self.normalize(x_enc, "norm")
        encoded = self.encode(x_enc)  # [B, C, P, d_model]
        forecast = self.head(encoded.transpose(2, 3))  # flatten d_model x P -> [B, C, pred_len]
        return self.normalize(forecast.transpose(1, 2), "denorm")  # [B, pred_len, C]
