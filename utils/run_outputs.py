"""What a run leaves behind: its folder, log, resolved config, results row and forecast plot."""
import csv
import fcntl
import logging
import os
import sys
import tempfile
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


def create_run_dir(config) -> tuple[str, bool]:
    """A new folder per run (never reused, so no run can overwrite another's results); returns it and
    whether this call created it. A folder that cannot be made is an error naming the flag."""
    if config.run_dir:
        existed = os.path.isdir(config.run_dir)
        _make_folder(config.run_dir, "--run_dir", exist_ok=True)
        return config.run_dir, not existed
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = os.path.join(config.checkpoints, f"{run_name(config)}_{stamp}")
    for attempt in range(1000):
        path = base if attempt == 0 else f"{base}-{attempt}"
        try:
            _make_folder(path, "--checkpoints", exist_ok=False)
            return path, True
        except FileExistsError:  # a concurrent run took this name
            continue
    raise ValueError(f"--checkpoints {config.checkpoints}: could not find a free run folder name next to {base}")


def _make_folder(path: str, flag: str, exist_ok: bool) -> None:
    try:
        os.makedirs(path, exist_ok=exist_ok)
        _probe_writable(path)
    except FileExistsError as error:
        if exist_ok or not os.path.isdir(path):  # a file in the way, not a concurrent run's folder
            raise ValueError(f"{flag}: cannot write the run folder {path}: {_reason(error, path)}") from None
        raise
    except OSError as error:
        raise ValueError(f"{flag}: cannot write the run folder {path}: {_reason(error, path)}") from None


def _probe_writable(folder: str) -> None:
    """Create and delete a file in `folder`: permissions, read-only mounts and full disks all show here."""
    with tempfile.TemporaryFile(dir=folder):
        pass


def _reason(error: OSError, path: str) -> str:
    """The OS's reason, or which file stands where a folder must be ("file exists" says too little)."""
    ancestor = os.path.abspath(path)
    while not os.path.exists(ancestor) and os.path.dirname(ancestor) != ancestor:
        ancestor = os.path.dirname(ancestor)
    if os.path.exists(ancestor) and not os.path.isdir(ancestor):
        return f"{ancestor} is a file, not a folder"
    return (error.strerror or str(error)).lower()


def check_writable_file(path: str, flag: str) -> None:
    """Fail now, naming `flag`, if `path` could not be appended to at the end of the run. Creates
    missing parent folders (as writing would) but not the file."""
    try:
        if os.path.isdir(path):
            raise IsADirectoryError(21, "it is a folder")
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        if os.path.exists(path):
            with open(path, "a"):
                pass
        else:
            _probe_writable(folder)
    except OSError as error:
        raise ValueError(f"{flag} {path}: cannot write there: {_reason(error, os.path.dirname(os.path.abspath(path)))}") from None


def remove_if_present(path: str) -> None:
    if os.path.exists(path):
        os.remove(path)


def saved_config(config) -> dict:
    """The resolved configuration as plain values; loadable again with --config."""
    return {key: value for key, value in vars(config).items() if key not in _NOT_SAVED}


def write_config(run_dir: str, config) -> None:
    with open(os.path.join(run_dir, "config.yaml"), "w") as handle:
        yaml.safe_dump(saved_config(config), handle, sort_keys=True)


# Warnings every run on a CPU machine would print, which say nothing about the run: (logger, message start).
KNOWN_NOISE = (
    ("DeepSpeed", "Setting accelerator to CPU"),  # DeepSpeed's accelerator probe, on import, once per process
    ("bitsandbytes.backends.cpu.ops", "Failed to load CPU gemm_4bit_forward from kernels-community"),  # optional kernels package
)


class _DropMessage(logging.Filter):
    def __init__(self, start: str):
        super().__init__()
        self.start = start

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.start)


def silence_known_noise() -> None:
    """Filter exactly the KNOWN_NOISE warnings, before their libraries are imported (a logger keeps
    its filters when the library configures it); every other warning still shows."""
    for name, start in KNOWN_NOISE:
        logger = logging.getLogger(name)
        if not any(isinstance(existing, _DropMessage) and existing.start == start for existing in logger.filters):
            logger.addFilter(_DropMessage(start))


class _PlainWhenAsked(logging.Formatter):
    """Records logged with extra={"plain": True} (the final `test:` line) reach the terminal without a
    time stamp, so that `grep '^test:'` finds them; the log file stamps every line."""

    def format(self, record: logging.LogRecord) -> str:
        return record.getMessage() if getattr(record, "plain", False) else super().format(record)


def setup_logger(run_dir: Optional[str], is_main_process: bool) -> logging.Logger:
    logger = logging.getLogger("timellm")
    logger.handlers.clear()
    logger.propagate = False
    logger.setLevel(logging.INFO if is_main_process else logging.WARNING)
    line_format = ("%(asctime)s %(message)s", "%H:%M:%S")
    stream = logging.StreamHandler(sys.stdout)
    stream.setFormatter(_PlainWhenAsked(*line_format))
    logger.addHandler(stream)
    if run_dir and is_main_process:
        file_handler = logging.FileHandler(os.path.join(run_dir, "train.log"))
        file_handler.setFormatter(logging.Formatter(*line_format))
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


def plot_forecast(path: str, history: np.ndarray, truth: Optional[np.ndarray], prediction: np.ndarray, title: str,
                  quantiles: Optional[np.ndarray] = None) -> None:
    """One series: input window, then the forecast horizon (and its truth, when known); a forecast
    distribution's quantiles [H, 5] at 0.05, 0.25, 0.5, 0.75, 0.95 shade its 90 % and 50 % bands."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(10, 4))
    steps = np.arange(len(history) + len(prediction))
    axis.plot(steps[: len(history)], history, color="black", linewidth=1, label="input")
    if truth is not None:
        axis.plot(steps[len(history) :], truth, color="tab:blue", linewidth=1.5, label="truth")
    axis.plot(steps[len(history) :], prediction, color="tab:orange", linewidth=1.5, label="forecast")
    if quantiles is not None:
        for (low, high), alpha, label in (((0, 4), 0.2, "90 % interval"), ((1, 3), 0.35, "50 % interval")):
            axis.fill_between(steps[len(history) :], quantiles[:, low], quantiles[:, high], color="tab:orange", alpha=alpha, linewidth=0, label=label)
    axis.axvline(len(history) - 0.5, color="grey", linestyle=":")
    axis.set_title(title)
    axis.set_xlabel("time step")
    axis.legend(loc="upper left")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_attention(path: str, maps: dict, variables: list, title: str, shown_prototypes: int = 40) -> None:
    """Heat-maps of the first test series: which text prototypes each patch reads (reprogramming
    weights [S, heads, P, num_tokens], mean over heads, the `shown_prototypes` most read ones), and,
    when kept, how each variable attends to the others (inter-variate weights [B, P, heads, N, N],
    mean over patches and heads)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted((name for name in maps if maps[name].ndim in (4, 5)), key=lambda name: maps[name].ndim)  # reprogramming first
    figure, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 5), squeeze=False)
    for axis, name in zip(axes[0], panels):
        weights = maps[name]
        if weights.ndim == 4:  # reprogramming
            patch_by_prototype = weights[0].mean(axis=0)  # [P, num_tokens]
            order = np.argsort(-patch_by_prototype.mean(axis=0))[:shown_prototypes]
            image = axis.imshow(patch_by_prototype[:, order], aspect="auto", cmap="viridis")
            axis.set_xticks(range(len(order)), [str(index) for index in order], rotation=90, fontsize=6)
            axis.set_xlabel(f"text prototype (the {len(order)} most read of {patch_by_prototype.shape[1]})")
            axis.set_ylabel("patch")
            axis.set_title(f"{name}: patch -> prototype weights")
        else:  # inter-variate
            variable_by_variable = weights[0].mean(axis=(0, 1))  # [N, N]
            image = axis.imshow(variable_by_variable, cmap="viridis")
            labels = list(variables)[-variable_by_variable.shape[0]:]
            axis.set_xticks(range(len(labels)), labels, rotation=90)
            axis.set_yticks(range(len(labels)), labels)
            axis.set_xlabel("attended variable")
            axis.set_ylabel("variable")
            axis.set_title(f"{name}: variable -> variable weights")
        figure.colorbar(image, ax=axis, format="%.3g")
    figure.suptitle(f"{title}: first test series")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
