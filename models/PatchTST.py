"""PatchTST (Nie et al., "A Time Series is Worth 64 Words", ICLR 2023, https://arxiv.org/abs/2211.14730).

    x [B, T, C] --RevIN--> each variable alone (channel independence) [B*C, T]
      --> patches [B*C, P, patch_len] (end padded by `stride` copies, P = (T - patch_len) // stride + 2)
      --> linear patch embedding + learned positions [B*C, P, d_model]
      --> transformer encoder with BatchNorm (e_layers) --> flatten [B, C, d_model * P]
      --> linear head --> [B, C, pred_len] --> RevIN denorm --> [B, pred_len, C]

The official defaults for ETTh1 (input 336, patch 16, stride 8, d_model 16, 3 layers, 4 heads, d_ff 128,
dropout 0.3) are in scripts/PatchTST_ETTh1.sh.

Masked self-supervised pre-training (`--task_name masked_pretrain`, driven by `run_pretrain.py
--pretrain_task masked`): non-overlapping patches (stride = patch_len); a random `--mask_ratio` of each
series' patches is set to zero before the embedding, the encoder sees the rest, and a linear
pre-training head [d_model -> patch_len] reconstructs every patch. The output is the reconstructed
input window [B, T, C] with `loss_mask` marking the hidden patches, so the trainer's loss counts only
those. Evaluation hides the same patches on every pass (a fixed generator), so validation losses
compare across epochs. Fine-tuning starts from the pre-trained encoder with a fresh forecasting
head (`task_heads` are not carried over) and trains everything.

Optional regulariser from the notes, not in the paper (`--lambda_patch_attention_kl`, 0: off): the KL
divergence of every layer's patch-attention distributions (averaged over heads) from uniform, added
as the auxiliary term `patch_attention_kl`; it discourages attention collapsing onto few patches.
"""
import torch
from torch import nn

from layers.Embed import PatchEmbedding
from layers.StandardNorm import Normalize
from layers.Transformer_EncDec import Encoder, EncoderLayer
from models import MASKED_PRETRAIN, ForecastOutput
from utils.losses import kl_to_uniform
from utils.settings.models import PatchTSTConfig


class Model(nn.Module):
    task_heads = ("head", "pretrain_head")  # replaced, not loaded, when fine-tuning a pre-trained encoder

    def __init__(self, config: PatchTSTConfig):
        super().__init__()
        self.pretraining = getattr(config, "task_name", None) == MASKED_PRETRAIN
        if self.pretraining and (config.stride != config.patch_len or config.seq_len % config.patch_len):
            raise ValueError(
                f"masked pre-training hides whole patches: it needs --stride equal to --patch_len ({config.stride} vs {config.patch_len}) "
                f"and --seq_len ({config.seq_len}) a multiple of --patch_len"
            )
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
        if self.pretraining:
            self.mask_ratio, self.real_patches = getattr(config, "mask_ratio", 0.4), config.seq_len // config.patch_len
            self.pretrain_head = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(config.d_model, config.patch_len))
        else:
            # No dropout on the forecast itself: the official ETTh1 setting has head_dropout 0.
            self.head = nn.Sequential(nn.Flatten(start_dim=-2), nn.Linear(config.d_model * self.patch_count, config.pred_len))
        self.aux_loss_weights = {"patch_attention_kl": getattr(config, "lambda_patch_attention_kl", 0.0)}

    def patchify(self, x_enc: torch.Tensor) -> torch.Tensor:
        """Normalised x [B, T, C] -> patches [B, C, P, patch_len] (the end padded by `stride` copies)."""
        return self.padding(x_enc.transpose(1, 2)).unfold(dimension=-1, size=self.patch_len, step=self.stride)

    def encode(self, patches: torch.Tensor, need_weights: bool = False) -> tuple[torch.Tensor, list]:
        """Patches [B, C, P, patch_len] -> encoded patches [B, C, P, d_model] and, when asked, each
        layer's attention [B*C, P, P] averaged over heads."""
        batch, n_vars = patches.shape[:2]
        tokens = self.patch_embedding(patches.reshape(batch * n_vars, self.patch_count, self.patch_len)) + self.position
        encoded, attention = self.encoder(self.embedding_dropout(tokens), need_weights)  # [B*C, P, d_model]
        return encoded.reshape(batch, n_vars, self.patch_count, -1), attention

    def hidden_patches(self, batch: int, n_vars: int, device: torch.device) -> torch.Tensor:
        """[B, C, P] True where a real patch is hidden: round(mask_ratio x real patches) per series;
        the same ones on every evaluation pass."""
        generator = None if self.training else torch.Generator(device=device).manual_seed(0)
        scores = torch.rand(batch, n_vars, self.real_patches, device=device, generator=generator)
        hidden_count = max(1, round(self.mask_ratio * self.real_patches))
        ranks = scores.argsort(dim=-1).argsort(dim=-1)
        hidden = ranks < hidden_count
        return torch.cat([hidden, hidden.new_zeros(batch, n_vars, self.patch_count - self.real_patches)], dim=-1)

    def reconstruct(self, x_enc: torch.Tensor) -> ForecastOutput:
        """x [B, T, C] -> the window reconstructed from its visible patches [B, T, C], loss_mask [B, T, C]."""
        batch, length, n_vars = x_enc.shape
        patches = self.patchify(self.normalize(x_enc, "norm"))  # [B, C, P, patch_len]
        hidden = self.hidden_patches(batch, n_vars, x_enc.device)
        encoded, _ = self.encode(patches.masked_fill(hidden.unsqueeze(-1), 0.0))
        reconstructed = self.pretrain_head(encoded)[:, :, : self.real_patches]  # [B, C, T / patch_len, patch_len]
        reconstruction = self.normalize(reconstructed.reshape(batch, n_vars, length).transpose(1, 2), "denorm")
        loss_mask = hidden[:, :, : self.real_patches].repeat_interleave(self.patch_len, dim=-1).transpose(1, 2)
        return ForecastOutput(reconstruction, loss_mask=loss_mask)

    def forward(self, x_enc: torch.Tensor, x_mark_enc=None, x_dec=None, x_mark_dec=None):
        if self.pretraining:
            return self.reconstruct(x_enc)
        x_enc = self.normalize(x_enc, "norm")
        regularised = bool(self.aux_loss_weights["patch_attention_kl"])
        encoded, attention = self.encode(self.patchify(x_enc), need_weights=regularised)  # [B, C, P, d_model]
        forecast = self.head(encoded.transpose(2, 3))  # flatten d_model x P -> [B, C, pred_len]
        prediction = self.normalize(forecast.transpose(1, 2), "denorm")  # [B, pred_len, C]
        if not regularised:
            return ForecastOutput(prediction)
        kl = torch.stack([kl_to_uniform(weights) for weights in attention]).mean()
        return ForecastOutput(prediction, {"patch_attention_kl": kl})
