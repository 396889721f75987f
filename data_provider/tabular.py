"""Sliding-window datasets over CSV files with a `date` column (ETT, weather, ECL, traffic, ...).

Splits, scaling and time features follow Time-Series-Library exactly, so numbers are comparable
with published tables: ETT uses 12/4/4 months for train/val/test, every other CSV 70/10/20 %;
validation and test windows start `seq_len` rows before their split so that their first target
is the split's first row; the scaler is fitted on the training rows only.

Sample layouts:
    per_channel   one variable per sample (upstream Time-LLM): x [seq_len, 1], len = windows x channels
    all_channels  every variable in one sample:                x [seq_len, C], len = windows
"""
import os
import warnings
from typing import Optional

import numpy as np
import pandas as pd
from sklearn.preprocessing import StandardScaler
from torch.utils.data import Dataset

from data_provider.batch import Window
from utils.timefeatures import date_step, frequency_flag, time_features

SPLITS = ("train", "val", "test")
SAMPLE_LAYOUTS = ("per_channel", "all_channels")


def read_series_csv(path: str, target: str, features: str, repeated_dates: str = "refuse") -> tuple[pd.Series, pd.DataFrame]:
    """Read a CSV with a `date` column; returns (dates, values) with the target as the last column.

    Every failure names the file, and for bad values the column and the file line. Dates must
    increase; a repeated date is refused, or with repeated_dates="warn" (the benchmarks' files, kept as
    published so that numbers stay comparable: Weather repeats 2020-05-12 06:00) reported once.
    """
    frame = _read_csv(path)
    if target not in frame.columns:
        raise ValueError(f"{path}: --target {target!r} is not a column (columns: {list(frame.columns)})")
    others = [column for column in frame.columns if column not in ("date", target)]
    values = frame[others + [target]] if features in ("M", "MS") else frame[[target]]
    numeric = values.apply(pd.to_numeric, errors="coerce")
    bad = ~np.isfinite(numeric.to_numpy(dtype=np.float64))
    if bad.any():
        row, column = np.argwhere(bad)[0]
        raw = values.iat[row, column]
        shown = "an empty cell" if pd.isna(raw) else f"value {str(raw)!r}"
        # +2: one header line, and file lines count from 1.
        raise ValueError(f"{path}: column {values.columns[column]!r}, line {row + 2}: {shown} is not a finite number")
    return parse_dates(path, frame["date"], repeated_dates), numeric.astype(np.float64)


def _read_csv(path: str, columns: Optional[list] = None) -> pd.DataFrame:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"data file not found: {path} (check --root_path and --data_path)")
    try:
        # Only empty cells count as missing, so that a stray "n/a" or "NULL" is reported as written.
        frame = pd.read_csv(path, encoding_errors="replace", keep_default_na=False, na_values=[""], usecols=columns)
    except pd.errors.EmptyDataError:
        raise ValueError(f"{path}: the file is empty (expected a header line with a 'date' column, then one row per time step)") from None
    except OSError as error:  # unreadable: permissions, a folder given as the file
        raise ValueError(f"{path}: cannot read the file: {(error.strerror or str(error)).lower()}") from None
    except ValueError:  # usecols names a missing column
        if columns and "date" in columns:
            raise ValueError(f"{path}: no 'date' column") from None
        raise
    if "date" not in frame.columns:
        raise ValueError(f"{path}: no 'date' column (columns: {list(frame.columns)[:8]}...)")
    return frame


def parse_dates(path: str, column: pd.Series, repeated_dates: str = "refuse") -> pd.Series:
    """The `date` column as timestamps, strictly increasing: shuffled rows would train in silence on
    windows that are not time series, and repeated dates mean two rows for one step. Errors name the
    file line (the header is line 1)."""
    dates = pd.to_datetime(column, errors="coerce")
    if dates.isna().any():
        row = int(np.flatnonzero(dates.isna().to_numpy())[0])
        raise ValueError(f"{path}: column 'date', line {row + 2}: {column.iat[row]!r} is not a date")
    steps = np.diff(dates.to_numpy())
    earlier = np.flatnonzero(steps < np.timedelta64(0))
    repeated = np.flatnonzero(steps == np.timedelta64(0))
    if repeated.size and (not earlier.size or repeated[0] < earlier[0]):
        row = int(repeated[0]) + 1  # the later row of the pair
        message = f"{path}: column 'date', line {row + 2}: {column.iat[row]!r} repeats line {row + 1}"
        if repeated_dates == "warn":
            warnings.warn(f"{message} ({repeated.size} repeated date(s)); kept, as in the published benchmark", stacklevel=2)
        else:
            raise ValueError(f"{message}; each date must appear once")
    if earlier.size:
        row = int(earlier[0]) + 1
        raise ValueError(
            f"{path}: column 'date', line {row + 2}: {column.iat[row]!r} comes before line {row + 1}'s {column.iat[row - 1]!r}; "
            "rows must be in time order (sort the file by date)"
        )
    return dates


def infer_file_frequency(path: str) -> tuple[str, bool]:
    """--freq for the file's dates and whether the dates are regular (else their most common step)."""
    dates = parse_dates(path, _read_csv(path, columns=["date"])["date"])
    step, exact = date_step(dates)
    return frequency_flag(step), exact


class WindowDataset(Dataset):
    """Sliding windows over one split of a multivariate series.

    Item: (x [seq_len, c], y [label_len + pred_len, c], x_mark [seq_len, f], y_mark [label_len + pred_len, f],
    position [2] = (0, the file row of x's first step)) with c = 1 (per_channel) or C (all_channels), f time
    features. Positions let retrieval exclude training windows that overlap a query's horizon.
    """

    def __init__(self, config, split: str, path: Optional[str] = None):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if config.sample_layout not in SAMPLE_LAYOUTS:
            raise ValueError(f"--sample_layout must be one of {SAMPLE_LAYOUTS}, got {config.sample_layout!r}")
        self.split = split
        self.seq_len, self.label_len, self.pred_len = config.seq_len, config.label_len, config.pred_len
        self.sample_layout = config.sample_layout
        self.path = path or os.path.join(config.root_path, config.data_path)

        # The registry's benchmarks are read as published; a custom CSV is the user's, checked strictly.
        repeated_dates = "refuse" if config.data == "custom" else "warn"
        dates, values = read_series_csv(self.path, config.target, config.features, repeated_dates)
        self.columns = list(values.columns)
        starts, ends = self.split_borders(len(values), self.seq_len)
        split_index = SPLITS.index(split)
        start, end = starts[split_index], ends[split_index]
        if split == "train" and config.percent < 100:
            # Few-shot: keep the first `percent` % of the training windows (Time-LLM convention).
            end = (end - self.seq_len) * config.percent // 100 + self.seq_len
        window = self.seq_len + self.pred_len
        if end - start < window or start < 0:
            raise ValueError(
                f"{self.path}: the {split} split has {end - max(start, 0)} rows, fewer than "
                f"--seq_len + --pred_len = {window}; shorten them or use a longer file"
            )
        self.scaler = StandardScaler().fit(values.to_numpy()[starts[0]:ends[0]])
        scaled = self.scaler.transform(values.to_numpy()).astype(np.float32)
        self.data = scaled[start:end]
        self.first_row = start  # file row (after the header) of self.data[0]
        self.marks = time_features(dates.iloc[start:end], config.freq, config.embed)
        self.windows_per_channel = end - start - window + 1
        self.channels_per_sample = 1 if self.sample_layout == "per_channel" else self.data.shape[1]

    def split_borders(self, n_rows: int, seq_len: int) -> tuple[list[int], list[int]]:
        """Start and end rows of train/val/test; Time-Series-Library's 70/10/20 % rule for custom CSVs."""
        n_train = int(n_rows * 0.7)
        n_test = int(n_rows * 0.2)
        n_val = n_rows - n_train - n_test
        return [0, n_train - seq_len, n_rows - n_test - seq_len], [n_train, n_train + n_val, n_rows]

    @property
    def n_channels(self) -> int:
        return self.data.shape[1]

    def __len__(self) -> int:
        if self.sample_layout == "per_channel":
            return self.windows_per_channel * self.n_channels
        return self.windows_per_channel

    def locate(self, index: int) -> tuple[int, slice]:
        """Window start row and channel slice of item `index`."""
        if self.sample_layout == "per_channel":
            channel = index // self.windows_per_channel
            return index % self.windows_per_channel, slice(channel, channel + 1)
        return index, slice(None)

    def __getitem__(self, index: int) -> Window:
        start, channels = self.locate(index)
        x_end = start + self.seq_len
        y_start, y_end = x_end - self.label_len, x_end + self.pred_len
        return Window(
            inputs=self.data[start:x_end, channels],
            targets=self.data[y_start:y_end, channels],
            window_position=np.array([0, self.first_row + start], dtype=np.int64),
            input_marks=self.marks[start:x_end],
            target_marks=self.marks[y_start:y_end],
        )


class ETTHourDataset(WindowDataset):
    """ETTh1/ETTh2: 12 months train, 4 validation, 4 test, hourly rows (the ETT paper's split)."""

    rows_per_month = 30 * 24

    def split_borders(self, n_rows: int, seq_len: int) -> tuple[list[int], list[int]]:
        month = self.rows_per_month
        return [0, 12 * month - seq_len, 16 * month - seq_len], [12 * month, 16 * month, 20 * month]


class ETTMinuteDataset(ETTHourDataset):
    """ETTm1/ETTm2: the same months at 15-minute rows."""

    rows_per_month = 30 * 24 * 4


CustomDataset = WindowDataset
