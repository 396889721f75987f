"""Multi-scale patch embedding for Time-LLM (`--use_multiscale 1`, `--scales 1 2 4`,
`--multiscale_fusion gate|attention|concat|sum`).

    x [B, N, T] --average-pool by s, for each scale s--> [B, N, T / s]
      --> patches of max(patch_len / s, 2), stride max(stride / s, 1) --> embed [B*N, P_s, d_model]
      --> aligned onto the P base patches (linear interpolation along the patch axis: patch i of every
          scale then describes the same stretch of time)            S x [B*N, P, d_model]
      --> fused per patch                                               [B*N, P, d_model]

Fusions: gate (softmax weights over scales from the patch's features at all scales), attention (a
learned query attends over the S scale tokens of the patch), concat (Linear over the S tokens
concatenated), sum (their mean). Coarser scales see longer context per patch with fewer values, so
the fused patch carries both local detail and slow structure.
"""
from typing import Optional

import torch
from torch import nn
from torch.nn import functional as F

from layers.AddOn import AddOn, AddOnOutput, SeriesContext, Stage
from layers.Embed import PatchEmbedding
from layers.Resample import interpolate_linear
from utils.settings.addons import MultiScaleConfig

FUSIONS = ("gate", "attention", "concat", "sum")


class MultiScalePatchEmbedding(AddOn):
    stage = Stage.PATCH_EMBEDDING

    def __init__(self, config: MultiScaleConfig):
        super().__init__()
        scales = list(config.scales)
        if not scales or len(set(scales)) != len(scales) or min(scales) < 1:
            raise ValueError(f"--scales must be distinct positive integers, got {scales}")
        if config.multiscale_fusion not in FUSIONS:
            raise ValueError(f"--multiscale_fusion must be one of {FUSIONS}, got {config.multiscale_fusion!r}")
        self.scales, self.fusion_method = scales, config.multiscale_fusion
        self.patch_count = PatchEmbedding.patch_count(config.seq_len, config.patch_len, config.stride)
        self.embeddings = nn.ModuleList()
        for scale in scales:
            patch_len, stride = max(config.patch_len // scale, 2), max(config.stride // scale, 1)
            if config.seq_len // scale < patch_len:
                raise ValueError(f"--scales {scale}: the input pooled to {config.seq_len // scale} steps is shorter than one patch ({patch_len})")
            self.embeddings.append(PatchEmbedding(config.d_model, patch_len, stride, config.dropout))
        d_model, count = config.d_model, len(scales)
        if self.fusion_method == "gate":
            self.gate = nn.Linear(count * d_model, count)
        elif self.fusion_method == "attention":
            self.query = nn.Parameter(torch.randn(1, 1, d_model) * 0.02)
            self.attention = nn.MultiheadAttention(d_model, 1, batch_first=True)
        elif self.fusion_method == "concat":
            self.projection = nn.Linear(count * d_model, d_model)

    def forward(self, x: torch.Tensor, context: Optional[SeriesContext] = None) -> AddOnOutput:
        """x [B, N, T] -> [B*N, P, d_model]."""
        per_scale = []
        for scale, embedding in zip(self.scales, self.embeddings):
            pooled = F.avg_pool1d(x, scale, scale) if scale > 1 else x  # [B, N, T / s]
            tokens, _ = embedding(pooled)  # [B*N, P_s, d_model]
            if tokens.shape[1] != self.patch_count:
                tokens = interpolate_linear(tokens, self.patch_count, align_corners=True)  # reproducible on CUDA
            per_scale.append(tokens)
        return AddOnOutput(self.fuse(torch.stack(per_scale, dim=2)))

    def fuse(self, stacked: torch.Tensor) -> torch.Tensor:
        """Each patch's scale tokens [B*N, P, S, d_model] -> one token [B*N, P, d_model]."""
        if self.fusion_method == "sum":
            return stacked.mean(dim=2)
        if self.fusion_method == "concat":
            return self.projection(stacked.flatten(2))
        if self.fusion_method == "gate":
            weights = torch.softmax(self.gate(stacked.flatten(2)), dim=-1)  # [B*N, P, S]
            return (weights.unsqueeze(-1) * stacked).sum(dim=2)
        series, patches = stacked.shape[:2]
        tokens = stacked.reshape(series * patches, len(self.scales), -1)  # one short sequence per patch
        fused = self.attention(self.query.expand(len(tokens), -1, -1), tokens, tokens, need_weights=False)[0]
        return fused.reshape(series, patches, -1)
