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


# Upstream Time-LLM's description when --prompt_domain is 0, its default (models/TimeLLM.py there).
UPSTREAM_DEFAULT_DESCRIPTION = (
    "The Electricity Transformer Temperature (ETT) is a crucial indicator in the electric power long-term deployment."
)


def read_description(prompt_name: str, content: str = "", prompt_domain: int = 1) -> str:
    """The dataset description of the prompt: --content, else dataset/prompt_bank/<prompt_name>.txt;
    with prompt_domain 0, upstream's fixed default sentence instead."""
    if not prompt_domain:
        return UPSTREAM_DEFAULT_DESCRIPTION
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
    """Prompt token ids for a batch of series.

    Two ways to the same ids:
      texts() + encode(reference=True)  one string per series, tokenised whole (the straightforward path)
      encode()                          the fixed text between the numbers is tokenised once at start;
                                        per batch only the numbers are tokenised, in one batched call,
                                        and the pieces are assembled with tensor indexing.
    The piecewise ids equal the whole-string ids when the tokenizer splits at the piece boundaries
    (byte-level BPE and WordPiece do); this is checked at construction and, where it fails
    (e.g. SentencePiece's dummy prefix), encode() falls back to whole strings.

    encode() returns ids [S, L] with the shared prefix first and each series' own tokens right-aligned:
    [prefix][padding][numbers and words], with attention mask [S, L]. With the mask and positions
    counted over real tokens this is the same input as left padding of the whole string; the shared
    prefix at a fixed place is what lets a causal LLM reuse its key/value cache (`prefix_length`).
    """

    def __init__(self, tokenizer, description: str, seq_len: int, pred_len: int, lag_method: str = "corrected", digits: int = 0):
        if lag_method not in LAG_METHODS:
            raise ValueError(f"--lag_method must be one of {LAG_METHODS}, got {lag_method!r}")
        if digits < 0:
            raise ValueError(f"--prompt_digits must be >= 0, got {digits}")
        self.tokenizer, self.lag_method, self.digits = tokenizer, lag_method, digits
        self.prefix = (
            f"<|start_prompt|>Dataset description: {description}"
            f"Task description: forecast the next {pred_len} steps given the previous {seq_len} steps information; "
            "Input statistics: min value"
        )
        # The text between the numbers; every number piece starts with a space, so each boundary is
        # also a pre-tokenizer boundary. "]" goes with the closing text: "]<|<" is one pre-token.
        self.separators = [", max value", ", median value", ", the trend of input is"]
        self.lags_label, self.suffix = f", top {TOP_LAGS} lags are :", "]<|<end_prompt>|>"
        self.special_prefix, self.special_suffix = self._special_tokens()
        self.prefix_ids = self.special_prefix + self._ids(self.prefix)
        self.fixed_ids = [self._ids(text) for text in self.separators]
        self.trend_ids = [self._ids(" upward"), self._ids(" downward")]
        self.lags_label_ids = self._ids(self.lags_label)
        self.suffix_ids = self._ids(self.suffix) + self.special_suffix
        self.segmented = self._pieces_match_whole_strings()
        self.prefix_length = len(self.prefix_ids) if self.segmented else 0

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False).input_ids

    def _special_tokens(self) -> tuple[list[int], list[int]]:
        """Tokens the tokenizer adds around a text (BOS, [CLS] ... [SEP]), found by comparison."""
        bare, full = self._ids("a"), self.tokenizer("a").input_ids
        start = next(i for i in range(len(full)) if full[i : i + len(bare)] == bare)
        return full[:start], full[start + len(bare) :]

    def _format(self, value: float) -> str:
        # Upstream prints float32 values through Python floats: repr gives every digit.
        return f"{value:.{self.digits}g}" if self.digits else str(value)

    def texts(self, x: torch.Tensor) -> list[str]:
        """x [S, T] -> one prompt per series, the upstream template word for word."""
        stats = {name: value.tolist() for name, value in input_statistics(x, self.lag_method).items()}
        return [
            f"{self.prefix} {self._format(minimum)}{self.separators[0]} {self._format(maximum)}{self.separators[1]} "
            f"{self._format(median)}{self.separators[2]} {'upward' if trend > 0 else 'downward'}{self.lags_label} "
            f"{str(lags)[:-1]}{self.suffix}"
            for minimum, maximum, median, trend, lags in zip(stats["min"], stats["max"], stats["median"], stats["trend"], stats["lags"])
        ]

    def encode_texts(self, x: torch.Tensor, padding_side: str = "left") -> tuple[torch.Tensor, torch.Tensor]:
        """The straightforward path: whole strings tokenised together, padded on `padding_side`."""
        self.tokenizer.padding_side = padding_side
        encoded = self.tokenizer(self.texts(x), return_tensors="pt", padding=True, truncation=True, max_length=2048)
        return encoded.input_ids.to(x.device), encoded.attention_mask.to(x.device)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [S, T] -> (ids [S, L], mask [S, L]) as [prefix][padding][series tokens] (see the class doc)."""
        if not self.segmented:
            return self.encode_texts(x, "left")
        stats = input_statistics(x, self.lag_method)
        series = x.shape[0]
        numbers = [self._format(value) for name in ("min", "max", "median") for value in stats[name].tolist()]
        lags = [str(row)[:-1] for row in stats["lags"].tolist()]  # "[24, 48, 72, 96, 120" (see __init__)
        self.tokenizer.padding_side = "right"
        encoded = self.tokenizer([" " + text for text in numbers + lags], add_special_tokens=False, padding=True, return_tensors="pt")
        piece_ids = encoded.input_ids.view(4, series, -1)  # min, max, median, lags
        piece_lengths = encoded.attention_mask.view(4, series, -1).sum(dim=-1)

        def fixed(ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
            return torch.tensor(ids).expand(series, -1), torch.full((series,), len(ids))

        upward = stats["trend"].cpu() > 0
        trend_up, trend_down = (torch.tensor(ids) for ids in self.trend_ids)
        width = max(len(trend_up), len(trend_down))
        trend_table = torch.zeros(2, width, dtype=torch.long)
        trend_table[0, : len(trend_up)], trend_table[1, : len(trend_down)] = trend_up, trend_down
        trend = (trend_table[(~upward).long()], torch.where(upward, len(trend_up), len(trend_down)))
        pieces = [
            (piece_ids[0], piece_lengths[0]), fixed(self.fixed_ids[0]),
            (piece_ids[1], piece_lengths[1]), fixed(self.fixed_ids[1]),
            (piece_ids[2], piece_lengths[2]), fixed(self.fixed_ids[2]),
            trend, fixed(self.lags_label_ids),
            (piece_ids[3], piece_lengths[3]), fixed(self.suffix_ids),
        ]
        lengths = torch.stack([length for _, length in pieces], dim=1)  # [S, pieces]
        total = lengths.sum(dim=1)
        width = int(total.max())
        ids = torch.full((series, width), self.tokenizer.pad_token_id, dtype=torch.long)
        # Right-align each series: piece k starts after the padding and the pieces before it.
        starts = (width - total).unsqueeze(1) + lengths.cumsum(dim=1) - lengths
        rows = torch.arange(series).unsqueeze(1)
        for k, (piece, length) in enumerate(pieces):
            columns = torch.arange(piece.shape[1]).unsqueeze(0)
            valid = columns < length.unsqueeze(1)
            row_index, column_index = torch.broadcast_tensors(rows, starts[:, k : k + 1] + columns)
            ids[row_index[valid], column_index[valid]] = piece[valid]
        mask = (torch.arange(width).unsqueeze(0) >= (width - total).unsqueeze(1)).long()
        prefix = torch.tensor(self.prefix_ids).expand(series, -1)
        ids = torch.cat([prefix, ids], dim=1)
        mask = torch.cat([torch.ones_like(prefix), mask], dim=1)
        return ids.to(x.device), mask.to(x.device)

    def _pieces_match_whole_strings(self) -> bool:
        probe = torch.tensor([[0.0, -1.25, 3.5, 0.125, 2.0, -0.75, 1.0, 0.5] * 4, [3.0, 2.5, -1.0, 0.25, -2.0, 1.5, 0.0, -0.5] * 4])
        self.segmented = True
        pieces_ids, pieces_mask = self.encode(probe)
        whole_ids, whole_mask = self.encode_texts(probe, "left")
        for row in range(len(probe)):
            if pieces_ids[row][pieces_mask[row].bool()].tolist() != whole_ids[row][whole_mask[row].bool()].tolist():
                return False
        return True
