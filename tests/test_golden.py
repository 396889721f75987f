"""Golden runs: predictions and losses of a fixed set of tiny runs through the whole trainer, recorded
before the architecture refactor, so that the refactor can show it changed no number.

    python -m tests.test_golden --record      # rewrite tests/golden/golden_runs.npz (only when a change is meant to move numbers)

Each case trains 3 optimizer steps on the first 700 rows of ETTh1 (custom CSV, 70/10/20 %), then tests
its best checkpoint; recorded are the logged epoch losses (train, each auxiliary term, validation) and the
first 16 test windows' predictions. Cases: Time-LLM (tiny LLaMA) alone, TAPR + GRA-M, each add-on scheme,
the wavelet embedding, LoRA, each LLM ablation, and every baseline model.
"""
import argparse
import os
import sys
import tempfile

import numpy as np
import pandas as pd
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOLDEN = os.path.join(ROOT, "tests", "golden", "golden_runs.npz")
# Float tolerance: the same computation on the same kind of CPU repeats bit for bit; the margin is for
# another CPU's kernels. A refactor that leaves the computation alone must stay within it.
TOLERANCE = 1e-6
# The hybrid's ARIMA and Holt-Winters fits are iterative optimisations (statsmodels, scipy) whose path
# depends on the CPU's floating-point kernels: on another CPU its forecasts move by ~1e-4 (measured:
# 1.4e-4 on predictions of size ~2, 5e-6 on the training loss, same pinned library versions).
CASE_TOLERANCE = {"hybrid": 1e-3}

COMMON = ["--seq_len", "32", "--label_len", "8", "--pred_len", "8", "--d_model", "8", "--d_ff", "16", "--n_heads", "2",
          "--batch_size", "8", "--eval_batch_size", "64", "--train_epochs", "1", "--max_steps", "3", "--log_interval", "1",
          "--dropout", "0", "--report_to", "none", "--aux_warmup_steps", "0"]
TIMELLM = ["--model", "TimeLLM", "--llm_model", "tiny-llama", "--llm_layers", "2", "--num_tokens", "12", "--patch_len", "8",
           "--stride", "4", "--features", "S"]
ALL_CHANNELS = ["--sample_layout", "all_channels", "--features", "M"]
CASES = {
    "timellm": TIMELLM,
    "tapr_gram": [*TIMELLM, "--use_tapr", "1", "--use_gram", "1", "--d_repr", "8", "--top_k", "3", "--max_memory_size", "200"],
    "hybrid": [*TIMELLM, "--use_hybrid", "1", "--hybrid_workers", "1", "--hybrid_cache_dir", "{folder}/hybrid"],
    "multiscale": [*TIMELLM, "--use_multiscale", "1", "--scales", "1", "2"],
    "frequency": [*TIMELLM, "--use_frequency", "1"],
    "inter_variate": [*TIMELLM, *ALL_CHANNELS, "--use_inter_variate", "1", "--inter_variate_heads", "2", "--inter_variate_ff", "16"],
    "dynamic_prompt": [*TIMELLM, "--use_dynamic_prompt", "1", "--num_dynamic_tokens", "4"],
    "moe": [*TIMELLM, "--use_moe", "1", "--moe_d_ff", "16"],
    "keyword_init": [*TIMELLM, "--use_keyword_init", "1"],
    "adaptive_vocab": [*TIMELLM, "--use_adaptive_vocab", "1"],
    "wavelet": [*TIMELLM, "--use_wavelet", "1", "--swt_level", "2", "--wavelet", "haar"],
    "lora": [*TIMELLM, "--use_lora", "1", "--lora_r", "2"],
    **{f"ablation_{name}": [*TIMELLM, "--llm_ablation", name] for name in (
        "random_init", "no_llm", "llm2attn", "llm2trsf", "no_llm_keep_prompt", "llm2attn_keep_prompt", "llm2trsf_keep_prompt")},
    **{f"baseline_{name}": ["--model", name, *ALL_CHANNELS] for name in (
        "DLinear", "Autoformer", "PatchTST", "iTransformer", "TimesNet", "TimeXer", "PAttn")},
}


def run_case(name: str, folder: str) -> dict:
    """One golden run in this process -> {array name: values}."""
    from utils.config import parse_config
    from utils.trainer import Trainer

    data = os.path.join(folder, "etth1_700.csv")
    if not os.path.exists(data):
        pd.read_csv(os.path.join(ROOT, "dataset", "ETT-small", "ETTh1.csv")).head(700).to_csv(data, index=False)
    case = [flag.format(folder=folder) for flag in CASES[name]]
    config = parse_config([*COMMON, *case, "--data", "custom", "--root_path", folder, "--data_path", "etth1_700.csv",
                           "--freq", "h", "--run_dir", os.path.join(folder, name), "--results_file", os.path.join(folder, "results.csv")])
    trainer = Trainer(config)
    trainer.run()
    predictions = np.load(os.path.join(trainer.run_dir, "predictions.npz"))["prediction"][:16]
    epoch = trainer.epoch_log[0]
    losses = {key: value for key, value in epoch.items() if key != "epoch" and isinstance(value, float)}
    return {f"{name}/prediction": predictions, **{f"{name}/{key}": np.float64(value) for key, value in sorted(losses.items())}}


def record() -> None:
    values = {}
    with tempfile.TemporaryDirectory() as folder:
        for name in CASES:
            values.update(run_case(name, folder))
            print(f"recorded {name}", flush=True)
    os.makedirs(os.path.dirname(GOLDEN), exist_ok=True)
    np.savez_compressed(GOLDEN, **values)
    print(f"wrote {GOLDEN} ({len(values)} arrays)")


@pytest.fixture(scope="module")
def golden():
    return dict(np.load(GOLDEN))


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_golden_run_is_unchanged(name, golden, tmp_path):
    current = run_case(name, str(tmp_path))
    recorded = {key: value for key, value in golden.items() if key.startswith(f"{name}/")}
    assert sorted(current) == sorted(recorded)
    for key, value in recorded.items():
        np.testing.assert_allclose(current[key], value, rtol=0, atol=CASE_TOLERANCE.get(name, TOLERANCE), err_msg=key)


if __name__ == "__main__":
    sys.path.insert(0, ROOT)
    from tests import conftest  # sets the tests' cache of generated tiny backbones, as under pytest

    assert conftest.ROOT == ROOT

    parser = argparse.ArgumentParser(description="record the golden runs")
    parser.add_argument("--record", action="store_true")
    if parser.parse_args().record:
        record()
