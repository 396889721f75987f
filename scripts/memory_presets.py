"""Peak memory of each YAML preset: two training steps and one evaluation batch, each preset in its own
process (so that its peak is its own), on this machine's device. The figures in README "Memory".

    python scripts/memory_presets.py                                   # the presets below
    python scripts/memory_presets.py configs/memory_6gb.yaml --steps 3

A whole run also holds the validation and test passes, whose batches (--eval_batch_size) are smaller
than training's in these presets and keep no activations for backward: the training step sets the peak.
Prints one line per preset: its peak (resident memory on CPU, allocated memory on a GPU), the seconds
per training step, and the flags that set the size.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

PRESETS = ("configs/demo.yaml", "configs/enhanced_cpu.yaml", "configs/memory_6gb.yaml", "configs/memory_15gb.yaml")
SIZE_FLAGS = ("batch_size", "seq_len", "llm_layers", "d_ff", "d_model", "n_scales", "top_k", "use_gram", "load_in_4bit", "mixed_precision")


def measure(preset: str, steps: int) -> dict:
    """In this process: build the preset's run as the trainer does, train `steps` steps, evaluate a batch."""
    import torch

    from data_provider.registry import build_loader
    from utils.config import parse_config
    from utils.report import peak_memory_mb
    from utils.trainer import Trainer

    with tempfile.TemporaryDirectory() as folder:
        config = parse_config(["--config", preset, "--checkpoints", folder, "--report_to", "none"])
        trainer = Trainer(config)
        trainer.prepare_modules()
        model, accelerator = trainer.model, trainer.accelerator
        optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=config.learning_rate, fused=True)
        model, optimizer = accelerator.prepare(model, optimizer)
        batches = iter(build_loader(config, trainer.datasets["train"], "train"))
        started = time.time()
        for step in range(steps):
            output, target, x, mask = trainer.forward(model, next(batches))
            loss, _ = trainer.losses.compose(output, target, x, step, mask)
            accelerator.backward(loss)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        step_seconds = (time.time() - started) / steps
        model.eval()
        with torch.no_grad():
            trainer.forward(model, next(iter(build_loader(config, trainer.datasets["test"], "test"))))
        return {
            "preset": preset, "peak_memory_mb": round(peak_memory_mb(accelerator.device), 1), "device": accelerator.device.type,
            "seconds_per_step": round(step_seconds, 2), **{name: getattr(config, name) for name in SIZE_FLAGS},
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("presets", nargs="*", default=list(PRESETS))
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.child:
        print(json.dumps(measure(options.presets[0], options.steps)))
        return
    for preset in options.presets:
        result = subprocess.run([sys.executable, __file__, preset, "--steps", str(options.steps), "--child"], cwd=ROOT, capture_output=True, text=True)
        if result.returncode != 0:
            print(f"{preset}: failed: {result.stderr.strip().splitlines()[-1] if result.stderr.strip() else result.returncode}")
            continue
        figures = json.loads(result.stdout.strip().splitlines()[-1])
        sizes = " ".join(f"{name} {figures[name]}" for name in SIZE_FLAGS)
        print(f"{preset}: peak {figures['peak_memory_mb']:.0f} MB ({figures['device']}), {figures['seconds_per_step']:.1f} s/step | {sizes}", flush=True)


if __name__ == "__main__":
    main()
