"""Hybrid statistical + Time-LLM forecasting (`--use_hybrid 1`, `--use_arima 1`, `--use_es 1`,
`--fusion_method adaptive|average|weighted|learned`).

    Time-LLM forecast [B, H, N] (data units: the dataset's scaling, like the input)
    the K statistical forecasts switched on (ARIMA: --use_arima, Holt-Winters: --use_es) of each
    series window [B, H, N] each (same units: fitted to the input), with confidences c_k in [0, 1]
      --> per series, weights over the 1 + K forecasts                         [B*N, 1 + K]
            average   1 / (1 + K) each
            weighted  by confidence, as the specification (seed 000) defines it: Time-LLM's
                      confidence is 1, so w = (1, c_1, .., c_K) / (1 + sum c_k), per series
            learned   softmax of 1 + K learned logits, shared by all series
            adaptive  softmax(MLP(window characteristics (4), the K confidences))
          (both learned fusions start at softmax(log 8, 0, ..): 0.8 for Time-LLM with both models on)
      --> fused forecast = sum of weight x forecast                             [B, H, N]

The statistical forecasts do not depend on learned weights, so they are not fitted in the forward
pass: `prepare` (called by the trainer before training, and before testing a saved model)
fits them once per split in worker processes (`--hybrid_workers`) and caches them on disk
(`--hybrid_cache_dir`), keyed by the data file's content, the split and the window settings
(`cache_key`); a second run reads the cache. In the forward pass each series window is found by
the hash of its values, so the lookup works for any sample layout. A window not in the cache (a new
file at inference) is fitted on the spot and counted (`misses`). A fit that fails or gives
non-finite values falls back to repeating the last value with confidence 0, and is counted per
model (`failures`, logged and stored in the cache); Holt-Winters first falls back to simple
exponential smoothing (models/traditional/exponential_smoothing.py). Fusion weights averaged over the batch are
diagnostics (`hybrid_weight_<model>`); `python -m models.traditional.report` prints the
interpretability report for N test windows.
"""
import hashlib
import json
import logging
import math
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from torch import nn

from layers.AddOn import AddOn, AddOnOutput, SeriesContext, Stage
from models.traditional.arima import ARIMAForecaster
from models.traditional.exponential_smoothing import ExponentialSmoothingForecaster
from utils.data_analysis import analyse

FUSIONS = ("adaptive", "average", "weighted", "learned")
STATISTICAL_MODELS = {"arima": "use_arima", "ets": "use_es"}  # each model's switch
logger = logging.getLogger("timellm.hybrid")  # a child of the run logger: lines reach train.log


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

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
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


class HybridForecaster(AddOn):
    stage = Stage.FORECAST

    def __init__(self, config):
        super().__init__()
        if config.fusion_method not in FUSIONS:
            raise ValueError(f"--fusion_method must be one of {FUSIONS}, got {config.fusion_method!r}")
        models = tuple(name for name, switch in STATISTICAL_MODELS.items() if getattr(config, switch))
        if not models:
            raise ValueError("--use_hybrid 1 with --use_arima 0 and --use_es 0: no statistical forecast to fuse; switch one on")
        self.config = config
        self.fusion_method = config.fusion_method
        self.sources = ("timellm", *models)
        self.settings = StatisticalSettings(
            config.pred_len, config.arima_p, config.arima_q, config.arima_max_differences, config.arima_seasonal_period,
            config.ets_seasonal_period, models,
        )
        # Learned fusions start from the Time-LLM forecast (weight 0.8, 0.1 for each statistical model
        # with both on) and learn how far to trust the statistical forecasts; uniform weights would start
        # from a forecast worse than the model's own wherever one statistical model extrapolates badly.
        start = torch.tensor([math.log(8.0)] + [0.0] * len(models))
        if self.fusion_method == "learned":
            self.logits = nn.Parameter(start.clone())
        elif self.fusion_method == "adaptive":
            self.weigher = nn.Sequential(nn.Linear(4 + len(models), 16), nn.GELU(), nn.Linear(16, len(self.sources)))
            nn.init.zeros_(self.weigher[-1].weight)
            with torch.no_grad():
                self.weigher[-1].bias.copy_(start)
        self.lookup: dict[bytes, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}  # key -> (forecasts, confidences, characteristics)
        self.failures = np.zeros(len(models), dtype=np.int64)
        self.misses = 0
        self.keep_report = False
        self.report: Optional[dict] = None

    # ------------------------------------------------------------------------- statistical forecasts
    def cache_folder(self) -> str:
        from utils.llm_loader import default_cache_dir

        return self.config.hybrid_cache_dir or os.path.join(default_cache_dir(), "hybrid")

    def prepare(self, datasets: dict) -> None:
        """Load each split's statistical forecasts from the cache, or fit and cache them."""
        folder = self.cache_folder()
        os.makedirs(folder, exist_ok=True)
        workers = self.config.hybrid_workers or os.cpu_count() or 1
        for split, dataset in datasets.items():
            path = os.path.join(folder, cache_key(self.config, split, self.settings) + ".npz")
            if os.path.isfile(path):
                forecasts = StatisticalForecasts.load(path)
                source = f"cache {path}"
            else:
                keys, windows = unique_series_windows(dataset)
                forecasts = fit_in_workers(windows, self.settings, workers)
                forecasts.keys = keys
                forecasts.save(path)
                source = f"fitted in {workers} worker(s), cached in {path}"
            for row, key in enumerate(forecasts.keys):
                self.lookup[key] = (forecasts.forecasts[row], forecasts.confidences[row], forecasts.characteristics[row])
            self.failures += forecasts.failures
            logger.info(
                f"hybrid: {split} split, {len(forecasts.keys)} series windows ({source}); fits that fell back to the "
                "last value: " + ", ".join(f"{name} {count}" for name, count in zip(self.settings.models, forecasts.failures))
            )

    def statistical(self, series: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """series [S, T] -> forecasts [S, K, H], confidences [S, K], characteristics [S, 4]."""
        keys = [window_key(window) for window in series]
        missing = [row for row, key in enumerate(keys) if key not in self.lookup]
        if missing:
            if self.misses == 0:
                logger.warning("hybrid: windows outside the prepared splits are fitted in the forward pass (slow)")
            self.misses += len(missing)
            forecasts, confidences, characteristics, failures = fit_windows(series[missing].astype(np.float64), self.settings)
            self.failures += failures
            for position, row in enumerate(missing):
                self.lookup[keys[row]] = (forecasts[position], confidences[position], characteristics[position])
        entries = [self.lookup[key] for key in keys]
        return tuple(np.stack(parts) for parts in zip(*entries))

    # ------------------------------------------------------------------------------------- fusion
    def forward(self, prediction: torch.Tensor, context: SeriesContext) -> AddOnOutput:
        """Time-LLM's prediction [B, H, N] and the context's input [B, T, N], both in data units ->
        fused [B, H, N], diagnostics: the mean fusion weight of each source."""
        batch, length, n_vars = context.raw_input.shape
        series = context.raw_input.detach().permute(0, 2, 1).reshape(batch * n_vars, length).float().cpu().numpy()
        forecasts, confidences, characteristics = (
            torch.as_tensor(array, device=prediction.device, dtype=torch.float32) for array in self.statistical(series)
        )
        own = prediction.permute(0, 2, 1).reshape(batch * n_vars, 1, -1).float()  # [B*N, 1, H]
        candidates = torch.cat([own, forecasts], dim=1)  # [B*N, 1 + K, H]
        if self.fusion_method == "average":
            weights = torch.full((batch * n_vars, len(self.sources)), 1.0 / len(self.sources), device=prediction.device)
        elif self.fusion_method == "weighted":  # Time-LLM's confidence is 1
            scores = torch.cat([torch.ones_like(confidences[:, :1]), confidences], dim=1)  # [B*N, 1 + K]
            weights = scores / scores.sum(dim=1, keepdim=True)
        elif self.fusion_method == "learned":
            weights = torch.softmax(self.logits, dim=0).expand(batch * n_vars, -1)
        else:
            weights = torch.softmax(self.weigher(torch.cat([characteristics, confidences], dim=-1)), dim=-1)
        fused = (weights.unsqueeze(-1) * candidates).sum(dim=1)  # [B*N, H]
        if self.keep_report:
            self.report = {"characteristics": characteristics.cpu(), "confidences": confidences.cpu(), "weights": weights.detach().cpu(),
                           "forecasts": candidates.detach().cpu(), "fused": fused.detach().cpu()}
        diagnostics = {f"hybrid_weight_{name}": weights[:, index].detach().mean() for index, name in enumerate(self.sources)}
        return AddOnOutput(fused.reshape(batch, n_vars, -1).permute(0, 2, 1).to(prediction.dtype), diagnostics=diagnostics)
