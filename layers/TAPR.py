"""TAPR, trend-aware patch routing (the enhanced Time-LLM, `--use_tapr 1`).

Two parts and the fusion that puts the second to use:

    MultiScaleDecomposition (TAPR-DM)
        patches [S, P, d_model] -> (routed patches [S, P, d_model], weighted trend [S, P, d_model])
        Each scale k in 1x, 4x, 16x, ... (`--n_scales` of them) average-pools the patch sequence by k,
        encodes it with a depthwise-separable convolution, splits it into trend and seasonal parts
        (moving average), and is upsampled back to P. Coarser scales then inform finer ones through
        cross-attention (coarse to fine), and learned softmax weights mix the scales.
    CoarseToFineHead (TAPR-C2F)
        routed patches, trend -> TrendOutput: direction logits [S, 3] (down / flat / up), magnitude
        logits [S, 4] (strong down / weak down / weak up / strong up, conditioned on the direction),
        a slope regressed from the trend-class embedding [S], and a trend token [S, 1, d_llm] that
        leads the LLM input.
    TrendFusion (C2F fusion)
        normalised forecast [S, H] + TrendOutput -> forecast + gate * slope * (1 .. H)

Trend classes are defined on the least-squares slope of the window's true future, in standard
deviations of its input window per step (the RevIN units the model forecasts in). With the default
thresholds (-0.02, -0.005, 0.005, 0.02) the five bands hold 5-19 % / 20-24 % / 21-43 % / 24-28 % /
2-17 % of ETTh1's training windows (measured on HUFL and OT, 96 -> 96). The thresholds are fixed
(`--trend_thresholds`), not learned: a class boundary has no gradient, and a learned one would let
the model move the labels it is scored on. Labels are computed in `losses()` from the true future,
which only the trainer passes, so they never reach the forecast.

The specification applies the fusion only in training and multiplies the forecast by (1 + factor).
Here it is one function in train and eval, and additive: in RevIN units a forecast is centred on
zero, where a multiplicative factor rescales deviations instead of adding a trend.
"""
import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from layers.AddOn import AddOn, AddOnOutput, SeriesContext, Stage
from layers.Resample import adaptive_average, interpolate_linear
from layers.SeriesDecomposition import SeriesDecomposition
from utils.settings.addons import TAPRConfig

DIRECTIONS = ("down", "flat", "up")
MAGNITUDES = ("strong_down", "weak_down", "weak_up", "strong_up")
# Trend of a pooled patch sequence: a moving average over this many (pooled) patches.
TREND_KERNEL = 3


@dataclass
class TrendOutput:
    direction_logits: torch.Tensor  # [S, 3]
    magnitude_logits: torch.Tensor  # [S, 4]
    slope: torch.Tensor  # [S], normalised units per step, bounded by 2 * max |threshold|
    token: torch.Tensor  # [S, 1, d_llm]


def validate_thresholds(thresholds) -> tuple[float, ...]:
    thresholds = tuple(float(value) for value in thresholds)
    if len(thresholds) != 4 or not (thresholds[0] < thresholds[1] <= 0 <= thresholds[2] < thresholds[3]):
        raise ValueError(
            f"--trend_thresholds must be 4 increasing values t0 < t1 <= 0 <= t2 < t3 "
            f"(strong down | weak down | flat | weak up | strong up), got {list(thresholds)}"
        )
    return thresholds


def future_slope(future: torch.Tensor) -> torch.Tensor:
    """Least-squares slope per step of each row: future [S, H] -> [S]."""
    steps = torch.arange(future.shape[-1], dtype=future.dtype, device=future.device)
    centred = steps - steps.mean()
    denominator = (centred**2).sum().clamp_min(1e-12)
    return (future * centred).sum(dim=-1) / denominator


def trend_labels(future: torch.Tensor, thresholds: tuple[float, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised true future [S, H] -> (direction labels [S] in 0..2, magnitude labels [S] in 0..3)."""
    slope = future_slope(future)
    low, weak_low, weak_high, high = thresholds
    direction = (slope > weak_low).long() + (slope > weak_high).long()  # down 0, flat 1, up 2
    magnitude = (slope >= low).long() + (slope >= 0).long() + (slope > high).long()
    return direction, magnitude


class MultiScaleDecomposition(nn.Module):
    def __init__(self, d_model: int, n_scales: int, n_heads: int, dropout: float):
        super().__init__()
        if not 1 <= n_scales <= 4:
            raise ValueError(f"--n_scales must be between 1 and 4 (pooling 1x, 4x, 16x, 64x), got {n_scales}")
        if d_model % n_heads:
            raise ValueError(f"--use_tapr: --d_model ({d_model}) must be divisible by --n_heads ({n_heads}) for cross-scale attention")
        self.pool_sizes = [4**scale for scale in range(n_scales)]
        self.encoders = nn.ModuleList(
            nn.Sequential(
                nn.Conv1d(d_model, d_model, kernel_size=3, padding=1, groups=d_model),  # depthwise
                nn.Conv1d(d_model, d_model, kernel_size=1),  # pointwise
                nn.GELU(),
            )
            for _ in self.pool_sizes
        )
        self.decomposition = SeriesDecomposition(TREND_KERNEL)
        self.merge_parts = nn.ModuleList(nn.Linear(2 * d_model, d_model) for _ in self.pool_sizes)
        # Attention from scale i (queries) to the already-informed scale i + 1 (keys and values).
        self.cross_scale = nn.ModuleList(nn.MultiheadAttention(d_model, n_heads, dropout=dropout, batch_first=True) for _ in self.pool_sizes[1:])
        self.cross_norms = nn.ModuleList(nn.LayerNorm(d_model) for _ in self.pool_sizes[1:])
        self.scale_logits = nn.Parameter(torch.zeros(n_scales))
        self.dropout = nn.Dropout(dropout)

    def forward(self, patches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """patches [S, P, d_model] -> (routed [S, P, d_model], weighted trend [S, P, d_model])."""
        length = patches.shape[1]
        channels_first = patches.transpose(1, 2)  # [S, d_model, P]
        features, trends = [], []
        for pool, encoder, merge in zip(self.pool_sizes, self.encoders, self.merge_parts):
            # Pooling and upsampling as fixed matrix products (layers/Resample.py): reproducible on CUDA.
            pooled = channels_first if pool == 1 else adaptive_average(patches, math.ceil(length / pool)).transpose(1, 2)
            encoded = encoder(pooled).transpose(1, 2)  # [S, L_k, d_model]
            seasonal, trend = self.decomposition(encoded)
            feature = merge(torch.cat([seasonal, trend], dim=-1))
            features.append(self._upsample(feature, length))
            trends.append(self._upsample(trend, length))
        # Coarse to fine: the coarsest scale is read as is; each finer one attends to the one above.
        for index in range(len(features) - 2, -1, -1):
            context = features[index + 1]
            attended = self.cross_scale[index](features[index], context, context, need_weights=False)[0]
            features[index] = self.cross_norms[index](features[index] + self.dropout(attended))
        weights = torch.softmax(self.scale_logits, dim=0)
        routed = sum(weight * feature for weight, feature in zip(weights, features))
        trend = sum(weight * part for weight, part in zip(weights, trends))
        return patches + self.dropout(routed), trend

    @staticmethod
    def _upsample(values: torch.Tensor, length: int) -> torch.Tensor:
        """[S, L_k, d] -> [S, length, d] by linear interpolation (identity when L_k == length)."""
        if values.shape[1] == length:
            return values
        return interpolate_linear(values, length)


class CoarseToFineHead(nn.Module):
    def __init__(self, d_model: int, d_llm: int, slope_bound: float):
        super().__init__()
        self.summary = nn.Sequential(nn.Linear(2 * d_model, d_model), nn.GELU())
        self.direction = nn.Linear(d_model, len(DIRECTIONS))
        # The fine decision sees the coarse one (its probabilities).
        self.magnitude = nn.Linear(d_model + len(DIRECTIONS), len(MAGNITUDES))
        self.class_embeddings = nn.Parameter(torch.randn(len(MAGNITUDES), d_model) / math.sqrt(d_model))
        self.regression = nn.Linear(2 * d_model, 1)
        self.gate = nn.Linear(d_model, 1)
        self.to_llm = nn.Linear(d_model, d_llm)
        self.slope_bound = slope_bound

    def forward(self, routed: torch.Tensor, trend: torch.Tensor) -> TrendOutput:
        """routed, trend [S, P, d_model] -> TrendOutput."""
        # The patches' mean and the trend's rise from first to last patch.
        summary = self.summary(torch.cat([routed.mean(dim=1), trend[:, -1] - trend[:, 0]], dim=-1))  # [S, d_model]
        direction_logits = self.direction(summary)
        magnitude_logits = self.magnitude(torch.cat([summary, direction_logits.softmax(dim=-1)], dim=-1))
        class_embedding = magnitude_logits.softmax(dim=-1) @ self.class_embeddings  # expected class embedding [S, d_model]
        slope = self.slope_bound * torch.tanh(self.regression(torch.cat([summary, class_embedding], dim=-1))).squeeze(-1)
        gate = torch.sigmoid(self.gate(summary))  # how much the token carries the class rather than the summary
        token = self.to_llm(gate * class_embedding + (1 - gate) * summary).unsqueeze(1)  # [S, 1, d_llm]
        return TrendOutput(direction_logits, magnitude_logits, slope, token)


class TrendFusion(nn.Module):
    """forecast [S, H] (normalised) + TrendOutput -> forecast + gate * slope * (1, 2, ..., H).

    The gate, from the trend-class probabilities and their confidence, lies in (0, 0.5): the trend
    head can move the forecast by at most half its slope extrapolated over the horizon. It starts
    near 0.06 so the head's early, untrained guesses barely touch the forecast.
    """

    def __init__(self, pred_len: int):
        super().__init__()
        self.gate = nn.Linear(len(MAGNITUDES) + 1, 1)
        nn.init.zeros_(self.gate.weight)
        nn.init.constant_(self.gate.bias, -2.0)
        self.register_buffer("steps", torch.arange(1, pred_len + 1, dtype=torch.float32), persistent=False)

    def forward(self, forecast: torch.Tensor, trend: TrendOutput) -> torch.Tensor:
        probabilities = trend.magnitude_logits.softmax(dim=-1)
        confidence = probabilities.max(dim=-1, keepdim=True).values
        gate = 0.5 * torch.sigmoid(self.gate(torch.cat([probabilities, confidence], dim=-1)))  # [S, 1]
        return forecast + gate * trend.slope.unsqueeze(-1) * self.steps.to(forecast.dtype)


class TAPR(AddOn):
    """The add-on `--use_tapr 1` switches on, at the PATCHES stage.

    forward(patches [S, P, d_model]) -> AddOnOutput: routed patches [S, P, d_model], the trend token
        [S, 1, d_llm] ahead of the prompt, the trend losses as supervised terms (`losses`), and the
        C2F fusion of the forecast [S, H] (none with --c2f_fusion 0)
    losses(TrendOutput, normalised future [S, H]) -> (losses, accuracies), names as in aux_loss_weights
    """

    stage = Stage.PATCHES
    emits_tokens = True

    def __init__(self, config: TAPRConfig):
        super().__init__()
        d_llm = config.llm_dim
        self.thresholds = validate_thresholds(config.trend_thresholds)
        if not 0 <= config.label_smoothing < 1:
            raise ValueError(f"--label_smoothing must be in [0, 1), got {config.label_smoothing}")
        self.label_smoothing = config.label_smoothing
        self.decomposition = MultiScaleDecomposition(config.d_model, config.n_scales, config.n_heads, config.dropout)
        slope_bound = 2 * max(abs(self.thresholds[0]), abs(self.thresholds[3]))
        self.head = CoarseToFineHead(config.d_model, d_llm, slope_bound)
        self.fusion = TrendFusion(config.pred_len) if config.c2f_fusion else None
        self.aux_loss_weights = {
            "trend_direction": config.lambda_trend * config.lambda_dir,
            "trend_magnitude": config.lambda_trend * config.lambda_mag,
            "trend_consistency": config.lambda_trend * config.lambda_hcl,
        }

    def forward(self, patches: torch.Tensor, context: SeriesContext) -> AddOnOutput:
        routed, trend_features = self.decomposition(patches)
        trend = self.head(routed, trend_features)
        fusion = self.fusion
        return AddOnOutput(
            routed, tokens=trend.token, supervised_terms=lambda future: self.losses(trend, future),
            adjust_forecast=None if fusion is None else lambda forecast: fusion(forecast, trend),
        )

    def losses(self, trend: TrendOutput, future: torch.Tensor) -> tuple[dict, dict]:
        direction_labels, magnitude_labels = trend_labels(future.float(), self.thresholds)
        direction_logits, magnitude_logits = trend.direction_logits.float(), trend.magnitude_logits.float()
        losses = {
            "trend_direction": F.cross_entropy(direction_logits, direction_labels, label_smoothing=self.label_smoothing),
            "trend_magnitude": F.cross_entropy(magnitude_logits, magnitude_labels, label_smoothing=self.label_smoothing),
            "trend_consistency": self.hierarchical_consistency(direction_logits, magnitude_logits),
        }
        accuracies = {
            "trend_direction_accuracy": (direction_logits.argmax(dim=-1) == direction_labels).float().mean(),
            "trend_magnitude_accuracy": (magnitude_logits.argmax(dim=-1) == magnitude_labels).float().mean(),
        }
        return losses, accuracies

    @staticmethod
    def hierarchical_consistency(direction_logits: torch.Tensor, magnitude_logits: torch.Tensor) -> torch.Tensor:
        """KL(coarse || fine) over down-versus-up, the split both levels make.

        The coarse head's down/up probabilities, renormalised without flat, are the target (no
        gradient); the fine head's implied down = strong + weak down and up = weak + strong up must
        agree with them.
        """
        coarse = direction_logits.softmax(dim=-1)[:, [0, 2]].detach()
        coarse = coarse / coarse.sum(dim=-1, keepdim=True)
        fine = magnitude_logits.softmax(dim=-1)
        fine = torch.stack([fine[:, 0] + fine[:, 1], fine[:, 2] + fine[:, 3]], dim=-1).clamp_min(1e-8)
        return (coarse * (coarse.clamp_min(1e-8).log() - fine.log())).sum(dim=-1).mean()
