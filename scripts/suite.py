"""Run an experiment suite: a plan's settings x matrix x seeds, then results.csv and report.md.

    python scripts/suite.py --plan configs/suites/etth1_cpu.yaml --executor ray --max_parallel 2
    python scripts/suite.py --plan PLAN.yaml --executor local --max_parallel 4 --output checkpoints/suites/mine
    python scripts/suite.py --plan PLAN.yaml --executor ray --ray_address 10.0.0.5:6379     # a running cluster
    python scripts/suite.py --plan PLAN.yaml --executor slurm --slurm_partition gpu --slurm_gpus 1

The plan format is in utils/suite.py; the executors in utils/executors.py; the report in
utils/suite_report.py. Stopped and started again, a suite runs only what is not finished. Paths
inside a plan (its base config) are relative to the repository.
"""
import argparse
import csv
import os
import shutil
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from utils.cli import run_entry  # noqa: E402
from utils.executors import EXECUTORS, run_local, run_ray, run_slurm  # noqa: E402
from utils.suite import clear_failure, expand, is_complete, load_plan, record_failure, result_row  # noqa: E402
from utils.suite_report import write_report  # noqa: E402

RESULT_COLUMNS = ["setting", "seed", "status", "best_val_loss", "test_mse", "test_mae", "last_value_mse", "last_value_mae",
                  "seasonal_naive_mse", "seasonal_naive_mae", "train_time_s", "trainable_parameters", "peak_memory_mb",
                  "model", "data", "pred_len", "key", "error"]


def parse_options(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    parser.add_argument("--plan", required=True, help="suite plan (YAML)")
    parser.add_argument("--executor", default="local", choices=EXECUTORS)
    parser.add_argument("--max_parallel", type=int, default=1, help="runs at a time (local, ray)")
    parser.add_argument("--output", default=None, help="suite folder (default: checkpoints/suites/<plan name>)")
    parser.add_argument("--ray_address", default=None, help="host:port of a running Ray cluster (default: a local Ray)")
    parser.add_argument("--slurm_partition", default=None)
    parser.add_argument("--slurm_time", type=int, default=240, help="minutes per job")
    parser.add_argument("--slurm_cpus", type=int, default=8, help="CPUs per job")
    parser.add_argument("--slurm_gpus", type=int, default=0, help="GPUs per job")
    options = parser.parse_args(argv)
    if options.max_parallel < 1:
        parser.error(f"--max_parallel must be >= 1, got {options.max_parallel}")
    return options


def write_results(path: str, rows: list[dict], matrix_keys: list) -> None:
    columns = [RESULT_COLUMNS[0], *matrix_keys, *RESULT_COLUMNS[1:]]
    temporary = path + ".tmp"
    with open(temporary, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(temporary, path)


def main(argv=None) -> list[dict]:
    options = parse_options(argv)
    plan_path = os.path.abspath(options.plan)
    output = os.path.abspath(options.output or os.path.join("checkpoints", "suites", os.path.splitext(os.path.basename(plan_path))[0]))
    os.chdir(ROOT)  # a plan names its base config relative to the repository, as the entry scripts do
    plan = load_plan(plan_path)
    runs = expand(plan)  # every run checked before any starts
    os.makedirs(output, exist_ok=True)
    shutil.copy(plan_path, os.path.join(output, "plan.yaml"))
    by_key = {run.key: run for run in runs}
    todo = [run for run in runs if not is_complete(run, output)]
    print(f"suite {output}: {len(runs)} runs, {len(runs) - len(todo)} already finished, {len(todo)} to run "
          f"({options.executor}, {options.max_parallel} at a time)", flush=True)
    results_path = os.path.join(output, "results.csv")

    def on_done(key: str, outcome: dict) -> None:
        run = by_key[key]
        if outcome["status"] == "ok" and is_complete(run, output):
            clear_failure(run, output)
        else:
            record_failure(run, output, outcome["error"] or "finished without metrics.json")
        row = result_row(run, output)
        figures = f"test mse {row['test_mse']:.4f}" if row["status"] == "ok" else row["error"]
        print(f"  {run.setting} {run.cell} seed {run.seed}: {row['status']}, {figures}", flush=True)
        write_results(results_path, [result_row(r, output) for r in runs], list(plan.matrix))

    jobs = [(run.key, run.command(plan, output, sys.executable)) for run in todo]
    if options.executor == "local":
        run_local(jobs, options.max_parallel, on_done)
    elif options.executor == "ray":
        run_ray(jobs, options.max_parallel, on_done, options.ray_address)
    else:
        parameters = {"time": options.slurm_time, "cpus_per_task": options.slurm_cpus, "job_name": "timellm-suite"}
        if options.slurm_gpus:
            parameters["gpus_per_node"] = options.slurm_gpus
        if options.slurm_partition:
            parameters["partition"] = options.slurm_partition
        run_slurm(jobs, on_done, os.path.join(output, "slurm"), parameters)
    rows = [result_row(run, output) for run in runs]
    write_results(results_path, rows, list(plan.matrix))
    report = write_report(plan, runs, rows, output)
    print(f"results {results_path}\nreport {report}")
    return rows


if __name__ == "__main__":
    run_entry(main)
