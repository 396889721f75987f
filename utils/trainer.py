"""The one training engine behind every entry script.

Accelerate runs it in a single process, in several (`accelerate launch` / `torchrun`, CPU or GPU)
and with DeepSpeed ZeRO-2 (`--deepspeed_config ds_config_zero2.json`); precision comes from
Accelerate's autocast, never from casts here. A run: resolve the configuration against the data,
train with early stopping on the validation loss (best checkpoint written atomically), reload the
best checkpoint, test it on every test window exactly once, and write the run folder.

Entry scripts differ only by configuration; a model adds auxiliary losses through its output
(`ForecastOutput.aux_losses`) and their weights (`aux_loss_weights`), never by editing this file.
"""
import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from typing import Optional

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import DeepSpeedPlugin, set_seed

from data_provider.batch import Batch
from data_provider.registry import build_dataset, build_loader, dataset_entry, epoch_seed, seasonal_period
from data_provider.tabular import infer_file_frequency
from layers.AddOn import AddOn
from models import MASKED_PRETRAIN, ForecastOutput, build_model, model_entry, model_inputs
from utils.checkpoint import (
    CHECKPOINT_NAME,
    LAST_STATE_NAME,
    STEP_CHECKPOINT,
    capture_rng_state,
    load_model_checkpoint,
    prune_step_checkpoints,
    resolve_checkpoint_path,
    resolve_resume_path,
    restore_rng_state,
    save_model_checkpoint,
    sweep_temporary_files,
)
from utils.dapo import (
    DynamicSampler,
    GroupClipper,
    IndexedDataset,
    parameter_groups,
    parse_group_thresholds,
    per_window_loss,
)
from utils.evaluation import Evaluator
from utils.losses import build_loss
from utils.metrics import METRIC_NAMES, RELATIVE_NOTE, REPORTED_METRICS
from utils.run_outputs import (
    append_results_row,
    check_writable_file,
    create_run_dir,
    plot_attention,
    plot_forecast,
    remove_if_present,
    saved_config,
    setup_logger,
    silence_known_noise,
    write_config,
)
from utils.schedules import build_scheduler
from utils.search import make_reporter
from utils.tracking import as_parameters, build_trackers, check_tracking_location, log_artifacts

# A resumed run replays the saved run's data order: these must not change.
RESUME_MUST_MATCH = ("seed", "data", "data_path", "features", "percent", "batch_size", "gradient_accumulation_steps", "dynamic_sampling")


class NonFiniteLossError(RuntimeError):
    pass


@dataclass
class TrainingProgress:
    """Where a run stands. Saved in every checkpoint; resuming continues from exactly here."""

    epoch: int = 0  # the epoch being trained, 0-based
    batches_done: int = 0  # micro-batches of that epoch already trained (the sampler position)
    global_step: int = 0  # optimizer steps
    best_val: float = math.inf
    epochs_without_improvement: int = 0
    epoch_sums: dict = field(default_factory=dict)  # this epoch's running sums (loss, aux terms, batches)
    train_time_s: float = 0.0


def resolve_data_defaults(config) -> list[str]:
    """Fill what the dataset and model names imply: file location, frequency (a custom CSV's from its
    dates), sample layout. Returns notes on what was inferred, for the run's log."""
    notes = []
    entry = dataset_entry(config.data)
    if config.root_path is None:
        if entry.root_path is None:
            raise ValueError(f"--data {config.data} needs --root_path and --data_path")
        config.root_path = entry.root_path
    if config.data_path is None:
        if entry.data_path is None and config.data != "m4":
            raise ValueError(f"--data {config.data} needs --data_path")
        config.data_path = entry.data_path
    if config.freq is None and entry.freq is None:
        path = os.path.join(config.root_path, config.data_path)
        config.freq, regular = infer_file_frequency(path)
        how = "its dates" if regular else "its most common step between dates (the dates are irregular; give --freq if this is wrong)"
        notes.append(f"--freq {config.freq}: inferred from {how} in {path}")
    elif config.freq is None:
        config.freq = entry.freq
    if config.prompt_name is None and config.model == "TimeLLM":  # the prompt bank is TimeLLM's alone
        config.prompt_name = entry.prompt_name
    if config.sample_layout == "auto":
        config.sample_layout = model_entry(config.model).sample_layout
    return notes


def resolve_channels(config, dataset) -> None:
    """enc_in/dec_in/c_out are the variables each sample carries; a given value must agree."""
    channels = dataset.channels_per_sample
    for name in ("enc_in", "dec_in", "c_out"):
        given = getattr(config, name)
        if given is not None and given != channels:
            raise ValueError(
                f"--{name} {given} disagrees with the data: each sample has {channels} variable(s) "
                f"(--features {config.features}, --sample_layout {config.sample_layout}); leave --{name} out"
            )
        setattr(config, name, channels)


def use_deterministic_kernels() -> None:
    """--deterministic 1. cuBLAS needs its workspace setting before its first call, hence first of all.
    Data loading is reproducible anyway: workers take their python/numpy/torch seeds from the loader's
    generator, which is seeded per epoch (data_provider/registry.py)."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


class Trainer:
    def __init__(self, config):
        silence_known_noise()
        self.config = config
        if config.deterministic:
            use_deterministic_kernels()
        deepspeed_plugin = DeepSpeedPlugin(hf_ds_config=config.deepspeed_config) if config.deepspeed_config else None
        # Several processes without CUDA: Accelerate only sets up gloo when told to run on the CPU.
        multi_process_cpu = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()
        self.accelerator = Accelerator(
            cpu=multi_process_cpu,
            mixed_precision=config.mixed_precision,
            gradient_accumulation_steps=config.gradient_accumulation_steps,
            deepspeed_plugin=deepspeed_plugin,
        )
        set_seed(config.seed)
        # An evaluation resolves its checkpoint before anything is built or written; training sets it later.
        self.checkpoint_path: Optional[str] = None if config.is_training else resolve_checkpoint_path(config.checkpoint)
        data_notes = resolve_data_defaults(config)
        if config.data == "m4" and config.inverse:
            raise ValueError("--inverse does not apply to M4: its series are not scaled")
        training = bool(config.is_training)
        splits = ("train", "val", "test") if training else ("test",)
        with self.accelerator.main_process_first():  # what the main process caches (the hybrid's forecasts), the others read
            self.datasets = {split: build_dataset(config, split) for split in splits}
        resolve_channels(config, self.datasets["test"])
        # The main process converts or downloads a backbone first; the others then read its cache.
        with self.accelerator.main_process_first():
            self.model = build_model(config)
        if config.init_checkpoint:  # fine-tuning starts from another run's trained weights
            load_model_checkpoint(resolve_checkpoint_path(config.init_checkpoint), self.model, config)
        self.batch_fields = getattr(self.model, "batch_fields", ())  # read before Accelerate wraps the model
        # Modules that sum an input-independent output's gradients over micro-batches (text prototypes)
        # do so under gradient accumulation in one process: DDP reduces gradients during backward,
        # before the flush.
        defer = config.gradient_accumulation_steps > 1 and self.accelerator.num_processes == 1
        for module in self.model.modules():
            if hasattr(module, "defer_gradients"):
                module.defer_gradients = defer
        self.epoch_log: list[dict] = []  # per-epoch means of the training terms, and the validation loss

        is_main = self.accelerator.is_main_process
        if config.resume_from_checkpoint and not config.run_dir:
            # Resuming continues the same run, in the folder that holds the checkpoint.
            config.run_dir = os.path.dirname(os.path.abspath(resolve_resume_path(config.resume_from_checkpoint)))
        self.results_file = config.results_file or os.path.join(config.checkpoints, "results.csv")
        if is_main:  # found now, not after the whole run
            check_writable_file(self.results_file, "--results_file" if config.results_file else "--checkpoints: the results file")
            check_tracking_location(config)
        run_dir, self.created_run_dir = create_run_dir(config) if is_main else (None, False)
        # Every process writes into the folder the main process created.
        self.run_dir = self._broadcast_object(run_dir)
        config.run_dir = self.run_dir
        self.logger = setup_logger(self.run_dir, is_main)
        for note in data_notes + [note for dataset in self.datasets.values() for note in getattr(dataset, "notes", [])]:
            self.logger.info(note)
        if is_main:
            for path in sweep_temporary_files(self.run_dir):
                self.logger.info(f"removed {path}, left by a save that was killed part-way")
            write_config(self.run_dir, config)
        if is_main and config.report_to:
            self.accelerator.log_with = build_trackers(config, self.run_dir)
            self.accelerator.init_trackers(config.model_id, config=as_parameters(saved_config(config)))
        test_set = self.datasets["test"]
        self.criterion = build_loss(config.loss, getattr(test_set, "frequency", 1))
        self.evaluator = Evaluator(self.accelerator, config, self.criterion, seasonal_period(config, test_set), self.logger)
        self.trial_reporter = make_reporter(config.optuna_trial)  # a search's trial: pruning on validation

    # ----------------------------------------------------------------------------------- helpers
    def _broadcast_object(self, value):
        if self.accelerator.num_processes == 1:
            return value
        from accelerate.utils import broadcast_object_list

        return broadcast_object_list([value])[0]

    @property
    def trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad)

    def forward(self, model, batch: Batch) -> tuple[ForecastOutput, torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
        """One forward pass, identical in training and evaluation. Returns the output with prediction
        [B, pred_len, c], the target [B, pred_len, c], the input [B, seq_len, C] and the mask of valid
        target values (M4's zero-padded short series), else None. In training, the output's
        supervised terms are evaluated on the true future. Masked pre-training: the target is the
        input and the mask marks its hidden patches."""
        config = self.config
        x, y = batch.inputs.float(), batch.targets.float()
        mask = None if batch.target_mask is None else batch.target_mask[:, -config.pred_len :]
        output = model(**model_inputs(batch, config.label_len, config.pred_len, self.batch_fields))
        if config.task_name == MASKED_PRETRAIN:  # the target is the input's hidden patches
            output.prediction = output.prediction.float()
            return output, x, x, output.loss_mask
        if output.supervised_terms is not None and model.training:
            losses, diagnostics = output.supervised_terms(y[:, -config.pred_len :])
            output.aux_losses.update(losses)
            output.diagnostics.update(diagnostics)
        # MS forecasts only the target, which is the last variable.
        first_channel = -1 if config.features == "MS" else 0
        output.prediction = output.prediction[:, -config.pred_len :, first_channel:].float()
        target = y[:, -config.pred_len :, first_channel:]
        return output, target, x, mask

    def aux_weight(self, global_step: int) -> float:
        """Linear warm-up of auxiliary losses over --aux_warmup_steps optimizer steps."""
        warmup = self.config.aux_warmup_steps
        return 1.0 if warmup <= 0 else min(1.0, (global_step + 1) / warmup)

    def total_loss(self, output: ForecastOutput, target, x, global_step: int, mask=None) -> tuple[torch.Tensor, dict]:
        """main loss + warm-up x sum of weight x auxiliary loss. Also returns the parts, detached:
        main, aux (the weighted sum added), each auxiliary loss unweighted, and the diagnostics."""
        main_loss = self.criterion(output.prediction, target, insample=x, mask=mask)
        parts = {"main": main_loss.detach()}
        loss = main_loss
        if output.aux_losses:
            weights = getattr(self.accelerator.unwrap_model(self.model), "aux_loss_weights", {})
            undeclared = sorted(set(output.aux_losses) - set(weights))
            if undeclared:  # a silent weight of 1.0 would train an add-on at a strength nobody chose
                raise ValueError(f"auxiliary loss(es) {undeclared} have no weight: the module returning them must declare them in its aux_loss_weights")
            factor = self.aux_weight(global_step)
            aux = sum(weights[name] * value for name, value in output.aux_losses.items())
            loss = loss + factor * aux
            parts["aux"] = (factor * aux).detach()
            parts.update({name: value.detach() for name, value in output.aux_losses.items()})
        parts.update({name: value.detach().float() for name, value in output.diagnostics.items()})
        return loss, parts

    # ---------------------------------------------------------------------------------- training
    def _prepare_modules(self) -> None:
        """Add-ons with state drawn from the data build it here (`prepare`, layers/AddOn.py), before the
        model is wrapped for several processes, so every process holds the same (GRA-M's memory from the
        training split). The main process goes first, so what it writes to a cache the others read."""
        with self.accelerator.main_process_first():
            for module in self.model.modules():
                if isinstance(module, AddOn):
                    module.prepare(self.datasets)

    def fit(self) -> None:
        config, accelerator = self.config, self.accelerator
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        # Fused Adam updates in one kernel without per-step temporaries (CPU and CUDA).
        optimizer = torch.optim.Adam(trainable, lr=config.learning_rate, weight_decay=config.weight_decay, fused=True)
        self._prepare_modules()
        resume = self._load_resume_checkpoint() if config.resume_from_checkpoint else None
        self.clipper = None
        if config.clip_per_group:
            groups = parameter_groups(self.model)
            self.clipper = GroupClipper(groups, parse_group_thresholds(config.group_clip_norms, config.group_clip_norm, list(groups)))
        train_set, self.sampler = self.datasets["train"], None
        if config.dynamic_sampling:  # batches then carry each window's index last, to record its loss
            self.sampler = DynamicSampler(len(train_set), config.seed, config.sampling_temperature, config.sampling_kl_weight, config.sampling_loss_decay)
            train_set = IndexedDataset(train_set)
        loaders = [build_loader(config, train_set, "train", self.sampler)]
        loaders += [build_loader(config, self.datasets[split], split) for split in ("val", "test")]
        # Accelerate's loaders keep these generator objects: held here to seed and save them.
        self.loader_generators = dict(zip(("train", "val", "test"), (loader.generator for loader in loaders)))
        self.model, optimizer, *loaders = accelerator.prepare(self.model, optimizer, *loaders)
        train_loader, self.val_loader, self.test_loader = loaders

        steps_per_epoch = max(1, math.ceil(len(train_loader) / config.gradient_accumulation_steps))
        total_steps = steps_per_epoch * config.train_epochs
        if config.max_steps:
            total_steps = min(total_steps, config.max_steps)
        # Stepped by hand once per optimizer step: Accelerate's wrapper would step it once per process.
        scheduler = build_scheduler(optimizer, config.lradj, steps_per_epoch, config.train_epochs, total_steps, config.pct_start)
        self.logger.info(
            f"run {self.run_dir}: {config.model} on {config.data}, train/val/test windows "
            f"{len(self.datasets['train'])}/{len(self.datasets['val'])}/{len(self.datasets['test'])}, "
            f"{self.trainable_parameters:,} trainable parameters, {accelerator.num_processes} process(es), "
            f"precision {config.mixed_precision}"
        )
        self.checkpoint_path = os.path.join(self.run_dir, CHECKPOINT_NAME)
        progress = TrainingProgress()
        if resume is not None:
            progress = self._restore_training_state(resume, optimizer, scheduler)
        self._optimizer, self._scheduler = optimizer, scheduler
        first_nonfinite_step = torch.tensor(-1, device=accelerator.device)
        start_time = time.time() - progress.train_time_s
        while progress.epoch < config.train_epochs:
            epoch = progress.epoch
            self.model.train()
            train_loader.set_epoch(epoch)  # the sampler's permutation for this epoch
            self._seed_epoch_data(train_set, epoch)
            loader = train_loader
            if progress.batches_done:  # resumed inside this epoch: replay the permutation, skip what was done
                loader = accelerator.skip_first_batches(train_loader, progress.batches_done)
                loader.set_epoch(epoch)
            sums = {name: torch.tensor(value, device=accelerator.device) for name, value in progress.epoch_sums.items()}
            if resume is not None:  # the random state as saved, after the loaders were set up
                restore_rng_state(resume["training_state"]["rng"])
                resume = None
            progress_bar = self.evaluator.progress_bar(loader, f"epoch {epoch + 1}")
            for batch in progress_bar:
                if config.max_steps and progress.global_step >= config.max_steps:  # resumed at the cap
                    break
                with accelerator.accumulate(self.model):
                    output, target, x, mask = self.forward(self.model, batch)
                    loss, parts = self.total_loss(output, target, x, progress.global_step, mask)
                    if self.sampler is not None:  # every process records every window of the step
                        self.sampler.record(*accelerator.gather((batch.index, per_window_loss(output.prediction, target))))
                    accelerator.backward(loss)
                    if accelerator.sync_gradients:
                        self._flush_deferred_gradients()
                        if self.clipper is not None:
                            accelerator.unscale_gradients()
                            self.clipper.clip()
                        elif config.max_grad_norm > 0:
                            accelerator.clip_grad_norm_(trainable, config.max_grad_norm)
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                progress.batches_done += 1
                # Tracked on the device without synchronising; checked at log intervals.
                detached = loss.detach()
                bad = ~torch.isfinite(detached) & (first_nonfinite_step < 0)
                first_nonfinite_step = torch.where(bad, torch.tensor(progress.global_step, device=detached.device), first_nonfinite_step)
                parts["loss"], parts["batches"] = detached, torch.ones_like(detached)
                for name, value in parts.items():
                    value = torch.nan_to_num(value.float(), nan=0.0, posinf=0.0, neginf=0.0)
                    sums[name] = sums[name] + value if name in sums else value
                if not accelerator.sync_gradients:
                    continue
                if not accelerator.optimizer_step_was_skipped:
                    scheduler.step()
                progress.global_step += 1
                if progress.global_step % config.log_interval == 0:
                    self._check_finite(first_nonfinite_step, epoch)
                    mean_loss = (sums["main"] / sums["batches"]).item()
                    progress_bar.set_postfix(loss=f"{mean_loss:.4f}")
                    self.logger.info(
                        f"step {progress.global_step} | epoch {epoch + 1} | train loss {mean_loss:.6f} | "
                        f"lr {scheduler.get_last_lr()[0]:.3e} | {time.time() - start_time:.1f}s"
                    )
                    accelerator.log({"train/loss": mean_loss, "train/lr": scheduler.get_last_lr()[0]}, step=progress.global_step)
                if config.save_steps and progress.global_step % config.save_steps == 0:
                    self._check_finite(first_nonfinite_step, epoch)
                    progress.epoch_sums = {name: value.item() for name, value in sums.items()}
                    progress.train_time_s = time.time() - start_time
                    self._save_step_checkpoint(progress)
                if config.max_steps and progress.global_step >= config.max_steps:
                    break
            self._check_finite(first_nonfinite_step, epoch)
            means = {name: (value / sums["batches"].clamp_min(1)).item() for name, value in sums.items() if name != "batches"} if sums else {"loss": math.nan, "main": math.nan}
            val = self.evaluator.evaluate(self.model, self.val_loader, self.forward, label=f"epoch {epoch + 1} validation")
            improved = val["loss"] < progress.best_val
            progress.epoch, progress.batches_done, progress.epoch_sums = epoch + 1, 0, {}
            progress.train_time_s = time.time() - start_time
            if improved:
                progress.best_val, progress.epochs_without_improvement = val["loss"], 0
                self._save_checkpoint(self.checkpoint_path, progress, with_training_state=False, val_loss=val["loss"])
            else:
                progress.epochs_without_improvement += 1
            stop = self._stop_reason(progress)
            if stop is None and not config.deepspeed_config:  # training goes on: a crash from here on resumes here
                self._save_checkpoint(os.path.join(self.run_dir, LAST_STATE_NAME), progress)
            statistics = self._training_statistics()
            self._log_epoch(epoch, progress, means, val, scheduler, time.time() - start_time, improved, statistics)
            if self.trial_reporter is not None:
                self.trial_reporter.report(epoch, val["loss"])
            if stop:
                self.logger.info(stop)
            if stop is not None:
                break
        self.summary = {
            "best_val_loss": progress.best_val,
            "epochs_run": progress.epoch,
            "global_steps": progress.global_step,
            "train_time_s": round(time.time() - start_time, 2),
            "peak_memory_mb": round(peak_memory_mb(accelerator.device), 1),
        }
        if not os.path.isfile(self.checkpoint_path):
            raise NonFiniteLossError("no checkpoint was saved: the validation loss was never finite")

    def _stop_reason(self, progress) -> Optional[str]:
        """None while training goes on after this epoch; else why it stops ("" at the last epoch)."""
        config = self.config
        if progress.epochs_without_improvement >= config.patience:
            return f"early stopping: no validation improvement for {config.patience} epochs"
        if config.max_steps and progress.global_step >= config.max_steps:
            return f"reached --max_steps {config.max_steps}"
        return "" if progress.epoch >= config.train_epochs else None

    def _seed_epoch_data(self, train_set, epoch: int) -> None:
        """Everything random in this epoch's data loading from (--seed, epoch) alone: the dataset's own
        draws (M4 cut points) and the loader workers' seeds, so a resumed epoch loads the same items."""
        if hasattr(train_set, "set_epoch"):
            train_set.set_epoch(epoch)
        self.loader_generators["train"].manual_seed(epoch_seed(self.config.seed, epoch))

    def _training_statistics(self) -> dict:
        """This epoch's statistics of the DAPO options: per-group gradient norms and clipping, the
        sampling weights (those the epoch drew from)."""
        statistics = {}
        if self.clipper is not None:
            statistics.update(self.clipper.epoch_statistics())
        if self.sampler is not None:
            statistics.update(self.sampler.statistics())
        return statistics

    def _log_epoch(self, epoch: int, progress, means: dict, val: dict, scheduler, elapsed: float, improved: bool, statistics: dict) -> None:
        """One line per epoch: train loss, then the weighted auxiliary loss and each term with the
        diagnostics (trend accuracies, gate statistics) when the model has them, then validation,
        then the training statistics of the DAPO options."""
        extras = {name: value for name, value in means.items() if name not in ("loss", "main")}
        # "train loss" is the forecasting loss alone, comparable across ablations; aux is what was added to it.
        aux_text = ""
        if extras:
            aux_text = f" | aux loss {extras.pop('aux', 0.0):.6f} (" + ", ".join(f"{name} {value:.4f}" for name, value in extras.items()) + ")"
        self.logger.info(
            f"epoch {epoch + 1} | step {progress.global_step} | train loss {means['main']:.6f}{aux_text} | val loss {val['loss']:.6f} "
            f"mae {val['mae']:.6f} | lr {scheduler.get_last_lr()[0]:.3e} | {elapsed:.1f}s"
            + (" | saved best" if improved else f" | no improvement for {progress.epochs_without_improvement}")
            + ("".join(f" | {name} {value:.4g}" for name, value in statistics.items()))
        )
        self.epoch_log.append({"epoch": epoch + 1, **means, "val_loss": val["loss"], **statistics})
        # At the optimizer step, like the step metrics: W&B drops values logged at an earlier step.
        self.accelerator.log(
            {"epoch/epoch": epoch + 1, **{f"epoch/train_{name}": value for name, value in {**means, **statistics}.items()}, "epoch/val_loss": val["loss"]},
            step=progress.global_step,
        )

    # ------------------------------------------------------------------- checkpoints and resume
    def _training_state(self, progress) -> dict:
        scaler = getattr(self.accelerator, "scaler", None)
        return {
            "optimizer": self._optimizer.state_dict(),
            "scheduler": self._scheduler.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None,
            "progress": asdict(progress),
            "rng": capture_rng_state(),
            "num_processes": self.accelerator.num_processes,
            "sampler": self.sampler.state_dict() if self.sampler is not None else None,
            # The training loader's is reseeded every epoch; the evaluation loaders' advance per pass.
            "loader_generators": {split: self.loader_generators[split].get_state() for split in ("val", "test")},
        }

    def _save_checkpoint(self, path: str, progress, with_training_state: bool = True, **extra) -> None:
        """Model state and configuration, with the full training state unless told otherwise, written
        atomically by the main process (a crash mid-write leaves the previous file whole). Under
        DeepSpeed the main process holds only its ZeRO shard of the optimizer state, so no training
        state is saved (and resume is refused by the config check)."""
        accelerator = self.accelerator
        if accelerator.is_main_process:
            if with_training_state and not self.config.deepspeed_config:
                extra["training_state"] = self._training_state(progress)
            save_model_checkpoint(
                path, accelerator.unwrap_model(self.model), self.config, data_scaling=data_scaling(self.datasets["train"]), **extra,
            )
        accelerator.wait_for_everyone()

    def _save_step_checkpoint(self, progress) -> None:
        path = os.path.join(self.run_dir, STEP_CHECKPOINT.format(progress.global_step))
        self._save_checkpoint(path, progress)
        if self.accelerator.is_main_process:
            prune_step_checkpoints(self.run_dir, self.config.save_total_limit)
        self.logger.info(f"step {progress.global_step}: saved {path}")

    def _load_resume_checkpoint(self) -> dict:
        """The model's state from --resume_from_checkpoint (before the model is wrapped); the rest of
        the payload is restored by _restore_training_state once optimizer and scheduler exist."""
        config = self.config
        path = resolve_resume_path(config.resume_from_checkpoint)
        payload = load_model_checkpoint(path, self.model, config)
        if "training_state" not in payload:
            raise ValueError(
                f"--resume_from_checkpoint {path} holds no training state (a best-model checkpoint: weights only); resume from "
                f"the run folder, its {LAST_STATE_NAME} or a step checkpoint, or start from these weights with --init_checkpoint"
            )
        saved = payload["config"]
        differing = [name for name in RESUME_MUST_MATCH if saved.get(name) != getattr(config, name)]
        if differing:
            listed = ", ".join(f"--{name} {saved.get(name)!r} in the checkpoint vs {getattr(config, name)!r} now" for name in differing)
            raise ValueError(f"--resume_from_checkpoint {path}: the run continues only with the same data order: {listed}")
        if payload["training_state"]["num_processes"] != self.accelerator.num_processes:
            raise ValueError(f"--resume_from_checkpoint {path} was written by {payload['training_state']['num_processes']} process(es); resume with as many (now {self.accelerator.num_processes})")
        progress = payload["training_state"]["progress"]
        self.logger.info(f"resuming from {path}: epoch {progress['epoch'] + 1}, {progress['batches_done']} batches into it, step {progress['global_step']}")
        return payload

    def _restore_training_state(self, payload: dict, optimizer, scheduler) -> "TrainingProgress":
        state = payload["training_state"]
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler = getattr(self.accelerator, "scaler", None)
        if scaler is not None and state["scaler"] is not None:
            scaler.load_state_dict(state["scaler"])
        if self.sampler is not None:
            if state.get("sampler") is None:
                raise ValueError("--resume_from_checkpoint: the checkpoint was trained without --dynamic_sampling; its data order cannot be replayed with it")
            self.sampler.load_state_dict(state["sampler"])
        for split, generator_state in state.get("loader_generators", {}).items():
            self.loader_generators[split].set_state(generator_state)
        progress = TrainingProgress(**state["progress"])
        if self.config.resume_counter >= 0:
            progress.epochs_without_improvement = self.config.resume_counter
        return progress

    def _flush_deferred_gradients(self) -> None:
        """Modules that sum gradients of an input-independent output over micro-batches (text
        prototypes) back-propagate the sum once, before clipping and the optimizer step."""
        if not hasattr(self, "_deferring_modules"):  # found once: a scan of every module per step is waste
            model = self.accelerator.unwrap_model(self.model)
            self._deferring_modules = [m for m in model.modules() if hasattr(m, "flush_gradients")]
        for module in self._deferring_modules:
            module.flush_gradients()

    def _check_finite(self, first_nonfinite_step: torch.Tensor, epoch: int) -> None:
        step = int(first_nonfinite_step.item())
        if step >= 0:
            saved = self.checkpoint_path if self.checkpoint_path and os.path.isfile(self.checkpoint_path) else "none yet"
            raise NonFiniteLossError(
                f"training loss became non-finite at optimizer step {step} (epoch {epoch + 1}); "
                f"stopped. Last good checkpoint: {saved}. Try a lower --learning_rate or --max_grad_norm 1.0"
            )

    def test(self) -> dict:
        config, accelerator = self.config, self.accelerator
        if config.is_training:
            load_model_checkpoint(self.checkpoint_path, accelerator.unwrap_model(self.model))
            test_loader = self.test_loader
        else:
            load_model_checkpoint(self.checkpoint_path, self.model, config)
            self._prepare_modules()
            self.model, test_loader = accelerator.prepare(self.model, build_loader(config, self.datasets["test"], "test"))
            self.summary = {}
        result = self.evaluator.evaluate(self.model, test_loader, self.forward, collect=True, label="test")
        arrays = result.pop("arrays", {})
        expected = len(self.datasets["test"])
        if result["windows"] != expected:
            raise RuntimeError(f"evaluated {result['windows']} test windows, expected {expected}")
        if accelerator.is_main_process:
            self._write_outputs(result, arrays)
        accelerator.wait_for_everyone()
        return result

    def _write_outputs(self, result: dict, arrays: dict) -> None:
        config = self.config
        metrics = {
            "test": result, "relative_metrics_note": RELATIVE_NOTE, "checkpoint": self.checkpoint_path, "trainable_parameters": self.trainable_parameters,
            **self.summary, "epochs": self.epoch_log,
        }
        with open(os.path.join(self.run_dir, "metrics.json"), "w") as handle:
            json.dump(metrics, handle, indent=2)
        if arrays:  # forecasts (masked pre-training scores reconstructions and keeps none)
            if config.save_predictions:
                np.savez_compressed(os.path.join(self.run_dir, "predictions.npz"), **arrays)
            # The first test window's last variable: the target under features S/MS, OT on ETT.
            plot_forecast(
                os.path.join(self.run_dir, "forecast.png"),
                arrays["input"][0, :, -1], arrays["truth"][0, :, -1], arrays["prediction"][0, :, -1],
                f"{config.model} on {config.data}: first test window ({'original' if config.inverse else 'scaled'} units)",
            )
        attention_maps = self.evaluator.attention_maps
        if attention_maps:
            np.savez_compressed(os.path.join(self.run_dir, "attention.npz"), **attention_maps)
            plot_attention(os.path.join(self.run_dir, "attention.png"), attention_maps, self.datasets["test"].columns, f"{config.model} on {config.data}")
        row = {
            "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
            "run_dir": self.run_dir,
            "model": config.model,
            "data": config.data,
            "features": config.features,
            "seq_len": config.seq_len,
            "pred_len": config.pred_len,
            **{name: f"{result[name]:.6f}" for name in REPORTED_METRICS},
            # Empty without --inverse: the columns exist in every row, so a shared CSV keeps them.
            **{f"original_{name}": f"{result['original_units'][name]:.6f}" if "original_units" in result else "" for name in ("mse", "mae")},
            "test_windows": result["windows"],
            "epochs_run": self.summary.get("epochs_run", ""),
            "train_time_s": self.summary.get("train_time_s", ""),
            "trainable_parameters": self.trainable_parameters,
            "model_comment": config.model_comment,
        }
        append_results_row(self.results_file, row)
        final = {f"test/{name}": result[name] for name in METRIC_NAMES}
        final.update({f"test_original_units/{name}": value for name, value in result.get("original_units", {}).items()})
        self.accelerator.log({name: value for name, value in final.items() if math.isfinite(value)}, step=self.summary.get("global_steps", 0))
        log_artifacts(self.accelerator.trackers, [os.path.join(self.run_dir, name) for name in ("forecast.png", "metrics.json")])

    def run(self) -> dict:
        try:
            if self.config.is_training:
                self.fit()
            result = self.test()
        except BaseException:
            self._end_tracking(failed=True)
            if not self.config.is_training and self.created_run_dir and self.accelerator.is_main_process:
                # An evaluation that failed wrote nothing worth keeping: leave no half-filled folder.
                for handler in self.logger.handlers:
                    handler.close()
                shutil.rmtree(self.run_dir, ignore_errors=True)
            raise
        self._end_tracking(failed=False)
        if self.config.is_training and self.accelerator.is_main_process:  # finished: nothing left to resume
            remove_if_present(os.path.join(self.run_dir, LAST_STATE_NAME))
        baseline = result["last_value_baseline"]
        self.logger.info(f"repeat-last-value baseline on the same windows: mse {baseline['mse']:.4f} mae {baseline['mae']:.4f}")
        if "seasonal_naive_baseline" in result:
            seasonal = result["seasonal_naive_baseline"]
            self.logger.info(f"seasonal-naive baseline (period {seasonal['period']}) on the same windows: mse {seasonal['mse']:.4f} mae {seasonal['mae']:.4f}")
        figures = " ".join(f"{name} {result[name]:.4f}" for name in REPORTED_METRICS)
        self.logger.info(f"test: {figures} windows {result['windows']} run {self.run_dir}", extra={"plain": True})
        if "original_units" in result:
            figures = " ".join(f"{name} {result['original_units'][name]:.4f}" for name in REPORTED_METRICS)
            self.logger.info(f"test (original units, --inverse 1): {figures}", extra={"plain": True})
        return result


    def _end_tracking(self, failed: bool) -> None:
        """Close every tracker's run; MLflow marks a failed one FAILED instead of FINISHED."""
        if failed and any(tracker.name == "mlflow" for tracker in self.accelerator.trackers):
            import mlflow

            mlflow.end_run(status="FAILED")
        self.accelerator.end_training()


def data_scaling(dataset) -> Optional[dict]:
    """The training split's scaler and columns, so inference on new files scales the same way."""
    scaler = getattr(dataset, "scaler", None)
    if scaler is None:
        return None
    return {"columns": list(dataset.columns), "mean": scaler.mean_.tolist(), "scale": scaler.scale_.tolist()}


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory of this process so far: allocated on a GPU, resident on the CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def train_and_test(config) -> tuple[dict, str]:
    """One run of the engine: (its test result, its run folder)."""
    trainer = Trainer(config)
    return trainer.run(), trainer.run_dir
