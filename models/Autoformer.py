"""Autoformer (Wu et al., NeurIPS 2021, https://arxiv.org/abs/2106.13008): decomposition
transformer with auto-correlation. The decoder starts from the last `label_len` steps of the input's
seasonal part (padded with zeros) and trend (padded with the input mean) and refines both.
"""
import torch
from torch import nn

from layers.AutoCorrelation import AutoCorrelation, AutoCorrelationLayer
from layers.Autoformer_EncDec import Decoder, DecoderLayer, Encoder, EncoderLayer, SeasonalLayerNorm
from layers.Embed import DataEmbedding
from layers.SeriesDecomposition import SeriesDecomposition
from models import ForecastOutput
from utils.settings.models import AutoformerConfig


class Model(nn.Module):
    def __init__(self, config: AutoformerConfig):
        super().__init__()
        self.label_len, self.pred_len = config.label_len, config.pred_len
        d_model = config.d_model
        self.decomposition = SeriesDecomposition(config.moving_avg)
        self.encoder_embedding = DataEmbedding(config.enc_in, d_model, config.embed, config.freq, config.dropout, positional=False)
        self.decoder_embedding = DataEmbedding(config.dec_in, d_model, config.embed, config.freq, config.dropout, positional=False)

        def correlation_layer() -> AutoCorrelationLayer:
            return AutoCorrelationLayer(AutoCorrelation(config.factor, config.dropout), d_model, config.n_heads)

        self.encoder = Encoder(
            [
                EncoderLayer(correlation_layer(), d_model, config.d_ff, config.moving_avg, config.dropout, config.activation)
                for _ in range(config.e_layers)
            ],
            norm=SeasonalLayerNorm(d_model),
        )
        self.decoder = Decoder(
            [
                DecoderLayer(
                    correlation_layer(), correlation_layer(), d_model, config.c_out, config.d_ff,
                    config.moving_avg, config.dropout, config.activation,
                )
                for _ in range(config.d_layers)
            ],
            norm=SeasonalLayerNorm(d_model),
            projection=nn.Linear(d_model, config.c_out),
        )

    def forward(self, x_enc: torch.Tensor, x_mark_enc: torch.Tensor, x_dec: torch.Tensor, x_mark_dec: torch.Tensor) -> ForecastOutput:
        mean = x_enc.mean(dim=1, keepdim=True).expand(-1, self.pred_len, -1)
        zeros = torch.zeros_like(mean)
        seasonal, trend = self.decomposition(x_enc)
        start = x_enc.shape[1] - self.label_len  # not [-label_len:], which is everything when label_len is 0
        trend_init = torch.cat([trend[:, start:], mean], dim=1)  # [B, label_len + pred_len, C]
        seasonal_init = torch.cat([seasonal[:, start:], zeros], dim=1)
        encoded = self.encoder(self.encoder_embedding(x_enc, x_mark_enc))
        seasonal_part, trend_part = self.decoder(self.decoder_embedding(seasonal_init, x_mark_dec), encoded, trend_init)
        return ForecastOutput((seasonal_part + trend_part)[:, -self.pred_len :])  # [B, pred_len, c_out]
