"""Interpretability report of a trained hybrid run: for N test windows, the input's characteristics,
each statistical model's confidence, the fusion weights and the first steps of every forecast.

    python -m models.traditional.report --run checkpoints/<hybrid run> --samples 5 [--steps 5]

Values are in the data's scaled units, the units the forecasts are fused in.
"""
import argparse
from typing import Optional

import torch

from data_provider.batch import Batch
from data_provider.registry import build_dataset
from utils.inference import Forecaster

CHARACTERISTICS = ("ADF p-value", "trend strength (R^2)", "seasonality (autocorrelation)", "noise level")
NAMES = {"timellm": "Time-LLM", "arima": "ARIMA", "ets": "Holt-Winters"}


def report(run: str, samples: int, steps: int = 5) -> str:
    forecaster = Forecaster(run)
    hybrid = getattr(forecaster.model, "hybrid", None)
    if hybrid is None:
        raise ValueError(f"--run {run} was trained without --use_hybrid 1: there is no fusion to report")
    dataset = build_dataset(forecaster.config, "test")
    hybrid.keep_report = True
    batch = Batch.collate([dataset[i] for i in range(min(samples, len(dataset)))])
    forecaster.predict(batch)
    y = batch.targets.numpy()
    details = hybrid.report
    n_vars = batch.inputs.shape[2]
    lines = []
    for row in range(len(batch) * n_vars):
        window, variable = divmod(row, n_vars)
        lines.append(f"test window {window}, variable {dataset.columns[variable] if n_vars > 1 else forecaster.config.target}:")
        features = details["characteristics"][row]
        lines.append("  input: " + ", ".join(f"{name} {value:.3f}" for name, value in zip(CHARACTERISTICS, features.tolist())))
        confidence = details["confidences"][row]
        lines.append("  " + ", ".join(f"{NAMES[name]} confidence {value:.3f}" for name, value in zip(hybrid.sources[1:], confidence.tolist())))
        weights = details["weights"][row]
        lines.append("  fusion weights: " + ", ".join(f"{NAMES[name]} {weight:.3f}" for name, weight in zip(hybrid.sources, weights.tolist())))
        for name, forecast in zip(hybrid.sources, details["forecasts"][row]):
            lines.append(f"  {NAMES[name]:<13} first {steps} steps: " + " ".join(f"{v:8.3f}" for v in forecast[:steps].tolist()))
        lines.append(f"  {'fused':<13} first {steps} steps: " + " ".join(f"{v:8.3f}" for v in details["fused"][row, :steps].tolist()))
        truth = torch.as_tensor(y[window, -forecaster.config.pred_len :, variable])
        lines.append(f"  {'truth':<13} first {steps} steps: " + " ".join(f"{v:8.3f}" for v in truth[:steps].tolist()))
    return "\n".join(lines)


def main(argv: Optional[list] = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="run folder or checkpoint of a --use_hybrid 1 run")
    parser.add_argument("--samples", type=int, default=5, help="test windows to report")
    parser.add_argument("--steps", type=int, default=5, help="forecast steps shown")
    args = parser.parse_args(argv)
    text = report(args.run, args.samples, args.steps)
    print(text)
    return text


if __name__ == "__main__":
    from utils.cli import run_entry

    run_entry(main)
