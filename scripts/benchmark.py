"""Time-LLM speed benchmark: the straightforward reference path against the optimised paths, side by side.

    python scripts/benchmark.py --llm_model SmolLM2 --llm_layers 2 --seq_len 512 --batch_size 8
    python scripts/benchmark.py ... --paths reference exact flagged bf16 --flagged_args "--prompt_digits 3 --mapping_rank 64"

Each path runs in its own process (so peak memory is its own) on real ETTh1 windows with the same
initial weights: median training-step time (forward, backward, fused Adam), evaluation throughput
over whole batches (windows/s, one evaluation pass after one untimed batch), peak memory (RSS on CPU, allocated on GPU),
trainable parameters and checkpoint size. Paths:
    reference  --reference_path 1: prompt strings per series tokenised every step, mapping every forward,
               eager attention, no prefix cache, a per-parameter (for-loop) Adam step
    exact      the default fast path (same outputs within float tolerance)
    flagged    exact plus --flagged_args (options that change the numbers)
    bf16       exact under bfloat16 autocast
    4bit       exact with the LLM in 4-bit NF4 (--load_in_4bit)
    lora       exact plus LoRA adapters on the LLM (--use_lora 1)
    qlora      4bit plus LoRA adapters: QLoRA, which the Time-LLM paper compares reprogramming with
Prints a table, the ratios to the first path given (the reference when it runs), the largest
prediction difference of each path from it, and ends with `speedup: train <x>x eval <y>x` for the
exact path when the reference ran. Reprogramming against QLoRA (memory, trainable parameters, speed):

    python scripts/benchmark.py --paths exact qlora --llm_model SmolLM2 --llm_layers 30 --seq_len 512
"""
import argparse
import json
import os
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

PATH_ARGS = {
    "reference": ["--reference_path", "1"], "exact": [], "flagged": None, "bf16": [], "4bit": ["--load_in_4bit"],
    "lora": ["--use_lora", "1"], "qlora": ["--use_lora", "1", "--load_in_4bit"],
}


def measure(path: str, model_args: list, options) -> dict:
    """One path in this process: returns its figures and writes its first predictions to options.predictions."""
    import numpy as np
    import torch

    from data_provider.batch import Batch
    from data_provider.registry import build_dataset, resolve_channels, resolve_data_defaults
    from models import build_model
    from utils.checkpoint import trainable_state_dict
    from utils.config import parse_config

    config = parse_config(["--model", "TimeLLM", "--data", "ETTh1", "--dropout", "0", *model_args])
    resolve_data_defaults(config)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    train_set, test_set = build_dataset(config, "train"), build_dataset(config, "test")
    resolve_channels(config, train_set)
    torch.manual_seed(0)
    model = build_model(config).to(device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    # The reference path steps Adam parameter by parameter; the others use the fused kernel, as the trainer does.
    reference = path == "reference"
    optimizer = torch.optim.Adam(trainable, lr=1e-4, fused=not reference, foreach=False if reference else None)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=path == "bf16" or config.mixed_precision == "bf16")

    def batches(dataset, size, count):
        # In order: the same windows for every path.
        loader = torch.utils.data.DataLoader(dataset, batch_size=size, shuffle=False, collate_fn=Batch.collate)
        for index, batch in enumerate(loader):
            if index == count:
                return
            yield batch.inputs.float().to(device), batch.targets[:, -config.pred_len :].float().to(device)

    def synchronise():
        if device.type == "cuda":
            torch.cuda.synchronize()

    step_times = []
    model.train()
    for x, y in batches(train_set, config.batch_size, options.warmup + options.steps):
        synchronise()
        start = time.perf_counter()
        with autocast:
            loss = torch.nn.functional.mse_loss(model(x).prediction.float(), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        synchronise()
        step_times.append(time.perf_counter() - start)
    train_step = statistics.median(step_times[options.warmup :])

    torch.manual_seed(0)
    model = build_model(config).to(device).eval()  # fresh, identical weights for the prediction check
    windows, predictions = 0, None
    with torch.no_grad(), autocast:  # one untimed batch: kernel selection and caches are not throughput
        for x, _ in batches(test_set, config.eval_batch_size, 1):
            model(x)
    synchronise()
    start = time.perf_counter()
    with torch.no_grad(), autocast:
        for x, _ in batches(test_set, config.eval_batch_size, options.eval_batches):
            output = model(x).prediction.float()
            predictions = output.cpu().numpy() if predictions is None else predictions
            windows += len(x)
    synchronise()
    eval_throughput = windows / (time.perf_counter() - start)
    np.save(options.predictions, predictions)

    with tempfile.TemporaryDirectory() as folder:
        checkpoint = os.path.join(folder, "checkpoint.pt")
        torch.save(trainable_state_dict(model), checkpoint)
        checkpoint_mb = os.path.getsize(checkpoint) / 2**20
    peak_mb = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "path": path,
        "train_step_s": train_step,
        "eval_windows_per_s": eval_throughput,
        "peak_memory_mb": peak_mb,
        "trainable_parameters": sum(p.numel() for p in trainable),
        "checkpoint_mb": checkpoint_mb,
        "prompt_tokens": int(model.prompt.encode(torch.randn(2, config.seq_len))[0].shape[1]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--paths", nargs="+", default=["reference", "exact", "flagged"], choices=list(PATH_ARGS))
    parser.add_argument("--flagged_args", default="--prompt_digits 3 --mapping_rank 64 --mixed_precision bf16", help="flags of the flagged path")
    parser.add_argument("--steps", type=int, default=5, help="timed training steps (median reported)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed training steps first")
    parser.add_argument("--eval_batches", type=int, default=4, help="evaluation batches timed as one pass")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--predictions", default=None, help=argparse.SUPPRESS)
    options, model_args = parser.parse_known_args()

    if options.worker:
        print(json.dumps(measure(options.worker, model_args, options)))
        return

    results, predictions = [], {}
    import numpy as np

    with tempfile.TemporaryDirectory() as folder:
        for path in options.paths:
            extra = shlex.split(options.flagged_args) if path == "flagged" else PATH_ARGS[path]
            output = os.path.join(folder, f"{path}.npy")
            command = [sys.executable, os.path.abspath(__file__), "--worker", path, "--predictions", output,
                       "--steps", str(options.steps), "--warmup", str(options.warmup),
                       "--eval_batches", str(options.eval_batches), *model_args, *extra]
            finished = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
            if finished.returncode != 0:
                sys.exit(f"path {path} failed:\n{finished.stderr[-3000:]}")
            results.append(json.loads(finished.stdout.strip().splitlines()[-1]))
            predictions[path] = np.load(output)

    print(f"config: {' '.join(model_args)}")
    header = f"{'path':<10} {'train step s':>12} {'eval win/s':>11} {'peak MB':>9} {'trainable':>11} {'ckpt MB':>8} {'prompt tok':>10}"
    print(header)
    for row in results:
        print(f"{row['path']:<10} {row['train_step_s']:>12.3f} {row['eval_windows_per_s']:>11.1f} {row['peak_memory_mb']:>9.0f} "
              f"{row['trainable_parameters']:>11,} {row['checkpoint_mb']:>8.1f} {row['prompt_tokens']:>10}")
    by_path = {row["path"]: row for row in results}
    baseline = by_path.get("reference", results[0])
    for row in results:
        if row is baseline:
            continue
        difference = float(np.abs(predictions[row["path"]] - predictions[baseline["path"]]).max())
        print(f"{row['path']} vs {baseline['path']}: train {baseline['train_step_s'] / row['train_step_s']:.2f}x, "
              f"eval {row['eval_windows_per_s'] / baseline['eval_windows_per_s']:.2f}x, "
              f"memory {row['peak_memory_mb'] / baseline['peak_memory_mb']:.2f}x, "
              f"trainable {row['trainable_parameters'] / baseline['trainable_parameters']:.3f}x, max |prediction difference| {difference:.2e}")
    if "reference" in by_path and "exact" in by_path:
        reference, exact = by_path["reference"], by_path["exact"]
        print(f"speedup: train {reference['train_step_s'] / exact['train_step_s']:.2f}x "
              f"eval {exact['eval_windows_per_s'] / reference['eval_windows_per_s']:.2f}x")


if __name__ == "__main__":
    main()
