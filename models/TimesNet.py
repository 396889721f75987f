"""TimesNet (Wu et al., "TimesNet: Temporal 2D-Variation Modeling for General Time Series Analysis",
ICLR 2023, https://arxiv.org/abs/2210.02186).

    x [B, T, C] --normalise--> DataEmbedding [B, T, d_model] --Linear over time--> [B, T + H, d_model]
      --> e_layers x (TimesBlock, LayerNorm) --> Linear(d_model -> C) --> last H steps --> denorm

TimesBlock: the FFT amplitude spectrum (averaged over features) gives the k strongest frequencies
f_i (`--top_k`) and periods p_i = L // f_i; the sequence is folded into a 2D map [L/p_i, p_i] per
period, processed by two Inception blocks of 2D convolutions (`--num_kernels` kernel sizes 1, 3, ..),
unfolded, and the k results are summed with softmax weights from their amplitudes, plus a residual.

Deviation from the reference code, which picks the k periods from the spectrum averaged over the
whole batch: here each sample picks its own periods (as the paper's Eq. 1 defines them for one
series), and the samples that share a period are folded together. So a forecast never depends on the
other windows in its batch, in training or in evaluation.

Optional regulariser from the notes, not in the paper (`--lambda_frequency_consistency`, 0: off): the
mean squared change of the amplitude spectrum |rfft over time| [B, (T + H) // 2 + 1, d_model] from
each TimesBlock's input to its output, averaged over blocks, added as the auxiliary term
`frequency_consistency`; it keeps the blocks from reshaping the spectrum abruptly.
"""
import torch
from torch import nn
from torch.nn import functional as F

from layers.Embed import DataEmbedding
from layers.StandardNorm import Normalize
from models import ForecastOutput
from utils.settings.models import TimesNetConfig


class InceptionBlock(nn.Module):
    """Mean of 2D convolutions with kernel sizes 1, 3, .., 2 * num_kernels - 1 (same padding)."""

    def __init__(self, in_channels: int, out_channels: int, num_kernels: int):
        super().__init__()
        self.convolutions = nn.ModuleList(nn.Conv2d(in_channels, out_channels, 2 * i + 1, padding=i) for i in range(num_kernels))
        for convolution in self.convolutions:
            nn.init.kaiming_normal_(convolution.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(convolution.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([convolution(x) for convolution in self.convolutions], dim=-1).mean(dim=-1)


class TimesBlock(nn.Module):
    def __init__(self, d_model: int, d_ff: int, top_k: int, num_kernels: int):
        super().__init__()
        self.top_k = top_k
        self.convolution = nn.Sequential(InceptionBlock(d_model, d_ff, num_kernels), nn.GELU(), InceptionBlock(d_ff, d_model, num_kernels))

    def fold_and_convolve(self, x: torch.Tensor, period: int) -> torch.Tensor:
        """x [b, L, d] -> 2D map [b, d, ceil(L / period), period] -> convolutions -> [b, L, d]."""
        batch, length, channels = x.shape
        padded = F.pad(x, (0, 0, 0, -length % period))  # zeros at the end, to a multiple of the period
        folded = padded.reshape(batch, -1, period, channels).permute(0, 3, 1, 2)
        return self.convolution(folded).permute(0, 2, 3, 1).reshape(batch, -1, channels)[:, :length]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, L, d_model] -> [B, L, d_model]."""
        length = x.shape[1]
        amplitudes = torch.fft.rfft(x.float(), dim=1).abs().mean(dim=-1)  # [B, L // 2 + 1]
        amplitudes[:, 0] = 0  # the mean is no period
        weights, frequencies = amplitudes.topk(self.top_k, dim=1)  # [B, k]
        periods = length // frequencies.clamp_min(1)
        outputs = []
        for rank in range(self.top_k):
            output = torch.zeros_like(x)
            for period in periods[:, rank].unique().tolist():
                rows = (periods[:, rank] == period).nonzero().squeeze(1)
                output = output.index_copy(0, rows, self.fold_and_convolve(x[rows], period))
            outputs.append(output)
        stacked = torch.stack(outputs, dim=-1)  # [B, L, d_model, k]
        return (stacked * torch.softmax(weights, dim=1).to(x.dtype)[:, None, None, :]).sum(dim=-1) + x


class Model(nn.Module):
    def __init__(self, config: TimesNetConfig):
        super().__init__()
        self.pred_len = config.pred_len
        self.normalize = Normalize(config.enc_in, affine=False)
        self.embedding = DataEmbedding(config.enc_in, config.d_model, config.embed, config.freq, config.dropout)
        self.extend = nn.Linear(config.seq_len, config.seq_len + config.pred_len)
        self.blocks = nn.ModuleList(TimesBlock(config.d_model, config.d_ff, config.top_k, config.num_kernels) for _ in range(config.e_layers))
        self.norm = nn.LayerNorm(config.d_model)
        self.projection = nn.Linear(config.d_model, config.c_out)
        self.aux_loss_weights = {"frequency_consistency": getattr(config, "lambda_frequency_consistency", 0.0)}

    def forward(self, x_enc: torch.Tensor, x_mark_enc=None, x_dec=None, x_mark_dec=None):
        x_enc = self.normalize(x_enc, "norm")
        hidden = self.embedding(x_enc, x_mark_enc)  # [B, T, d_model]
        hidden = self.extend(hidden.transpose(1, 2)).transpose(1, 2)  # [B, T + H, d_model]
        states = [hidden]
        for block in self.blocks:
            hidden = self.norm(block(hidden))
            states.append(hidden)
        forecast = self.projection(hidden)[:, -self.pred_len :]  # [B, H, C]
        prediction = self.normalize(forecast, "denorm")
        if not self.aux_loss_weights["frequency_consistency"]:
            return ForecastOutput(prediction)
        spectra = [torch.fft.rfft(state.float(), dim=1).abs() for state in states]
        change = torch.stack([(after - before).pow(2).mean() for before, after in zip(spectra, spectra[1:])]).mean()
        return ForecastOutput(prediction, {"frequency_consistency": change})
