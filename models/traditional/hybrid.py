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

The statistical forecasts depend on no learned weight: the datasets serve them, fitted once per split
and cached (data_provider/statistical.py), as batch fields this add-on asks for (`batch_fields`).
Windows that come without them (a new file at inference) are fitted on the spot and counted
(`misses`). Holt-Winters falls back to simple exponential smoothing, then to the last value
(models/traditional/exponential_smoothing.py). Fusion weights averaged over the batch are
diagnostics (`hybrid_weight_<model>`); `python -m models.traditional.report` prints the
interpretability report for N test windows.
"""
import logging
import math
from typing import Optional

import numpy as np
import torch
from torch import nn

from data_provider.statistical import fit_windows, settings_from_config
from layers.AddOn import AddOn, AddOnOutput, SeriesContext, Stage
from utils.settings.addons import HybridConfig

FUSIONS = ("adaptive", "average", "weighted", "learned")
STATISTICAL_FIELDS = ("statistical_forecasts", "statistical_confidences", "window_characteristics")
logger = logging.getLogger("timellm.hybrid")  # a child of the run logger: lines reach train.log


class HybridForecaster(AddOn):
    stage = Stage.FORECAST
    batch_fields = STATISTICAL_FIELDS

    def __init__(self, config: HybridConfig):
        super().__init__()
        if config.fusion_method not in FUSIONS:
            raise ValueError(f"--fusion_method must be one of {FUSIONS}, got {config.fusion_method!r}")
        self.settings = settings_from_config(config)
        self.fusion_method = config.fusion_method
        self.sources = ("timellm", *self.settings.models)
        models = len(self.settings.models)
        # Learned fusions start from the Time-LLM forecast (weight 0.8, 0.1 for each statistical model
        # with both on) and learn how far to trust the statistical forecasts; uniform weights would start
        # from a forecast worse than the model's own wherever one statistical model extrapolates badly.
        start = torch.tensor([math.log(8.0)] + [0.0] * models)
        if self.fusion_method == "learned":
            self.logits = nn.Parameter(start.clone())
        elif self.fusion_method == "adaptive":
            self.weigher = nn.Sequential(nn.Linear(4 + models, 16), nn.GELU(), nn.Linear(16, len(self.sources)))
            nn.init.zeros_(self.weigher[-1].weight)
            with torch.no_grad():
                self.weigher[-1].bias.copy_(start)
        self.misses = 0
        self.keep_report = False
        self.report: Optional[dict] = None

    def statistical(self, series: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Fitted on the spot: series [S, T] -> forecasts [S, K, H], confidences [S, K], characteristics [S, 4]."""
        if self.misses == 0:
            logger.warning("hybrid: windows without the datasets' statistical forecasts are fitted in the forward pass (slow)")
        self.misses += len(series)
        forecasts, confidences, characteristics, _ = fit_windows(series.astype(np.float64), self.settings)
        return forecasts, confidences, characteristics

    def _statistics(self, context: SeriesContext) -> list[torch.Tensor]:
        """Forecasts [B*N, K, H], confidences [B*N, K], characteristics [B*N, 4] of the batch's series."""
        served = [context.batch_extras.get(name) for name in STATISTICAL_FIELDS]
        if all(value is not None for value in served):  # [B, N, ...] -> [B*N, ...], sample-major like the series
            return [value.reshape(context.batch * context.n_vars, *value.shape[2:]).float() for value in served]
        batch, length, n_vars = context.raw_input.shape
        series = context.raw_input.detach().permute(0, 2, 1).reshape(batch * n_vars, length).float().cpu().numpy()
        return [torch.as_tensor(array, device=context.raw_input.device, dtype=torch.float32) for array in self.statistical(series)]

    # ------------------------------------------------------------------------------------- fusion
    def forward(self, prediction: torch.Tensor, context: SeriesContext) -> AddOnOutput:
        """Time-LLM's prediction [B, H, N] and the context's input [B, T, N], both in data units ->
        fused [B, H, N], diagnostics: the mean fusion weight of each source."""
        batch, n_vars = context.batch, context.n_vars
        forecasts, confidences, characteristics = self._statistics(context)
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
