"""Bad-case LoRA fine-tuning (seed 004, "LoRA SFT"): `run_pretrain.py --finetune bad_cases`.

Bad cases' inputs and their true futures in, the optimised LoRA adapters merged into the LLM out:

1. the trained run (--init_checkpoint RUN) scores every training window: its point forecast's MSE;
2. the worst --bad_case_fraction of them, plus --replay_fraction of the training windows drawn at
   random from the rest (seeded by --seed; ordinary windows against forgetting), form the fine-tuning
   set. Validation and test windows are never scored for selection nor trained on;
3. a run fine-tunes on that set what a `--use_lora 1` run trains (the LLM's LoRA adapters and
   Time-LLM's own modules), with its usual validation on the whole validation split selecting the
   checkpoint, and tests on every test window. A RUN trained without LoRA gets fresh adapters (their
   update B A starts at zero, so the fine-tuning starts from RUN's forecasts);
4. the adapters are merged with peft's merge_and_unload() into `<run folder>/merged`
   (utils/export_merged.py), a run folder that loads without peft.

Written to the run folder's bad_cases.json, and printed: the MSE before and after on the bad cases,
the replayed windows, the validation and the test split (the same windows before and after).
"""
import json
import math
import os
from copy import deepcopy

import torch
from torch.utils.data import Dataset

from data_provider.registry import WindowSubset, build_loader
from utils.checkpoint import load_model_checkpoint, read_checkpoint, resolve_checkpoint_path
from utils.dapo import per_window_loss
from utils.export_merged import export_merged
from utils.trainer import Trainer


@torch.no_grad()
def window_errors(trainer: Trainer, model, dataset: Dataset) -> torch.Tensor:
    """The MSE of `model`'s point forecast on each window of `dataset`, in order: [N] (scaled units)."""
    model.eval()
    errors = []
    for batch in build_loader(trainer.config, dataset, "test"):
        output, target, _, _ = trainer.forward(model, batch.to(trainer.accelerator.device))
        errors.append(per_window_loss(output.prediction, target).cpu())
    return torch.cat(errors)


def select_bad_cases(errors: torch.Tensor, fraction: float, replay_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(the ceil(fraction N) windows of largest error, worst first; round(replay_fraction N) of the
    others at random) from errors [N]."""
    count = len(errors)
    bad_count = max(1, math.ceil(fraction * count))
    order = torch.argsort(errors, descending=True, stable=True)
    bad, others = order[:bad_count], order[bad_count:]
    generator = torch.Generator().manual_seed(seed)
    replay_count = min(len(others), round(replay_fraction * count))
    replay = others[torch.randperm(len(others), generator=generator)[:replay_count]]
    return bad.tolist(), sorted(replay.tolist())


def bad_case_finetuning(config) -> dict:
    """Steps 1-4 of the module docstring; returns the summary written to bad_cases.json."""
    source = resolve_checkpoint_path(config.init_checkpoint, "--init_checkpoint")
    fine_tune = deepcopy(config)
    fine_tune.init_checkpoint, fine_tune.model_id = None, f"{config.model_id}_bad_cases"
    trainer = Trainer(fine_tune)
    load_model_checkpoint(source, trainer.model, fine_tune, new_adapters=not read_checkpoint(source)["config"].get("use_lora"))
    trainer.prepare_modules()  # the add-ons' data-built state (GRA-M's memory) before scoring
    trainer.model.to(trainer.accelerator.device)
    train_set = trainer.datasets["train"]
    errors = window_errors(trainer, trainer.model, train_set)
    bad, replay = select_bad_cases(errors, config.bad_case_fraction, config.replay_fraction, config.seed)
    splits = {"bad cases": WindowSubset(train_set, bad), "replayed": WindowSubset(train_set, replay),
              "validation": trainer.datasets["val"], "test": trainer.datasets["test"]}
    before = {name: window_errors(trainer, trainer.model, windows).mean().item() for name, windows in splits.items() if len(windows)}
    trainer.logger.info(f"bad cases: {len(bad)} of {len(train_set)} training windows (MSE {errors[bad].min():.4f} and above; "
                        f"all windows' mean {errors.mean():.4f}), with {len(replay)} replayed")
    trainer.train_windows = bad + replay
    result = trainer.run()
    model = trainer.accelerator.unwrap_model(trainer.model)
    after = {name: window_errors(trainer, model, splits[name]).mean().item() for name in before}
    merged = export_merged(trainer.run_dir, os.path.join(trainer.run_dir, "merged"))
    summary = {
        "init_checkpoint": source, "training_windows": len(train_set), "bad_cases": len(bad), "replayed": len(replay),
        "mse_before": before, "mse_after": after, "test": {name: result[name] for name in ("mse", "mae", "windows")},
        "merged_checkpoint": merged, "bad_case_indices": bad,
    }
    if trainer.accelerator.is_main_process:
        with open(os.path.join(trainer.run_dir, "bad_cases.json"), "w") as handle:
            json.dump(summary, handle, indent=2)
    for name in before:
        print(f"{name}: mse before {before[name]:.4f} after {after[name]:.4f} ({len(splits[name])} windows)")
    print(f"merged model: {merged}")
    return summary
