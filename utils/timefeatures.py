"""Calendar features of timestamps, following the Time-Series-Library convention.

`timeF` features are each scaled to [-0.5, 0.5] and chosen by the sampling frequency (the finest
unit and everything coarser that varies). `fixed`/`learned` embeddings instead take integer
calendar fields (month, day, weekday, hour, quarter-hour) that an embedding table looks up.
"""
import re

import numpy as np
import pandas as pd

# Features from the finest unit upwards, as in Time-Series-Library's `time_features_from_frequency_str`.
_SECOND = lambda index: index.second / 59.0 - 0.5
_MINUTE = lambda index: index.minute / 59.0 - 0.5
_HOUR = lambda index: index.hour / 23.0 - 0.5
_DAY_OF_WEEK = lambda index: index.day_of_week / 6.0 - 0.5
_DAY_OF_MONTH = lambda index: (index.day - 1) / 30.0 - 0.5
_DAY_OF_YEAR = lambda index: (index.day_of_year - 1) / 365.0 - 0.5
_MONTH = lambda index: (index.month - 1) / 11.0 - 0.5
_WEEK_OF_YEAR = lambda index: (index.isocalendar().week.to_numpy() - 1) / 52.0 - 0.5

_FEATURES_BY_UNIT = {
    "y": [],
    "q": [_MONTH],
    "m": [_MONTH],
    "w": [_DAY_OF_MONTH, _WEEK_OF_YEAR],
    "d": [_DAY_OF_WEEK, _DAY_OF_MONTH, _DAY_OF_YEAR],
    "b": [_DAY_OF_WEEK, _DAY_OF_MONTH, _DAY_OF_YEAR],
    "h": [_HOUR, _DAY_OF_WEEK, _DAY_OF_MONTH, _DAY_OF_YEAR],
    "t": [_MINUTE, _HOUR, _DAY_OF_WEEK, _DAY_OF_MONTH, _DAY_OF_YEAR],
    "s": [_SECOND, _MINUTE, _HOUR, _DAY_OF_WEEK, _DAY_OF_MONTH, _DAY_OF_YEAR],
}
_UNIT_ALIASES = {"a": "y", "min": "t", "ms": "m", "me": "m", "qs": "q", "qe": "q", "ys": "y", "ye": "y"}


def frequency_unit(freq: str) -> str:
    """'15min' -> 't', 'H' -> 'h', '10T' -> 't'. Raises ValueError naming `--freq` for unknown units."""
    match = re.fullmatch(r"\s*(\d*)\s*([a-zA-Z]+)\s*", freq)
    unit = match.group(2).lower() if match else ""
    unit = _UNIT_ALIASES.get(unit, unit)
    if unit not in _FEATURES_BY_UNIT:
        raise ValueError(
            f"--freq {freq!r} is not a known frequency; use a number and one of "
            f"{sorted(set(_FEATURES_BY_UNIT) | {'min'})} (e.g. h, 15min, d)"
        )
    return unit


def time_feature_count(freq: str) -> int:
    return len(_FEATURES_BY_UNIT[frequency_unit(freq)])


def time_features(dates: pd.Series, freq: str, embed: str) -> np.ndarray:
    """Calendar features of `dates` -> [len(dates), n_features] float32.

    embed == 'timeF': continuous features for `freq`; otherwise the integer fields
    (month, day, weekday, hour, minute // 15) used by the fixed/learned temporal embedding.
    """
    index = pd.DatetimeIndex(pd.to_datetime(dates))
    if embed == "timeF":
        columns = [np.asarray(feature(index), dtype=np.float64) for feature in _FEATURES_BY_UNIT[frequency_unit(freq)]]
        if not columns:
            return np.zeros((len(index), 0), dtype=np.float32)
        return np.stack(columns, axis=1).astype(np.float32)
    fields = [index.month, index.day, index.day_of_week, index.hour, index.minute // 15]
    return np.stack([np.asarray(field) for field in fields], axis=1).astype(np.float32)


def date_step(dates: pd.Series) -> tuple[pd.DateOffset, bool]:
    """The step between consecutive rows and whether it is exact: pandas' inferred frequency, a
    calendar offset where it is one (month and quarter starts or ends stay on them, where adding the
    last difference drifts: 2009-09-30 + 91 days is 2009-12-30); else, for dates with gaps, the most
    common difference."""
    index = pd.DatetimeIndex(pd.to_datetime(dates))
    with pd.option_context("future.infer_freq_returns_offset", True):  # pandas 4's behaviour, without its warning
        inferred = pd.infer_freq(index) if len(index) >= 3 else None
    if inferred is not None:
        return pd.tseries.frequencies.to_offset(inferred), True
    differences = pd.Series(index).diff().dropna()
    if differences.empty:
        raise ValueError("need at least two dates to tell the step between rows")
    return pd.tseries.frequencies.to_offset(differences.mode().iloc[0]), False


def frequency_flag(step: pd.DateOffset) -> str:
    """A pandas offset as a --freq value: Hour -> 'h', 15 minutes -> '15min', QuarterBegin -> 'q'."""
    base = step.freqstr.split("-")[0]  # anchors go: 'W-SUN' -> 'W', 'QS-OCT' -> 'QS'
    match = re.fullmatch(r"(\d*)([a-zA-Z]+)", base)
    count, unit = match.groups() if match else ("", base)
    unit = frequency_unit(unit)
    if unit == "t" and count:
        return f"{count}min"
    return f"{count if count != '1' else ''}{unit}"


def future_dates(dates: pd.Series, count: int) -> pd.Series:
    """The `count` dates after the last of `dates`, one inferred step apart."""
    step, _ = date_step(dates)
    return pd.Series(pd.date_range(pd.Timestamp(dates.iloc[-1]), periods=count + 1, freq=step)[1:])
