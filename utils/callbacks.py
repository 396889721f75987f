"""Callbacks of the training loop: everything the loop does besides forward, backward and step.

The loop (utils/trainer.py, `Trainer.fit`) calls each hook on every callback in list order, passing
the trainer, whose loop state they read: `progress` (utils/checkpointer.TrainingProgress),
`totals` (the epoch's running sums), `scheduler`, `checkpointer`, `accelerator`, `logger`.
A callback ends the epoch early by setting `trainer.end_epoch` and ends training by returning a
reason from `stop_reason`. `build_callbacks` says which the flags switch on, in the order they run.
"""
import os
from dataclasses import dataclass
from typing import Optional

import torch

from utils.dapo import (
    DynamicSampler,
    GroupClipper,
    IndexedDataset,
    parameter_groups,
    parse_group_thresholds,
    per_window_loss,
)


class NonFiniteLossError(RuntimeError):
    pass


@dataclass
class EpochSummary:
    """An epoch's outcome: its training means, its validation metrics, whether it saved a new best
    checkpoint, and the callbacks' statistics."""

    means: dict
    val: dict
    improved: bool
    statistics: dict


class Callback:
    def on_epoch_start(self, trainer) -> None:
        """The epoch's loader is set up; no batch trained yet."""

    def on_batch_loss(self, trainer, batch, output, target, loss) -> None:
        """Each micro-batch's loss, before backward."""

    def on_before_optimizer_step(self, trainer) -> None:
        """At an accumulation boundary: the gradients are complete and the optimizer steps next."""

    def on_step_end(self, trainer) -> None:
        """After each optimizer step (progress.global_step counts it)."""

    def on_epoch_end(self, trainer) -> None:
        """The epoch's training batches are done; validation comes next."""

    def stop_reason(self, trainer) -> Optional[str]:
        """After validation and model selection: why training stops now, else None."""
        return None

    def epoch_statistics(self) -> dict:
        """Figures for the epoch's log line and metrics.json."""
        return {}

    def on_validation(self, trainer, summary: EpochSummary) -> None:
        """After validation, model selection and the resumable state's save."""


def due(step: int, every: int) -> bool:
    return bool(every) and step % every == 0


class NonFiniteGuard(Callback):
    """Stops the run at the first non-finite training loss, naming the step and the last good
    checkpoint. The loss is tracked on the device without synchronising; it is read where the loop
    synchronises anyway (log lines, step checkpoints, the epoch's end), and before a checkpoint could
    save a diverged model."""

    def __init__(self, log_interval: int, save_steps: int):
        self.log_interval, self.save_steps = log_interval, save_steps
        self.first_bad_step = None

    def on_batch_loss(self, trainer, batch, output, target, loss) -> None:
        detached = loss.detach()
        if self.first_bad_step is None:
            self.first_bad_step = torch.tensor(-1, device=detached.device)
        step = torch.tensor(trainer.progress.global_step, device=detached.device)
        bad = ~torch.isfinite(detached) & (self.first_bad_step < 0)
        self.first_bad_step = torch.where(bad, step, self.first_bad_step)

    def check(self, trainer) -> None:
        if self.first_bad_step is None or int(self.first_bad_step.item()) < 0:
            return
        best = trainer.checkpointer.best_path
        saved = best if os.path.isfile(best) else "none yet"
        raise NonFiniteLossError(
            f"training loss became non-finite at optimizer step {int(self.first_bad_step.item())} (epoch {trainer.progress.epoch + 1}); "
            f"stopped. Last good checkpoint: {saved}. Try a lower --learning_rate or --max_grad_norm 1.0"
        )

    def on_step_end(self, trainer) -> None:
        step = trainer.progress.global_step
        if due(step, self.log_interval) or due(step, self.save_steps):
            self.check(trainer)

    def on_epoch_end(self, trainer) -> None:
        self.check(trainer)


class GradientClipping(Callback):
    """--max_grad_norm over all trainable parameters, or DAPO's per-group thresholds
    (--clip_per_group, utils/dapo.py), which log each group's norm and clipped fraction."""

    def __init__(self, config, model, parameters):
        self.max_norm, self.parameters, self.clipper = config.max_grad_norm, parameters, None
        if config.clip_per_group:
            groups = parameter_groups(model)
            self.clipper = GroupClipper(groups, parse_group_thresholds(config.group_clip_norms, config.group_clip_norm, list(groups)))

    def on_before_optimizer_step(self, trainer) -> None:
        if self.clipper is not None:
            trainer.accelerator.unscale_gradients()
            self.clipper.clip()
        elif self.max_norm > 0:
            trainer.accelerator.clip_grad_norm_(self.parameters, self.max_norm)

    def epoch_statistics(self) -> dict:
        return self.clipper.epoch_statistics() if self.clipper is not None else {}


class DynamicSampling(Callback):
    """DAPO's dynamic sampling (--dynamic_sampling): windows are drawn in proportion to their running
    loss. `dataset` serves each window's index with it, so every process records every window of a step."""

    def __init__(self, config, train_set):
        self.sampler = DynamicSampler(len(train_set), config.seed, config.sampling_temperature, config.sampling_kl_weight, config.sampling_loss_decay)
        self.dataset = IndexedDataset(train_set)

    def on_batch_loss(self, trainer, batch, output, target, loss) -> None:
        self.sampler.record(*trainer.accelerator.gather((batch.index, per_window_loss(output.prediction, target))))

    def epoch_statistics(self) -> dict:
        return self.sampler.statistics()  # the weights this epoch drew from


class StepLog(Callback):
    """Every --log_interval optimizer steps: the epoch's running train loss and the learning rate, to
    the log, the progress bar and the trackers."""

    def __init__(self, log_interval: int):
        self.log_interval = log_interval

    def on_step_end(self, trainer) -> None:
        progress = trainer.progress
        if not due(progress.global_step, self.log_interval):
            return
        mean_loss, learning_rate = trainer.totals.mean("main"), trainer.scheduler.get_last_lr()[0]
        trainer.progress_bar.set_postfix(loss=f"{mean_loss:.4f}")
        trainer.logger.info(
            f"step {progress.global_step} | epoch {progress.epoch + 1} | train loss {mean_loss:.6f} | "
            f"lr {learning_rate:.3e} | {trainer.elapsed():.1f}s"
        )
        trainer.accelerator.log({"train/loss": mean_loss, "train/lr": learning_rate}, step=progress.global_step)


class StepCheckpoints(Callback):
    """--save_steps N: the full training state every N optimizer steps, the oldest pruned beyond
    --save_total_limit; a run resumes mid-epoch from one exactly."""

    def __init__(self, save_steps: int):
        self.save_steps = save_steps

    def on_step_end(self, trainer) -> None:
        progress = trainer.progress
        if due(progress.global_step, self.save_steps):
            progress.epoch_sums = trainer.totals.saved()
            progress.train_time_s = trainer.elapsed()
            trainer.checkpointer.save_step(progress)


class MaxSteps(Callback):
    """--max_steps: training ends after that many optimizer steps, mid-epoch (after its validation)."""

    def __init__(self, max_steps: int):
        self.max_steps = max_steps

    def _reached(self, trainer) -> bool:
        return trainer.progress.global_step >= self.max_steps

    def on_epoch_start(self, trainer) -> None:  # resumed at the cap
        trainer.end_epoch = trainer.end_epoch or self._reached(trainer)

    on_step_end = on_epoch_start

    def stop_reason(self, trainer) -> Optional[str]:
        return f"reached --max_steps {self.max_steps}" if self._reached(trainer) else None


class EarlyStopping(Callback):
    """--patience: training ends after that many epochs without a better validation loss."""

    def __init__(self, patience: int):
        self.patience = patience

    def stop_reason(self, trainer) -> Optional[str]:
        if trainer.progress.epochs_without_improvement >= self.patience:
            return f"early stopping: no validation improvement for {self.patience} epochs"
        return None


class EpochLog(Callback):
    """One line per epoch: train loss, then the weighted auxiliary loss and each term with the
    diagnostics (trend accuracies, gate statistics) when the model has them, then validation, then the
    other callbacks' statistics; kept for metrics.json (`trainer.epoch_log`) and sent to the trackers."""

    def on_validation(self, trainer, summary: EpochSummary) -> None:
        progress, means, val, statistics = trainer.progress, summary.means, summary.val, summary.statistics
        extras = {name: value for name, value in means.items() if name not in ("loss", "main")}
        # "train loss" is the forecasting loss alone, comparable across ablations; aux is what was added to it.
        aux_text = ""
        if extras:
            aux_text = f" | aux loss {extras.pop('aux', 0.0):.6f} (" + ", ".join(f"{name} {value:.4f}" for name, value in extras.items()) + ")"
        trainer.logger.info(
            f"epoch {progress.epoch} | step {progress.global_step} | train loss {means['main']:.6f}{aux_text} | val loss {val['loss']:.6f} "
            f"mae {val['mae']:.6f} | lr {trainer.scheduler.get_last_lr()[0]:.3e} | {trainer.elapsed():.1f}s"
            + (" | saved best" if summary.improved else f" | no improvement for {progress.epochs_without_improvement}")
            + "".join(f" | {name} {value:.4g}" for name, value in statistics.items())
        )
        trainer.epoch_log.append({"epoch": progress.epoch, **means, "val_loss": val["loss"], **statistics})
        # At the optimizer step, like the step metrics: W&B drops values logged at an earlier step.
        trainer.accelerator.log(
            {"epoch/epoch": progress.epoch, **{f"epoch/train_{name}": value for name, value in {**means, **statistics}.items()}, "epoch/val_loss": val["loss"]},
            step=progress.global_step,
        )


class TrialReport(Callback):
    """A search trial (--optuna_trial): each epoch's validation loss to the study, which may prune it."""

    def __init__(self, reporter):
        self.reporter = reporter

    def on_validation(self, trainer, summary: EpochSummary) -> None:
        self.reporter.report(trainer.progress.epoch - 1, summary.val["loss"])


def build_callbacks(config, model, parameters, sampling: Optional[DynamicSampling], reporter) -> list[Callback]:
    """The callbacks the flags ask for, in the order they run: the guard before anything that logs
    or saves; clipping; the sampler; step logging; step checkpoints; early stopping before the
    step cap (the first stop reason is the one logged); the epoch line before the trial report,
    which may end the run."""
    callbacks = [NonFiniteGuard(config.log_interval, config.save_steps), GradientClipping(config, model, parameters)]
    if sampling is not None:  # built by the trainer first: the training loader draws from its sampler
        callbacks.append(sampling)
    callbacks += [StepLog(config.log_interval), StepCheckpoints(config.save_steps), EarlyStopping(config.patience)]
    if config.max_steps:
        callbacks.append(MaxSteps(config.max_steps))
    callbacks.append(EpochLog())
    if reporter is not None:
        callbacks.append(TrialReport(reporter))
    return callbacks

