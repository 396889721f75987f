"""Dynamic prompt tokens for Time-LLM (`--use_dynamic_prompt 1`, `--num_dynamic_tokens`), appended to
the text prompt (between the prompt and the patches).

    series [S, T] (RevIN-normalised, one per variable and sample)
      --> encoder: Linear(T -> d_hidden), GELU, Linear -> summary h [S, d_hidden]
      --> dynamic tokens: Linear(h) -> [S, K, d_llm]
      --> gate g = sigmoid(Linear(h)) [S, K, 1]; tokens = g * dynamic + (1 - g) * base, with K learnable
          base tokens [K, d_llm] (the gate lets the model fall back to fixed soft-prompt tokens)
      plus local statistics tokens: the series cut into --num_prompt_segments segments, each segment's
          (mean, std, min, max, slope) -> Linear -> one token                    [S, segments, d_llm]
      --> [S, K + segments, d_llm]

The text prompt states global statistics in words; these tokens carry what words summarise poorly
(the window's shape, where in the window it rose or fell) directly in the LLM's embedding space.
"""
import torch
from torch import nn

from layers.AddOn import AddOn, AddOnOutput, SeriesContext, Stage
from utils.settings.addons import DynamicPromptConfig


def segment_statistics(series: torch.Tensor, segments: int) -> torch.Tensor:
    """series [S, T] -> [S, segments, 5]: mean, std, min, max and least-squares slope per segment."""
    length = series.shape[-1] // segments * segments
    parts = series[:, series.shape[-1] - length :].reshape(series.shape[0], segments, -1)  # the latest steps
    steps = torch.arange(parts.shape[-1], device=series.device, dtype=series.dtype)
    centred = steps - steps.mean()
    slope = ((parts - parts.mean(dim=-1, keepdim=True)) * centred).sum(dim=-1) / centred.pow(2).sum().clamp_min(1e-12)
    return torch.stack([parts.mean(dim=-1), parts.std(dim=-1), parts.amin(dim=-1), parts.amax(dim=-1), slope], dim=-1)


class DynamicPrompt(AddOn):
    stage = Stage.PROMPT_TOKENS

    def __init__(self, config: DynamicPromptConfig):
        super().__init__()
        d_llm = config.llm_dim
        if config.num_dynamic_tokens < 1 or config.num_prompt_segments < 1:
            raise ValueError("--num_dynamic_tokens and --num_prompt_segments must be positive")
        if config.seq_len < 2 * config.num_prompt_segments:
            raise ValueError(f"--num_prompt_segments {config.num_prompt_segments}: each segment needs 2 steps of --seq_len {config.seq_len}")
        hidden, tokens = config.d_model * 8, config.num_dynamic_tokens
        self.tokens, self.segments = tokens, config.num_prompt_segments
        self.encoder = nn.Sequential(nn.Linear(config.seq_len, hidden), nn.GELU(), nn.Dropout(config.dropout), nn.Linear(hidden, hidden))
        self.dynamic = nn.Linear(hidden, tokens * d_llm)
        self.gate = nn.Linear(hidden, tokens)
        self.base = nn.Parameter(torch.randn(tokens, d_llm) * 0.02)
        self.statistics = nn.Linear(5, d_llm)

    def forward(self, series: torch.Tensor, context: SeriesContext) -> AddOnOutput:
        """series [S, T] -> prompt tokens [S, num_dynamic_tokens + num_prompt_segments, d_llm]."""
        summary = self.encoder(series)
        dynamic = self.dynamic(summary).reshape(len(series), self.tokens, -1)
        gate = torch.sigmoid(self.gate(summary)).unsqueeze(-1)
        learned = gate * dynamic + (1 - gate) * self.base
        return AddOnOutput(torch.cat([learned, self.statistics(segment_statistics(series, self.segments))], dim=1))
