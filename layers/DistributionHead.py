"""Distribution heads: any point forecaster of models/ -> a forecast distribution per step and variable.

With `--output_distribution gaussian|student_t|quantile`, `models.build_model` wraps the model (Time-LLM
or any baseline) in `ProbabilisticForecaster`. The model's own forecast stays the point forecast, and
so the location of the distribution, which keeps MSE/MAE comparable with the point model. The head adds
what a point model lacks, the spread, from the window and the forecast, in RevIN units:

    x_enc [B, T, C] -> RevIN statistics per window and variable: center, stdev [B, 1, c]
    model(...) -> point [B, H, c] (the dataset's scaled units);  location = (point - center) / stdev
    features [B, c, T + H] = the normalised input window ++ location
      --Linear(T + H -> hidden), GELU, Linear(hidden -> H x k)--> raw [B, c, H, k]
    gaussian:  scale = softplus(raw_0) + 1e-3                                  (k = 1)
    student_t: scale as above, degrees of freedom = 2 + softplus(raw_1)         (k = 2; > 2: finite variance)
    quantile:  the 0.5 quantile is the location; the others step outwards from it by softplus(raw_j), so
               the quantiles never cross                                        (k = levels - 1)
    RevIN back: location * stdev + center, scale * stdev, quantile * stdev + center

c is the model's output variables: the last c of the input's C (under --features MS, the target).
The point forecast is the mean (gaussian, student_t: degrees of freedom > 1) or the median (quantile).
Training minimises the mean negative log-likelihood (gaussian, student_t) or the pinball loss averaged
over the levels (quantile) in the dataset's scaled units; the gradient reaches the model through the
location, so the point forecaster is trained by the distribution's loss.
"""
from dataclasses import dataclass, replace
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from utils.settings.models import DistributionConfig

MIN_SCALE = 1e-3  # in RevIN units: a floor that keeps the likelihood finite on flat windows
MIN_DEGREES_OF_FREEDOM = 2.0


@dataclass
class ForecastDistribution:
    """A forecast distribution over [B, H, c] in the dataset's scaled units.

    gaussian: `location`, `scale`; student_t: also `degrees_of_freedom`; quantile: `quantiles`
    [B, H, c, Q] at `levels` (sorted, one of them 0.5). Every tensor is indexed [B, H, c, ...]."""

    kind: str
    location: torch.Tensor  # [B, H, c]: the mean (gaussian, student_t) or the median (quantile)
    scale: Optional[torch.Tensor] = None  # [B, H, c]
    degrees_of_freedom: Optional[torch.Tensor] = None  # [B, H, c]
    quantiles: Optional[torch.Tensor] = None  # [B, H, c, Q]
    levels: tuple = ()

    def tensors(self) -> dict:
        names = ("location", "scale", "degrees_of_freedom", "quantiles")
        return {name: getattr(self, name) for name in names if getattr(self, name) is not None}

    def with_tensors(self, tensors: dict) -> "ForecastDistribution":
        """The same kind and levels with other parameter tensors (e.g. gathered across processes)."""
        return replace(self, **tensors)

    def map(self, function) -> "ForecastDistribution":
        """The same distribution with `function` applied to each parameter tensor (slicing, .float()):
        it must keep the leading [B, H, c] axes' meaning."""
        return self.with_tensors({name: function(value) for name, value in self.tensors().items()})

    def select(self, steps: slice, variables: slice) -> "ForecastDistribution":
        return self.map(lambda value: value[:, steps, variables])

    def point(self) -> torch.Tensor:
        return self.location

    def torch_distribution(self) -> torch.distributions.Distribution:
        if self.kind == "gaussian":
            return torch.distributions.Normal(self.location, self.scale)
        if self.kind == "student_t":
            return torch.distributions.StudentT(self.degrees_of_freedom, self.location, self.scale)
        raise ValueError(f"a quantile forecast has no likelihood; kind {self.kind!r}")

    def loss(self, target: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Mean negative log-likelihood, or mean pinball loss over the levels; target [B, H, c]."""
        if self.kind == "quantile":
            levels = self.quantiles.new_tensor(self.levels)
            error = target.unsqueeze(-1) - self.quantiles  # [B, H, c, Q]
            per_value = torch.maximum(levels * error, (levels - 1) * error).mean(dim=-1)
        else:
            per_value = -self.torch_distribution().log_prob(target)
        if mask is None:
            return per_value.mean()
        return (per_value * mask).sum() / mask.sum().clamp(min=1)

    def sample(self, count: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """`count` draws [count, B, H, c]. A quantile forecast is sampled from its piecewise-linear
        quantile function between the lowest and highest level (no mass beyond them)."""
        if self.kind != "quantile":
            shape = (count, *self.location.shape)
            if self.kind == "gaussian":
                noise = torch.randn(shape, generator=generator, device=self.location.device, dtype=self.location.dtype)
            else:  # Student-t: a normal over the square root of a chi-square over its degrees of freedom
                gaussian = torch.randn(shape, generator=generator, device=self.location.device, dtype=self.location.dtype)
                chi2 = torch.distributions.Chi2(self.degrees_of_freedom.expand(shape)).sample()
                noise = gaussian / torch.sqrt(chi2 / self.degrees_of_freedom)
            return self.location + self.scale * noise
        levels = self.quantiles.new_tensor(self.levels)
        uniform = torch.rand((count, *self.location.shape), generator=generator, device=levels.device, dtype=levels.dtype)
        uniform = levels[0] + (levels[-1] - levels[0]) * uniform
        return interpolate_quantiles(self.quantiles, levels, uniform)


def interpolate_quantiles(quantiles: torch.Tensor, levels: torch.Tensor, probabilities: torch.Tensor) -> torch.Tensor:
    """The piecewise-linear quantile function through (levels, quantiles) at `probabilities`
    [S, B, H, c] (within [levels[0], levels[-1]]); quantiles [B, H, c, Q] -> [S, B, H, c]."""
    upper = torch.searchsorted(levels, probabilities.contiguous(), right=True).clamp(1, len(levels) - 1)
    lower = upper - 1
    expanded = quantiles.unsqueeze(0).expand(*probabilities.shape, quantiles.shape[-1])
    low_value = torch.gather(expanded, -1, lower.unsqueeze(-1)).squeeze(-1)
    high_value = torch.gather(expanded, -1, upper.unsqueeze(-1)).squeeze(-1)
    fraction = (probabilities - levels[lower]) / (levels[upper] - levels[lower])
    return low_value + fraction * (high_value - low_value)


class DistributionHead(nn.Module):
    """normalised window [B, c, T] and location [B, c, H] (RevIN units) -> ForecastDistribution in
    RevIN units, its tensors [B, H, c]."""

    def __init__(self, config: DistributionConfig):
        super().__init__()
        self.kind, self.pred_len = config.output_distribution, config.pred_len
        self.levels = tuple(config.quantiles) if self.kind == "quantile" else ()
        self.median_index = self.levels.index(0.5) if self.levels else 0
        outputs = {"gaussian": 1, "student_t": 2, "quantile": len(self.levels) - 1}[self.kind]
        self.outputs = outputs
        self.network = nn.Sequential(
            nn.Linear(config.seq_len + config.pred_len, config.distribution_hidden), nn.GELU(),
            nn.Linear(config.distribution_hidden, config.pred_len * outputs),
        )

    def forward(self, window: torch.Tensor, location: torch.Tensor) -> ForecastDistribution:
        batch, variables, _ = window.shape
        raw = self.network(torch.cat([window, location], dim=-1)).view(batch, variables, self.pred_len, self.outputs)
        raw, location = raw.transpose(1, 2), location.transpose(1, 2)  # [B, H, c, k], [B, H, c]
        if self.kind == "quantile":
            steps = F.softplus(raw)  # [B, H, c, Q - 1]: gaps between neighbouring quantiles
            below = location.unsqueeze(-1) - steps[..., : self.median_index].flip(-1).cumsum(-1).flip(-1)
            above = location.unsqueeze(-1) + steps[..., self.median_index :].cumsum(-1)
            quantiles = torch.cat([below, location.unsqueeze(-1), above], dim=-1)
            return ForecastDistribution("quantile", location, quantiles=quantiles, levels=self.levels)
        scale = F.softplus(raw[..., 0]) + MIN_SCALE
        degrees = MIN_DEGREES_OF_FREEDOM + F.softplus(raw[..., 1]) if self.kind == "student_t" else None
        return ForecastDistribution(self.kind, location, scale=scale, degrees_of_freedom=degrees)


def denormalise(distribution: ForecastDistribution, center: torch.Tensor, stdev: torch.Tensor) -> ForecastDistribution:
    """RevIN units -> the dataset's scaled units: location and quantiles * stdev + center, scale * stdev
    (degrees of freedom unchanged); center, stdev [B, 1, c]."""
    shifted = {"location": distribution.location * stdev + center}
    if distribution.scale is not None:
        shifted["scale"] = distribution.scale * stdev
    if distribution.quantiles is not None:
        shifted["quantiles"] = distribution.quantiles * stdev.unsqueeze(-1) + center.unsqueeze(-1)
    return replace(distribution, **shifted)


def top_level_name(name: str) -> str:
    """A parameter's top-level submodule ("model": a parameter of the model itself)."""
    return name.split(".", 1)[0] if "." in name else "model"


class ProbabilisticForecaster(nn.Module):
    """A model of models/ with a distribution head: same forward arguments, the same ForecastOutput
    with its point forecast as `prediction`, plus `distribution` (ForecastDistribution, scaled units)."""

    def __init__(self, model: nn.Module, config: DistributionConfig):
        super().__init__()
        self.model, self.head = model, DistributionHead(config)
        self.eps = 1e-5

    @property
    def frozen_prefixes(self) -> tuple:
        """The wrapped model's frozen submodules (its LLM), under this wrapper's names (utils/checkpoint.py)."""
        return tuple(f"model.{prefix}" for prefix in getattr(self.model, "frozen_prefixes", ()))

    @staticmethod
    def parameter_group(name: str) -> str:
        """DAPO's parameter group of a parameter (utils/dapo.py): the wrapped model's own groups, and this head."""
        return top_level_name(name.removeprefix("model.")) if name.startswith("model.") else "distribution_head"

    def __getattr__(self, name):
        # The wrapped model's attributes (aux_loss_weights, its LLM, batch_fields) stay reachable.
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("model"), name)

    def forward(self, x_enc: torch.Tensor, *args, **kwargs):
        output = self.model(x_enc, *args, **kwargs)
        point = output.prediction[:, -self.head.pred_len :]  # [B, H, c]
        window = x_enc[..., -point.shape[-1] :]  # [B, T, c]: the variables the model forecasts
        center = window.mean(dim=1, keepdim=True).detach()
        stdev = torch.sqrt(window.var(dim=1, keepdim=True, unbiased=False) + self.eps).detach()
        normalised = ((window - center) / stdev).transpose(1, 2)  # [B, c, T]
        location = ((point - center) / stdev).transpose(1, 2)  # [B, c, H]
        # The location is the model's point forecast itself, not its RevIN round trip.
        output.distribution = replace(denormalise(self.head(normalised, location), center, stdev), location=point)
        output.prediction = output.distribution.point()
        return output
