"""The add-on protocol: how an optional module plugs into Time-LLM's forward pass.

Time-LLM's forward (models/TimeLLM.py) is a fixed sequence of stages. An add-on declares the one
stage it acts at, takes the run's config (its own flags, and `llm_dim`, the LLM width the model
derived before building add-ons), and returns an `AddOnOutput`. The stages and what an add-on at
each receives and returns as `value` (S = B*N series, one per sample and variable):

    PATCH_EMBEDDING  x [B, N, T] (RevIN-normalised) -> patches [S, P, d_model]; replaces Time-LLM's
                     patch embedding (at most one add-on here)
    PATCHES          patches [S, P, d_model] -> same shape; `tokens` [S, k, d_llm] go ahead of the
                     text prompt (their `emits_tokens` rules out the shared-prefix cache)
    PROMPT_TOKENS    series [S, T] (RevIN-normalised) -> tokens [S, k, d_llm], placed after the prompt
    REPROGRAMMED     reprogrammed patches [S, P, d_llm] -> same shape
    FORECAST         forecast [B, H, N] in data units (after RevIN denorm) -> same shape

Besides `value`, an output may carry auxiliary losses (each name must be in the module's
`aux_loss_weights`: the trainer refuses a loss without a declared weight), diagnostics (logged,
never in the loss), supervised terms (a function of the normalised true future, which only the
trainer holds in training), and a forecast adjustment the model applies to the head's output.

Add-ons are built from the config by `layers/registry.py`; one registry line adds one. State that
must survive a restart and is drawn from the data (a retrieval memory, in buffers) is built in
`prepare(datasets)`, which the trainer calls before training and before testing a saved model. What
can be recomputed from the data alone (the hybrid's statistical forecasts) is a per-split precompute
the datasets serve (data_provider/statistical.py): an add-on names the Batch fields it reads in
`batch_fields`, and the model passes them on in `context.batch_extras`.
"""
import enum
from dataclasses import dataclass, field
from typing import Callable, ClassVar, Optional

import torch
from torch import nn


class Stage(enum.Enum):
    PATCH_EMBEDDING = "patch_embedding"
    PATCHES = "patches"
    PROMPT_TOKENS = "prompt_tokens"
    REPROGRAMMED = "reprogrammed"
    FORECAST = "forecast"


@dataclass
class SeriesContext:
    """What every add-on may read about the batch, built once per forward pass."""

    batch: int
    n_vars: int
    series: torch.Tensor  # [S, T] RevIN-normalised, sample-major (a sample's N variables are consecutive)
    center: torch.Tensor  # [S] each series' RevIN mean
    stdev: torch.Tensor  # [S] each series' RevIN standard deviation
    raw_input: torch.Tensor  # [B, T, N] in data units
    # Batch fields (data_provider/batch.py) the model's add-ons ask for by `batch_fields`, by name; a
    # field missing here was not served (inference on a new file).
    batch_extras: dict = field(default_factory=dict)

    @classmethod
    def from_input(cls, x_enc: torch.Tensor, normalize: nn.Module, batch_extras: Optional[dict] = None) -> "SeriesContext":
        """RevIN over time (`normalize`, layers/StandardNorm.py): x_enc [B, T, N] -> the context, one
        normalised series per sample and variable."""
        batch, length, n_vars = x_enc.shape
        normalised = normalize(x_enc, "norm")  # [B, T, N]
        series = normalised.permute(0, 2, 1).reshape(batch * n_vars, length)  # [B*N, T]
        # Each series' RevIN statistics [B*N]; the forecast and its true future live in these units.
        center, stdev = (value.permute(0, 2, 1).reshape(batch * n_vars) for value in (normalize.center, normalize.stdev))
        return cls(batch, n_vars, series, center, stdev, x_enc, dict(batch_extras or {}))

    @property
    def series_positions(self) -> Optional[torch.Tensor]:
        """The batch's window_position [B, 2] per series [S, 2], or None."""
        positions = self.batch_extras.get("window_position")
        return None if positions is None else positions.repeat_interleave(self.n_vars, dim=0)

    def normalised_future(self, future: torch.Tensor) -> torch.Tensor:
        """True future [B, H, N] -> per series [S, H] in the series' RevIN units."""
        per_series = future.permute(0, 2, 1).reshape(self.center.shape[0], -1)
        return (per_series - self.center.unsqueeze(1)) / self.stdev.unsqueeze(1)


@dataclass
class AddOnOutput:
    value: torch.Tensor  # the stage's tensor, transformed (shapes in the module docstring)
    tokens: Optional[torch.Tensor] = None  # PATCHES stage: [S, k, d_llm] ahead of the prompt
    aux_losses: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> scalar
    diagnostics: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> scalar
    # normalised true future [S, H] -> (aux losses, diagnostics); evaluated by the trainer in training.
    supervised_terms: Optional[Callable[[torch.Tensor], tuple[dict, dict]]] = None
    # The head's forecast [S, H] in RevIN units -> same, applied identically in training and evaluation.
    adjust_forecast: Optional[Callable[[torch.Tensor], torch.Tensor]] = None


class AddOn(nn.Module):
    stage: ClassVar[Stage]
    emits_tokens: ClassVar[bool] = False  # PATCHES add-ons whose outputs carry `tokens`
    batch_fields: ClassVar[tuple[str, ...]] = ()  # Batch fields it reads from `context.batch_extras`

    def __init__(self):
        super().__init__()
        self.aux_loss_weights: dict[str, float] = {}  # every auxiliary loss this module returns, by name

    def prepare(self, datasets: dict) -> None:
        """Build state drawn from the data; `datasets` maps the splits this run uses to their datasets."""

    def forward(self, value: torch.Tensor, context: SeriesContext) -> AddOnOutput:
        raise NotImplementedError


@dataclass
class StageRecord:
    """What the add-ons of one forward pass returned besides their stage values, in stage order."""

    aux_losses: dict = field(default_factory=dict)
    diagnostics: dict = field(default_factory=dict)
    leading_tokens: list = field(default_factory=list)  # [S, k, d_llm] each, ahead of the prompt
    trailing_tokens: list = field(default_factory=list)  # [S, k, d_llm] each, after the prompt
    supervised_terms: list = field(default_factory=list)
    forecast_adjustments: list = field(default_factory=list)

    def absorb(self, output: AddOnOutput) -> torch.Tensor:
        """Keep everything but the value; return the value."""
        self.aux_losses.update(output.aux_losses)
        self.diagnostics.update(output.diagnostics)
        if output.tokens is not None:
            self.leading_tokens.append(output.tokens)
        if output.supervised_terms is not None:
            self.supervised_terms.append(output.supervised_terms)
        if output.adjust_forecast is not None:
            self.forecast_adjustments.append(output.adjust_forecast)
        return output.value

    def supervised(self, context: SeriesContext) -> Optional[Callable[[torch.Tensor], tuple[dict, dict]]]:
        """One function of the true future [B, H, N] in data units running every supervised term."""
        if not self.supervised_terms:
            return None
        terms = list(self.supervised_terms)

        def evaluate(future: torch.Tensor) -> tuple[dict, dict]:
            normalised = context.normalised_future(future)
            losses, diagnostics = {}, {}
            for term in terms:
                term_losses, term_diagnostics = term(normalised)
                losses.update(term_losses)
                diagnostics.update(term_diagnostics)
            return losses, diagnostics

        return evaluate
