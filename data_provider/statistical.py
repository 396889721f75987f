"""The hybrid's statistical forecasts (`--use_hybrid 1`, models/traditional/hybrid.py), a per-split
precompute the datasets serve.

    split dataset --> its unique series windows (each variable of each item, by the hash of its values)
      --> ARIMA and/or Holt-Winters (--use_arima, --use_es) fitted to each window in worker processes
          (`--hybrid_workers`), cached on disk (`--hybrid_cache_dir`) under `cache_key`
      --> WithStatisticalForecasts(dataset): every Window also carries, per variable c,
            statistical_forecasts [C, K, H], statistical_confidences [C, K], window_characteristics [C, 4]

The forecasts depend on no learned weight, so they are fitted once, before training, and never in
the forward pass. The cache key covers the data file's content, the split, the window settings, the
models' settings and the digest of their code, so an edit of any of them refits. A fit that fails or
gives non-finite values falls back to repeating the last value with confidence 0 and is counted per
model (`failures`, logged and cached).
"""
import hashlib
import json
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace

import numpy as np
from torch.utils.data import Dataset

from data_provider.batch import Window
from models.traditional.arima import ARIMAForecaster
from models.traditional.exponential_smoothing import ExponentialSmoothingForecaster
from utils.data_analysis import analyse

STATISTICAL_MODELS = {"arima": "use_arima", "ets": "use_es"}  # each model's switch


def window_key(values: np.ndarray) -> bytes:
    """The lookup key of one series window: a hash of its float32 values."""
    return hashlib.blake2b(np.ascontiguousarray(values, dtype=np.float32).tobytes(), digest_size=16).digest()


@dataclass
class StatisticalSettings:
    pred_len: int
    arima_p: int = 2
    arima_q: int = 1
    arima_max_differences: int = 1
    arima_seasonal_period: int = 0
    ets_seasonal_period: int = 24
    models: tuple = tuple(STATISTICAL_MODELS)  # the statistical models fitted, in this order


@dataclass
class StatisticalForecasts:
    """One split's unique series windows: keys [M], forecasts [M, K, H] (the K models of the settings),
    confidences [M, K], characteristics [M, 4] (utils/data_analysis.py), fallbacks per model [K]."""

    keys: list
    forecasts: np.ndarray
    confidences: np.ndarray
    characteristics: np.ndarray
    failures: np.ndarray

    def save(self, path: str) -> None:
        temporary = path + f".{os.getpid()}.tmp.npz"
        # Keys as raw bytes [M, 16]: a numpy bytes dtype would drop a hash's trailing zero bytes.
        keys = np.frombuffer(b"".join(self.keys), dtype=np.uint8).reshape(len(self.keys), 16)
        np.savez(temporary, keys=keys, forecasts=self.forecasts, confidences=self.confidences,
                 characteristics=self.characteristics, failures=self.failures)
        os.replace(temporary, path)

    @classmethod
    def load(cls, path: str) -> "StatisticalForecasts":
        with np.load(path) as stored:
            return cls([row.tobytes() for row in stored["keys"]], stored["forecasts"], stored["confidences"], stored["characteristics"], stored["failures"])


def fit_windows(windows: np.ndarray, settings: StatisticalSettings) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """windows [m, T] -> forecasts [m, K, H], confidences [m, K], characteristics [m, 4], failures [K]."""
    available = {
        "arima": lambda: ARIMAForecaster(settings.arima_p, settings.arima_q, settings.arima_max_differences, settings.arima_seasonal_period),
        "ets": lambda: ExponentialSmoothingForecaster(settings.ets_seasonal_period),
    }
    forecasters = [available[name]() for name in settings.models]
    count, horizon, models = len(windows), settings.pred_len, len(forecasters)
    forecasts = np.empty((count, models, horizon), dtype=np.float32)
    confidences = np.zeros((count, models), dtype=np.float32)
    characteristics = np.empty((count, 4), dtype=np.float32)
    failures = np.zeros(models, dtype=np.int64)
    for row, window in enumerate(windows):
        characteristics[row] = analyse(window).as_features()
        for column, forecaster in enumerate(forecasters):
            try:
                prediction, confidence = forecaster.forecast(window, horizon)
                if not (np.all(np.isfinite(prediction)) and np.isfinite(confidence)):
                    raise ValueError("non-finite forecast")
                forecasts[row, column], confidences[row, column] = prediction, confidence
            except Exception:  # any statsmodels failure: the documented fallback, counted
                forecasts[row, column], failures[column] = window[-1], failures[column] + 1
    return forecasts, confidences, characteristics, failures


def _single_threaded() -> None:
    """Worker initialiser: one BLAS thread per process (the processes are the parallelism)."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)


def fit_in_workers(windows: np.ndarray, settings: StatisticalSettings, workers: int) -> StatisticalForecasts:
    chunks = [chunk for chunk in np.array_split(windows, max(1, min(len(windows), workers * 8))) if len(chunk)]
    if workers <= 1 or len(chunks) == 1:
        results = [fit_windows(chunk, settings) for chunk in chunks]
    else:
        # spawn, not fork: the parent holds torch and BLAS threads that a forked child must not inherit.
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_single_threaded) as pool:
            results = list(pool.map(fit_windows, chunks, [settings] * len(chunks)))
    forecasts, confidences, characteristics, failures = (np.concatenate(parts) for parts in zip(*results))
    return StatisticalForecasts([], forecasts, confidences, characteristics, failures.reshape(-1, len(settings.models)).sum(axis=0))


def unique_series_windows(dataset) -> tuple[list, np.ndarray]:
    """Every series window of a split (each variable of each item), without repeats: keys, values [M, T]."""
    found: dict[bytes, np.ndarray] = {}
    for index in range(len(dataset)):
        x = np.asarray(dataset[index].inputs, dtype=np.float32)  # [T, c]
        for column in range(x.shape[1]):
            found.setdefault(window_key(x[:, column]), x[:, column])
    return list(found), np.stack(list(found.values())).astype(np.float64)


def data_file_digest(path: str) -> str:
    digest = hashlib.sha1()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


# Bump when cached forecasts must be refitted for a reason the statistical sources do not show
# (their digest below covers every edit of them).
FORECAST_CACHE_VERSION = 2
# The code the cached forecasts come from: the two models, the window analysis, and this file's
# fitting function.
STATISTICAL_SOURCES = ("models/traditional/arima.py", "models/traditional/exponential_smoothing.py", "utils/data_analysis.py")


def statistical_code_digest() -> str:
    """A digest of the statistical code and of the libraries it calls, so that a change to either
    never reuses forecasts cached by the old one."""
    import inspect

    import scipy
    import statsmodels

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    digest = hashlib.sha1()
    for relative in STATISTICAL_SOURCES:
        with open(os.path.join(root, relative), "rb") as handle:
            digest.update(handle.read())
    digest.update(inspect.getsource(fit_windows).encode())
    digest.update(f"numpy {np.__version__} scipy {scipy.__version__} statsmodels {statsmodels.__version__}".encode())
    return digest.hexdigest()[:16]


def cache_key(config, split: str, settings: StatisticalSettings) -> str:
    """Data file content, split, window settings, the statistical models' settings, and the version
    and digest of their code: what the cached forecasts depend on."""
    data_file = os.path.join(config.root_path, config.data_path)
    described = {
        "data": config.data, "file": data_file_digest(data_file), "split": split, "features": config.features,
        "target": config.target, "seq_len": config.seq_len, "percent": config.percent, **vars(settings),
        "version": FORECAST_CACHE_VERSION, "code": statistical_code_digest(),
    }
    text = json.dumps(described, sort_keys=True)
    name = os.path.splitext(os.path.basename(config.data_path))[0]
    return f"{name}_{split}_sl{config.seq_len}_pl{config.pred_len}_{hashlib.sha1(text.encode()).hexdigest()[:12]}"


def settings_from_config(config) -> StatisticalSettings:
    models = tuple(name for name, switch in STATISTICAL_MODELS.items() if getattr(config, switch))  # one at least: HybridConfig
    return StatisticalSettings(
        config.pred_len, config.arima_p, config.arima_q, config.arima_max_differences, config.arima_seasonal_period,
        config.ets_seasonal_period, models,
    )


def cached_forecasts(config, split: str, dataset) -> tuple[StatisticalForecasts, str]:
    """The split's statistical forecasts from the cache, or fitted and cached; and a note for the run's
    log saying which (the datasets are built before the run's logger exists)."""
    from utils.llm_loader import default_cache_dir

    settings = settings_from_config(config)
    folder = config.hybrid_cache_dir or os.path.join(default_cache_dir(), "hybrid")
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, cache_key(config, split, settings) + ".npz")
    if os.path.isfile(path):
        forecasts, source = StatisticalForecasts.load(path), f"cache {path}"
    else:
        workers = config.hybrid_workers or os.cpu_count() or 1
        keys, windows = unique_series_windows(dataset)
        forecasts = fit_in_workers(windows, settings, workers)
        forecasts.keys = keys
        forecasts.save(path)
        source = f"fitted in {workers} worker(s), cached in {path}"
    note = (
        f"hybrid: {split} split, {len(forecasts.keys)} series windows ({source}); fits that fell back to the "
        "last value: " + ", ".join(f"{name} {count}" for name, count in zip(settings.models, forecasts.failures))
    )
    return forecasts, note


class WithStatisticalForecasts(Dataset):
    """A split's dataset whose windows also carry their variables' statistical forecasts (module docstring)."""

    def __init__(self, dataset, forecasts: StatisticalForecasts, note: str):
        self.dataset, self.notes = dataset, [note]
        self.rows = {key: row for row, key in enumerate(forecasts.keys)}
        self.forecasts = forecasts

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Window:
        window = self.dataset[index]
        inputs = np.asarray(window.inputs, dtype=np.float32)
        rows = [self.rows[window_key(inputs[:, column])] for column in range(inputs.shape[1])]
        return replace(
            window, statistical_forecasts=self.forecasts.forecasts[rows], statistical_confidences=self.forecasts.confidences[rows],
            window_characteristics=self.forecasts.characteristics[rows],
        )

    def __getattr__(self, name):  # the wrapped dataset's attributes (scaler, split, columns, ...)
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)
