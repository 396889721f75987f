"""Forecast with a trained run: its test split, or the future after the last row of a new CSV.

    python -m utils.inference --run checkpoints/<run folder>                      # every test window
    python -m utils.inference --run checkpoints/<run folder> --data_path new.csv  # the next pred_len steps

A new file needs the training file's `date` column and value columns; it is scaled with the
training split's statistics stored in the checkpoint, and forecasts are written in original units
with a plot of the last input window and its forecast. The future dates follow the step pandas
infers from the file's dates, so month and quarter starts or ends stay on them. A probabilistic run
(--output_distribution) adds the quantiles at 0.05, 0.25, 0.5, 0.75, 0.95 as columns `q0.05`, ...
(test split) or `<variable>_q0.05`, ... (new file), and the plot shades the 50 and 90 % bands.
"""
import argparse
import os
from typing import Optional

import numpy as np
import pandas as pd
import torch

from data_provider.batch import Batch
from data_provider.registry import build_dataset
from data_provider.tabular import read_series_csv
from models import build_model, model_inputs
from utils.checkpoint import load_model_checkpoint, read_checkpoint, resolve_checkpoint_path
from utils.run_outputs import plot_forecast
from utils.scoring import SAVED_QUANTILE_LEVELS, saved_quantiles
from utils.timefeatures import future_dates, time_features


class Forecaster:
    """A trained model with the configuration and data scaling it was trained with."""

    def __init__(self, run: str, device: str = "cpu"):
        self.checkpoint_path = resolve_checkpoint_path(run, flag="--run")
        payload = read_checkpoint(self.checkpoint_path)
        self.config = argparse.Namespace(**payload["config"])
        self.scaling = payload.get("data_scaling")
        self.model = build_model(self.config)
        load_model_checkpoint(self.checkpoint_path, self.model, self.config)
        self.model.to(device).eval()
        self.device = device
        probabilistic = getattr(self.config, "output_distribution", "point") != "point"
        # The values forecast per step and variable: the point, then a distribution's quantiles.
        self.value_names = ["forecast", *([f"q{level:g}" for level in SAVED_QUANTILE_LEVELS] if probabilistic else [])]

    def predict(self, batch: Batch) -> np.ndarray:
        """A batch of scaled input windows (targets unused) -> scaled point forecasts [B, pred_len, C]."""
        return self.predict_values(batch)[..., 0]

    @torch.no_grad()
    def predict_values(self, batch: Batch) -> np.ndarray:
        """As `predict`, with every value a run forecasts: [B, pred_len, C, K], the point forecast, then
        (probabilistic runs) the quantiles, as `value_names` lists them."""
        config = self.config
        fields = getattr(self.model, "batch_fields", ())
        output = self.model(**model_inputs(batch.to(self.device), config.label_len, config.pred_len, fields))
        values = [output.prediction[:, -config.pred_len :].float().cpu().numpy()[..., None]]
        if output.distribution is not None:
            steps = slice(-config.pred_len, None)
            values.append(saved_quantiles(output.distribution.select(steps, slice(None)).map(torch.Tensor.float)))
        return np.concatenate(values, axis=-1)

    def forecast_test_split(self, batch_size: int = 64) -> pd.DataFrame:
        """Every test window of the training data, in original units: one row per window, step and variable."""
        dataset = build_dataset(self.config, "test")
        rows = []
        for start in range(0, len(dataset), batch_size):
            batch = Batch.collate([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
            prediction = self.predict_values(batch)
            truth = batch.targets[:, -self.config.pred_len :].numpy()
            for offset in range(len(batch)):
                window_start, channels = dataset.locate(start + offset)
                names = dataset.columns[channels]
                mean = dataset.scaler.mean_[channels]
                scale = dataset.scaler.scale_[channels]
                for step in range(self.config.pred_len):
                    for column, name in enumerate(names):
                        rows.append((start + offset, window_start, step + 1, name,
                                     *(prediction[offset, step, column] * scale[column] + mean[column]),
                                     truth[offset, step, column] * scale[column] + mean[column]))
        return pd.DataFrame(rows, columns=["window", "window_start_row", "step", "variable", *self.value_names, "truth"])

    def forecast_file(self, path: str) -> tuple[pd.DataFrame, np.ndarray]:
        """The next pred_len steps after the last row of `path`; returns (forecast table, input window)."""
        config = self.config
        if self.scaling is None:
            raise ValueError(f"{self.checkpoint_path} holds no data scaling; forecast its test split instead")
        dates, values = read_series_csv(path, config.target, config.features)
        if list(values.columns) != self.scaling["columns"]:
            raise ValueError(f"{path}: columns {list(values.columns)} differ from the training columns {self.scaling['columns']}")
        if len(values) < config.seq_len:
            raise ValueError(f"{path}: {len(values)} rows, fewer than --seq_len {config.seq_len}")
        mean, scale = np.array(self.scaling["mean"]), np.array(self.scaling["scale"])
        window = (values.to_numpy()[-config.seq_len :] - mean) / scale  # [seq_len, C]
        future = future_dates(dates, config.pred_len)
        history_dates = dates.iloc[-config.seq_len :].reset_index(drop=True)
        x_mark = time_features(history_dates, config.freq, config.embed)
        y_mark = time_features(pd.concat([history_dates.iloc[config.seq_len - config.label_len :], future]), config.freq, config.embed)
        batch = Batch(torch.as_tensor(window[None], dtype=torch.float32), targets=None, window_position=None,
                      input_marks=torch.as_tensor(x_mark[None]), target_marks=torch.as_tensor(y_mark[None]))
        prediction = self.predict_values(batch)[0]  # [pred_len, C, K]
        if config.features == "MS":
            columns, prediction, mean, scale = [values.columns[-1]], prediction[:, -1:], mean[-1:], scale[-1:]
        else:
            columns = list(values.columns)
        restored = prediction * scale[:, None] + mean[:, None]
        names = [column if value == "forecast" else f"{column}_{value}" for column in columns for value in self.value_names]
        table = pd.DataFrame(restored.reshape(config.pred_len, -1), columns=names)
        table.insert(0, "date", future.to_numpy())
        return table, values.to_numpy()[-config.seq_len :]


def main(argv: Optional[list] = None) -> str:
    parser = argparse.ArgumentParser(description="forecast with a trained run")
    parser.add_argument("--run", required=True, help="run folder or checkpoint file")
    parser.add_argument("--data_path", default=None, help="CSV to forecast beyond (default: the run's test split)")
    parser.add_argument("--output", default=None, help="forecast CSV (default: inside the run folder)")
    args = parser.parse_args(argv)
    forecaster = Forecaster(args.run)
    folder = os.path.dirname(forecaster.checkpoint_path)
    if args.data_path:
        table, history = forecaster.forecast_file(args.data_path)
        output = args.output or os.path.join(folder, "forecast_" + os.path.basename(args.data_path))
        last = table.columns[len(table.columns) - len(forecaster.value_names)]  # the last variable's forecast
        bands = table[[f"{last}_{value}" for value in forecaster.value_names[1:]]].to_numpy() if len(forecaster.value_names) > 1 else None
        plot_forecast(os.path.splitext(output)[0] + ".png", history[:, -1], None, table[last].to_numpy(),
                      f"forecast of {last} after {os.path.basename(args.data_path)}", bands)
    else:
        table = forecaster.forecast_test_split()
        output = args.output or os.path.join(folder, "forecast_test.csv")
    table.to_csv(output, index=False)
    print(f"wrote {output} ({len(table)} rows)")
    return output


if __name__ == "__main__":
    from utils.cli import run_entry

    run_entry(main)
