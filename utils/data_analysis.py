"""Characteristics of a series window, for the hybrid forecaster's fusion and its report.

    analyse(series [T]) -> SeriesCharacteristics:
      stationarity  ADF test p-value (small: stationary) and the differences needed (0..2) for p < 0.05
      trend         R^2 of a straight-line fit, in [0, 1]
      seasonality   autocorrelation at the strongest FFT period (2 <= period <= T / 2), in [-1, 1]
      noise         std of the first differences / std of the series (white noise: about 1.4)
`as_features()` gives the 4 numbers the adaptive fusion reads.
"""
import warnings
from dataclasses import asdict, dataclass

import numpy as np

P_VALUE = 0.05


@dataclass
class SeriesCharacteristics:
    adf_p_value: float
    differences: int
    trend_strength: float
    period: int
    seasonality_strength: float
    noise_level: float

    def as_features(self) -> np.ndarray:
        return np.array([self.adf_p_value, self.trend_strength, self.seasonality_strength, self.noise_level], dtype=np.float32)

    def as_dict(self) -> dict:
        return asdict(self)


def adf_p_value(series: np.ndarray) -> float:
    from statsmodels.tsa.stattools import adfuller

    if np.ptp(series) == 0:
        return 0.0  # constant: stationary
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(adfuller(series, maxlag=min(12, len(series) // 4), autolag=None)[1])


def differencing_order(series: np.ndarray, max_differences: int = 2) -> tuple[int, float]:
    """Differences until the ADF test rejects a unit root at 5 % (at most max_differences); and the
    p-value of the undifferenced series."""
    first = p_value = adf_p_value(series)
    differences = 0
    while p_value >= P_VALUE and differences < max_differences and len(series) > 10:
        series, differences = np.diff(series), differences + 1
        p_value = adf_p_value(series)
    return differences, first


def analyse(series: np.ndarray) -> SeriesCharacteristics:
    series = np.asarray(series, dtype=np.float64)
    length = len(series)
    differences, p_value = differencing_order(series)
    steps = np.arange(length)
    fitted = np.polyval(np.polyfit(steps, series, 1), steps)
    variance = series.var()
    trend = 0.0 if variance == 0 else float(1 - ((series - fitted) ** 2).mean() / variance)
    detrended = series - fitted
    amplitude = np.abs(np.fft.rfft(detrended))[1:]
    frequency = int(np.argmax(amplitude)) + 1 if amplitude.size else 1
    period = int(np.clip(round(length / frequency), 2, max(2, length // 2)))
    seasonality = 0.0
    if detrended.std() > 0 and period < length:
        seasonality = float(np.corrcoef(detrended[:-period], detrended[period:])[0, 1])
    noise = float(np.diff(series).std() / series.std()) if series.std() > 0 else 0.0
    return SeriesCharacteristics(p_value, differences, trend, period, seasonality if np.isfinite(seasonality) else 0.0, noise)
