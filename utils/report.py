"""What a finished run reports: metrics.json, the test predictions and plots in its folder, one row of
the results table, the final tracker values and artifacts, and the `test:` lines of the log."""
import json
import math
import os
import time

import numpy as np
import torch

from utils.metrics import METRIC_NAMES, RELATIVE_NOTE, REPORTED_METRICS
from utils.run_outputs import append_results_row, plot_attention, plot_forecast
from utils.scoring import DISTRIBUTION_COLUMNS
from utils.tracking import log_artifacts


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory of this process so far: allocated on a GPU, resident on the CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def write_test_outputs(context, config, result: dict, arrays: dict, attention_maps: dict, columns, details: dict) -> None:
    """Main process. `details`: what metrics.json records beside the test metrics (checkpoint,
    trainable parameters, the training summary, the epochs' log)."""
    run_dir, summary = context.run_dir, details.get("summary", {})
    metrics = {"test": result, "relative_metrics_note": RELATIVE_NOTE, "checkpoint": details["checkpoint"],
               "trainable_parameters": details["trainable_parameters"], **summary, "epochs": details["epochs"]}
    with open(os.path.join(run_dir, "metrics.json"), "w") as handle:
        json.dump(metrics, handle, indent=2)
    if arrays:  # forecasts (masked pre-training scores reconstructions and keeps none)
        if config.save_predictions:
            np.savez_compressed(os.path.join(run_dir, "predictions.npz"), **arrays)
        # The first test window's last variable: the target under features S/MS, OT on ETT.
        plot_forecast(
            os.path.join(run_dir, "forecast.png"),
            arrays["input"][0, :, -1], arrays["truth"][0, :, -1], arrays["prediction"][0, :, -1],
            f"{config.model} on {config.data}: first test window ({'original' if config.inverse else 'scaled'} units)",
            arrays["quantiles"][0, :, -1] if "quantiles" in arrays else None,
        )
    if attention_maps:
        np.savez_compressed(os.path.join(run_dir, "attention.npz"), **attention_maps)
        plot_attention(os.path.join(run_dir, "attention.png"), attention_maps, columns, f"{config.model} on {config.data}")
    row = {
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        "run_dir": run_dir,
        "model": config.model,
        "data": config.data,
        "features": config.features,
        "seq_len": config.seq_len,
        "pred_len": config.pred_len,
        **{name: f"{result[name]:.6f}" for name in REPORTED_METRICS},
        # Empty without --inverse: the columns exist in every row, so a shared CSV keeps them.
        **{f"original_{name}": f"{result['original_units'][name]:.6f}" if "original_units" in result else "" for name in ("mse", "mae")},
        # A forecast distribution's scores (utils/scoring.py); empty for a point forecast.
        **{name: f"{result['distribution'][name]:.6f}" if name in result.get("distribution", {}) else "" for name in DISTRIBUTION_COLUMNS},
        "test_windows": result["windows"],
        "epochs_run": summary.get("epochs_run", ""),
        "train_time_s": summary.get("train_time_s", ""),
        "trainable_parameters": details["trainable_parameters"],
        "model_comment": config.model_comment,
    }
    append_results_row(context.results_file, row)
    final = {f"test/{name}": result[name] for name in METRIC_NAMES}
    final.update({f"test/{name}": value for name, value in result.get("distribution", {}).items()})
    original = result.get("original_units", {})
    final.update({f"test_original_units/{name}": value for name, value in original.items() if not isinstance(value, dict)})
    final.update({f"test_original_units/{name}": value for name, value in original.get("distribution", {}).items()})
    accelerator = context.accelerator
    accelerator.log({name: value for name, value in final.items() if math.isfinite(value)}, step=summary.get("global_steps", 0))
    log_artifacts(accelerator.trackers, [os.path.join(run_dir, name) for name in ("forecast.png", "metrics.json")])


def test_figures(result: dict) -> str:
    """The point metrics, then a forecast distribution's CRPS and 90 % coverage."""
    figures = [f"{name} {result[name]:.4f}" for name in REPORTED_METRICS]
    scores = result.get("distribution", {})
    figures += [f"{name} {scores[name]:.4f}" for name in ("crps", "coverage_90") if name in scores]
    return " ".join(figures)


def log_test_result(logger, result: dict, run_dir: str) -> None:
    """The floors on the same windows, then the `test:` line (plain on stdout, so `grep '^test:'` works)."""
    baseline = result["last_value_baseline"]
    logger.info(f"repeat-last-value baseline on the same windows: mse {baseline['mse']:.4f} mae {baseline['mae']:.4f}")
    if "seasonal_naive_baseline" in result:
        seasonal = result["seasonal_naive_baseline"]
        logger.info(f"seasonal-naive baseline (period {seasonal['period']}) on the same windows: mse {seasonal['mse']:.4f} mae {seasonal['mae']:.4f}")
    figures = test_figures(result)
    logger.info(f"test: {figures} windows {result['windows']} run {run_dir}", extra={"plain": True})
    if "original_units" in result:
        figures = test_figures(result["original_units"])
        logger.info(f"test (original units, --inverse 1): {figures}", extra={"plain": True})
