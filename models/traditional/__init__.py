"""Statistical forecasters (statsmodels) and the hybrid that fuses them with Time-LLM's forecast.

    arima.py                  ARIMA with the differencing order from ADF tests, optional seasonal order
    exponential_smoothing.py  Holt-Winters exponential smoothing
    hybrid.py                 per-split forecasts in worker processes, cached on disk; the fusion module
    report.py                 interpretability report for N test windows of a trained run
"""
