"""Forecast metrics over all evaluated values (never a mean of per-batch means).

`MetricAccumulator` keeps float64 sums so that metrics computed batch by batch equal the metrics
of the concatenated arrays exactly; `forecast_metrics` is the array version (numpy reference).
MAPE/MSPE divide by the truth: like Time-Series-Library, a zero in the truth makes them inf.
"""
import numpy as np
import torch

METRIC_NAMES = ("mse", "mae", "rmse", "mape", "mspe")
# What the final line and results.csv show. MAPE/MSPE are in metrics.json only, with RELATIVE_NOTE:
# on standardised data (zero mean) truths near zero make them enormous (MAPE 11.7, MSPE 41937 for
# a 5-step DLinear run on ETTh1 M whose MSE is 0.67).
REPORTED_METRICS = ("mse", "mae", "rmse")
RELATIVE_NOTE = (
    "mape and mspe divide each error by its truth: in scaled units (zero-mean data) truths near zero make them "
    "very large and they mean little; read them in original units of strictly positive series"
)


def forecast_metrics(prediction: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    error = prediction.astype(np.float64) - truth.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        relative = error / truth.astype(np.float64)
    mse = float(np.mean(error**2))
    return {
        "mse": mse,
        "mae": float(np.mean(np.abs(error))),
        "rmse": float(np.sqrt(mse)),
        "mape": float(np.mean(np.abs(relative))),
        "mspe": float(np.mean(relative**2)),
    }


class MetricAccumulator:
    """Running float64 sums of squared, absolute and relative errors."""

    def __init__(self):
        self.sums = torch.zeros(4, dtype=torch.float64)
        self.count = 0

    def update(self, prediction: torch.Tensor, truth: torch.Tensor) -> None:
        prediction = prediction.detach().to("cpu", torch.float64)
        truth = truth.detach().to("cpu", torch.float64)
        error = prediction - truth
        relative = error / truth
        self.sums += torch.stack([(error**2).sum(), error.abs().sum(), relative.abs().sum(), (relative**2).sum()])
        self.count += error.numel()

    def compute(self) -> dict[str, float]:
        if self.count == 0:
            raise ValueError("no values were evaluated")
        mse, mae, mape, mspe = (self.sums / self.count).tolist()
        return {"mse": mse, "mae": mae, "rmse": mse**0.5, "mape": mape, "mspe": mspe}
