import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
# Generated tiny backbones go to a per-user test cache (fast to rebuild, never the real one).
os.environ.setdefault("TIMELLM_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "timellm-tests"))

# Small, fast settings shared by the end-to-end runs.
FAST_RUN = ["--model", "DLinear", "--data", "ETTh1", "--seq_len", "96", "--pred_len", "24", "--label_len", "24",
            "--train_epochs", "1", "--max_steps", "5", "--eval_batch_size", "64", "--batch_size", "32"]


def run_script(args, cwd=ROOT, env_extra=None, launcher=None, timeout=600):
    """Run an entry script in a subprocess as a user would; returns CompletedProcess (text)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", **(env_extra or {}))
    command = (launcher or [sys.executable]) + args
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def output_dirs(tmp_path):
    """--checkpoints and --results_file inside a temporary folder."""
    checkpoints = tmp_path / "checkpoints"
    return ["--checkpoints", str(checkpoints), "--results_file", str(checkpoints / "results.csv")], checkpoints


@pytest.fixture
def small_etth1(tmp_path):
    """Flags for the first 1200 rows of ETTh1 as a custom CSV (70/10/20 % splits): small validation and
    test sets for end-to-end runs whose subject is not the data."""
    import pandas as pd

    path = tmp_path / "ETTh1_head.csv"
    pd.read_csv(os.path.join(ROOT, "dataset", "ETT-small", "ETTh1.csv")).head(1200).to_csv(path, index=False)
    return ["--data", "custom", "--root_path", str(tmp_path), "--data_path", path.name]
