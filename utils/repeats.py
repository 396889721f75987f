"""Repeated runs over seeds (`--itr N`, upstream's flag, or `--seeds S1 S2 ...`).

Each seed is a complete run in its own folder; then one summary folder, `seeds_<run name>_<time>`
under --checkpoints, holds summary.json (mean, sample standard deviation and count of every metric,
and each seed's row) and summary.csv (one row per seed, then the mean and std rows). The numbers a
paper reports as "mean ± std over N seeds".
"""
import copy
import csv
import json
import math
import os
import time
from typing import Callable

from utils.run_outputs import run_name

# The figures summarised, as (name, path into metrics.json).
SUMMARISED = {
    "mse": ("test", "mse"), "mae": ("test", "mae"), "rmse": ("test", "rmse"),
    "best_val_loss": ("best_val_loss",), "train_time_s": ("train_time_s",),
    "last_value_mse": ("test", "last_value_baseline", "mse"), "seasonal_naive_mse": ("test", "seasonal_naive_baseline", "mse"),
}


def seeds_of(config) -> list[int]:
    """--seeds as given, else --itr consecutive seeds from --seed."""
    if config.seeds:
        if config.itr not in (1, len(config.seeds)):
            raise ValueError(f"--itr {config.itr} disagrees with the {len(config.seeds)} seeds of --seeds; give one of them")
        if len(set(config.seeds)) != len(config.seeds):
            raise ValueError(f"--seeds {config.seeds} repeats a seed")
        return list(config.seeds)
    if config.itr < 1:
        raise ValueError(f"--itr must be >= 1, got {config.itr}")
    return [config.seed + offset for offset in range(config.itr)]


def metric_value(metrics: dict, path: tuple):
    value = metrics
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def mean_and_std(values: list[float]) -> dict:
    """Mean, sample standard deviation (ddof 1; 0 for one value) and count."""
    count = len(values)
    mean = sum(values) / count
    std = math.sqrt(sum((value - mean) ** 2 for value in values) / (count - 1)) if count > 1 else 0.0
    return {"mean": mean, "std": std, "n": count}


def summarise(rows: list[dict]) -> dict:
    """Per-seed rows (seed, run_dir and the SUMMARISED figures) -> name -> mean, std, n."""
    summary = {}
    for name in SUMMARISED:
        values = [row[name] for row in rows if row.get(name) is not None]
        if values:
            summary[name] = mean_and_std(values)
    return summary


def run_over_seeds(config, run_one: Callable) -> dict:
    """run_one(config) -> (result, run folder). One seed: its result. Several: each seed's run, then
    the summary folder; returns the summary."""
    seeds = seeds_of(config)
    if len(seeds) == 1:
        config.seed = seeds[0]
        return run_one(config)[0]
    if config.run_dir or config.resume_from_checkpoint:
        raise ValueError("--itr/--seeds make one run folder per seed: --run_dir and --resume_from_checkpoint name a single run")
    rows = []
    for seed in seeds:
        seeded = copy.deepcopy(config)
        seeded.seed = seed
        _, run_dir = run_one(seeded)
        with open(os.path.join(run_dir, "metrics.json")) as handle:
            metrics = json.load(handle)
        rows.append({"seed": seed, "run_dir": run_dir, **{name: metric_value(metrics, path) for name, path in SUMMARISED.items()}})
    summary = summarise(rows)
    folder = os.path.join(config.checkpoints, f"seeds_{run_name(config)}_{time.strftime('%Y%m%d-%H%M%S')}")
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "summary.json"), "w") as handle:
        json.dump({"seeds": seeds, "summary": summary, "runs": rows}, handle, indent=2)
    columns = ["seed", *SUMMARISED, "run_dir"]
    with open(os.path.join(folder, "summary.csv"), "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        for statistic in ("mean", "std"):
            writer.writerow({"seed": statistic, **{name: values[statistic] for name, values in summary.items()}})
    figures = ", ".join(f"{name} {summary[name]['mean']:.4f} ± {summary[name]['std']:.4f}" for name in ("mse", "mae") if name in summary)
    print(f"seeds {' '.join(map(str, seeds))}: {figures} (mean ± sample std over {len(seeds)} runs) summary {folder}")
    return {"seeds": seeds, "summary": summary, "runs": rows, "summary_dir": folder}
