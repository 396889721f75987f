"""Prompt-as-prefix (Time-LLM, Sec. 3.2): dataset description, task and input statistics as text.

Statistics are computed for the whole batch at once on the normalised series; the text follows the
upstream template word for word so results stay comparable. Lags: upstream ranks the lags of a
circular autocorrelation, whose largest value is always lag 0 and whose lag k and T - k are mirror
images; the corrected method (default) ranks the local maxima of the linear autocorrelation at lags
1..T/2, so a period-24 series reports 24 first. `--lag_method upstream` restores the original.
"""
import os

import torch

LAG_METHODS = ("corrected", "upstream")
TOP_LAGS = 5


def read_description(prompt_name: str, content: str = "") -> str:
    if content:
        return content
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "dataset", "prompt_bank", f"{prompt_name}.txt")
    if not os.path.isfile(path):
        raise ValueError(f"no dataset description at {path}: write one there or pass --content")
    with open(path) as handle:
        return handle.read().strip()


def top_lags(x: torch.Tensor, k: int, method: str = "corrected") -> torch.Tensor:
    """x [S, T] -> the k most autocorrelated lags [S, k] (long)."""
    length = x.shape[-1]
    if method == "upstream":
        spectrum = torch.fft.rfft(x.float(), dim=-1)
        correlation = torch.fft.irfft(spectrum * torch.conj(spectrum), n=length, dim=-1)
        return torch.topk(correlation, k, dim=-1).indices
    if method != "corrected":
        raise ValueError(f"--lag_method must be one of {LAG_METHODS}, got {method!r}")
    centred = x.float() - x.float().mean(dim=-1, keepdim=True)
    spectrum = torch.fft.rfft(centred, n=2 * length, dim=-1)  # zero padding: no wrap-around
    correlation = torch.fft.irfft(spectrum.abs() ** 2, n=2 * length, dim=-1)[:, :length]
    max_lag = max(length // 2, k)
    candidates = correlation[:, 1 : max_lag + 1]  # lags 1..max_lag
    left = correlation[:, 0:max_lag]
    right = torch.cat([correlation[:, 2 : max_lag + 2], torch.full_like(correlation[:, :1], -torch.inf)], dim=1)[:, :max_lag]
    is_peak = (candidates > left) & (candidates >= right)
    # Peaks first (by height), then the remaining lags, so there are always k answers.
    offset = correlation[:, :1].abs() * 2 + 1
    score = torch.where(is_peak, candidates + offset, candidates - offset)
    return torch.topk(score, k, dim=-1).indices + 1


def input_statistics(x: torch.Tensor, lag_method: str = "corrected") -> dict[str, torch.Tensor]:
    """x [S, T] -> min, max, median, trend (sum of differences), lags [S, 5]."""
    return {
        "min": x.min(dim=-1).values,
        "max": x.max(dim=-1).values,
        "median": x.median(dim=-1).values,
        "trend": x.diff(dim=-1).sum(dim=-1),
        "lags": top_lags(x, TOP_LAGS, lag_method),
    }


class PromptBuilder:
    """Builds the prompt text of every series in a batch and tokenises the batch in one call."""

    def __init__(self, tokenizer, description: str, seq_len: int, pred_len: int, lag_method: str = "corrected"):
        if lag_method not in LAG_METHODS:
            raise ValueError(f"--lag_method must be one of {LAG_METHODS}, got {lag_method!r}")
        self.tokenizer, self.lag_method = tokenizer, lag_method
        self.prefix = (
            f"<|start_prompt|>Dataset description: {description}"
            f"Task description: forecast the next {pred_len} steps given the previous {seq_len} steps information; "
            "Input statistics: "
        )

    def texts(self, x: torch.Tensor) -> list[str]:
        """x [S, T] -> one prompt per series. Values are printed as upstream prints float32 numbers."""
        stats = {name: value.tolist() for name, value in input_statistics(x, self.lag_method).items()}
        return [
            f"{self.prefix}min value {minimum}, max value {maximum}, median value {median}, "
            f"the trend of input is {'upward' if trend > 0 else 'downward'}, top {TOP_LAGS} lags are : {lags}<|<end_prompt>|>"
            for minimum, maximum, median, trend, lags in zip(stats["min"], stats["max"], stats["median"], stats["trend"], stats["lags"])
        ]

    def encode(self, x: torch.Tensor, padding_side: str = "left") -> tuple[torch.Tensor, torch.Tensor]:
        """x [S, T] -> (input_ids [S, L], attention_mask [S, L]) padded on `padding_side`."""
        self.tokenizer.padding_side = padding_side
        encoded = self.tokenizer(self.texts(x), return_tensors="pt", padding=True, truncation=True, max_length=2048)
        return encoded.input_ids.to(x.device), encoded.attention_mask.to(x.device)
