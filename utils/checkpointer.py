"""The trainer's checkpoints: the best model, the resumable training state at each epoch's end and
every --save_steps steps (pruned to --save_total_limit), and exact resume from any of them.

The files and their contents are described in utils/checkpoint.py. Resuming restores the model
before it is wrapped for several processes (`load_resume`), then the optimizer, scheduler, AMP
scaler, the dynamic sampler and the evaluation loaders' generators once those exist (`restore`);
the random states are restored by the loop once the epoch's loaders are set up.
"""
import math
import os
from dataclasses import asdict, dataclass, field
from typing import Optional

from utils.checkpoint import (
    CHECKPOINT_NAME,
    LAST_STATE_NAME,
    STEP_CHECKPOINT,
    capture_rng_state,
    load_model_checkpoint,
    prune_step_checkpoints,
    resolve_resume_path,
    save_model_checkpoint,
)
from utils.run_outputs import remove_if_present

# A resumed run replays the saved run's data order: these must not change.
RESUME_MUST_MATCH = ("seed", "data", "data_path", "features", "percent", "batch_size", "gradient_accumulation_steps", "dynamic_sampling")


@dataclass
class TrainingProgress:
    """Where a run stands. Saved in every training-state checkpoint; resuming continues from exactly here."""

    epoch: int = 0  # the epoch being trained, 0-based
    batches_done: int = 0  # micro-batches of that epoch already trained (the sampler position)
    global_step: int = 0  # optimizer steps
    best_val: float = math.inf
    epochs_without_improvement: int = 0
    epoch_sums: dict = field(default_factory=dict)  # this epoch's running sums (loss, aux terms, batches)
    train_time_s: float = 0.0


def data_scaling(dataset) -> Optional[dict]:
    """The training split's scaler and columns, so inference on new files scales the same way."""
    scaler = getattr(dataset, "scaler", None)
    if scaler is None:
        return None
    return {"columns": list(dataset.columns), "mean": scaler.mean_.tolist(), "scale": scaler.scale_.tolist()}


class Checkpointer:
    def __init__(self, accelerator, config, run_dir: str, logger, train_set):
        self.accelerator, self.config, self.run_dir, self.logger = accelerator, config, run_dir, logger
        self.best_path = os.path.join(run_dir, CHECKPOINT_NAME)
        self.last_state_path = os.path.join(run_dir, LAST_STATE_NAME)
        self.scaling = data_scaling(train_set)
        self.training_objects: dict = {}  # set by `attach` once the loop's objects exist

    def attach(self, model, optimizer, scheduler, sampler, loader_generators: dict) -> None:
        """The (wrapped) model and what the training state holds besides it."""
        self.model = model
        self.training_objects = {"optimizer": optimizer, "scheduler": scheduler, "sampler": sampler, "loader_generators": loader_generators}

    # ------------------------------------------------------------------------------------ saving
    def _training_state(self, progress: TrainingProgress) -> dict:
        objects = self.training_objects
        scaler = getattr(self.accelerator, "scaler", None)
        return {
            "optimizer": objects["optimizer"].state_dict(),
            "scheduler": objects["scheduler"].state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None,
            "progress": asdict(progress),
            "rng": capture_rng_state(),
            "num_processes": self.accelerator.num_processes,
            "sampler": objects["sampler"].state_dict() if objects["sampler"] is not None else None,
            # The training loader's is reseeded every epoch; the evaluation loaders' advance per pass.
            "loader_generators": {split: objects["loader_generators"][split].get_state() for split in ("val", "test")},
        }

    def save(self, path: str, progress: TrainingProgress, with_training_state: bool = True, **extra) -> None:
        """Model state and configuration, with the full training state unless told otherwise, written
        atomically by the main process (a crash mid-write leaves the previous file whole). Under
        DeepSpeed the main process holds only its ZeRO shard of the optimizer state, so no training
        state is saved (and resume is refused by the config check)."""
        accelerator = self.accelerator
        if accelerator.is_main_process:
            if with_training_state and not self.config.deepspeed_config:
                extra["training_state"] = self._training_state(progress)
            save_model_checkpoint(path, accelerator.unwrap_model(self.model), self.config, data_scaling=self.scaling, **extra)
        accelerator.wait_for_everyone()

    def save_best(self, progress: TrainingProgress, val_loss: float) -> None:
        self.save(self.best_path, progress, with_training_state=False, val_loss=val_loss)

    def save_last_state(self, progress: TrainingProgress) -> None:
        """At an epoch's end while training goes on: a crash from here on resumes here."""
        if not self.config.deepspeed_config:
            self.save(self.last_state_path, progress)

    def save_step(self, progress: TrainingProgress) -> None:
        path = os.path.join(self.run_dir, STEP_CHECKPOINT.format(progress.global_step))
        self.save(path, progress)
        if self.accelerator.is_main_process:
            prune_step_checkpoints(self.run_dir, self.config.save_total_limit)
        self.logger.info(f"step {progress.global_step}: saved {path}")

    def discard_last_state(self) -> None:
        """The run finished: nothing is left to resume."""
        if self.accelerator.is_main_process:
            remove_if_present(self.last_state_path)

    # ----------------------------------------------------------------------------------- resuming
    def load_resume(self, model) -> dict:
        """The model's state from --resume_from_checkpoint (before the model is wrapped), after checking
        that the checkpoint can continue this run; returns the payload for `restore`."""
        config = self.config
        path = resolve_resume_path(config.resume_from_checkpoint)
        payload = load_model_checkpoint(path, model, config)
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
        written_by = payload["training_state"]["num_processes"]
        if written_by != self.accelerator.num_processes:
            raise ValueError(f"--resume_from_checkpoint {path} was written by {written_by} process(es); resume with as many (now {self.accelerator.num_processes})")
        progress = payload["training_state"]["progress"]
        self.logger.info(f"resuming from {path}: epoch {progress['epoch'] + 1}, {progress['batches_done']} batches into it, step {progress['global_step']}")
        return payload

    def restore(self, payload: dict) -> TrainingProgress:
        """Optimizer, scheduler, scaler, sampler and evaluation generators from a `load_resume` payload."""
        state, objects = payload["training_state"], self.training_objects
        objects["optimizer"].load_state_dict(state["optimizer"])
        objects["scheduler"].load_state_dict(state["scheduler"])
        scaler = getattr(self.accelerator, "scaler", None)
        if scaler is not None and state["scaler"] is not None:
            scaler.load_state_dict(state["scaler"])
        if objects["sampler"] is not None:
            if state.get("sampler") is None:
                raise ValueError("--resume_from_checkpoint: the checkpoint was trained without --dynamic_sampling; its data order cannot be replayed with it")
            objects["sampler"].load_state_dict(state["sampler"])
        for split, generator_state in state.get("loader_generators", {}).items():
            objects["loader_generators"][split].set_state(generator_state)
        progress = TrainingProgress(**state["progress"])
        if self.config.resume_counter >= 0:
            progress.epochs_without_improvement = self.config.resume_counter
        return progress
