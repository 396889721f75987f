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


@pytest.mark.slow  # many processes: runs in CI's slow pass, keeps the default suite under 10 minutes
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


# ----------------------------------------------------------------------------------- statistics
def test_bootstrap_interval_is_the_percentile_interval_of_resampled_means():
    from utils.statistics import bootstrap_interval

    differences = np.array([-0.3, -0.1, 0.05, -0.2, -0.15, 0.02, -0.08])
    generator = np.random.default_rng(0)
    means = [differences[generator.integers(0, 7, 7)].mean() for _ in range(10_000)]
    low, high = bootstrap_interval(differences)
    assert (low, high) == pytest.approx((np.quantile(means, 0.025), np.quantile(means, 0.975)))
    assert low < differences.mean() < high


def test_paired_comparison_and_friedman_agree_with_scipy():
    from scipy import stats

    from utils.statistics import average_ranks, critical_difference, friedman, paired_comparison

    setting = np.array([0.50, 0.41, 0.62, 0.39, 0.45, 0.58, 0.47, 0.40])
    baseline = np.array([0.52, 0.44, 0.61, 0.43, 0.48, 0.60, 0.47, 0.45])
    result = paired_comparison(setting, baseline)
    differences = setting - baseline
    assert result["mean_difference"] == pytest.approx(differences.mean())
    assert result["wilcoxon_p"] == pytest.approx(stats.wilcoxon(differences[differences != 0]).pvalue)
    assert (result["wins"], result["ties"], result["losses"]) == (6, 1, 1)
    # Demšar (2006)'s example shape: 4 settings; ranks 1..4 with ties shared.
    table = np.array([[1.0, 2.0, 3.0, 4.0], [1.0, 3.0, 2.0, 4.0], [2.0, 1.0, 3.0, 4.0], [1.0, 2.0, 4.0, 3.0], [1.0, 2.0, 2.0, 4.0]])
    ranks = average_ranks(table)
    np.testing.assert_allclose(ranks, [1.2, 2.1, 2.9, 3.8])  # the tie in the last row shares 2.5
    chi2, p = stats.friedmanchisquare(*table.T)
    assert friedman(table)["statistic"] == pytest.approx(chi2) and friedman(table)["p_value"] == pytest.approx(p)
    # Nemenyi q_0.05 for k = 4 is 2.569 (Demšar, Table 5a): CD = 2.569 sqrt(4 * 5 / (6 * 5)).
    assert critical_difference(4, 5) == pytest.approx(2.569 * np.sqrt(20 / 30), rel=1e-3)
    with pytest.raises(ValueError, match=">= 3 settings"):
        friedman(table[:, :2])


def test_critical_difference_diagram_is_written(tmp_path):
    from utils.statistics import plot_critical_difference

    plot_critical_difference(["a", "b", "c", "d"], [1.2, 2.0, 2.9, 3.8], 2.1, str(tmp_path / "cd.png"), "ranks")
    assert (tmp_path / "cd.png").stat().st_size > 5000


# -------------------------------------------------------------------------------------- executors
@pytest.mark.slow  # many processes: runs in CI's slow pass, keeps the default suite under 10 minutes
def test_ray_suite_runs_end_to_end_and_survives_a_killed_worker(tmp_path, small_etth1):
    """A local Ray with 2 workers runs a 4-run plan; the worker of one run is killed mid-run, Ray
    retries its task once, and the suite finishes every run."""
    import signal
    import subprocess
    import threading
    import time

    plan, output = _plan(tmp_path, small_etth1), tmp_path / "suite"
    killed = []

    def kill_one_worker():
        deadline = time.time() + 240
        while time.time() < deadline and not killed:
            # -ww: whole command lines, whatever COLUMNS says
            listing = subprocess.run(["ps", "-ww", "-eo", "pid,ppid,args"], capture_output=True, text=True).stdout.splitlines()
            for line in listing:
                parts = line.split(None, 2)
                pid, ppid, args = parts if len(parts) == 3 else (None, None, "")
                if "run_main.py" in args and str(output) in args:
                    os.kill(int(ppid), signal.SIGKILL)  # the Ray worker running this run's task
                    os.kill(int(pid), signal.SIGKILL)
                    killed.append(args)
                    return
            time.sleep(0.1)

    killer = threading.Thread(target=kill_one_worker)
    killer.start()
    result = run_script(["scripts/suite.py", "--plan", plan, "--output", str(output), "--executor", "ray", "--max_parallel", "2"], timeout=600)
    killer.join()
    assert result.returncode == 0, result.stderr[-3000:]
    assert killed, "no run was seen to kill"
    import csv

    rows = list(csv.DictReader(open(output / "results.csv")))
    assert len(rows) == 4 and {row["status"] for row in rows} == {"ok"}, rows


def test_unreachable_ray_address_is_one_error_line(tmp_path, small_etth1):
    result = run_script(["scripts/suite.py", "--plan", _plan(tmp_path, small_etth1), "--output", str(tmp_path / "suite"),
                         "--executor", "ray", "--ray_address", "127.0.0.1:9"])
    assert result.returncode == 2 and result.stderr.strip().startswith("error: --ray_address 127.0.0.1:9: unreachable"), result.stderr
    assert not list((tmp_path / "suite").glob("runs/*/metrics.json"))


def test_slurm_executor_writes_one_job_script_per_run(tmp_path, small_etth1, monkeypatch):
    """No Slurm here: a stand-in sbatch records the job scripts submitit writes."""
    from utils.executors import submit_slurm
    from utils.suite import expand, load_plan

    bin_folder = tmp_path / "bin"
    bin_folder.mkdir()
    (bin_folder / "sbatch").write_text(f'#!/usr/bin/env bash\ncp "$1" {tmp_path}/submitted_$RANDOM.sh\necho "Submitted batch job $RANDOM"\n')
    (bin_folder / "sbatch").chmod(0o755)
    (bin_folder / "srun").write_text("#!/usr/bin/env bash\nexit 1\n")  # submitit looks for it; never called here
    (bin_folder / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_folder}:{os.environ['PATH']}")
    plan = load_plan(_plan(tmp_path, small_etth1))
    runs = expand(plan)
    jobs = [(run.key, run.command(plan, str(tmp_path / "suite"), sys.executable)) for run in runs]
    submitted = submit_slurm(jobs, str(tmp_path / "slurm"), {"time": 30, "cpus_per_task": 4, "gpus_per_node": 1, "partition": "gpu", "job_name": "timellm-suite"})
    assert len(submitted) == 4
    scripts = [path.read_text() for path in tmp_path.glob("submitted_*.sh")]
    assert len(scripts) == 4
    for script in scripts:
        for line in ("#SBATCH --cpus-per-task=4", "#SBATCH --gpus-per-node=1", "#SBATCH --partition=gpu", "#SBATCH --time=30", "#SBATCH --job-name=timellm-suite"):
            assert line in script, script
        assert "submitit" in script and sys.executable in script


# ---------------------------------------------------------------------------------------- search
def _search_plan(tmp_path, small_etth1, **changes):
    import yaml

    data = dict(zip(small_etth1[::2], small_etth1[1::2]))
    plan = {
        "flags": {"model": "DLinear", "seq_len": 96, "pred_len": 24, "label_len": 24, "train_epochs": 3, "patience": 3,
                  "eval_batch_size": 256, "batch_size": 64, **{key.removeprefix("--"): value for key, value in data.items()}},
        "space": {"learning_rate": {"low": 1.0e-9, "high": 0.01, "log": True}, "moving_avg": {"choices": [13, 25]}},
        "trials": 4, "seed": 0, "pruner": {"n_startup_trials": 2, "n_warmup_steps": 0},
        # The first three trials are fixed: two good ones (never pruned: the pruner's start-up trials),
        # then a rate too small to learn, which the pruner stops after its first epoch; the fourth is TPE's.
        "enqueue": [{"learning_rate": 0.01, "moving_avg": 25}, {"learning_rate": 0.005, "moving_avg": 13},
                    {"learning_rate": 1.0e-9, "moving_avg": 25}],
        **changes,
    }
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(plan))
    return str(path)


@pytest.mark.slow  # many processes: runs in CI's slow pass, keeps the default suite under 10 minutes
def test_search_of_four_trials_prunes_on_validation_and_writes_the_best_config(tmp_path, small_etth1):
    import csv

    from utils.config import parse_config

    output = tmp_path / "search"
    result = run_script(["scripts/search.py", "--plan", _search_plan(tmp_path, small_etth1), "--output", str(output)])
    assert result.returncode == 0, result.stderr[-3000:]
    trials = list(csv.DictReader(open(output / "trials.csv")))
    assert len(trials) == 4
    states = [trial["state"] for trial in trials]
    assert states[:3] == ["COMPLETE", "COMPLETE", "PRUNED"], states
    # The objective is the trial's best validation loss, as its own metrics.json has it.
    first = json.load(open(output / "trials" / "trial_0000" / "metrics.json"))
    assert float(trials[0]["best_val_loss"]) == pytest.approx(first["best_val_loss"])
    assert not (output / "trials" / "trial_0002" / "metrics.json").exists()  # stopped before its test
    config = parse_config(["--config", str(output / "best_config.yaml")])
    best = min((t for t in trials if t["state"] == "COMPLETE"), key=lambda t: float(t["best_val_loss"]))
    assert config.learning_rate == pytest.approx(float(best["learning_rate"])) and config.optuna_trial is None
    assert (output / "importance.png").exists()


def test_search_refuses_an_empty_range(tmp_path, small_etth1):
    plan = _search_plan(tmp_path, small_etth1, space={"learning_rate": {"low": 0.01, "high": 0.001}})
    result = run_script(["scripts/search.py", "--plan", plan, "--output", str(tmp_path / "search")])
    assert result.returncode == 2 and "space learning_rate: an empty range" in result.stderr and len(result.stderr.strip().splitlines()) == 1
