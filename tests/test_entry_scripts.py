"""run_m4.py, run_pretrain.py and inference, run as a user would."""
import glob
import json
import os

import numpy as np
import pandas as pd
import pytest

from tests.conftest import FAST_RUN, ROOT, run_script

DLINEAR_SHORT = ["--model", "DLinear", "--train_epochs", "1", "--max_steps", "5"]


def test_run_m4_reports_smape_mase_owa_per_pattern(output_dirs):
    outputs, checkpoints = output_dirs
    result = run_script(["run_m4.py", *DLINEAR_SHORT, "--seasonal_patterns", "Weekly", *outputs])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "smape" in result.stdout and "owa" in result.stdout and "Weekly" in result.stdout
    run_dir = glob.glob(str(checkpoints / "short_term_forecast_m4_Weekly*"))[0]
    table = pd.read_csv(os.path.join(run_dir, "m4_summary.csv"), index_col=0)
    assert table.loc["Weekly", "naive2_smape"] == pytest.approx(9.161, abs=1e-3)
    assert np.isfinite(table.loc["Weekly", ["smape", "mase", "owa"]].astype(float)).all()
    config = open(os.path.join(run_dir, "config.yaml")).read()
    assert "pred_len: 13" in config and "seq_len: 26" in config and "loss: SMAPE" in config


def test_run_m4_names_a_missing_pattern_file(output_dirs, tmp_path):
    outputs, _ = output_dirs
    result = run_script(["run_m4.py", *DLINEAR_SHORT, "--seasonal_patterns", "Yearly", "--root_path", str(tmp_path), *outputs])
    assert result.returncode == 2 and "Yearly-train.csv" in result.stderr and "Traceback" not in result.stderr


def test_run_pretrain_transfers_zero_shot_and_few_shot(output_dirs):
    outputs, checkpoints = output_dirs
    args = ["run_pretrain.py", *FAST_RUN, "--target_data", "ETTh2", "--few_shot_percent", "10", *outputs]
    result = run_script(args)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line for line in result.stdout.splitlines() if line.startswith(("source", "zero-shot", "few-shot"))]
    assert [line.split(":")[0] for line in lines] == ["source ETTh1", "zero-shot ETTh2", "few-shot 10% ETTh2"]
    source_dir = [d for d in glob.glob(str(checkpoints / "*")) if os.path.isfile(os.path.join(d, "transfer.json"))][0]
    summary = json.load(open(os.path.join(source_dir, "transfer.json")))
    assert all(stage["windows"] == 2857 for stage in summary.values())
    zero_shot_dir = glob.glob(str(checkpoints / "*_to_ETTh2_DLinear_ETTh2*"))
    assert len(zero_shot_dir) == 2  # zero-shot and few-shot runs
    few_shot_config = [open(os.path.join(d, "config.yaml")).read() for d in zero_shot_dir]
    assert any("percent: 10" in text and "init_checkpoint:" in text for text in few_shot_config)


def test_inference_on_the_test_split_and_on_a_new_file(output_dirs, tmp_path):
    outputs, checkpoints = output_dirs
    assert run_script(["run_main.py", *FAST_RUN, *outputs]).returncode == 0
    run_dir = glob.glob(str(checkpoints / "long_term*"))[0]

    result = run_script(["-m", "utils.inference", "--run", run_dir, "--output", str(tmp_path / "test.csv")])
    assert result.returncode == 0, result.stderr[-3000:]
    table = pd.read_csv(tmp_path / "test.csv")
    assert len(table) == 2857 * 24 * 7
    # Same numbers as the run's own test predictions, in original units.
    saved = np.load(os.path.join(run_dir, "predictions.npz"))
    frame = pd.read_csv(os.path.join(ROOT, "dataset", "ETT-small", "ETTh1.csv")).iloc[: 12 * 30 * 24, 1:]
    mean, std = frame.mean().to_numpy(), frame.std(ddof=0).to_numpy()
    first = table[(table.window == 5) & (table.variable == "OT")].forecast.to_numpy()
    np.testing.assert_allclose(first, saved["prediction"][5, :, -1] * std[-1] + mean[-1], rtol=1e-4, atol=1e-4)

    new_file = tmp_path / "recent.csv"
    pd.read_csv(os.path.join(ROOT, "dataset", "ETT-small", "ETTh1.csv")).head(500).to_csv(new_file, index=False)
    result = run_script(["-m", "utils.inference", "--run", run_dir, "--data_path", str(new_file), "--output", str(tmp_path / "next.csv")])
    assert result.returncode == 0, result.stderr[-3000:]
    forecast = pd.read_csv(tmp_path / "next.csv", parse_dates=["date"])
    assert len(forecast) == 24 and list(forecast.columns) == ["date", "HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT"]
    assert forecast.date.iloc[0] == pd.Timestamp("2016-07-21 20:00:00")  # the hour after row 500
    assert os.path.isfile(tmp_path / "next.png")

    wrong = tmp_path / "wrong.csv"
    pd.read_csv(new_file).drop(columns="HULL").to_csv(wrong, index=False)
    result = run_script(["-m", "utils.inference", "--run", run_dir, "--data_path", str(wrong)])
    assert result.returncode == 2 and "differ from the training columns" in result.stderr
