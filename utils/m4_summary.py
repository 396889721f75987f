"""M4 evaluation: SMAPE, MASE and OWA against Naive2, computed here rather than read from a file.

Naive2 is the competition's seasonally adjusted naive forecast: a 90 % autocorrelation test for
seasonality at the pattern's period, multiplicative seasonal indices from a classical centred
moving average, the last deseasonalised value repeated, then reseasonalised. Groups follow the
competition: Yearly, Quarterly, Monthly, Others (Weekly + Daily + Hourly) and the overall Average,
each pooled over its series.
"""
import numpy as np
import pandas as pd

from data_provider.m4 import M4_PATTERNS

M4_GROUPS = {
    "Yearly": ("Yearly",),
    "Quarterly": ("Quarterly",),
    "Monthly": ("Monthly",),
    "Others": ("Weekly", "Daily", "Hourly"),
    "Average": tuple(M4_PATTERNS),
}


def _autocorrelation(series: np.ndarray, lag: int) -> float:
    centred = series - series.mean()
    return float(np.sum(centred[lag:] * centred[:-lag]) / np.sum(centred**2))


def _is_seasonal(series: np.ndarray, period: int) -> bool:
    squares = sum(_autocorrelation(series, lag) ** 2 for lag in range(1, period))
    limit = 1.645 * np.sqrt((1 + 2 * squares) / len(series))
    return abs(_autocorrelation(series, period)) > limit


def seasonal_indices(series: np.ndarray, period: int) -> np.ndarray:
    """Multiplicative seasonal indices (mean 1) for each phase, ones when the series is not seasonal."""
    if period <= 1 or len(series) < 3 * period or not _is_seasonal(series, period):
        return np.ones(period)
    values = pd.Series(series)
    moving_average = values.rolling(period, center=True).mean()
    if len(series) % 2 == 0:  # the competition's reference code switches on the series' length parity
        moving_average = np.roll(moving_average.rolling(2, center=True).mean().to_numpy(), -1)
    ratios = series / np.asarray(moving_average)
    padded = np.concatenate([ratios, np.full(-len(ratios) % period, np.nan)]).reshape(-1, period)
    indices = np.nanmean(padded, axis=0)
    return indices / indices.mean()


def naive2_forecast(series: np.ndarray, horizon: int, period: int) -> np.ndarray:
    indices = seasonal_indices(series, period)
    last_phase = (len(series) - 1) % period
    level = series[-1] / indices[last_phase]
    future_phases = (np.arange(len(series), len(series) + horizon)) % period
    return level * indices[future_phases]


def smape(forecast: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean(200 * np.abs(forecast - truth) / (np.abs(forecast) + np.abs(truth))))


def mase(forecast: np.ndarray, truth: np.ndarray, history: np.ndarray, period: int) -> float:
    scale = np.mean(np.abs(history[period:] - history[:-period]))
    return float(np.mean(np.abs(forecast - truth)) / scale)


def m4_summary(results: dict) -> pd.DataFrame:
    """results: pattern -> (forecasts list, truths list, histories list). Returns a table of
    SMAPE, MASE, OWA (and Naive2's SMAPE/MASE) per pattern and per competition group present."""
    per_series = {}
    for pattern, (forecasts, truths, histories) in results.items():
        period, horizon = M4_PATTERNS[pattern].frequency, M4_PATTERNS[pattern].horizon
        rows = []
        for forecast, truth, history in zip(forecasts, truths, histories):
            naive = naive2_forecast(history, horizon, period)
            rows.append(
                (
                    smape(forecast, truth),
                    mase(forecast, truth, history, period),
                    smape(naive, truth),
                    mase(naive, truth, history, period),
                )
            )
        per_series[pattern] = np.array(rows)
    table = {}
    for pattern, rows in per_series.items():
        table[pattern] = rows.mean(axis=0)
    for group, members in M4_GROUPS.items():
        present = [per_series[p] for p in members if p in per_series]
        if present and group not in table and (group != "Average" or len(per_series) > 1):
            table[group] = np.concatenate(present).mean(axis=0)
    frame = pd.DataFrame(table, index=["smape", "mase", "naive2_smape", "naive2_mase"]).T
    frame["owa"] = (frame["smape"] / frame["naive2_smape"] + frame["mase"] / frame["naive2_mase"]) / 2
    return frame
