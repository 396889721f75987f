import os
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
# Generated tiny backbones go to a per-user test cache (fast to rebuild, never the real one).
os.environ.setdefault("TIMELLM_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "timellm-tests"))

# Small, fast settings shared by the end-to-end runs.
FAST_RUN = ["--model", "DLinear", "--data", "ETTh1", "--seq_len", "96", "--pred_len", "24", "--label_len", "24",
            "--train_epochs", "1", "--max_steps", "5", "--eval_batch_size", "64", "--batch_size", "32"]


def pytest_collection_modifyitems(items):
    """Tests that run an entry script in a subprocess are end-to-end tests: `pytest -m e2e` selects them."""
    for item in items:
        function = getattr(item, "function", None)
        if function is not None and "run_script" in function.__code__.co_names:
            item.add_marker(pytest.mark.e2e)


def run_script(args, cwd=ROOT, env_extra=None, launcher=None, timeout=600):
    """Run an entry script in a subprocess as a user would; returns CompletedProcess (text)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", **(env_extra or {}))
    command = (launcher or [sys.executable]) + args
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def script_commands(tmp_path, script, **environment):
    """The entry-script commands a shell script in scripts/ would launch (each as its argv list),
    captured by a stand-in interpreter."""
    import shlex

    log, interpreter = tmp_path / "commands.txt", tmp_path / "python"
    interpreter.write_text(f'#!/usr/bin/env bash\nprintf "%q " "$@" >> {log}\necho >> {log}\n')
    interpreter.chmod(0o755)
    env = dict(os.environ, PYTHON=str(interpreter), MIXED_PRECISION="no", NUM_PROCESSES="1", **environment)
    subprocess.run(["bash", os.path.join(ROOT, "scripts", script)], env=env, check=True, cwd=ROOT)
    return [shlex.split(line) for line in log.read_text().splitlines()]


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


# ------------------------------------------------------------------ shared model and data helpers
TINY = ["tiny-gpt2", "tiny-llama", "tiny-bert", "tiny-qwen2"]  # the randomly initialised backbones the tests build
# GRA-M and TAPR at the size of the tiny backbones.
MODULE_ARGS = ["--llm_model", "tiny-llama", "--d_repr", "16", "--gram_top_k", "3", "--max_memory_size", "400", "--dropout", "0"]
SEQ_LEN, PRED_LEN = 64, 16


def tiny_config(model: str, n_vars: int, *extra):
    """A parsed configuration of `model` at test size, for n_vars variables per sample."""
    from utils.config import parse_config

    config = parse_config(["--model", model, "--seq_len", str(SEQ_LEN), "--label_len", "16", "--pred_len", str(PRED_LEN),
                           *(["--llm_layers", "2", "--num_tokens", "50"] if model == "TimeLLM" else []), *extra])
    config.enc_in = config.dec_in = config.c_out = n_vars
    config.freq = config.freq or "h"  # hourly calendar marks: 4 time features
    if model == "TimeLLM":
        config.prompt_name = "ETTh1"
    return config


def timellm_config(*extra):
    """Time-LLM on the tiny GPT-2, one variable (override with --llm_model)."""
    return tiny_config("TimeLLM", 1, "--llm_model", "tiny-gpt2", *extra)


def series_batch(size=4, length=SEQ_LEN, seed=0):
    """Random walks [size, length, 1]."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(size, length, 1, generator=generator).cumsum(dim=1)


def etth1_config():
    """ETTh1, OT alone, one channel per sample, at the tiny models' window sizes."""
    from utils.config import parse_config

    config = parse_config(["--data", "ETTh1", "--features", "S", "--seq_len", str(SEQ_LEN), "--pred_len", str(PRED_LEN), "--label_len", "16"])
    config.root_path, config.data_path, config.freq, config.sample_layout = os.path.join(ROOT, "dataset", "ETT-small"), "ETTh1.csv", "h", "per_channel"
    return config


def training_set():
    """ETTh1's training split, OT alone, at the tiny models' window sizes (GRA-M's memory is built from it)."""
    from data_provider.tabular import ETTHourDataset

    return ETTHourDataset(etth1_config(), "train")


# Tiny Time-LLM with both enhanced modules on the first 2000 rows of ETTh1 (70/10/20 % splits), 30 % of
# the training windows: 385 windows, 25 optimizer steps per epoch.
ENHANCED_ARGS = ["--model", "TimeLLM", "--llm_model", "tiny-llama", "--llm_layers", "2", "--data", "custom", "--features", "S",
                 "--seq_len", "64", "--pred_len", "16", "--label_len", "16", "--d_model", "16", "--d_ff", "32", "--n_heads", "4",
                 "--num_tokens", "20", "--percent", "30", "--batch_size", "16", "--eval_batch_size", "256", "--train_epochs", "3",
                 "--patience", "5", "--log_interval", "1", "--use_tapr", "1", "--use_gram", "1", "--d_repr", "16", "--top_k", "3",
                 "--max_memory_size", "500", "--aux_warmup_steps", "10", "--dropout", "0.2", "--save_predictions", "0"]


def enhanced_run(tmp_path, name, *extra):
    """A training run of ENHANCED_ARGS in tmp_path/name: (its trainer, its test result)."""
    import pandas as pd

    from utils.config import parse_config
    from utils.trainer import Trainer

    data = tmp_path / "ETTh1_head.csv"
    if not data.exists():
        pd.read_csv(os.path.join(ROOT, "dataset", "ETT-small", "ETTh1.csv")).head(2000).to_csv(data, index=False)
    config = parse_config(ENHANCED_ARGS + ["--root_path", str(tmp_path), "--data_path", data.name, "--checkpoints", str(tmp_path / "checkpoints"), "--run_dir", str(tmp_path / name), *extra])
    trainer = Trainer(config)
    return trainer, trainer.run()


def fit_with_a_failing(monkeypatch, owner: type, method: str):
    """The hybrid's statistical fits (8 steps) of 3 random walks with `owner.method` raising as a singular
    fit does: (windows [3, 64], fit_windows' output)."""
    import numpy as np

    from data_provider import statistical

    def failing(self, series, steps):
        raise np.linalg.LinAlgError("singular")

    monkeypatch.setattr(owner, method, failing)
    windows = np.cumsum(np.random.default_rng(0).normal(size=(3, 64)), axis=1)
    return windows, statistical.fit_windows(windows, statistical.StatisticalSettings(pred_len=8))
