"""Attention across variables for Time-LLM (`--use_inter_variate 1`, `--inter_variate_heads`,
`--inter_variate_ff`, 0 for 4 x d_llm), iTransformer-style, applied to the reprogrammed patches before the LLM.

    reprogrammed patches [B*N, P, d_llm] -> per sample and patch, the N variables as tokens [B*P, N, d_llm]
      --> multi-head self-attention across the N variables, residual, LayerNorm
      --> feed-forward (d_llm -> inter_variate_ff -> d_llm), residual, LayerNorm
      --> [B*N, P, d_llm]

Time-LLM otherwise forecasts each variable alone; this lets a variable's patch read the same patch
of the other variables. There is no variable position encoding, so permuting the variables permutes
the output the same way (equivariance). It needs every variable of a window in one sample
(`--sample_layout all_channels`, features M or MS); the configuration check says so otherwise.
`keep_attention = True` stores the latest attention maps [B, P, heads, N, N] in `attention_maps`
for plotting.
"""
import torch
from torch import nn

from layers.AddOn import AddOn, AddOnOutput, SeriesContext, Stage
from utils.settings.addons import InterVariateConfig


class InterVariateAttention(AddOn):
    stage = Stage.REPROGRAMMED

    def __init__(self, config: InterVariateConfig):
        super().__init__()
        d_llm = config.llm_dim
        if d_llm % config.inter_variate_heads:
            raise ValueError(f"--inter_variate_heads ({config.inter_variate_heads}) must divide the LLM hidden size ({d_llm})")
        if config.inter_variate_ff < 0:
            raise ValueError(f"--inter_variate_ff must be positive, or 0 for 4 x the LLM hidden size; got {config.inter_variate_ff}")
        width = config.inter_variate_ff or 4 * d_llm
        self.attention = nn.MultiheadAttention(d_llm, config.inter_variate_heads, dropout=config.dropout, batch_first=True)
        self.feed_forward = nn.Sequential(nn.Linear(d_llm, width), nn.GELU(), nn.Dropout(config.dropout), nn.Linear(width, d_llm))
        self.attention_norm, self.feed_forward_norm = nn.LayerNorm(d_llm), nn.LayerNorm(d_llm)
        self.dropout = nn.Dropout(config.dropout)
        self.keep_attention = False
        self.attention_maps = None

    def forward(self, patches: torch.Tensor, context: SeriesContext) -> AddOnOutput:
        """patches [B*N, P, d_llm] (sample-major: the N variables of a sample are consecutive) -> same shape."""
        if patches.dim() != 3 or patches.shape[0] != context.batch * context.n_vars:
            raise ValueError(
                f"inter-variate attention takes patches [B*N, P, d_llm] = [{context.batch}*{context.n_vars}, P, d_llm]; got {tuple(patches.shape)}"
            )
        series, patch_count, width = patches.shape
        n_vars = context.n_vars
        batch = series // n_vars
        tokens = patches.reshape(batch, n_vars, patch_count, width).transpose(1, 2).reshape(batch * patch_count, n_vars, width)
        attended, weights = self.attention(tokens, tokens, tokens, need_weights=self.keep_attention, average_attn_weights=False)
        if self.keep_attention:
            self.attention_maps = weights.detach().reshape(batch, patch_count, *weights.shape[1:])
        tokens = self.attention_norm(tokens + self.dropout(attended))
        tokens = self.feed_forward_norm(tokens + self.dropout(self.feed_forward(tokens)))
        return AddOnOutput(tokens.reshape(batch, patch_count, n_vars, width).transpose(1, 2).reshape(series, patch_count, width))
