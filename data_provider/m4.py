"""M4 competition data (Makridakis et al., 2020) in the competition's CSV format.

`<root_path>/<Pattern>-train.csv` and `<Pattern>-test.csv`: first column the series id ("H1"), then
the values, rows padded with empty cells. Windows follow Time-Series-Library's M4 loader: training
samples one random cut point per series per item within the last `history_size x horizon` points.
Validation is carved from the end of each training series (the last `horizon` points are held out
and never trained on), so model selection never sees the test set (upstream validates on it).

Item: (x [seq_len, 1], y [label_len + pred_len, 1], x_mask [seq_len, 1], y_mask [label_len + pred_len, 1],
position [2] = (series index, cut point)); masks are 1 where a value exists. Both windows are aligned
on the cut point: x ends at it and y's future starts at position label_len whatever the series'
length, so the last pred_len positions that the trainer scores are always the true future. Missing
history is zero-padded on the left (of x and of y's label part), a future cut short by the end of a
training series on the right.

Training cut points are a pure function of (--seed, epoch, series index): `set_epoch` selects the
epoch, so an item does not depend on which process or worker loads it, nor on how many items were
loaded before it (a loader fetching ahead), and a resumed run draws exactly what it would have.
"""
import os
from dataclasses import dataclass

import numpy as np
import pandas as pd
from torch.utils.data import Dataset

from data_provider.batch import Window


@dataclass(frozen=True)
class M4Pattern:
    horizon: int
    frequency: int  # seasonal period used by MASE and Naive2
    history_size: float  # how many horizons back training cut points may lie


M4_PATTERNS = {
    "Yearly": M4Pattern(6, 1, 1.5),
    "Quarterly": M4Pattern(8, 4, 1.5),
    "Monthly": M4Pattern(18, 12, 1.5),
    "Weekly": M4Pattern(13, 1, 10),
    "Daily": M4Pattern(14, 1, 10),
    "Hourly": M4Pattern(48, 24, 10),
}


def read_m4_file(path: str) -> tuple[list[str], list[np.ndarray]]:
    """Series ids and their values (trailing empty cells dropped) from one competition CSV."""
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"M4 file not found: {path} (get the competition's <Pattern>-train.csv and -test.csv into --root_path)"
        )
    frame = pd.read_csv(path)
    ids = frame.iloc[:, 0].astype(str).tolist()
    values = frame.iloc[:, 1:].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    series = []
    for row, (series_id, row_values) in enumerate(zip(ids, values)):
        present = ~np.isnan(row_values)
        length = int(present.sum())
        if length == 0 or not present[:length].all():
            raise ValueError(f"{path}: series {series_id} (line {row + 2}) has gaps or no values")
        series.append(row_values[:length])
    return ids, series


class M4Dataset(Dataset):
    def __init__(self, config, split: str):
        if config.seasonal_patterns not in M4_PATTERNS:
            raise ValueError(f"--seasonal_patterns must be one of {list(M4_PATTERNS)}, got {config.seasonal_patterns!r}")
        self.pattern = M4_PATTERNS[config.seasonal_patterns]
        if config.pred_len != self.pattern.horizon:
            raise ValueError(
                f"--pred_len {config.pred_len} differs from the M4 {config.seasonal_patterns} horizon {self.pattern.horizon}"
            )
        self.split = split
        self.seq_len, self.label_len, self.pred_len = config.seq_len, config.label_len, config.pred_len
        prefix = os.path.join(config.root_path, config.seasonal_patterns)
        self.ids, self.train_series = read_m4_file(prefix + "-train.csv")
        horizon = self.pattern.horizon
        if split == "test":
            _, test_series = read_m4_file(prefix + "-test.csv")
            self.history, self.future = self.train_series, test_series
        else:
            too_short = [sid for sid, s in zip(self.ids, self.train_series) if len(s) <= horizon]
            if too_short:
                raise ValueError(f"M4 {config.seasonal_patterns}: series {too_short[:3]} too short to carve validation")
            self.history = [series[:-horizon] for series in self.train_series]
            self.future = [series[-horizon:] for series in self.train_series]
        self.window_sampling_limit = int(self.pattern.history_size * horizon)
        self.frequency = self.pattern.frequency  # seasonal period of the MASE loss
        self.channels_per_sample = 1
        self.n_channels = 1
        self.seed, self.epoch = config.seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.history)

    def __getitem__(self, index: int) -> Window:
        history = self.history[index]
        if self.split == "train":
            # Random cut point inside the last window_sampling_limit points (N-BEATS sampling).
            generator = np.random.default_rng((self.seed, self.epoch, index))
            cut = int(generator.integers(max(1, len(history) - self.window_sampling_limit), len(history)))
            series = history
        else:
            cut = len(history)
            series = np.concatenate([history, self.future[index]])
        x, x_mask = self._aligned(series, cut - self.seq_len, self.seq_len)
        y, y_mask = self._aligned(series, cut - self.label_len, self.label_len + self.pred_len)
        # Short series are zero-padded: the masks mark the real values. M4 has no calendar marks.
        return Window(inputs=x, targets=y, window_position=np.array([index, cut], dtype=np.int64), input_mask=x_mask, target_mask=y_mask)

    @staticmethod
    def _aligned(series: np.ndarray, start: int, length: int) -> tuple[np.ndarray, np.ndarray]:
        """series[start : start + length] as [length, 1], zeros where it lies outside the series, and
        its mask [length, 1] (1 where a value exists)."""
        values, mask = np.zeros((length, 1), dtype=np.float32), np.zeros((length, 1), dtype=np.float32)
        first, last = max(start, 0), min(start + length, len(series))
        values[first - start : last - start, 0] = series[first:last]
        mask[first - start : last - start, 0] = 1
        return values, mask
