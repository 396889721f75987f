"""The one training engine behind every entry script.

A run: resolve the configuration against the data, train with early stopping on the validation loss
(best checkpoint written atomically), reload the best checkpoint, test it on every test window
exactly once, and write the run folder. `fit` is the loop (forward, backward, step); each other
concern is a collaborator:
    utils/run_context.py   processes, precision and DeepSpeed (Accelerate), run folder, log, trackers
    utils/objective.py     the forward pass shared with evaluation; the loss and its weighted aux terms
    utils/checkpointer.py  best, last-state and step checkpoints; exact resume
    utils/evaluation.py    validation and test passes: metrics, original units, naive floors
    utils/callbacks.py     clipping, dynamic sampling, step logging, step checkpoints, --max_steps,
                           early stopping, the non-finite guard, the epoch line, a search's pruning
    utils/report.py        metrics.json, predictions, plots, the results row, the `test:` line
Entry scripts differ only by configuration; a model adds auxiliary losses through its output
(`ForecastOutput.aux_losses`) and their weights (`aux_loss_weights`), never by editing this file.
"""
import math
import os
import time
from typing import Optional

import torch
from accelerate.utils import set_seed

from data_provider.registry import (
    WindowSubset,
    build_dataset,
    build_loader,
    epoch_seed,
    resolve_channels,
    resolve_data_defaults,
    seasonal_period,
)
from layers.AddOn import AddOn
from models import build_model
from utils.callbacks import Callback, DynamicSampling, EpochSummary, NonFiniteLossError, build_callbacks
from utils.checkpoint import load_model_checkpoint, resolve_checkpoint_path, restore_rng_state
from utils.checkpointer import Checkpointer, TrainingProgress
from utils.evaluation import Evaluator
from utils.losses import build_loss
from utils.objective import ForwardPass, build_loss_composer
from utils.report import log_test_result, peak_memory_mb, write_test_outputs
from utils.run_context import RunContext, build_accelerator
from utils.run_outputs import silence_known_noise
from utils.schedules import build_scheduler
from utils.search import make_reporter


class EpochTotals:
    """The epoch's running sums of the loss and its parts, kept on the device: adding never
    synchronises. Non-finite values count as 0 here; the non-finite guard reports them."""

    def __init__(self, device, saved: dict):
        self.sums = {name: torch.tensor(value, device=device) for name, value in saved.items()}

    def add(self, loss: torch.Tensor, parts: dict) -> None:
        detached = loss.detach()
        for name, value in {**parts, "loss": detached, "batches": torch.ones_like(detached)}.items():
            value = torch.nan_to_num(value.float(), nan=0.0, posinf=0.0, neginf=0.0)
            self.sums[name] = self.sums[name] + value if name in self.sums else value

    def mean(self, name: str) -> float:
        return (self.sums[name] / self.sums["batches"]).item()

    def means(self) -> dict:
        if not self.sums:  # resumed at the step cap: no batch trained in this epoch
            return {"loss": math.nan, "main": math.nan}
        return {name: (value / self.sums["batches"].clamp_min(1)).item() for name, value in self.sums.items() if name != "batches"}

    def saved(self) -> dict:
        return {name: value.item() for name, value in self.sums.items()}


class Trainer:
    def __init__(self, config, callbacks: tuple[Callback, ...] = ()):
        """`callbacks` run after the ones the flags switch on (utils/callbacks.py)."""
        silence_known_noise()
        self.config = config
        self.accelerator = build_accelerator(config)
        set_seed(config.seed)
        # An evaluation resolves its checkpoint before anything is built or written; training's is its best.
        self.checkpoint_path: Optional[str] = None if config.is_training else resolve_checkpoint_path(config.checkpoint)
        notes = resolve_data_defaults(config)
        if config.data == "m4" and config.inverse:
            raise ValueError("--inverse does not apply to M4: its series are not scaled")
        splits = ("train", "val", "test") if config.is_training else ("test",)
        with self.accelerator.main_process_first():  # what the main process caches (the hybrid's forecasts), the others read
            self.datasets = {split: build_dataset(config, split) for split in splits}
        resolve_channels(config, self.datasets["test"])
        with self.accelerator.main_process_first():  # the main process converts or downloads a backbone first
            self.model = build_model(config)
        if config.init_checkpoint:  # fine-tuning starts from another run's trained weights
            load_model_checkpoint(resolve_checkpoint_path(config.init_checkpoint), self.model, config)
        self._set_gradient_deferral()
        notes += [note for dataset in self.datasets.values() for note in getattr(dataset, "notes", [])]
        self.context = RunContext(config, self.accelerator, notes)
        self.run_dir, self.logger = self.context.run_dir, self.context.logger
        test_set = self.datasets["test"]
        # Read before Accelerate wraps the model.
        self.forward = ForwardPass(config, getattr(self.model, "batch_fields", ()))
        criterion = build_loss(config.loss, getattr(test_set, "frequency", 1))
        self.losses = build_loss_composer(config, self.model, self.forward, criterion, self.accelerator.num_processes)
        self.evaluator = Evaluator(self.accelerator, config, criterion, seasonal_period(config, test_set), self.logger)
        self.checkpointer = Checkpointer(self.accelerator, config, self.run_dir, self.logger, self.datasets.get("train"))
        self.trial_reporter = make_reporter(config.optuna_trial)  # a search's trial: pruning on validation
        self.extra_callbacks = list(callbacks)
        # Train on these windows of the training split only (utils/bad_cases.py); add-ons still
        # prepare from the whole split.
        self.train_windows: Optional[list[int]] = None
        self.epoch_log: list[dict] = []  # per-epoch means of the training terms, the validation loss, statistics
        self.summary: dict = {}

    def _set_gradient_deferral(self) -> None:
        """Modules that sum an input-independent output's gradients over micro-batches (text prototypes)
        do so under gradient accumulation in one process: DDP reduces gradients during backward, before
        the flush."""
        defer = self.config.gradient_accumulation_steps > 1 and self.accelerator.num_processes == 1
        self.deferring_modules = [module for module in self.model.modules() if hasattr(module, "defer_gradients")]
        for module in self.deferring_modules:
            module.defer_gradients = defer

    @property
    def trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad)

    def prepare_modules(self) -> None:
        """Add-ons with state drawn from the data build it here (`prepare`, layers/AddOn.py), before the
        model is wrapped for several processes, so every process holds the same (GRA-M's memory from the
        training split). The main process goes first, so what it writes to a cache the others read."""
        with self.accelerator.main_process_first():
            for module in self.model.modules():
                if isinstance(module, AddOn):
                    module.prepare(self.datasets)

    def _call(self, hook: str, *args) -> None:
        for callback in self.callbacks:
            getattr(callback, hook)(self, *args)

    def elapsed(self) -> float:
        """Training seconds so far, a resumed run's earlier ones included."""
        return time.time() - self._started

    # ---------------------------------------------------------------------------------- training
    def fit(self) -> None:
        accelerator, progress = self.accelerator, self._setup_training()
        model, optimizer = self.model, self.optimizer
        while progress.epoch < self.config.train_epochs:
            for batch in self._start_epoch():
                if self.end_epoch:
                    break
                with accelerator.accumulate(model):
                    output, target, x, mask = self.forward(model, batch)
                    loss, parts = self.losses.compose(output, target, x, progress.global_step, mask, batch)
                    self._call("on_batch_loss", batch, output, target, loss)
                    accelerator.backward(loss)
                    if accelerator.sync_gradients:
                        for module in self.deferring_modules:  # their summed gradients, once, before clipping
                            module.flush_gradients()
                        self._call("on_before_optimizer_step")
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                progress.batches_done += 1
                self.totals.add(loss, parts)
                if accelerator.sync_gradients:
                    if not accelerator.optimizer_step_was_skipped:
                        self.scheduler.step()
                    progress.global_step += 1
                    self._call("on_step_end")
                    if self.end_epoch:
                        break
            self._call("on_epoch_end")
            if self._validate_and_select():
                break
        self.summary = {
            "best_val_loss": progress.best_val, "epochs_run": progress.epoch, "global_steps": progress.global_step,
            "train_time_s": round(self.elapsed(), 2), "peak_memory_mb": round(peak_memory_mb(accelerator.device), 1),
        }
        if not os.path.isfile(self.checkpointer.best_path):
            raise NonFiniteLossError("no checkpoint was saved: the validation loss was never finite")

    def _setup_training(self) -> TrainingProgress:
        """Optimizer, callbacks, loaders, schedule; the model wrapped by Accelerate; resumed state."""
        config, accelerator = self.config, self.accelerator
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        # Fused Adam updates in one kernel without per-step temporaries (CPU and CUDA).
        optimizer = torch.optim.Adam(trainable, lr=config.learning_rate, weight_decay=config.weight_decay, fused=True)
        self.prepare_modules()
        self.resume = self.checkpointer.load_resume(self.model) if config.resume_from_checkpoint else None
        self.train_set = self.datasets["train"] if self.train_windows is None else WindowSubset(self.datasets["train"], self.train_windows)
        sampling = DynamicSampling(config, self.train_set) if config.dynamic_sampling else None
        self.callbacks = build_callbacks(config, self.model, trainable, sampling, self.trial_reporter)
        self.callbacks += self.losses.callbacks() + self.extra_callbacks
        self.sampler = sampling.sampler if sampling else None
        loaders = [build_loader(config, sampling.dataset if sampling else self.train_set, "train", self.sampler)]
        loaders += [build_loader(config, self.datasets[split], split) for split in ("val", "test")]
        # Accelerate's loaders keep these generator objects: held here to seed and save them.
        self.loader_generators = dict(zip(("train", "val", "test"), (loader.generator for loader in loaders)))
        self.model, self.optimizer, *loaders = accelerator.prepare(self.model, optimizer, *loaders)
        self.train_loader, self.val_loader, self.test_loader = loaders
        steps_per_epoch = max(1, math.ceil(len(self.train_loader) / config.gradient_accumulation_steps))
        total_steps = steps_per_epoch * config.train_epochs
        if config.max_steps:
            total_steps = min(total_steps, config.max_steps)
        # Stepped by hand once per optimizer step: Accelerate's wrapper would step it once per process.
        self.scheduler = build_scheduler(self.optimizer, config.lradj, steps_per_epoch, config.train_epochs, total_steps, config.pct_start)
        self.logger.info(
            f"run {self.run_dir}: {config.model} on {config.data}, train/val/test windows "
            f"{len(self.train_set)}/{len(self.datasets['val'])}/{len(self.datasets['test'])}, "
            f"{self.trainable_parameters:,} trainable parameters, {accelerator.num_processes} process(es), "
            f"precision {config.mixed_precision}"
        )
        self.checkpoint_path = self.checkpointer.best_path
        self.checkpointer.attach(self.model, self.optimizer, self.scheduler, self.sampler, self.loader_generators)
        self.progress = self.checkpointer.restore(self.resume) if self.resume is not None else TrainingProgress()
        self._started = time.time() - self.progress.train_time_s
        return self.progress

    def _start_epoch(self):
        """The epoch's batches (a resumed epoch's remaining ones), behind a progress bar."""
        progress, accelerator = self.progress, self.accelerator
        self.model.train()
        self.train_loader.set_epoch(progress.epoch)  # the sampler's permutation for this epoch
        self._seed_epoch_data(progress.epoch)
        loader = self.train_loader
        if progress.batches_done:  # resumed inside this epoch: replay the permutation, skip what was done
            loader = accelerator.skip_first_batches(self.train_loader, progress.batches_done)
            loader.set_epoch(progress.epoch)
        self.totals = EpochTotals(accelerator.device, progress.epoch_sums)
        if self.resume is not None:  # the random state as saved, after the loaders were set up
            restore_rng_state(self.resume["training_state"]["rng"])
            self.resume = None
        self.end_epoch = False
        self.progress_bar = self.evaluator.progress_bar(loader, f"epoch {progress.epoch + 1}")
        self._call("on_epoch_start")
        return self.progress_bar

    def _seed_epoch_data(self, epoch: int) -> None:
        """Everything random in this epoch's data loading from (--seed, epoch) alone: the dataset's own
        draws (M4 cut points) and the loader workers' seeds, so a resumed epoch loads the same items."""
        if hasattr(self.train_set, "set_epoch"):
            self.train_set.set_epoch(epoch)
        self.loader_generators["train"].manual_seed(epoch_seed(self.config.seed, epoch))

    def _validate_and_select(self) -> bool:
        """The epoch's validation, model selection on it (the best checkpoint), the resumable state
        while training goes on; True when training stops (the first callback's reason is logged)."""
        progress = self.progress
        means = self.totals.means()
        val = self.evaluator.evaluate(self.model, self.val_loader, self.forward, label=f"epoch {progress.epoch + 1} validation")
        improved = val["loss"] < progress.best_val
        progress.epoch, progress.batches_done, progress.epoch_sums = progress.epoch + 1, 0, {}
        progress.train_time_s = self.elapsed()
        if improved:
            progress.best_val, progress.epochs_without_improvement = val["loss"], 0
            self.checkpointer.save_best(progress, val["loss"])
        else:
            progress.epochs_without_improvement += 1
        reasons = [reason for reason in (callback.stop_reason(self) for callback in self.callbacks) if reason is not None]
        stop = reasons[0] if reasons else ("" if progress.epoch >= self.config.train_epochs else None)
        if stop is None:
            self.checkpointer.save_last_state(progress)
        statistics = {name: value for callback in self.callbacks for name, value in callback.epoch_statistics().items()}
        self._call("on_validation", EpochSummary(means, val, improved, statistics))
        if stop:
            self.logger.info(stop)
        return stop is not None

    # ---------------------------------------------------------------------------------- testing
    def test(self) -> dict:
        config, accelerator = self.config, self.accelerator
        if config.is_training:
            load_model_checkpoint(self.checkpoint_path, accelerator.unwrap_model(self.model))
            test_loader = self.test_loader
        else:
            load_model_checkpoint(self.checkpoint_path, self.model, config)
            self.prepare_modules()
            self.model, test_loader = accelerator.prepare(self.model, build_loader(config, self.datasets["test"], "test"))
        result = self.evaluator.evaluate(self.model, test_loader, self.forward, collect=True, label="test")
        arrays = result.pop("arrays", {})
        expected = len(self.datasets["test"])
        if result["windows"] != expected:
            raise RuntimeError(f"evaluated {result['windows']} test windows, expected {expected}")
        if accelerator.is_main_process:
            details = {"checkpoint": self.checkpoint_path, "trainable_parameters": self.trainable_parameters, "summary": self.summary, "epochs": self.epoch_log}
            variables = getattr(self.datasets["test"], "columns", None)  # M4's series have no variable names
            write_test_outputs(self.context, config, result, arrays, self.evaluator.attention_maps, variables, details)
        accelerator.wait_for_everyone()
        return result

    def run(self) -> dict:
        try:
            if self.config.is_training:
                self.fit()
            result = self.test()
        except BaseException:
            self.context.end(failed=True)
            raise
        self.context.end(failed=False)
        if self.config.is_training:
            self.checkpointer.discard_last_state()
        log_test_result(self.logger, result, self.run_dir)
        return result


def train_and_test(config) -> tuple[dict, str]:
    """One run of the engine: (its test result, its run folder)."""
    trainer = Trainer(config)
    return trainer.run(), trainer.run_dir
