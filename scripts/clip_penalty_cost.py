"""Step time of DAPO's clip penalty (--lambda_clip, double backward) against the same run without it.

    python scripts/clip_penalty_cost.py                       # DLinear and the demo's Time-LLM
    python scripts/clip_penalty_cost.py --steps 20 --repeats 3

Each (setting, with or without the penalty) trains in its own process on the same ETTh1 windows, the two
alternating --repeats times, so both see the same machine. A process takes --warmup steps, then times
--steps optimizer steps (forward, the composed loss, backward, Adam). Time-LLM with the penalty also
runs its LLM with eager attention (the fused kernels have no double backward), which is part of the
cost measured. Prints the median seconds per step of each and their ratio.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

SETTINGS = {
    "DLinear": ["--model", "DLinear", "--data", "ETTh1", "--features", "S", "--seq_len", "336", "--pred_len", "96", "--batch_size", "32"],
    "TimeLLM (configs/demo.yaml)": ["--config", "configs/demo.yaml"],
}
# A threshold every group's norm exceeds: the penalty, and so the double backward, is active at every step.
PENALTY = ["--lambda_clip", "0.1", "--clip_penalty_threshold", "fixed", "--group_clip_norm", "1e-6"]


def step_times(flags: list[str], warmup: int, steps: int) -> list[float]:
    """In this process: seconds of each timed optimizer step."""
    import torch

    from data_provider.registry import build_loader
    from utils.config import parse_config
    from utils.trainer import Trainer

    with tempfile.TemporaryDirectory() as folder:
        config = parse_config([*flags, "--checkpoints", folder, "--report_to", "none"])
        trainer = Trainer(config)
        trainer.prepare_modules()
        model, accelerator = trainer.model, trainer.accelerator
        optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=config.learning_rate, fused=True)
        model, optimizer = accelerator.prepare(model, optimizer)
        model.train()
        batches = iter(build_loader(config, trainer.datasets["train"], "train"))
        times = []
        for step in range(warmup + steps):
            batch = next(batches)
            started = time.perf_counter()
            output, target, x, mask = trainer.forward(model, batch)
            loss, _ = trainer.losses.compose(output, target, x, step, mask, batch)
            accelerator.backward(loss)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if step >= warmup:
                times.append(time.perf_counter() - started)
        return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", nargs="*", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--child", help=argparse.SUPPRESS)  # a process's flags, as a JSON list
    options = parser.parse_args()
    if options.child is not None:
        print(json.dumps(step_times(json.loads(options.child), options.warmup, options.steps)))
        return
    for name in options.settings:
        times = {"without": [], "with": []}
        for _ in range(options.repeats):
            for variant, extra in (("without", []), ("with", PENALTY)):
                command = [sys.executable, __file__, "--steps", str(options.steps), "--warmup", str(options.warmup), "--child", json.dumps([*SETTINGS[name], *extra])]
                result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
                if result.returncode != 0:
                    raise SystemExit(f"{name} {variant}: {result.stderr.strip().splitlines()[-1]}")
                times[variant] += json.loads(result.stdout.strip().splitlines()[-1])
        without, penalised = statistics.median(times["without"]), statistics.median(times["with"])
        print(f"{name}: {without:.3f} s/step without, {penalised:.3f} s/step with {' '.join(PENALTY)}: "
              f"x{penalised / without:.2f} ({len(times['with'])} steps each)", flush=True)


if __name__ == "__main__":
    main()
