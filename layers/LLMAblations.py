"""Stand-ins for the LLM in Time-LLM's ablations (`--llm_ablation`), and the attention block of PAttn.

Tan et al., "Are Language Models Actually Useful for Time Series Forecasting?", NeurIPS 2024
(https://arxiv.org/abs/2406.16964; code: BennyTMT/LLMsForTimeSeries, Time-LLM-exp/models/TimeLLM.py).
Their ablations of Time-LLM drop the prompt, the text prototypes and the reprogramming layer with the
LLM, and work at the patch embedding's width d_model:

    no_llm    x [B, T, N] --RevIN--> patches [B*N, P, d_model] -----------------> linear head
    llm2attn                                 patches --> one attention layer --> linear head
    llm2trsf                                 patches --> one transformer layer -> linear head
    linear head: [B, N, P * d_model] --Linear + dropout--> [B, N, pred_len] --RevIN denorm--> [B, pred_len, N]

(`TanAblation`). The patch embedding is Time-LLM's own (layers/Embed.py). The attention layer is Tan's
`MultiHeadAttention` (`TanAttention`: bias-free projections, 8 heads, dropout 0.1, residual and
LayerNorm); the transformer layer is PyTorch's `TransformerEncoderLayer` with its defaults as Tan uses
it (8 heads, feed-forward 2048, dropout 0.1, ReLU, post-norm).

The `*_keep_prompt` variants (`SequenceStandIn`) are this fork's earlier reading: the prompt, the
text prototypes and the reprogramming stay, and only the LLM is replaced, at the LLM's width: by
nothing, by one `nn.MultiheadAttention`, or by one `nn.TransformerEncoderLayer` (feed-forward = width).
They answer a different question ("is the LLM's depth needed once the input is reprogrammed?") and
train about as many parameters as their width squared (~100M for llm2trsf_keep_prompt at LLaMA-7B's).
"""
import math

import torch
from torch import nn

from layers.Embed import PatchEmbedding
from layers.StandardNorm import Normalize

TAN_ABLATIONS = ("no_llm", "llm2attn", "llm2trsf")
KEEP_PROMPT_ABLATIONS = ("no_llm_keep_prompt", "llm2attn_keep_prompt", "llm2trsf_keep_prompt")
TAN_HEADS = 8  # fixed in Tan's MultiHeadAttention and Encoder_TRSF, whatever --n_heads says
TAN_DROPOUT = 0.1
TAN_TRANSFORMER_FF = 2048  # nn.TransformerEncoderLayer's default, which Tan's Encoder_TRSF keeps


class TanAttention(nn.Module):
    """Tan et al.'s multi-head self-attention: bias-free q/k/v/output projections, dropout on the
    attention weights and the output, then residual and LayerNorm (eps 1e-6).
    x [S, L, d_model] -> [S, L, d_model]."""

    def __init__(self, d_model: int, heads: int = TAN_HEADS, dropout: float = TAN_DROPOUT):
        super().__init__()
        if d_model % heads:
            raise ValueError(f"--d_model {d_model} must be divisible by the {heads} attention heads of Tan et al.'s layer")
        self.heads, self.head_dim = heads, d_model // heads
        self.query, self.key, self.value = (nn.Linear(d_model, d_model, bias=False) for _ in range(3))
        self.output = nn.Linear(d_model, d_model, bias=False)
        self.attention_dropout, self.dropout = nn.Dropout(dropout), nn.Dropout(dropout)
        self.norm = nn.LayerNorm(d_model, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        series, length, _ = x.shape

        def split(projection: nn.Linear) -> torch.Tensor:
            return projection(x).view(series, length, self.heads, self.head_dim).transpose(1, 2)  # [S, heads, L, E]

        query, key, value = split(self.query), split(self.key), split(self.value)
        scores = query @ key.transpose(-2, -1) / math.sqrt(self.head_dim)  # [S, heads, L, L]
        attended = self.attention_dropout(scores.softmax(dim=-1)) @ value  # [S, heads, L, E]
        attended = attended.transpose(1, 2).reshape(series, length, -1)  # [S, L, d_model]
        return self.norm(self.dropout(self.output(attended)) + x)


class TanAblation(nn.Module):
    """Time-LLM without its LLM, as Tan et al. define it (see the module docstring).
    x_enc [B, T, N] -> forecast [B, pred_len, N]."""

    def __init__(self, config):
        super().__init__()
        if config.llm_ablation not in TAN_ABLATIONS:
            raise ValueError(f"TanAblation: --llm_ablation must be one of {TAN_ABLATIONS}, got {config.llm_ablation!r}")
        self.normalize = Normalize(config.enc_in, affine=False)
        self.patch_embedding = PatchEmbedding(config.d_model, config.patch_len, config.stride, config.dropout)
        self.sequence_model = {
            "no_llm": lambda: nn.Identity(),
            "llm2attn": lambda: TanAttention(config.d_model),
            "llm2trsf": lambda: nn.TransformerEncoderLayer(
                config.d_model, TAN_HEADS, dim_feedforward=TAN_TRANSFORMER_FF, dropout=TAN_DROPOUT, batch_first=True
            ),
        }[config.llm_ablation]()
        if config.llm_ablation == "llm2trsf" and config.d_model % TAN_HEADS:
            raise ValueError(f"--d_model {config.d_model} must be divisible by the {TAN_HEADS} heads of Tan et al.'s transformer layer")
        patches = PatchEmbedding.patch_count(config.seq_len, config.patch_len, config.stride)
        self.head = nn.Sequential(nn.Linear(patches * config.d_model, config.pred_len), nn.Dropout(config.dropout))

    def forward(self, x_enc: torch.Tensor) -> torch.Tensor:
        batch, _, n_vars = x_enc.shape
        x_enc = self.normalize(x_enc, "norm")
        patches, _ = self.patch_embedding(x_enc.permute(0, 2, 1))  # [B*N, P, d_model]
        hidden = self.sequence_model(patches)  # [B*N, P, d_model]
        forecast = self.head(hidden.reshape(batch, n_vars, -1))  # [B, N, pred_len]
        return self.normalize(forecast.permute(0, 2, 1), "denorm")  # [B, pred_len, N]


class SequenceStandIn(nn.Module):
    """The `*_keep_prompt` stand-ins at the LLM's width: embeddings [S, L, d_llm] with padding mask
    [S, L] (True = padding) -> hidden states [S, L, d_llm]."""

    def __init__(self, ablation: str, d_llm: int, n_heads: int):
        super().__init__()
        if ablation not in KEEP_PROMPT_ABLATIONS:
            raise ValueError(f"SequenceStandIn: ablation must be one of {KEEP_PROMPT_ABLATIONS}, got {ablation!r}")
        if ablation != "no_llm_keep_prompt" and d_llm % n_heads:
            raise ValueError(f"--llm_ablation {ablation}: the LLM hidden size {d_llm} must be divisible by --n_heads {n_heads}")
        self.kind = ablation.removesuffix("_keep_prompt")
        if self.kind == "llm2attn":
            self.layer = nn.MultiheadAttention(d_llm, n_heads, batch_first=True)
        elif self.kind == "llm2trsf":
            self.layer = nn.TransformerEncoderLayer(d_llm, n_heads, dim_feedforward=d_llm, batch_first=True)

    def forward(self, embeddings: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        if self.kind == "no_llm":
            return embeddings
        if self.kind == "llm2attn":
            return self.layer(embeddings, embeddings, embeddings, key_padding_mask=padding, need_weights=False)[0]
        return self.layer(embeddings, src_key_padding_mask=padding)
