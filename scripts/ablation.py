"""Run an ablation plan over a base config and compare the runs in one table and one chart.

    python scripts/ablation.py --base configs/enhanced_cpu.yaml --plan configs/ablation_enhanced.yaml --study grid
    python scripts/ablation.py --base configs/enhanced_cpu.yaml --plan configs/ablation_enhanced.yaml -- --seed 2022
    python scripts/ablation.py ... --launcher "accelerate launch --multi_gpu --num_processes 4"

Each setting of each chosen study is one run of the plan's entry script (`--config BASE`, the
setting's flags, then whatever follows `--`) in its own folder, <output>/<study>/<setting>. A
setting whose folder already holds metrics.json is not run again, so an interrupted ablation
continues where it stopped (--rerun forces every run). Writes <output>/comparison.csv, .md and .png:
the best validation loss, test MSE and MAE, the last epoch's auxiliary loss, trend accuracies and
gate mean, training time and trainable parameters. A failed run is listed as failed and the others
still run.

Compare and choose settings on the validation loss (`best_val_loss`, the loss of the checkpoint each
run kept). The test columns are each setting's one test of that checkpoint, to be reported, not to
choose by: a setting picked for its test score has seen the test set.
"""
import argparse
import csv
import json
import os
import shlex
import subprocess
import sys
import time

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

COLUMNS = ["study", "setting", "status", "best_val_loss", "mse", "mae", "last_value_mse", "aux_loss", "trend_direction_accuracy",
           "trend_magnitude_accuracy", "retrieval_gate_mean", "epochs_run", "train_time_s", "trainable_parameters", "run_dir"]


def setting_name(setting: dict) -> str:
    return setting.get("name") or ",".join(f"{key}={value}" for key, value in setting.items())


def setting_flags(setting: dict) -> list[str]:
    flags = []
    for key, value in setting.items():
        if key == "name":
            continue
        values = value if isinstance(value, list) else [value]
        flags += [f"--{key}", *(str(item) for item in values)]
    return flags


def load_plan(path: str, studies: list[str]) -> tuple[str, dict]:
    with open(path) as handle:
        plan = yaml.safe_load(handle)
    if not isinstance(plan, dict) or not isinstance(plan.get("studies"), dict):
        raise SystemExit(f"error: --plan {path}: expected 'entry' and a mapping 'studies: {{name: [settings]}}'")
    unknown = sorted(set(studies) - set(plan["studies"]))
    if unknown:
        raise SystemExit(f"error: --study {unknown} not in {path}; studies: {', '.join(plan['studies'])}")
    chosen = {name: plan["studies"][name] for name in (studies or plan["studies"])}
    return plan.get("entry", "run_main.py"), chosen


def run_setting(entry: str, base: str, setting: dict, run_dir: str, results_file: str, launcher: list[str], extra: list[str]) -> str:
    command = [*launcher, entry, "--config", base, *setting_flags(setting), *extra, "--run_dir", run_dir, "--results_file", results_file]
    os.makedirs(run_dir, exist_ok=True)
    print(f"[{time.strftime('%H:%M:%S')}] {' '.join(shlex.quote(part) for part in command)}", flush=True)
    with open(os.path.join(run_dir, "stdout.log"), "w") as log:
        status = subprocess.run(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT).returncode
    return "ok" if status == 0 else f"failed (exit {status}, see {run_dir}/stdout.log)"


def summarise(study: str, name: str, status: str, run_dir: str) -> dict:
    row = {"study": study, "setting": name, "status": status, "run_dir": run_dir}
    path = os.path.join(run_dir, "metrics.json")
    if status != "ok" or not os.path.isfile(path):
        return row
    with open(path) as handle:
        metrics = json.load(handle)
    last_epoch = metrics["epochs"][-1] if metrics.get("epochs") else {}
    row.update(
        best_val_loss=metrics.get("best_val_loss"), mse=metrics["test"]["mse"], mae=metrics["test"]["mae"], last_value_mse=metrics["test"]["last_value_baseline"]["mse"],
        aux_loss=last_epoch.get("aux"), trend_direction_accuracy=last_epoch.get("trend_direction_accuracy"),
        trend_magnitude_accuracy=last_epoch.get("trend_magnitude_accuracy"), retrieval_gate_mean=last_epoch.get("retrieval_gate_mean"),
        epochs_run=metrics.get("epochs_run"), train_time_s=metrics.get("train_time_s"), trainable_parameters=metrics.get("trainable_parameters"),
    )
    return row


def format_value(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def write_outputs(rows: list[dict], output: str) -> None:
    with open(os.path.join(output, "comparison.csv"), "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows({key: row.get(key, "") for key in COLUMNS} for row in rows)
    shown = [column for column in COLUMNS if column != "run_dir"]
    lines = ["| " + " | ".join(shown) + " |", "|" + "---|" * len(shown)]
    lines += ["| " + " | ".join(format_value(row.get(column)) for column in shown) + " |" for row in rows]
    note = ("Settings are compared on best_val_loss (the validation loss of the checkpoint each run kept); "
            "mse and mae are that checkpoint's single test, reported, never chosen by.")
    with open(os.path.join(output, "comparison.md"), "w") as handle:
        handle.write(note + "\n\n" + "\n".join(lines) + "\n")
    plot(rows, os.path.join(output, "comparison.png"))


def plot(rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [row for row in rows if row.get("mse") is not None]
    if not done:
        return
    labels = [f"{row['study']}\n{row['setting']}" for row in done]
    figure, axes = plt.subplots(1, 2, figsize=(max(6, 1.2 * len(done)), 4), sharex=True)
    for axis, metric in zip(axes, ("mse", "mae")):
        values = [row[metric] for row in done]
        axis.bar(range(len(done)), values, color=[f"C{sorted({r['study'] for r in done}).index(r['study'])}" for r in done])
        axis.set_xticks(range(len(done)), labels, rotation=60, ha="right", fontsize=7)
        axis.set_ylim(min(values) * 0.95, max(values) * 1.02)
        axis.set_title(f"test {metric.upper()}")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", required=True, help="base YAML config every run starts from")
    parser.add_argument("--plan", required=True, help="YAML: entry script and studies of settings")
    parser.add_argument("--study", action="append", default=[], help="run only this study (repeatable; default: all)")
    parser.add_argument("--output", default=None, help="folder of the runs and the comparison (default: checkpoints/ablations/<plan>_<base>)")
    parser.add_argument("--launcher", default=sys.executable, help="command that runs the entry script (e.g. 'accelerate launch --num_processes 2')")
    parser.add_argument("--rerun", action="store_true", help="run settings again even when their folder holds results")
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    options = parser.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    if not os.path.isfile(options.base):
        raise SystemExit(f"error: --base {options.base}: file not found")
    entry, studies = load_plan(options.plan, options.study)
    stem = lambda path: os.path.splitext(os.path.basename(path))[0]
    output = os.path.abspath(options.output or os.path.join(ROOT, "checkpoints", "ablations", f"{stem(options.plan)}_{stem(options.base)}"))
    os.makedirs(output, exist_ok=True)
    results_file = os.path.join(output, "results.csv")
    launcher = shlex.split(options.launcher)
    rows = []
    for study, settings in studies.items():
        for setting in settings:
            name = setting_name(setting)
            run_dir = os.path.join(output, study, name.replace("/", "_"))
            done = os.path.isfile(os.path.join(run_dir, "metrics.json")) and not options.rerun
            status = "ok" if done else run_setting(entry, os.path.abspath(options.base), setting, run_dir, results_file, launcher, extra)
            rows.append(summarise(study, name, status, run_dir))
            write_outputs(rows, output)  # after every run: a partial table survives an interruption
            print(f"  {study}/{name}: {status}" + (f", mse {rows[-1]['mse']:.4f} mae {rows[-1]['mae']:.4f}" if rows[-1].get("mse") is not None else ""), flush=True)
    print(open(os.path.join(output, "comparison.md")).read())
    print(f"comparison: {output}/comparison.md, .csv, .png")
    return 0 if all(row["status"] == "ok" for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
