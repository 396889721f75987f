"""Wavelet patch embedding: patches of a stationary wavelet transform (SWT) instead of raw values
(`--use_wavelet 1`; a drop-in replacement of PatchEmbedding, same output shape).

    x [B, N, T] --float32, boundary extension (--wavelet_mode)--> SWT with ptwt, --swt_level L
      --> bands [B*N, L + 1, T] (approximation cA_L, then details cD_L .. cD_1; or cA_L alone with
          --use_all_coeffs 0), all aligned with the input in time (the SWT does not decimate)
      --> learned band weights (softmax, times the band count, so they start at 1)
      --> patches [B*N, bands, P, patch_len], P as in PatchEmbedding (end padded by `stride` copies)
      --> projection: flatten (one token embedding over patch_len * bands)
                      or band (one token embedding per band, then a linear fusion)
      --> + learned patch positions --> dropout --> optional semantic MLP (--wavelet_semantic 1)
      --> [B*N, P, d_model]

The transform runs in float32 even under autocast (entered once, here). ptwt's SWT wraps the signal
circularly; `--wavelet_mode` chooses how the series is extended before the transform (replicate,
reflect, zero, or periodic, ptwt's own wrap) and the extension is cropped from the bands, so the
series' end is not mixed with its start unless asked for. Padding to a multiple of 2^L is part of
the extension.

`--learnable_wavelet 1` makes the four filters parameters (ptwt's ProductFilter), initialised from
PyWavelets' `--wavelet`; its perfect-reconstruction and alias-cancellation loss is returned as the
auxiliary loss `wavelet_reconstruction` (weight `--lambda_wavelet`), so the filters stay a wavelet
while they adapt.
"""
import math
from typing import Optional

import ptwt
import pywt
import torch
from ptwt.wavelets_learnable import ProductFilter
from torch import nn
from torch.nn import functional as F

from layers.AddOn import AddOn, AddOnOutput, SeriesContext, Stage
from layers.Embed import PatchEmbedding, TokenEmbedding
from utils.settings.addons import WaveletConfig

WAVELET_MODES = ("replicate", "reflect", "zero", "periodic")
PAD_MODES = {"replicate": "replicate", "reflect": "reflect", "zero": "constant"}
PROJECTIONS = ("flatten", "band")


class WaveletPatchEmbedding(AddOn):
    stage = Stage.PATCH_EMBEDDING

    def __init__(self, config: WaveletConfig):
        super().__init__()
        if config.wavelet not in pywt.wavelist(kind="discrete"):
            raise ValueError(f"--wavelet {config.wavelet!r} is not a discrete PyWavelets wavelet (e.g. haar, db4, sym4)")
        if config.swt_level < 1:
            raise ValueError(f"--swt_level must be >= 1, got {config.swt_level}")
        if config.wavelet_mode not in WAVELET_MODES:
            raise ValueError(f"--wavelet_mode must be one of {WAVELET_MODES}, got {config.wavelet_mode!r}")
        if config.wavelet_projection not in PROJECTIONS:
            raise ValueError(f"--wavelet_projection must be one of {PROJECTIONS}, got {config.wavelet_projection!r}")
        self.level, self.mode = config.swt_level, config.wavelet_mode
        self.patch_len, self.stride = config.patch_len, config.stride
        self.patch_count = PatchEmbedding.patch_count(config.seq_len, config.patch_len, config.stride)
        wavelet = pywt.Wavelet(config.wavelet)
        # Samples of the input that reach one output sample: the extension on each side.
        self.support = (wavelet.dec_len - 1) * (2**self.level - 1)
        if self.mode == "reflect" and self.support >= config.seq_len:
            raise ValueError(f"--wavelet_mode reflect needs --seq_len > {self.support} for --wavelet {config.wavelet} at --swt_level {self.level}; use replicate")
        filter_bank = [torch.tensor(taps, dtype=torch.float32) for taps in wavelet.filter_bank]  # dec_lo, dec_hi, rec_lo, rec_hi
        self.filters = ProductFilter(*filter_bank) if config.learnable_wavelet else None
        # Fixed filters as tensors that follow the module's device (not rebuilt from lists every call).
        for name, taps in zip(("dec_lo", "dec_hi", "rec_lo", "rec_hi"), filter_bank):
            self.register_buffer(name, taps, persistent=False)
        self.bands = self.level + 1 if config.use_all_coeffs else 1
        self.band_logits = nn.Parameter(torch.zeros(self.bands))
        if config.wavelet_projection == "flatten":
            self.projection = TokenEmbedding(config.patch_len * self.bands, config.d_model)
            self.band_projections = self.fusion = None
        else:
            d_band = math.ceil(config.d_model / self.bands)
            self.band_projections = nn.ModuleList(TokenEmbedding(config.patch_len, d_band) for _ in range(self.bands))
            self.fusion = nn.Linear(d_band * self.bands, config.d_model)
            self.projection = None
        self.position = nn.Parameter(nn.init.trunc_normal_(torch.zeros(1, self.patch_count, config.d_model), std=0.02))
        self.semantic = (
            nn.Sequential(nn.Linear(config.d_model, config.d_model), nn.GELU(), nn.Linear(config.d_model, config.d_model))
            if config.wavelet_semantic else None
        )
        self.dropout = nn.Dropout(config.dropout)
        self.aux_loss_weights = {"wavelet_reconstruction": config.lambda_wavelet} if self.filters is not None else {}

    @property
    def wavelet(self):
        """What ptwt's transforms take: the learnable filters, or the fixed filter tensors."""
        return self.filters if self.filters is not None else (self.dec_lo, self.dec_hi, self.rec_lo, self.rec_hi)

    def extend(self, series: torch.Tensor) -> tuple[torch.Tensor, int]:
        """[S, T] -> (extended [S, T'], T' a multiple of 2^level; offset of the first original sample)."""
        side = 0 if self.mode == "periodic" else self.support
        if side:
            series = F.pad(series.unsqueeze(1), (side, side), mode=PAD_MODES[self.mode]).squeeze(1)
        tail = -series.shape[-1] % 2**self.level
        if tail:
            series = F.pad(series.unsqueeze(1), (0, tail), mode="replicate").squeeze(1)
        return series, side

    def transform(self, series: torch.Tensor) -> list[torch.Tensor]:
        """[S, T] float32 -> SWT coefficients of the extended series, ptwt's order [cA_L, cD_L, .., cD_1],
        each [S, T'] (ptwt.iswt inverts them)."""
        extended, _ = self.extend(series)
        return ptwt.swt(extended, self.wavelet, level=self.level)

    def forward(self, x: torch.Tensor, context: Optional[SeriesContext] = None) -> AddOnOutput:
        """x [B, N, T] -> [B*N, P, d_model]; with learnable filters, their reconstruction loss."""
        length = x.shape[2]
        with torch.autocast(device_type=x.device.type, enabled=False):
            series = x.reshape(-1, length).float()  # [B*N, T]
            extended, offset = self.extend(series)
            coefficients = ptwt.swt(extended, self.wavelet, level=self.level)[: self.bands]
            bands = torch.stack(coefficients, dim=1)[..., offset : offset + length]  # [B*N, bands, T]
            weights = self.bands * torch.softmax(self.band_logits.float(), dim=0)
            bands = bands * weights.view(1, -1, 1)
        padded = F.pad(bands, (0, self.stride), mode="replicate")  # the end covered as in PatchEmbedding
        patches = padded.unfold(dimension=-1, size=self.patch_len, step=self.stride)  # [B*N, bands, P, patch_len]
        if self.projection is not None:
            embedded = self.projection(patches.permute(0, 2, 1, 3).flatten(2))  # [B*N, P, d_model]
        else:
            per_band = [projection(patches[:, band]) for band, projection in enumerate(self.band_projections)]
            embedded = self.fusion(torch.cat(per_band, dim=-1))  # [B*N, P, d_model]
        embedded = self.dropout(embedded + self.position)
        if self.semantic is not None:
            embedded = embedded + self.semantic(embedded)
        # The learnable filters' distance from a perfect-reconstruction pair.
        aux_losses = {} if self.filters is None else {"wavelet_reconstruction": self.filters.wavelet_loss()}
        return AddOnOutput(embedded, aux_losses=aux_losses)
