"""ARIMA(p, d, q) on statsmodels, with d from ADF tests (utils/data_analysis.py) and an optional
seasonal order (P, D, Q, s) = (1, 0, 0, `seasonal_period`)."""
import warnings

import numpy as np

from utils.data_analysis import differencing_order


class ARIMAForecaster:
    def __init__(self, p: int = 2, q: int = 1, max_differences: int = 2, seasonal_period: int = 0):
        self.p, self.q, self.max_differences, self.seasonal_period = p, q, max_differences, seasonal_period

    def order(self, series: np.ndarray) -> tuple[int, int, int]:
        differences, _ = differencing_order(series, self.max_differences)
        return self.p, differences, self.q

    def forecast(self, series: np.ndarray, steps: int) -> tuple[np.ndarray, float]:
        """series [T] -> (forecast [steps], confidence in (0, 1]: 1 / (1 + in-sample RMSE / std)).
        Raises when the fit fails; the caller falls back."""
        from statsmodels.tsa.arima.model import ARIMA

        series = np.asarray(series, dtype=np.float64)
        seasonal = (1, 0, 0, self.seasonal_period) if self.seasonal_period >= 2 and len(series) >= 2 * self.seasonal_period else (0, 0, 0, 0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence and start-parameter warnings are expected on short windows
            fitted = ARIMA(series, order=self.order(series), seasonal_order=seasonal).fit()
            prediction = np.asarray(fitted.forecast(steps))
        residual_rmse = float(np.sqrt(np.mean(np.asarray(fitted.resid)[1:] ** 2)))
        return prediction, 1.0 / (1.0 + residual_rmse / max(float(series.std()), 1e-8))
