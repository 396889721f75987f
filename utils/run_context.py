"""What a run runs in: the Accelerate state (processes, precision, DeepSpeed, determinism), the run
folder every process writes into, its logger and the experiment trackers.

Accelerate runs the trainer in a single process, in several (`accelerate launch` / `torchrun`, CPU or
GPU) and with DeepSpeed ZeRO-2 (`--deepspeed_config ds_config_zero2.json`); precision comes from
Accelerate's autocast, never from casts in the trainer.
"""
import os
import shutil

import torch
from accelerate import Accelerator
from accelerate.utils import DeepSpeedPlugin

from utils.checkpoint import resolve_resume_path, sweep_temporary_files
from utils.run_outputs import check_writable_file, create_run_dir, saved_config, setup_logger, write_config
from utils.tracking import as_parameters, build_trackers, check_tracking_location


def use_deterministic_kernels() -> None:
    """--deterministic 1. cuBLAS needs its workspace setting before its first call, hence first of all.
    Data loading is reproducible anyway: workers take their python/numpy/torch seeds from the loader's
    generator, which is seeded per epoch (data_provider/registry.py)."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def build_accelerator(config) -> Accelerator:
    if config.deterministic:
        use_deterministic_kernels()
    deepspeed_plugin = DeepSpeedPlugin(hf_ds_config=config.deepspeed_config) if config.deepspeed_config else None
    # Several processes without CUDA: Accelerate only sets up gloo when told to run on the CPU.
    multi_process_cpu = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()
    return Accelerator(
        cpu=multi_process_cpu,
        mixed_precision=config.mixed_precision,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        deepspeed_plugin=deepspeed_plugin,
    )


def broadcast(accelerator, value):
    """The main process's `value`, in every process."""
    if accelerator.num_processes == 1:
        return value
    from accelerate.utils import broadcast_object_list

    return broadcast_object_list([value])[0]


class RunContext:
    """The run folder (created by the main process, shared with the others; a resumed run continues in
    the folder of its checkpoint), train.log, the results table's path (checked writable now, not
    after the whole run) and the trackers (--report_to)."""

    def __init__(self, config, accelerator, notes: list[str]):
        self.config, self.accelerator = config, accelerator
        is_main = accelerator.is_main_process
        if config.resume_from_checkpoint and not config.run_dir:
            config.run_dir = os.path.dirname(os.path.abspath(resolve_resume_path(config.resume_from_checkpoint)))
        self.results_file = config.results_file or os.path.join(config.checkpoints, "results.csv")
        if is_main:
            check_writable_file(self.results_file, "--results_file" if config.results_file else "--checkpoints: the results file")
            check_tracking_location(config)
        run_dir, self.created_run_dir = create_run_dir(config) if is_main else (None, False)
        self.run_dir = broadcast(accelerator, run_dir)
        config.run_dir = self.run_dir
        self.logger = setup_logger(self.run_dir, is_main)
        for note in notes:
            self.logger.info(note)
        if is_main:
            for path in sweep_temporary_files(self.run_dir):
                self.logger.info(f"removed {path}, left by a save that was killed part-way")
            write_config(self.run_dir, config)
        if is_main and config.report_to:
            accelerator.log_with = build_trackers(config, self.run_dir)
            accelerator.init_trackers(config.model_id, config=as_parameters(saved_config(config)))

    def end(self, failed: bool) -> None:
        """Close every tracker's run; MLflow marks a failed one FAILED instead of FINISHED. A failed
        evaluation wrote nothing worth keeping: its new folder is removed."""
        if failed and any(tracker.name == "mlflow" for tracker in self.accelerator.trackers):
            import mlflow

            mlflow.end_run(status="FAILED")
        self.accelerator.end_training()
        if failed and not self.config.is_training and self.created_run_dir and self.accelerator.is_main_process:
            for handler in self.logger.handlers:
                handler.close()
            shutil.rmtree(self.run_dir, ignore_errors=True)
