"""The evaluation pass of the trainer: every window of a loader once across processes, the metrics in
the scaled units the model trains in (and in original units with --inverse), the repeat-last-value
and seasonal-naive floors on the same windows, and (test pass) the arrays and attention maps. A
forecast distribution (--output_distribution) adds its CRPS and intervals (utils/scoring.py) under
`distribution`, and its validation loss is the distribution's own (likelihood or pinball).
"""
import sys
import time

import numpy as np
import torch
from tqdm import tqdm

from models import MASKED_PRETRAIN
from utils.metrics import MetricAccumulator
from utils.scoring import SAVED_QUANTILE_LEVELS, DistributionAccumulator, saved_quantiles


class Evaluator:
    def __init__(self, accelerator, config, criterion, seasonal_period: int, logger):
        self.accelerator, self.config, self.criterion = accelerator, config, criterion
        self.seasonal_period, self.logger = seasonal_period, logger
        self.attention_maps: dict = {}  # --save_attention: the first test batch's weights, by layer name

    def progress_bar(self, loader, description: str):
        """The loader, with a progress bar when the main process writes to a terminal (a log file or a
        batch job's output would fill with bar redraws)."""
        return tqdm(loader, desc=description, disable=not (self.accelerator.is_main_process and sys.stderr.isatty()), leave=False)

    @torch.no_grad()
    def evaluate(self, model, loader, forward, collect: bool = False, label: str = "validation") -> dict:
        """Metrics over every window of `loader`, each counted once across processes, in the scaled
        units the model is trained in: the loss that validation selects checkpoints by never depends
        on --inverse (in original units the variables with the largest units would dominate it).
        collect=True (the test pass) also returns inputs, predictions and truths in dataset order
        (main process), and with --inverse adds the metrics in original units (`original_units`);
        the arrays are then in original units too. A pass shows a progress bar on a terminal and logs
        its windows per second either way. `forward(model, batch)` is the trainer's one forward pass."""
        model.eval()
        started = time.time()
        accumulator = MetricAccumulator()
        # The repeat-last-value and seasonal-naive forecasts on the same windows: floors any model must beat.
        last_value, seasonal_naive = MetricAccumulator(), MetricAccumulator()
        period = self.seasonal_period if self.seasonal_period <= self.config.seq_len else None
        original = MetricAccumulator() if collect and self.config.inverse else None
        scores = DistributionAccumulator()
        original_scores = DistributionAccumulator() if original is not None else None
        loss_sum, windows = 0.0, 0
        collected: dict[str, list] = {"input": [], "prediction": [], "truth": [], "quantiles": []}
        dataset = loader.dataset
        pretraining = self.config.task_name == MASKED_PRETRAIN
        # --save_attention: the attention layers keep their weights for the first test batch only.
        attention_layers = self.attention_layers(model) if collect and self.config.save_attention else {}
        for batch_index, batch in enumerate(self.progress_bar(loader, label)):
            for layer in attention_layers.values():
                layer.keep_attention = batch_index == 0
            # Forecast windows are complete, so the mask is not needed here; in masked pre-training it
            # selects the hidden positions, the only ones scored.
            output, target, x, mask = forward(model, batch)
            if batch_index == 0 and attention_layers:
                self.attention_maps = {name: layer.attention_maps.float().cpu().numpy() for name, layer in attention_layers.items()}
            prediction, target, x = self.accelerator.gather_for_metrics((output.prediction, target, x))
            distribution = output.distribution
            if distribution is not None:
                distribution = distribution.with_tensors(self.accelerator.gather_for_metrics(distribution.tensors()))
            batch_windows = target.shape[0]
            last = x[:, -1:, -target.shape[-1] :].expand_as(target)
            if pretraining:
                selected = self.accelerator.gather_for_metrics(mask)
                prediction, target, last = prediction[selected], target[selected], last[selected]
            elif period is not None:  # the last season repeated: step t copies step t - period
                steps = torch.arange(target.shape[1], device=x.device) % period
                seasonal_naive.update(x[:, -period:, -target.shape[-1] :][:, steps], target)
            accumulator.update(prediction, target)
            last_value.update(last, target)
            if distribution is None:
                loss_sum += float(self.criterion(prediction, target, insample=x)) * target.numel()
            else:
                loss_sum += float(distribution.loss(target)) * target.numel()
                saved = self.score_distribution(distribution, target, scores, original_scores, dataset, windows)
                if collect and self.accelerator.is_main_process:
                    collected["quantiles"].append(saved)
            if original is not None:
                prediction, target, x = (dataset_inverse(dataset, values, windows) for values in (prediction, target, x))
                original.update(prediction, target)
            windows += batch_windows
            if collect and self.accelerator.is_main_process and not pretraining:
                collected["input"].append(x.cpu().numpy())
                collected["prediction"].append(prediction.cpu().numpy())
                collected["truth"].append(target.cpu().numpy())
        for layer in attention_layers.values():
            layer.keep_attention, layer.attention_maps = False, None
        model.train()
        elapsed = time.time() - started
        self.logger.info(f"{label}: {windows} windows in {elapsed:.1f}s ({windows / max(elapsed, 1e-9):.0f} windows/s)")
        metrics = accumulator.compute()
        metrics.update(loss=loss_sum / accumulator.count, windows=windows, last_value_baseline=last_value.compute())
        if seasonal_naive.count:
            metrics["seasonal_naive_baseline"] = {**seasonal_naive.compute(), "period": period}
        if original is not None:
            metrics["original_units"] = original.compute()
        if scores.count:
            metrics["distribution"] = scores.compute()
            if original_scores is not None:
                metrics["original_units"]["distribution"] = original_scores.compute()
        if collect:
            metrics["arrays"] = {k: np.concatenate(v) for k, v in collected.items() if v}
        return metrics

    def score_distribution(self, distribution, target, scores, original_scores, dataset, first_window: int) -> np.ndarray:
        """Adds a gathered batch's CRPS and intervals (scaled units, and original ones with --inverse:
        the CRPS and widths scale with the scaler's factor, the coverage does not); returns its
        quantiles at SAVED_QUANTILE_LEVELS [B, H, c, 5] in the units of the saved arrays."""
        scores.update(distribution, target)
        quantiles = torch.as_tensor(saved_quantiles(distribution))
        if original_scores is None:
            return quantiles.numpy()
        unit = dataset_inverse(dataset, torch.ones_like(target), first_window) - dataset_inverse(dataset, torch.zeros_like(target), first_window)
        original_scores.update(distribution, target, unit)
        per_level = [dataset_inverse(dataset, quantiles[..., level], first_window) for level in range(len(SAVED_QUANTILE_LEVELS))]
        return torch.stack(per_level, dim=-1).numpy()

    def attention_layers(self, model) -> dict:
        """Modules that can keep their attention weights (`keep_attention`), by name: the reprogramming
        layer (patches x text prototypes) and the inter-variate attention (variables x variables)."""
        model = self.accelerator.unwrap_model(model)
        return {name: module for name, module in model.named_modules() if hasattr(module, "keep_attention")}


def dataset_inverse(dataset, values: torch.Tensor, first_index: int) -> torch.Tensor:
    """Undo the dataset's scaling for windows first_index, first_index + 1, ... (in dataset order)."""
    array = values.cpu().numpy()
    scale, mean = dataset.scaler.scale_, dataset.scaler.mean_
    if dataset.sample_layout == "per_channel":
        channels = (first_index + np.arange(len(array))) // dataset.windows_per_channel
        restored = array * scale[channels][:, None, None] + mean[channels][:, None, None]
    elif array.shape[-1] == 1:  # MS: only the target, the last variable
        restored = array * scale[-1] + mean[-1]
    else:
        restored = array * scale + mean
    return torch.as_tensor(restored, dtype=values.dtype)
