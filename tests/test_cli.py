"""End-to-end runs of run_main.py as a user would start them, and every bad input's one-line error."""
import csv
import glob
import json
import multiprocessing
import os
import re
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from tests.conftest import FAST_RUN, ROOT, run_script
from utils.config import parse_config
from utils.objective import LossComposer
from utils.run_outputs import append_results_row
from utils.trainer import NonFiniteLossError, Trainer

TEST_LINE = re.compile(r"^test: mse \d+\.\d{4} mae \d+\.\d{4} rmse .* windows (\d+) run (\S+)$", re.M)


def only_run_dir(checkpoints):
    runs = [path for path in glob.glob(str(checkpoints / "*")) if os.path.isdir(path)]
    assert len(runs) == 1, runs
    return runs[0]


def test_end_to_end_run_writes_its_folder_and_can_be_retested(output_dirs):
    outputs, checkpoints = output_dirs
    result = run_script(["run_main.py", *FAST_RUN, *outputs])
    assert result.returncode == 0, result.stderr[-3000:]
    match = TEST_LINE.search(result.stdout)
    assert match and int(match.group(1)) == 2857  # 2880 test rows + 96 of context, minus 96 + 24, plus 1
    run_dir = only_run_dir(checkpoints)
    for name in ("config.yaml", "train.log", "checkpoint.pt", "metrics.json", "predictions.npz", "forecast.png"):
        assert os.path.getsize(os.path.join(run_dir, name)) > 0, name
    assert glob.glob(os.path.join(run_dir, "tensorboard", "events.out.tfevents.*"))
    metrics = json.load(open(os.path.join(run_dir, "metrics.json")))
    assert metrics["global_steps"] == 5 and metrics["test"]["windows"] == 2857
    arrays = np.load(os.path.join(run_dir, "predictions.npz"))
    assert arrays["prediction"].shape == (2857, 24, 7)
    assert np.mean((arrays["prediction"] - arrays["truth"]) ** 2) == pytest.approx(metrics["test"]["mse"], rel=1e-5)
    rows = list(csv.DictReader(open(checkpoints / "results.csv")))
    assert len(rows) == 1 and float(rows[0]["mse"]) == pytest.approx(metrics["test"]["mse"], abs=1e-6)

    # The saved config reproduces the architecture; testing the checkpoint gives the same numbers.
    retest = run_script(["run_main.py", "--config", os.path.join(run_dir, "config.yaml"), "--is_training", "0",
                         "--checkpoint", run_dir, "--model_id", "retest", *outputs])
    assert retest.returncode == 0, retest.stderr[-3000:]
    retest_dir = TEST_LINE.search(retest.stdout).group(2)
    retest_metrics = json.load(open(os.path.join(retest_dir, "metrics.json")))
    assert retest_metrics["test"]["mse"] == pytest.approx(metrics["test"]["mse"], rel=1e-9)
    assert len(list(csv.DictReader(open(checkpoints / "results.csv")))) == 2


def test_two_process_run_tests_every_window_exactly_once(output_dirs):
    outputs, checkpoints = output_dirs
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517"]
    # 2857 test windows in batches of 7 per process: the last step is padded and must be de-duplicated.
    args = ["run_main.py", *FAST_RUN, "--eval_batch_size", "7", *outputs]
    result = run_script(args, launcher=launcher)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = only_run_dir(checkpoints)
    metrics = json.load(open(os.path.join(run_dir, "metrics.json")))
    assert metrics["test"]["windows"] == 2857
    assert metrics["global_steps"] == 5
    distributed = np.load(os.path.join(run_dir, "predictions.npz"))

    # The same checkpoint tested in one process: identical windows, in the same order.
    single = run_script(["run_main.py", *FAST_RUN, "--is_training", "0", "--checkpoint", run_dir,
                         "--run_dir", os.path.join(str(checkpoints), "single"), *outputs[2:]])
    assert single.returncode == 0, single.stderr[-3000:]
    reference = np.load(os.path.join(str(checkpoints), "single", "predictions.npz"))
    np.testing.assert_allclose(distributed["prediction"], reference["prediction"], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(distributed["truth"], reference["truth"])


def _write_csv(path, frame):
    frame.to_csv(path, index=False)
    return ["--data", "custom", "--root_path", str(path.parent), "--data_path", path.name]


def _etth1_head(rows=3000):
    return pd.read_csv(os.path.join(ROOT, "dataset", "ETT-small", "ETTh1.csv")).head(rows)


BAD_INPUTS = {
    "missing file": (lambda tmp: ["--data_path", "nope.csv"], "data file not found: ./dataset/ETT-small/nope.csv"),
    "no date column": (lambda tmp: _write_csv(tmp / "a.csv", _etth1_head().drop(columns="date")), "no 'date' column"),
    "no target column": (lambda tmp: ["--features", "S", "--target", "Load"], "--target 'Load' is not a column"),
    "text value": (
        lambda tmp: _write_csv(tmp / "b.csv", _etth1_head().astype({"HULL": object}).assign(HULL=lambda f: f.HULL.where(f.index != 6, "n/a"))),
        "column 'HULL', line 8: value 'n/a' is not a finite number",
    ),
    "empty value": (
        lambda tmp: _write_csv(tmp / "c.csv", _etth1_head().assign(OT=lambda f: f.OT.where(f.index != 99))),
        "column 'OT', line 101: an empty cell is not a finite number",
    ),
    "windows longer than a split": (lambda tmp: ["--pred_len", "3000"], "the val split has 2976 rows, fewer than --seq_len + --pred_len = 3096"),
    "unknown dataset": (lambda tmp: ["--data", "ETTh9"], "--data 'ETTh9' is not a known dataset; valid: ETTh1"),
    "unknown model": (lambda tmp: ["--model", "Informer"], "--model 'Informer' is not known; valid: DLinear"),
    "unknown schedule": (lambda tmp: ["--lradj", "type9"], "argument --lradj: invalid choice: 'type9'"),
    "test without checkpoint": (lambda tmp: ["--is_training", "0"], "--is_training 0 tests a saved model: give --checkpoint"),
    "missing checkpoint": (lambda tmp: ["--is_training", "0", "--checkpoint", str(tmp / "none")], "no checkpoint file found"),
    "enc_in disagrees": (lambda tmp: ["--enc_in", "3"], "--enc_in 3 disagrees with the data: each sample has 7 variable(s)"),
    "resume from nothing": (lambda tmp: ["--resume_from_checkpoint", str(tmp / "none.pt")], "none.pt: no checkpoint file found"),
    "step checkpoints under DeepSpeed": (lambda tmp: ["--save_steps", "5", "--deepspeed_config", "ds_config_zero2.json"], "not available with --deepspeed_config"),
    "add-on on a baseline": (lambda tmp: ["--use_gram", "1"], "--use_gram: flag of TimeLLM's components; --model is DLinear"),
    "4-bit loading of a baseline": (lambda tmp: ["--load_in_4bit", "--llm_layers", "4"], "--llm_layers, --load_in_4bit: flags of TimeLLM's components; --model is DLinear"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_gives_one_clear_line(case, tmp_path, output_dirs):
    make_args, message = BAD_INPUTS[case]
    outputs, checkpoints = output_dirs
    result = run_script(["run_main.py", *FAST_RUN, *outputs, *make_args(tmp_path)])
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert message in result.stderr, result.stderr[-2000:]
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr  # the error alone: no usage, no library warnings
    assert not os.path.exists(checkpoints / "results.csv")


def test_unknown_yaml_key_is_named(tmp_path, capsys):
    config_file = tmp_path / "bad.yaml"
    config_file.write_text("seq_len: 96\nlearning_rte: 0.1\n")
    with pytest.raises(SystemExit) as raised:
        parse_config(["--config", str(config_file)])
    assert raised.value.code == 2
    error = capsys.readouterr().err
    assert "unknown key(s) ['learning_rte']" in error and "learning_rte: did you mean learning_rate?" in error


def test_yaml_sets_defaults_and_the_command_line_wins(tmp_path):
    config_file = tmp_path / "good.yaml"
    config_file.write_text("seq_len: 200\npred_len: 48\n")
    config = parse_config(["--config", str(config_file), "--pred_len", "24"])
    assert (config.seq_len, config.pred_len) == (200, 24)


def test_checkpoint_of_another_architecture_is_refused(output_dirs):
    outputs, checkpoints = output_dirs
    assert run_script(["run_main.py", *FAST_RUN, *outputs]).returncode == 0
    run_dir = only_run_dir(checkpoints)
    result = run_script(["run_main.py", *FAST_RUN, "--seq_len", "48", "--is_training", "0", "--checkpoint", run_dir, *outputs])
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--seq_len 96 in the checkpoint vs 48 now" in result.stderr
    assert [only_run_dir(checkpoints)] == [run_dir]  # the failed evaluation left no folder behind


def test_nonfinite_loss_stops_the_run_and_names_the_last_good_checkpoint(output_dirs, monkeypatch):
    outputs, checkpoints = output_dirs
    good = run_script(["run_main.py", *FAST_RUN, *outputs, "--model_id", "good"])
    assert good.returncode == 0
    good_dir = only_run_dir(checkpoints)
    good_bytes = open(os.path.join(good_dir, "checkpoint.pt"), "rb").read()

    original = LossComposer.compose

    def diverging(self, output, target, x, global_step, mask=None, batch=None):
        loss, parts = original(self, output, target, x, global_step, mask, batch)
        return (loss * torch.nan if global_step >= 15 else loss), parts

    monkeypatch.setattr(LossComposer, "compose", diverging)
    config = parse_config([*FAST_RUN, "--max_steps", "0", "--train_epochs", "3", "--percent", "5",
                           "--log_interval", "1", "--model_id", "diverges", *outputs])
    with pytest.raises(NonFiniteLossError) as raised:
        Trainer(config).run()
    message = str(raised.value)
    assert "non-finite at optimizer step 15 (epoch 2)" in message
    saved = re.search(r"Last good checkpoint: (\S+)\.", message).group(1)
    assert os.path.isfile(saved) and saved.startswith(str(checkpoints)) and "diverges" in saved
    # The earlier run's checkpoint and results row are untouched; the failed run added no row.
    assert open(os.path.join(good_dir, "checkpoint.pt"), "rb").read() == good_bytes
    rows = list(csv.DictReader(open(checkpoints / "results.csv")))
    assert [row["run_dir"] for row in rows] == [good_dir]


def _append_rows(path, worker):
    for index in range(25):
        append_results_row(path, {"run_dir": f"run-{worker}-{index}", "mse": f"{worker}.{index}"})


def test_concurrent_runs_all_get_their_results_row(tmp_path):
    path = str(tmp_path / "results.csv")
    workers = [multiprocessing.Process(target=_append_rows, args=(path, worker)) for worker in range(6)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    rows = list(csv.DictReader(open(path)))
    assert len(rows) == 150 and len({row["run_dir"] for row in rows}) == 150


def test_switches_take_a_bare_flag_or_a_value(capsys):
    # Seed 002's bare `--use_tapr` (upstream's `--use_amp` style) and the scripts' `--use_tapr 1` alike.
    config = parse_config(["--model", "TimeLLM", "--use_tapr", "--use_gram", "0", "--use_moe", "1", "--save_attention"])
    assert (config.use_tapr, config.use_gram, config.use_moe, config.save_attention) == (1, 0, 1, 1)
    with pytest.raises(SystemExit):
        parse_config(["--model", "TimeLLM", "--use_tapr", "2"])
    assert "argument --use_tapr: invalid choice: 2 (choose from 0, 1)" in capsys.readouterr().err
