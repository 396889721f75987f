"""What a run leaves behind: its folder, log, resolved config, results row and forecast plot."""
import csv
import fcntl
import logging
import os
import sys
import time
from typing import Optional

import numpy as np
import yaml

# Keys of the namespace that describe this invocation rather than the experiment.
_NOT_SAVED = ("config", "run_dir", "group_of")


def run_name(config) -> str:
    """Upstream-style setting name: what was run, on what, with which shape."""
    return (
        f"{config.task_name}_{config.model_id}_{config.model}_{config.data}_ft{config.features}"
        f"_sl{config.seq_len}_ll{config.label_len}_pl{config.pred_len}_dm{config.d_model}_{config.des}_{config.model_comment}"
    )


def create_run_dir(config) -> str:
    """A new folder per run (never reused, so no run can overwrite another's results)."""
    if config.run_dir:
        os.makedirs(config.run_dir, exist_ok=True)
        return config.run_dir
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = os.path.join(config.checkpoints, f"{run_name(config)}_{stamp}")
    for attempt in range(1000):
        path = base if attempt == 0 else f"{base}-{attempt}"
        try:
            os.makedirs(path)
            return path
        except FileExistsError:
            continue
    raise RuntimeError(f"could not create a run folder next to {base}")


def saved_config(config) -> dict:
    """The resolved configuration as plain values; loadable again with --config."""
    return {key: value for key, value in vars(config).items() if key not in _NOT_SAVED}


def write_config(run_dir: str, config) -> None:
    with open(os.path.join(run_dir, "config.yaml"), "w") as handle:
        yaml.safe_dump(saved_config(config), handle, sort_keys=True)


def setup_logger(run_dir: Optional[str], is_main_process: bool) -> logging.Logger:
    logger = logging.getLogger("timellm")
    logger.handlers.clear()
    logger.propagate = False
    logger.setLevel(logging.INFO if is_main_process else logging.WARNING)
    formatter = logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S")
    stream = logging.StreamHandler(sys.stdout)
    stream.setFormatter(formatter)
    logger.addHandler(stream)
    if run_dir and is_main_process:
        file_handler = logging.FileHandler(os.path.join(run_dir, "train.log"))
        file_handler.setFormatter(formatter)
        logger.addHandler(file_handler)
    return logger


def append_results_row(path: str, row: dict) -> None:
    """Append one row under an exclusive lock, so concurrent runs never lose or interleave rows.
    An existing file keeps its header: unknown keys are dropped, missing ones left empty."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "a+", newline="") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            handle.seek(0)
            header = next(csv.reader(handle), None)
            writer = csv.DictWriter(handle, fieldnames=header or list(row), extrasaction="ignore")
            if header is None:
                writer.writeheader()
            writer.writerow(row)
            handle.flush()
            os.fsync(handle.fileno())
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def plot_forecast(path: str, history: np.ndarray, truth: Optional[np.ndarray], prediction: np.ndarray, title: str) -> None:
    """One series: input window, then the forecast horizon (and its truth, when known)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(10, 4))
    steps = np.arange(len(history) + len(prediction))
    axis.plot(steps[: len(history)], history, color="black", linewidth=1, label="input")
    if truth is not None:
        axis.plot(steps[len(history) :], truth, color="tab:blue", linewidth=1.5, label="truth")
    axis.plot(steps[len(history) :], prediction, color="tab:orange", linewidth=1.5, label="forecast")
    axis.axvline(len(history) - 0.5, color="grey", linestyle=":")
    axis.set_title(title)
    axis.set_xlabel("time step")
    axis.legend(loc="upper left")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
