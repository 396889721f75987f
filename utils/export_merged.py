"""Fold a LoRA run's adapters into the LLM weights: a run folder that loads and forecasts without peft.

    python -m utils.export_merged --run checkpoints/<LoRA run> --output exports/<name>

Writes <output>/llm (the merged, truncated backbone with its tokenizer) and <output>/checkpoint.pt (the
run's trained time-series modules, its data scaling, and its configuration with --use_lora 0 and
--llm_model_path <output>/llm), so `python -m utils.inference --run <output>` or `run_main.py
--is_training 0 --checkpoint <output>` use it like any run. Its forecasts equal the adapter model's
to float tolerance. A 4-bit (QLoRA) run is merged into the base loaded unquantised at its
--llm_dtype: merging into 4-bit weights would round the sum back to 4 bits.
"""
import argparse
import os
from copy import copy
from typing import Optional

from models import build_model
from utils.checkpoint import (
    load_model_checkpoint,
    read_checkpoint,
    resolve_checkpoint_path,
    save_model_checkpoint,
    trainable_state_dict,
)


def export_merged(run: str, output: str) -> str:
    """Merge the adapters of `run` (a run folder or checkpoint file); returns the exported checkpoint path."""
    path = resolve_checkpoint_path(run, flag="--run")
    payload = read_checkpoint(path)
    config = argparse.Namespace(**payload["config"])
    if not getattr(config, "use_lora", 0):
        raise ValueError(f"--run {run}: trained without LoRA (--use_lora 0); there are no adapters to merge")
    config.load_in_4bit = False
    model = build_model(config)
    load_model_checkpoint(path, model, config)
    llm_folder = os.path.join(output, "llm")
    merged = model.llm.merge_and_unload()
    merged.save_pretrained(llm_folder)
    model.prompt.tokenizer.save_pretrained(llm_folder)

    exported_config = copy(config)
    exported_config.use_lora, exported_config.llm_model_path = 0, os.path.abspath(llm_folder)
    exported_config.run_dir = os.path.abspath(output)
    exported = build_model(exported_config)
    state = trainable_state_dict(model)
    exported.load_state_dict({name: state[name] for name in trainable_state_dict(exported)}, strict=False)
    exported_path = os.path.join(output, os.path.basename(path))
    save_model_checkpoint(exported_path, exported, exported_config, data_scaling=payload.get("data_scaling"), merged_from=path)
    return exported_path


def main(argv: Optional[list] = None) -> str:
    parser = argparse.ArgumentParser(description="merge a LoRA run's adapters into its LLM")
    parser.add_argument("--run", required=True, help="run folder or checkpoint file of a --use_lora 1 run")
    parser.add_argument("--output", required=True, help="folder to write the merged run into")
    args = parser.parse_args(argv)
    exported = export_merged(args.run, args.output)
    print(f"wrote {exported} and {os.path.join(args.output, 'llm')}")
    return exported


if __name__ == "__main__":
    from utils.cli import run_entry

    run_entry(main)
