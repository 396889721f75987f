"""iTransformer (Liu et al., "iTransformer: Inverted Transformers Are Effective for Time Series
Forecasting", ICLR 2024, https://arxiv.org/abs/2310.06625).

    x [B, T, C] --RevIN--> each variable's whole series is one token: Linear(T -> d_model) [B, C, d_model]
      (the time-feature series x_mark [B, T, F] are F more tokens, as in the paper's code)
      --> transformer encoder across variables (attention over tokens = over variables, LayerNorm)
      --> per-variable projection Linear(d_model -> pred_len) on the C variable tokens
      --> [B, pred_len, C] --> RevIN denorm

Optional regulariser from the notes, not in the paper (`--lambda_embedding_orthogonality`, 0: off):
||E E^T - I||_F^2 / C^2 of the variable tokens E [C, d_model] after the embedding, each normalised
to unit length (so it penalises the squared cosine similarity between variables; a raw E E^T = I
would also fix every token's scale), averaged over the batch; added as the auxiliary term
`embedding_orthogonality`. The notes pair it with a SmoothL1 main loss: `--loss SmoothL1`.
"""
import torch
from torch import nn

from layers.StandardNorm import Normalize
from layers.Transformer_EncDec import Encoder, EncoderLayer
from models import ForecastOutput
from utils.losses import orthogonality_penalty
from utils.settings.models import ITransformerConfig


class Model(nn.Module):
    def __init__(self, config: ITransformerConfig):
        super().__init__()
        self.normalize = Normalize(config.enc_in, affine=False)
        self.embedding = nn.Linear(config.seq_len, config.d_model)
        self.dropout = nn.Dropout(config.dropout)
        self.encoder = Encoder(
            [EncoderLayer(config.d_model, config.n_heads, config.d_ff, config.dropout, config.activation) for _ in range(config.e_layers)],
            final_norm=nn.LayerNorm(config.d_model),
        )
        self.projection = nn.Linear(config.d_model, config.pred_len)
        self.aux_loss_weights = {"embedding_orthogonality": getattr(config, "lambda_embedding_orthogonality", 0.0)}

    def forward(self, x_enc: torch.Tensor, x_mark_enc=None, x_dec=None, x_mark_dec=None):
        batch, _, n_vars = x_enc.shape
        x_enc = self.normalize(x_enc, "norm")
        series = x_enc.transpose(1, 2)  # [B, C, T]
        if x_mark_enc is not None:
            series = torch.cat([series, x_mark_enc.transpose(1, 2)], dim=1)  # [B, C + F, T]
        embedded = self.embedding(series)  # [B, C + F, d_model]
        tokens, _ = self.encoder(self.dropout(embedded))
        forecast = self.projection(tokens[:, :n_vars]).transpose(1, 2)  # [B, pred_len, C]
        prediction = self.normalize(forecast, "denorm")
        if not self.aux_loss_weights["embedding_orthogonality"]:
            return ForecastOutput(prediction)
        unit_tokens = nn.functional.normalize(embedded[:, :n_vars], dim=-1).transpose(1, 2)  # E^T per sample [B, d_model, C]
        penalty = orthogonality_penalty(unit_tokens) / (batch * n_vars**2)
        return ForecastOutput(prediction, {"embedding_orthogonality": penalty})
