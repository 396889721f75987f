"""A new user's stumbles: dates, I/O faults, flag errors, lean run folders, quiet logs, trackers,
attention maps, and the README's own-data example."""
import glob
import json
import logging
import os
import re
import stat

import numpy as np
import pandas as pd
import pytest
import torch

from tests.conftest import FAST_RUN, ROOT, run_script
from utils.callbacks import Callback
from utils.checkpoint import LAST_STATE_NAME, atomic_save
from utils.config import parse_config
from utils.trainer import Trainer

SMALL_RUN = ["--model", "DLinear", "--seq_len", "48", "--label_len", "12", "--pred_len", "12", "--train_epochs", "1",
             "--max_steps", "3", "--eval_batch_size", "256", "--save_predictions", "0"]


def etth1_rows(rows=1200) -> pd.DataFrame:
    return pd.read_csv(os.path.join(ROOT, "dataset", "ETT-small", "ETTh1.csv")).head(rows)


def custom_csv(tmp_path, frame, name="data.csv") -> list:
    frame.to_csv(tmp_path / name, index=False)
    return ["--data", "custom", "--root_path", str(tmp_path), "--data_path", name]


def one_error_line(result) -> str:
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def run_dirs(checkpoints) -> list:
    return sorted(path for path in glob.glob(os.path.join(str(checkpoints), "*")) if os.path.isdir(path) and "mlartifacts" not in path)


# ------------------------------------------------------------------------------------------- dates
def test_shuffled_and_repeated_dates_are_refused_naming_the_line(tmp_path, output_dirs):
    outputs, checkpoints = output_dirs
    frame = etth1_rows()
    shuffled = frame.copy()
    shuffled.iloc[[10, 11]] = shuffled.iloc[[11, 10]].to_numpy()  # two rows swapped: data rows 10 and 11
    error = one_error_line(run_script(["run_main.py", *SMALL_RUN, *outputs, *custom_csv(tmp_path, shuffled, "shuffled.csv")]))
    assert "shuffled.csv: column 'date', line 13: '2016-07-01 10:00:00' comes before line 12's '2016-07-01 11:00:00'" in error
    repeated = pd.concat([frame.iloc[:101], frame.iloc[100:]])  # data row 100 twice
    error = one_error_line(run_script(["run_main.py", *SMALL_RUN, *outputs, *custom_csv(tmp_path, repeated, "repeated.csv")]))
    assert "repeated.csv: column 'date', line 103: '2016-07-05 04:00:00' repeats line 102" in error
    assert run_dirs(checkpoints) == []


def test_the_frequency_is_inferred_from_the_dates_and_logged(tmp_path, output_dirs):
    outputs, _ = output_dirs
    weeks = 400
    frame = pd.DataFrame({"date": pd.date_range("2015-01-04", periods=weeks, freq="W-SUN").strftime("%Y-%m-%d"),
                          "OT": np.sin(np.arange(weeks) / 8.0) + 5})
    config = parse_config([*SMALL_RUN, *outputs, *custom_csv(tmp_path, frame), "--features", "S"])
    trainer = Trainer(config)
    trainer.run()
    assert config.freq == "w"
    log = open(os.path.join(trainer.run_dir, "train.log")).read()
    assert f"--freq w: inferred from its dates in {tmp_path / 'data.csv'}" in log
    # Weekly time features: day of month and week of year.
    assert trainer.datasets["train"].marks.shape[1] == 2
    # A given --freq wins over inference.
    assert parse_config([*SMALL_RUN, *custom_csv(tmp_path, frame), "--freq", "d"]).freq == "d"


def test_future_dates_of_quarterly_data_stay_on_quarter_starts(tmp_path, output_dirs):
    from utils.inference import Forecaster

    outputs, _ = output_dirs
    quarters = 240
    dates = pd.date_range("1950-01-01", periods=quarters, freq="QS")
    frame = pd.DataFrame({"date": dates.strftime("%Y-%m-%d"), "OT": np.cos(np.arange(quarters) / 2.0) + 3})
    config = parse_config(["--model", "DLinear", "--seq_len", "16", "--label_len", "4", "--pred_len", "6", "--train_epochs", "1",
                           "--features", "S", *outputs, *custom_csv(tmp_path, frame)])
    trainer = Trainer(config)
    trainer.run()
    assert config.freq == "q"
    table, _ = Forecaster(trainer.run_dir).forecast_file(str(tmp_path / "data.csv"))
    expected = pd.date_range(dates[-1], periods=7, freq="QS")[1:]
    assert list(pd.to_datetime(table["date"])) == list(expected)  # 2010-01-01, 2010-04-01, ... not 91-day drift
    assert all(date.day == 1 and date.month in (1, 4, 7, 10) for date in pd.to_datetime(table["date"]))


# -------------------------------------------------------------------------------------- I/O faults
def test_unwritable_locations_fail_before_training_naming_the_flag(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    error = one_error_line(run_script(["run_main.py", *FAST_RUN, "--checkpoints", str(blocker)]))
    assert error.startswith("error: --checkpoints: ") and f"{blocker} is a file, not a folder" in error

    def refused(*flags) -> str:
        with pytest.raises(ValueError) as raised:
            Trainer(parse_config([*SMALL_RUN, "--checkpoints", str(tmp_path / "runs"), *flags]))
        return str(raised.value)

    error = refused("--checkpoints", str(blocker), "--results_file", str(tmp_path / "results.csv"))
    assert error.startswith(f"--checkpoints: cannot write the run folder {blocker}/") and f"{blocker} is a file, not a folder" in error
    error = refused("--results_file", str(blocker / "results.csv"))
    assert error == f"--results_file {blocker}/results.csv: cannot write there: {blocker} is a file, not a folder"
    assert refused("--results_file", str(tmp_path)) == f"--results_file {tmp_path}: cannot write there: it is a folder"
    error = refused("--report_to", "mlflow", "--tracking_uri", f"sqlite:///{blocker}/mlflow.db")
    assert error.startswith(f"--tracking_uri {blocker}/mlflow.db: cannot write there")
    # Nothing trained, so no run folder was left behind.
    assert run_dirs(tmp_path / "runs") == []


def test_empty_csv_and_bad_yaml_are_one_line_errors_with_exit_2(tmp_path, output_dirs, capsys):
    outputs, _ = output_dirs
    (tmp_path / "empty.csv").write_text("")
    error = one_error_line(run_script(["run_main.py", *SMALL_RUN, *outputs, "--data", "custom", "--root_path", str(tmp_path), "--data_path", "empty.csv"]))
    assert f"{tmp_path}/empty.csv: the file is empty" in error

    def config_error(path) -> str:
        with pytest.raises(SystemExit) as raised:
            parse_config(["--config", str(path)])
        assert raised.value.code == 2  # as every other user error (YAML errors exited 1)
        return capsys.readouterr().err

    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("seq_len: 96\npred_len: [96\n")
    assert f"--config {bad_yaml}, line 3: not valid YAML" in config_error(bad_yaml)
    assert "missing.yaml: no such file or directory" in config_error(tmp_path / "missing.yaml")


def test_checkpoints_are_readable_by_the_group_and_killed_saves_leave_nothing(tmp_path, small_etth1):
    previous = os.umask(0o022)
    try:
        atomic_save({"weights": torch.zeros(3)}, str(tmp_path / "saved.pt"))
    finally:
        os.umask(previous)
    assert stat.S_IMODE(os.stat(tmp_path / "saved.pt").st_mode) == 0o644
    # A save killed part-way (SIGKILL: no clean-up ran) left a temporary file; the next run in the folder sweeps it.
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / ".tmp-0123abcd.pt").write_bytes(b"half a checkpoint")
    config = parse_config([*SMALL_RUN, *small_etth1, "--run_dir", str(run_dir), "--results_file", str(tmp_path / "results.csv")])
    Trainer(config).run()
    assert not glob.glob(str(run_dir / ".tmp-*"))
    assert "left by a save that was killed part-way" in open(run_dir / "train.log").read()
    assert stat.S_IMODE(os.stat(run_dir / "checkpoint.pt").st_mode) & 0o044 == 0o044


TERMINATED_MID_SAVE = """
import os, signal, sys
sys.path.insert(0, {root!r})
import torch
from utils.checkpoint import atomic_save
from utils.cli import run_entry

class TerminatedWhilePickled:
    def __reduce__(self):
        os.kill(os.getpid(), signal.SIGTERM)
        return (int, (0,))

run_entry(lambda argv: atomic_save({{"weights": torch.zeros(1000), "stop": TerminatedWhilePickled()}}, {path!r}))
"""


def test_a_save_stopped_by_sigterm_removes_its_temporary_file(tmp_path):
    script = tmp_path / "save.py"
    script.write_text(TERMINATED_MID_SAVE.format(root=ROOT, path=str(tmp_path / "checkpoint.pt")))
    result = run_script([str(script)])
    assert result.returncode == 128 + 15, result.stderr
    assert sorted(os.listdir(tmp_path)) == ["save.py"]


def test_inference_names_its_own_flag(tmp_path):
    result = run_script(["-m", "utils.inference", "--run", str(tmp_path / "missing")])
    assert one_error_line(result) == f"error: --run {tmp_path}/missing: no checkpoint file found (expected a run folder or a .pt file)"


# ------------------------------------------------------------------------------------- flag errors
def test_flag_mistakes_are_one_line_with_the_nearest_flag(output_dirs):
    error = one_error_line(run_script(["run_main.py", "--lerning_rate", "0.01"]))
    assert error == "error: unrecognized argument --lerning_rate; did you mean --learning_rate? (see run_main.py --help)"
    # A prefix is not taken for a flag: --learning could be --learning_rate or a future --learning_*.
    error = one_error_line(run_script(["run_main.py", "--learning", "0.01"]))
    assert "unrecognized argument --learning; did you mean --learning_rate?" in error
    error = one_error_line(run_script(["run_main.py", "--model", "PatchTST", "--use_tapr", "1", "--num_tokens", "500"]))
    assert "--num_tokens, --use_tapr: flags of TimeLLM's components; --model is PatchTST" in error


def test_timellm_flags_in_yaml_are_refused_for_another_model_but_a_saved_run_config_reloads(tmp_path, output_dirs):
    outputs, checkpoints = output_dirs
    preset = tmp_path / "preset.yaml"
    preset.write_text("model: DLinear\nload_in_4bit: true\n")
    with pytest.raises(SystemExit):
        parse_config(["--config", str(preset)])
    # TimeLLM flags at their defaults (as in every saved config.yaml) are fine.
    config = parse_config([*SMALL_RUN, *outputs])
    trainer = Trainer(config)
    trainer.run()
    assert parse_config(["--config", os.path.join(trainer.run_dir, "config.yaml")]).model == "DLinear"


# ------------------------------------------------------------------------------- lean run folders
def test_a_finished_run_keeps_only_the_weights_and_an_interrupted_one_resumes(tmp_path, small_etth1, monkeypatch):
    args = [*small_etth1, "--model", "DLinear", "--seq_len", "48", "--label_len", "12", "--pred_len", "12", "--train_epochs", "3",
            "--patience", "5", "--log_interval", "5", "--save_predictions", "0", "--results_file", str(tmp_path / "results.csv")]
    finished = Trainer(parse_config([*args, "--run_dir", str(tmp_path / "finished")]))
    result = finished.run()
    best = torch.load(tmp_path / "finished" / "checkpoint.pt", weights_only=False)
    assert "training_state" not in best and set(best) >= {"model", "config", "data_scaling"}
    assert not os.path.exists(tmp_path / "finished" / LAST_STATE_NAME)
    error = pytest.raises(FileNotFoundError, Trainer, parse_config([*args, "--resume_from_checkpoint", str(tmp_path / "finished")]))
    assert "no training state in this folder" in str(error.value) and "--init_checkpoint" in str(error.value)

    # Killed at the start of epoch 3: the state saved at the end of epoch 2 continues the run exactly.
    class DieInEpochThree(Callback):
        def on_epoch_start(self, trainer):
            if trainer.progress.epoch == 2:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Trainer(parse_config([*args, "--run_dir", str(tmp_path / "killed")]), callbacks=(DieInEpochThree(),)).run()
    last = torch.load(tmp_path / "killed" / LAST_STATE_NAME, weights_only=False)
    assert last["training_state"]["progress"]["epoch"] == 2 and "optimizer" in last["training_state"]
    resumed = Trainer(parse_config([*args, "--resume_from_checkpoint", str(tmp_path / "killed")]))
    assert resumed.run()["mse"] == result["mse"]
    assert not os.path.exists(tmp_path / "killed" / LAST_STATE_NAME)
    losses = lambda run: re.findall(r"train loss (\S+) \| val loss (\S+)", open(tmp_path / run / "train.log").read())
    assert losses("killed") == losses("finished")


# ------------------------------------------------------------------------------------------- logs
def test_exactly_the_two_known_warnings_are_filtered(caplog):
    from utils.run_outputs import silence_known_noise

    silence_known_noise()
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    for name, message in [
        ("DeepSpeed", "Setting accelerator to CPU. If you have GPU or other accelerator, we were unable to detect it."),
        ("DeepSpeed", "Some other DeepSpeed warning"),
        ("bitsandbytes.backends.cpu.ops", "Failed to load CPU gemm_4bit_forward from kernels-community: no module"),
        ("bitsandbytes.backends.cpu.ops", "A real bitsandbytes problem"),
    ]:
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        logger.warning(message)
        logger.removeHandler(handler)
    assert [record.getMessage() for record in records] == ["Some other DeepSpeed warning", "A real bitsandbytes problem"]


def test_run_log_holds_the_test_line_and_eval_speed_and_relative_metrics_stay_in_json(output_dirs):
    outputs, checkpoints = output_dirs
    result = run_script(["run_main.py", *FAST_RUN, *outputs])
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Setting accelerator to CPU" not in result.stdout + result.stderr
    test_line = re.search(r"^test: .*$", result.stdout, re.M).group(0)
    assert "mape" not in test_line and "mspe" not in test_line
    run_dir = run_dirs(checkpoints)[0]
    log = open(os.path.join(run_dir, "train.log")).read()
    assert test_line in log
    assert re.search(r"epoch 1 validation: 2857 windows in \d+\.\ds \(\d+ windows/s\)", log)
    assert re.search(r"test: 2857 windows in \d+\.\ds \(\d+ windows/s\)", log)
    metrics = json.load(open(os.path.join(run_dir, "metrics.json")))
    assert {"mape", "mspe"} <= set(metrics["test"]) and "truths near zero" in metrics["relative_metrics_note"]
    assert "mape" not in open(checkpoints / "results.csv").readline()


# -------------------------------------------------------------------------------------- trackers
def test_mlflow_round_trip_matches_metrics_json(output_dirs):
    import mlflow

    outputs, checkpoints = output_dirs
    result = run_script(["run_main.py", *FAST_RUN, *outputs, "--report_to", "mlflow", "--model_id", "tracked", "--log_interval", "2"])
    assert result.returncode == 0, result.stderr[-2000:]
    run_dir = run_dirs(checkpoints)[0]
    metrics = json.load(open(os.path.join(run_dir, "metrics.json")))
    mlflow.set_tracking_uri(f"sqlite:///{checkpoints}/mlflow.db")
    runs = mlflow.search_runs(experiment_names=["tracked"])
    assert len(runs) == 1 and runs["status"][0] == "FINISHED"
    run = runs.iloc[0]
    for name in ("mse", "mae", "rmse", "mape", "mspe"):
        assert run[f"metrics.test/{name}"] == pytest.approx(metrics["test"][name], rel=1e-12)
    assert run["metrics.epoch/val_loss"] == pytest.approx(metrics["best_val_loss"], rel=1e-12)
    assert run["params.learning_rate"] == "0.0001" and run["params.model"] == "DLinear" and run["params.enc_in"] == "7"
    assert run["tags.mlflow.runName"] == os.path.basename(run_dir)
    client = mlflow.tracking.MlflowClient()
    assert [step.step for step in client.get_metric_history(run.run_id, "train/loss")] == [2, 4]
    assert {artifact.path for artifact in client.list_artifacts(run.run_id)} == {"forecast.png", "metrics.json"}
    assert str(checkpoints / "mlartifacts") in run["artifact_uri"]


@pytest.mark.slow
def test_wandb_offline_run_keeps_the_artifacts(output_dirs):
    outputs, checkpoints = output_dirs
    result = run_script(["run_main.py", *FAST_RUN, *outputs, "--report_to", "wandb", "tensorboard"], env_extra={"WANDB_MODE": "offline"})
    assert result.returncode == 0, result.stderr[-2000:]
    run_dir = run_dirs(checkpoints)[0]
    files = glob.glob(os.path.join(run_dir, "wandb", "offline-run-*", "files"))[0]
    assert {"forecast.png", "metrics.json"} <= set(os.listdir(files))
    assert glob.glob(os.path.join(run_dir, "tensorboard", "events.out.tfevents.*"))


def test_report_to_none_and_a_missing_tracker_package(tmp_path, monkeypatch):
    config = parse_config([*SMALL_RUN, "--report_to", "none", "--checkpoints", str(tmp_path)])
    assert config.report_to == [] and config.tracking_uri is None
    trainer = Trainer(config)
    trainer.run()
    assert not os.path.exists(os.path.join(trainer.run_dir, "tensorboard"))
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *rest: None if name == "wandb" else real_find_spec(name, *rest))
    with pytest.raises(SystemExit):
        parse_config(["--report_to", "wandb"])


# ------------------------------------------------------------------------------------- attention
def test_save_attention_keeps_the_reprogramming_and_inter_variate_maps(tmp_path, small_etth1):
    config = parse_config([
        "--model", "TimeLLM", "--llm_model", "tiny-llama", "--llm_layers", "1", *small_etth1, "--features", "M",
        "--sample_layout", "all_channels", "--use_inter_variate", "1", "--inter_variate_heads", "2", "--seq_len", "32",
        "--label_len", "8", "--pred_len", "8", "--patch_len", "8", "--stride", "4", "--d_model", "8", "--d_ff", "16", "--n_heads", "2",
        "--num_tokens", "12", "--eval_batch_size", "5", "--batch_size", "4", "--train_epochs", "1", "--max_steps", "1",
        "--save_attention", "1", "--checkpoints", str(tmp_path / "runs"), "--report_to", "none",
    ])
    trainer = Trainer(config)
    trainer.run()
    maps = np.load(os.path.join(trainer.run_dir, "attention.npz"))
    patches = (32 - 8) // 4 + 2
    reprogramming = maps["reprogramming"]  # [first batch's series, heads, patches, prototypes]
    assert reprogramming.shape == (5 * 7, 2, patches, 12)
    np.testing.assert_allclose(reprogramming.sum(-1), 1, rtol=1e-5)  # each patch's weights over the prototypes
    assert maps["inter_variate"].shape == (5, patches, 2, 7, 7)
    assert os.path.getsize(os.path.join(trainer.run_dir, "attention.png")) > 10_000
    assert not any(layer.keep_attention for layer in trainer.evaluator.attention_layers(trainer.model).values())


# ---------------------------------------------------------------------------- docs and licence
def test_license_is_apache_2():
    text = open(os.path.join(ROOT, "LICENSE")).read()
    assert "Apache License" in text and "Version 2.0, January 2004" in text and "END OF TERMS AND CONDITIONS" in text


def readme_section(title: str) -> str:
    text = open(os.path.join(ROOT, "README.md")).read()
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## )", text, re.S | re.M)
    assert match, f"README has no section {title!r}"
    return match.group(1)


def test_readme_memory_section_lists_the_priorities_and_every_preset():
    section = readme_section("Memory")
    order = [section.index(word) for word in ("--batch_size", "--seq_len", "--llm_layers", "--d_ff", "--d_model", "--n_scales", "--top_k", "--use_gram 0", "--load_in_4bit")]
    assert order == sorted(order)
    for preset in ("configs/demo.yaml", "configs/enhanced_cpu.yaml", "configs/memory_6gb.yaml", "configs/memory_15gb.yaml"):
        assert re.search(rf"{re.escape(preset)}.*\d+ MB", section), preset
    script = open(os.path.join(ROOT, "scripts", "TimeLLM_ETTh1_enhanced.sh")).read()
    assert "the defaults below are the 15 GB preset" not in script and "LLaMA-7B" in script


def test_readme_own_data_example_runs(tmp_path):
    section = readme_section("Your own data")
    command = re.search(r"```bash\n(python run_main\.py .*?)\n```", section, re.S).group(1).replace("\\\n", " ")
    args = command.split()[2:] + ["--max_steps", "3", "--checkpoints", str(tmp_path), "--report_to", "none"]
    result = run_script(["run_main.py", *args])
    assert result.returncode == 0, result.stderr[-2000:]
    assert "--freq w: inferred from its dates" in result.stdout
    assert re.search(r"^test: mse", result.stdout, re.M)
