"""Cross-dataset transfer: train on one dataset, then test on another zero-shot and after few-shot
fine-tuning (Time-LLM, Sec. 4.3), all on the same trainer.

    python run_pretrain.py --config configs/demo.yaml --data ETTh1 --target_data ETTh2 --few_shot_percent 10

The target keeps its own splits and its own scaler (fitted on its training rows); the prompt
describes the target dataset. Prints one line per stage and writes transfer.json in the source run.
"""
import json
import os
import sys
from copy import deepcopy

from utils.cli import run_entry
from utils.config import parse_config
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


def main(argv=None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    config = parse_config(argv)
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
