"""Model registry: `--model` name -> module in models/ and the sample layout it expects.

Every model's forward takes (x_enc [B, seq_len, C], x_mark_enc, x_dec [B, label_len + pred_len, C],
x_mark_dec) and returns a ForecastOutput: the forecast [B, pred_len, c_out] with any auxiliary losses,
diagnostics and supervised terms. A model with `batch_fields` also gets those fields of the batch by
name (`window_position` [B, 2], ...; data_provider/batch.py). Models are imported on demand so a baseline run never
imports the LLM stack. With `--output_distribution` other than point, any model is wrapped in the
distribution head (layers/DistributionHead.py), and its output also carries the forecast distribution.
"""
import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Optional

import torch
from torch import nn

from utils.settings import models as settings

if TYPE_CHECKING:
    from layers.DistributionHead import ForecastDistribution


@dataclass
class ForecastOutput:
    prediction: torch.Tensor  # [B, pred_len, c_out]
    aux_losses: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> scalar, times the model's aux_loss_weights
    diagnostics: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> scalar, logged, never in the loss
    # Terms that need the window's true future [B, pred_len, C_in] (every input variable): the trainer
    # calls this in training and adds what it returns, (aux losses, diagnostics), to the two dicts.
    # This is how labels reach a module's loss without ever being an input of the forward pass.
    supervised_terms: Optional[Callable[[torch.Tensor], tuple[dict, dict]]] = None
    # Masked pre-training: the prediction is the reconstructed input window [B, seq_len, C] and this
    # marks the positions [B, seq_len, C] the loss and metrics count (the hidden patches).
    loss_mask: Optional[torch.Tensor] = None
    # --output_distribution: the forecast distribution, whose point (mean or median) is `prediction`.
    distribution: Optional["ForecastDistribution"] = None


MASKED_PRETRAIN = "masked_pretrain"  # --task_name of self-supervised pre-training: the target is the input


@dataclass(frozen=True)
class ModelEntry:
    module: str
    sample_layout: str  # what `--sample_layout auto` resolves to
    section: Optional[type] = None  # its typed config (utils/settings/models.py); None: the whole configuration


MODELS = {
    "DLinear": ModelEntry("models.DLinear", "all_channels", settings.DLinearConfig),
    "Autoformer": ModelEntry("models.Autoformer", "all_channels", settings.AutoformerConfig),
    "PatchTST": ModelEntry("models.PatchTST", "all_channels", settings.PatchTSTConfig),
    "iTransformer": ModelEntry("models.iTransformer", "all_channels", settings.ITransformerConfig),
    "TimesNet": ModelEntry("models.TimesNet", "all_channels", settings.TimesNetConfig),
    "TimeXer": ModelEntry("models.TimeXer", "all_channels", settings.TimeXerConfig),
    "PAttn": ModelEntry("models.PAttn", "all_channels", settings.PAttnConfig),
    # Time-LLM composes its sections (LLM, prompt, vocabulary, one per add-on): it reads the whole configuration.
    "TimeLLM": ModelEntry("models.TimeLLM", "per_channel"),
}


def model_entry(name: str) -> ModelEntry:
    if name not in MODELS:
        raise ValueError(f"--model {name!r} is not known; valid: {', '.join(MODELS)}")
    return MODELS[name]


def build_model(config) -> nn.Module:
    """The model of `config.model`, given its section of the resolved configuration."""
    entry = model_entry(config.model)
    model = importlib.import_module(entry.module).Model(entry.section.from_config(config) if entry.section else config)
    if getattr(config, "output_distribution", "point") == "point":
        return model
    from layers.DistributionHead import ProbabilisticForecaster

    return ProbabilisticForecaster(model, settings.DistributionConfig.from_config(config))


def model_inputs(batch, label_len: int, pred_len: int, fields: tuple = ()) -> dict:
    """A Batch (data_provider/batch.py) -> the keyword arguments of every model's forward: the one place
    a batch becomes model inputs, in the trainer and in utils/inference.py. The decoder input is the
    input's last label_len steps, then zeros where the forecast goes; then the model's `batch_fields`
    that the batch holds."""
    inputs = batch.inputs.float()
    known = inputs[:, inputs.shape[1] - label_len :]  # not [-label_len:], which is everything when label_len is 0
    arguments = {
        "x_enc": inputs,
        "x_mark_enc": None if batch.input_marks is None else batch.input_marks.float(),
        "x_dec": torch.cat([known, known.new_zeros(len(inputs), pred_len, inputs.shape[2])], dim=1),
        "x_mark_dec": None if batch.target_marks is None else batch.target_marks.float(),
    }
    arguments.update({name: getattr(batch, name) for name in fields if getattr(batch, name) is not None})
    return arguments
