"""Model registry: `--model` name -> module in models/ and the sample layout it expects.

Every model's forward takes (x_enc [B, seq_len, C], x_mark_enc, x_dec [B, label_len + pred_len, C],
x_mark_dec) and returns the forecast [B, pred_len, c_out], or a ForecastOutput when it also has
auxiliary losses. Models are imported on demand so a baseline run never imports the LLM stack.
"""
import importlib
from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass
class ForecastOutput:
    prediction: torch.Tensor  # [B, pred_len, c_out]
    aux_losses: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> scalar, weighted by the trainer


@dataclass(frozen=True)
class ModelEntry:
    module: str
    sample_layout: str  # what `--sample_layout auto` resolves to


MODELS = {
    "DLinear": ModelEntry("models.DLinear", "all_channels"),
    "Autoformer": ModelEntry("models.Autoformer", "all_channels"),
    "TimeLLM": ModelEntry("models.TimeLLM", "per_channel"),
}


def model_entry(name: str) -> ModelEntry:
    if name not in MODELS:
        raise ValueError(f"--model {name!r} is not known; valid: {', '.join(MODELS)}")
    return MODELS[name]


def build_model(config) -> nn.Module:
    return importlib.import_module(model_entry(config.model).module).Model(config)
