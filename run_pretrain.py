"""Pre-training, then fine-tuning, all on the same trainer. Two kinds (`--pretrain_task`):

transfer (default): train on one dataset, then test on another zero-shot and after few-shot
fine-tuning (Time-LLM, Sec. 4.3).

    python run_pretrain.py --config configs/demo.yaml --data ETTh1 --target_data ETTh2 --few_shot_percent 10

The target keeps its own splits and its own scaler (fitted on its training rows); the prompt
describes the target dataset. Writes transfer.json in the source run.

masked: PatchTST's masked self-supervised pre-training on the training split (hidden patches
reconstructed; early stopping on the validation reconstruction loss), then fine-tuning of the
pre-trained encoder with a fresh forecasting head, tested as usual.

    python run_pretrain.py --pretrain_task masked --model PatchTST --data ETTh1 --seq_len 336 --pred_len 96 \
        --patch_len 16 --stride 16 --mask_ratio 0.4 --pretrain_epochs 10 --train_epochs 10

Writes pretraining.json in the fine-tuning run. Both print one line per stage.

--finetune bad_cases: LoRA fine-tuning of a trained run on its worst training windows, then its
adapters merged into the LLM (utils/bad_cases.py).

    python run_pretrain.py --config RUN/config.yaml --finetune bad_cases --init_checkpoint RUN \
        --bad_case_fraction 0.1 --replay_fraction 0.1 --use_lora 1

Writes bad_cases.json and merged/ in the fine-tuning run.
"""
import json
import os
import sys
from copy import deepcopy

from models import MASKED_PRETRAIN
from utils.bad_cases import bad_case_finetuning
from utils.cli import run_entry
from utils.config import parse_config, single_run
from utils.trainer import Trainer


def target_config(config, **changes):
    """The source configuration moved to the target dataset (its own files, frequency and prompt)."""
    target = deepcopy(config)
    target.data, target.root_path, target.data_path = config.target_data, config.target_root_path, config.target_data_path
    target.freq = target.prompt_name = target.run_dir = None
    target.model_id = f"{config.model_id}_to_{config.target_data}"
    for name, value in changes.items():
        setattr(target, name, value)
    return target


def masked_pretraining(config) -> dict:
    """Self-supervised stage, then fine-tuning from its encoder; returns the per-stage summary."""
    if config.model != "PatchTST":
        raise ValueError(f"--pretrain_task masked pre-trains PatchTST; --model is {config.model}")
    pretrain = deepcopy(config)
    pretrain.task_name, pretrain.train_epochs, pretrain.model_id = MASKED_PRETRAIN, config.pretrain_epochs, f"{config.model_id}_pretrain"
    pretrainer = Trainer(pretrain)
    reconstruction = pretrainer.run()
    fine_tune = deepcopy(config)
    fine_tune.init_checkpoint = pretrainer.checkpoint_path
    fine_tuner = Trainer(fine_tune)
    forecast = fine_tuner.run()
    summary = {
        "masked pre-training": {
            "reconstruction_mse": reconstruction["mse"], "reconstruction_mae": reconstruction["mae"], "windows": reconstruction["windows"],
            "epochs_run": pretrainer.summary["epochs_run"], "train_time_s": pretrainer.summary["train_time_s"], "run_dir": pretrainer.run_dir,
        },
        "fine-tuning": {
            "mse": forecast["mse"], "mae": forecast["mae"], "windows": forecast["windows"],
            "epochs_run": fine_tuner.summary["epochs_run"], "train_time_s": fine_tuner.summary["train_time_s"], "run_dir": fine_tuner.run_dir,
        },
    }
    with open(os.path.join(fine_tuner.run_dir, "pretraining.json"), "w") as handle:
        json.dump(summary, handle, indent=2)
    stage = summary["masked pre-training"]
    print(f"masked pre-training {config.data}: test reconstruction mse {stage['reconstruction_mse']:.4f} mae {stage['reconstruction_mae']:.4f} "
          f"(hidden patches, {stage['epochs_run']} epochs, {stage['train_time_s']:.0f} s)")
    stage = summary["fine-tuning"]
    print(f"fine-tuned {config.data}: mse {stage['mse']:.4f} mae {stage['mae']:.4f} ({stage['windows']} windows, {stage['epochs_run']} epochs, {stage['train_time_s']:.0f} s)")
    return summary


def main(argv=None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    config = parse_config(argv, validators=(single_run,))
    if config.finetune == "bad_cases":
        return bad_case_finetuning(config)
    if config.pretrain_task == "masked":
        return masked_pretraining(config)
    source = Trainer(deepcopy(config))
    stages = {f"source {config.data}": source.run()}
    checkpoint = source.checkpoint_path
    stages[f"zero-shot {config.target_data}"] = Trainer(target_config(config, is_training=0, checkpoint=checkpoint)).run()
    if config.few_shot_percent:
        few_shot = target_config(config, percent=config.few_shot_percent, init_checkpoint=checkpoint)
        stages[f"few-shot {config.few_shot_percent}% {config.target_data}"] = Trainer(few_shot).run()
    summary = {stage: {name: result[name] for name in ("mse", "mae", "windows")} for stage, result in stages.items()}
    with open(os.path.join(source.run_dir, "transfer.json"), "w") as handle:
        json.dump(summary, handle, indent=2)
    for stage, result in summary.items():
        print(f"{stage}: mse {result['mse']:.4f} mae {result['mae']:.4f} ({result['windows']} windows)")
    return summary


if __name__ == "__main__":
    run_entry(main)
