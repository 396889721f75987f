"""What the trainer minimises: one forward pass shared by training and evaluation, and the loss
composed from the forecasting criterion and the model's weighted auxiliary losses.

A model adds auxiliary losses through its output (`ForecastOutput.aux_losses`) and declares their
weights (`aux_loss_weights`); neither class here changes when a module is added.
"""
from typing import Optional

import torch

from data_provider.batch import Batch
from models import MASKED_PRETRAIN, ForecastOutput, model_inputs
from utils.dapo import ClipPenalty


class ForwardPass:
    """batch -> (output, target, input, mask), identical in training and evaluation.

    The output's prediction is [B, pred_len, c], the target [B, pred_len, c] (c = 1 under --features
    MS: the target, which is the last variable), the input [B, seq_len, C], and the mask of valid
    target values (M4's zero-padded short series), else None. In training, the output's supervised
    terms (functions of the true future, layers/AddOn.py) are evaluated here, the only place that
    holds the future. Masked pre-training: the target is the input and the mask marks its hidden
    patches."""

    def __init__(self, config, batch_fields: tuple = ()):
        self.config = config
        self.batch_fields = batch_fields  # the Batch fields the model's add-ons read

    def __call__(self, model, batch: Batch) -> tuple[ForecastOutput, torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
        config = self.config
        x, y = batch.inputs.float(), batch.targets.float()
        mask = None if batch.target_mask is None else batch.target_mask[:, -config.pred_len :]
        output = model(**model_inputs(batch, config.label_len, config.pred_len, self.batch_fields))
        if config.task_name == MASKED_PRETRAIN:
            output.prediction = output.prediction.float()
            return output, x, x, output.loss_mask
        if output.supervised_terms is not None and model.training:
            losses, diagnostics = output.supervised_terms(y[:, -config.pred_len :])
            output.aux_losses.update(losses)
            output.diagnostics.update(diagnostics)
        first_channel = -1 if config.features == "MS" else 0
        output.prediction = output.prediction[:, -config.pred_len :, first_channel:].float()
        if output.distribution is not None:
            output.distribution = output.distribution.select(slice(-config.pred_len, None), slice(first_channel, None)).map(torch.Tensor.float)
        return output, y[:, -config.pred_len :, first_channel:], x, mask


class LossComposer:
    """main loss + warm-up x sum of weight x auxiliary loss (+ DAPO's clip penalty with --lambda_clip).

    The main loss is the criterion (--loss) on the point forecast, or, for a forecast distribution, its
    own: the negative log-likelihood or the pinball loss (layers/DistributionHead.py). Another objective
    (--objective grpo, utils/grpo.py) overrides `main_loss`, and brings the callbacks it needs.

    `weights` are the model's declared `aux_loss_weights`; a loss without one is an error, since a
    silent weight of 1.0 would train an add-on at a strength nobody chose. The auxiliary losses ramp
    up linearly over `warmup_steps` optimizer steps (--aux_warmup_steps)."""

    def __init__(self, criterion, weights: dict, warmup_steps: int):
        self.criterion, self.weights, self.warmup_steps = criterion, weights, warmup_steps
        self.clip_penalty = None  # utils.dapo.ClipPenalty: a function of this loss's gradients

    def callbacks(self) -> list:
        return []

    def warmup_factor(self, global_step: int) -> float:
        return 1.0 if self.warmup_steps <= 0 else min(1.0, (global_step + 1) / self.warmup_steps)

    def main_loss(self, output: ForecastOutput, target, x, mask, batch: Optional[Batch]) -> tuple[torch.Tensor, dict]:
        """The forecasting loss and its diagnostics."""
        if output.distribution is not None:
            return output.distribution.loss(target, mask), {}
        return self.criterion(output.prediction, target, insample=x, mask=mask), {}

    def compose(self, output: ForecastOutput, target, x, global_step: int, mask=None, batch: Optional[Batch] = None) -> tuple[torch.Tensor, dict]:
        """The loss to back-propagate, and its parts, detached: main, aux (the weighted sum added),
        each auxiliary loss unweighted, and the diagnostics."""
        main_loss, diagnostics = self.main_loss(output, target, x, mask, batch)
        parts = {"main": main_loss.detach()}
        loss = main_loss
        if output.aux_losses:
            undeclared = sorted(set(output.aux_losses) - set(self.weights))
            if undeclared:
                raise ValueError(f"auxiliary loss(es) {undeclared} have no weight: the module returning them must declare them in its aux_loss_weights")
            factor = self.warmup_factor(global_step)
            aux = sum(self.weights[name] * value for name, value in output.aux_losses.items())
            loss = loss + factor * aux
            parts["aux"] = (factor * aux).detach()
            parts.update({name: value.detach() for name, value in output.aux_losses.items()})
        parts.update({name: value.detach().float() for name, value in {**output.diagnostics, **diagnostics}.items()})
        if self.clip_penalty is not None:
            penalty, statistics = self.clip_penalty(loss)
            loss = loss + penalty
            parts.update(statistics)
        return loss, parts


def build_loss_composer(config, model, forward: ForwardPass, criterion, num_processes: int) -> LossComposer:
    """The objective (--objective) over `model` (not yet wrapped by Accelerate), with the clip penalty
    when --lambda_clip > 0."""
    weights = getattr(model, "aux_loss_weights", {})
    if config.objective == "grpo":
        from utils.grpo import GRPOObjective

        composer = GRPOObjective(config, forward, criterion, weights, config.aux_warmup_steps)
    else:
        composer = LossComposer(criterion, weights, config.aux_warmup_steps)
    if config.lambda_clip > 0:
        if num_processes > 1:
            raise ValueError(f"--lambda_clip differentiates each process's gradients (double backward), which DDP does not reduce: run it in one process, not {num_processes}")
        composer.clip_penalty = ClipPenalty.from_config(config, model)
    return composer
