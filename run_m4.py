"""Short-term forecasting on M4: train one model per seasonal pattern and report SMAPE, MASE and OWA.

    python run_m4.py --model TimeLLM --seasonal_patterns Hourly
    python run_m4.py --model DLinear --seasonal_patterns all      # every pattern whose files exist

Per pattern the horizon is the competition's; the input is 2 x horizon and the decoder start
1 x horizon (Time-Series-Library's convention) unless given. Validation is carved from the end of the
training series; the test set is only used once, by the best checkpoint. OWA is computed against the
Naive2 benchmark recomputed here (utils/m4_summary.py).
"""
import os
import sys

import numpy as np

from data_provider.m4 import M4_PATTERNS
from utils.cli import run_entry
from utils.config import build_parser, parse_config, single_run
from utils.m4_summary import m4_summary
from utils.trainer import Trainer

M4_DEFAULTS = dict(task_name="short_term_forecast", data="m4", features="S", loss="SMAPE", batch_size=16,
                   learning_rate=0.001, train_epochs=10, seasonal_patterns="all")


def patterns_to_run(argv) -> list[str]:
    parser = build_parser()
    parser.set_defaults(**M4_DEFAULTS)
    known, _ = parser.parse_known_args(argv)
    root_path = known.root_path or "./dataset/m4/"
    if known.seasonal_patterns in M4_PATTERNS:
        return [known.seasonal_patterns]
    if known.seasonal_patterns != "all":
        raise ValueError(f"--seasonal_patterns must be 'all' or one of {list(M4_PATTERNS)}, got {known.seasonal_patterns!r}")
    patterns = [p for p in M4_PATTERNS if os.path.isfile(os.path.join(root_path, f"{p}-train.csv"))]
    if not patterns:
        raise FileNotFoundError(f"no M4 <Pattern>-train.csv files in {root_path}")
    return patterns


def run_pattern(argv, pattern: str):
    horizon = M4_PATTERNS[pattern].horizon
    defaults = dict(M4_DEFAULTS, seasonal_patterns=pattern, pred_len=horizon, seq_len=2 * horizon, label_len=horizon,
                    model_id=f"m4_{pattern}")
    config = parse_config([*argv, "--seasonal_patterns", pattern], defaults=defaults, validators=(single_run,))
    config.save_predictions = 1  # the M4 summary is computed from the saved test forecasts
    trainer = Trainer(config)
    trainer.run()
    arrays = np.load(os.path.join(trainer.run_dir, "predictions.npz"))
    test_set = trainer.datasets["test"]
    return trainer.run_dir, (list(arrays["prediction"][:, :, 0]), test_set.future, test_set.history)


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    results, run_dirs = {}, []
    for pattern in patterns_to_run(argv):
        run_dir, results[pattern] = run_pattern(argv, pattern)
        run_dirs.append(run_dir)
    table = m4_summary(results)
    for run_dir in run_dirs:
        table.to_csv(os.path.join(run_dir, "m4_summary.csv"))
    print(table.round(3).to_string())
    return table


if __name__ == "__main__":
    run_entry(main)
