"""Verdicts: repeated seeds, suites of runs (plans, hashing, resume, executors), statistics, search."""
import json
import os
import sys

import numpy as np
import pytest

from tests.conftest import FAST_RUN, ROOT, run_script


def test_seeds_give_one_folder_each_and_a_mean_and_std_summary(output_dirs, small_etth1):
    outputs, checkpoints = output_dirs
    result = run_script(["run_main.py", *FAST_RUN, *small_etth1, "--seeds", "1", "2", "3", *outputs])
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("test: mse") == 3
    summary_dir = [name for name in os.listdir(checkpoints) if name.startswith("seeds_")]
    assert len(summary_dir) == 1
    summary = json.load(open(checkpoints / summary_dir[0] / "summary.json"))
    assert summary["seeds"] == [1, 2, 3] and len({row["run_dir"] for row in summary["runs"]}) == 3
    mse = [row["mse"] for row in summary["runs"]]
    assert summary["summary"]["mse"]["mean"] == pytest.approx(np.mean(mse))
    assert summary["summary"]["mse"]["std"] == pytest.approx(np.std(mse, ddof=1))
    assert len(set(mse)) > 1  # the seeds differ
    assert "(mean ± sample std over 3 runs)" in result.stdout


def test_itr_counts_seeds_from_seed_and_refuses_a_disagreeing_list():
    from utils.config import parse_config
    from utils.repeats import seeds_of

    assert seeds_of(parse_config(["--itr", "3", "--seed", "7"])) == [7, 8, 9]
    with pytest.raises(ValueError, match="--itr 2 disagrees"):
        seeds_of(parse_config(["--itr", "2", "--seeds", "1", "2", "3"]))


# --------------------------------------------------------------------------------------- suites
def _plan(tmp_path, small_etth1, settings=None, seeds=(1, 2), name="plan.yaml", **extra):
    """A DLinear plan on the small ETTh1 CSV: settings x seeds runs of 5 steps."""
    import yaml

    data = dict(zip(small_etth1[::2], small_etth1[1::2]))
    flags = {"model": "DLinear", "seq_len": 96, "pred_len": 24, "label_len": 24, "train_epochs": 1, "max_steps": 5,
             "eval_batch_size": 64, "batch_size": 32, **{key.removeprefix("--"): value for key, value in data.items()}}
    plan = {"flags": flags, "settings": settings or [{"name": "base"}, {"name": "wide", "flags": {"moving_avg": 13}}],
            "baseline": "base", "seeds": list(seeds), **extra}
    path = tmp_path / name
    path.write_text(yaml.safe_dump(plan))
    return str(path)


def test_plan_expands_into_hashed_runs(tmp_path, small_etth1):
    from utils.suite import config_hash, expand, load_plan

    plan = load_plan(_plan(tmp_path, small_etth1, matrix={"pred_len": [24, 48]}))
    runs = expand(plan)
    assert len(runs) == 2 * 2 * 2  # matrix x settings x seeds
    assert len({run.key for run in runs}) == 8
    again = expand(load_plan(_plan(tmp_path, small_etth1, matrix={"pred_len": [24, 48]}, name="again.yaml")))
    assert [run.key for run in again] == [run.key for run in runs]  # the same configuration, the same hash
    assert config_hash({"a": 1, "b": 2}) == config_hash({"b": 2, "a": 1})
    assert {run.config["pred_len"] for run in runs} == {24, 48} and {run.config["moving_avg"] for run in runs} == {25, 13}


@pytest.mark.parametrize("change, message", [
    ({"colour": "red"}, r"unknown key\(s\) \['colour'\]"),
    ({"settings": [{"name": "x", "flags": {"learning_rat": 0.1}}]}, r"unknown flag\(s\) \['learning_rat'\]"),
    ({"settings": []}, "no settings"),
    ({"matrix": {"pred_len": []}}, "expands to no run"),
    ({"seeds": []}, "seeds must be a non-empty list"),
    ({"baseline": "other"}, "baseline 'other' is not a setting"),
    ({"settings": [{"name": "x", "flags": {"model": "Informer"}}]}, "--model 'Informer' is not known"),
    ({"settings": [{"name": "x", "flags": {"data": "ETTh9"}}]}, "--data 'ETTh9' is not a known dataset"),
])
def test_bad_plans_are_one_error_line_before_any_run(tmp_path, small_etth1, change, message):
    import yaml

    path = _plan(tmp_path, small_etth1)
    plan = yaml.safe_load(open(path))
    plan.update(change)
    if "baseline" not in change and change.get("settings") is not None and change["settings"]:
        plan["baseline"] = change["settings"][0]["name"]
    open(path, "w").write(yaml.safe_dump(plan))
    sys.path.insert(0, os.path.join(ROOT, "scripts"))
    import suite

    with pytest.raises(ValueError, match=message):
        suite.main(["--plan", path, "--output", str(tmp_path / "suite")])
    assert not (tmp_path / "suite" / "runs").exists()


def test_a_bad_plan_exits_with_one_error_line(tmp_path, small_etth1):
    result = run_script(["scripts/suite.py", "--plan", _plan(tmp_path, small_etth1, colour="red"), "--output", str(tmp_path / "suite")])
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: --plan") and len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_suite_resumes_after_its_driver_is_killed(tmp_path, small_etth1):
    import signal
    import subprocess
    import sys
    import time

    from tests.conftest import ROOT

    plan, output = _plan(tmp_path, small_etth1), tmp_path / "suite"
    command = [sys.executable, "scripts/suite.py", "--plan", plan, "--output", str(output)]
    driver = subprocess.Popen(command, cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(output.glob("runs/*/metrics.json"))) < 1:
        time.sleep(0.2)
    os.killpg(driver.pid, signal.SIGKILL)  # the driver and the run it was waiting for
    driver.wait()
    finished = {path.parent.name: path.stat().st_mtime_ns for path in output.glob("runs/*/metrics.json")}
    assert 1 <= len(finished) < 4
    result = run_script(command[1:])
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"{len(finished)} already finished, {4 - len(finished)} to run" in result.stdout
    for key, stamp in finished.items():  # finished runs were not run again
        assert (output / "runs" / key / "metrics.json").stat().st_mtime_ns == stamp
    import csv

    rows = list(csv.DictReader(open(output / "results.csv")))
    assert len(rows) == 4 and {row["status"] for row in rows} == {"ok"}
    report = (output / "report.md").read_text()
    assert "| wide | 2 |" in report and "Against base, paired by seed" in report and "repeat last value" in report


def test_a_failed_run_is_recorded_and_the_suite_goes_on(tmp_path, small_etth1):
    # --patch_len 200 > seq_len: PatchTST refuses at construction, inside the run.
    plan = _plan(tmp_path, small_etth1, settings=[{"name": "base"}, {"name": "broken", "flags": {"model": "PatchTST", "patch_len": 200}}], seeds=[1])
    result = run_script(["scripts/suite.py", "--plan", plan, "--output", str(tmp_path / "suite")])
    assert result.returncode == 0, result.stderr[-2000:]
    import csv

    rows = {row["setting"]: row for row in csv.DictReader(open(tmp_path / "suite" / "results.csv"))}
    assert rows["base"]["status"] == "ok" and rows["broken"]["status"] == "failed"
    assert "patch_len" in rows["broken"]["error"]
