"""Suite executors side by side: wall time of one 4-run DLinear suite (ETTh1, 2 settings x 2 seeds)
run locally one at a time, locally two at a time, and through a local Ray one and two at a time.

    python scripts/benchmark_suite.py [--steps 50]

Each variant runs the same plan into a fresh folder. Ray's per-run overhead is its one-at-a-time
wall time minus the local one's, divided by the runs. Run it on an otherwise idle machine.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VARIANTS = [("local", 1), ("local", 2), ("ray", 1), ("ray", 2)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=50, help="training steps of each run")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        plan = {
            "flags": {"model": "DLinear", "data": "ETTh1", "features": "M", "seq_len": 96, "pred_len": 96, "label_len": 48,
                      "train_epochs": 1, "max_steps": options.steps, "batch_size": 32, "eval_batch_size": 256},
            "settings": [{"name": "moving_avg_25"}, {"name": "moving_avg_13", "flags": {"moving_avg": 13}}],
            "seeds": [1, 2],
        }
        plan_path = os.path.join(folder, "plan.yaml")
        with open(plan_path, "w") as handle:
            yaml.safe_dump(plan, handle)
        walls = {}
        for executor, parallel in VARIANTS:
            output = os.path.join(folder, f"{executor}_{parallel}")
            start = time.time()
            subprocess.run([sys.executable, "scripts/suite.py", "--plan", plan_path, "--output", output, "--executor", executor,
                            "--max_parallel", str(parallel)], cwd=ROOT, check=True, capture_output=True)
            walls[(executor, parallel)] = time.time() - start
            print(f"{executor:<6} K={parallel}: {walls[(executor, parallel)]:6.1f} s for 4 runs", flush=True)
    local_1, local_2, ray_1, ray_2 = (walls[variant] for variant in VARIANTS)
    print(f"local K=2 vs K=1: {local_1 / local_2:.2f}x; ray K=2 vs K=1: {ray_1 / ray_2:.2f}x; "
          f"Ray overhead per run (K=1): {(ray_1 - local_1) / 4:+.1f} s, including starting Ray once ({os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
