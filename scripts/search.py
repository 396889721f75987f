"""Hyper-parameter search on the validation loss (Optuna TPE + median pruning); the plan format is in
utils/search.py.

    python scripts/search.py --plan configs/search/dlinear_etth1.yaml --max_parallel 2
    python scripts/search.py --plan PLAN.yaml --executor ray --output checkpoints/searches/mine

Writes <output>/trials.csv (every trial: state, best validation loss, parameters, run folder),
best_config.yaml (the best trial's resolved configuration, loadable with --config) and
importance.png (parameter importances). Test metrics are never looked at: re-run the best
configuration over seeds with scripts/suite.py (base: <output>/best_config.yaml) to report test.
"""
import argparse
import csv
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from utils.cli import run_entry  # noqa: E402
from utils.executors import run_local, run_ray  # noqa: E402
from utils.search import STUDY_NAME, load_search_plan, median_pruner, suggest, trial_flag  # noqa: E402
from utils.suite import flag_arguments  # noqa: E402


def parse_options(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    parser.add_argument("--plan", required=True, help="search plan (YAML)")
    parser.add_argument("--executor", default="local", choices=("local", "ray"))
    parser.add_argument("--max_parallel", type=int, default=1, help="trials at a time")
    parser.add_argument("--output", default=None, help="search folder (default: checkpoints/searches/<plan name>)")
    parser.add_argument("--ray_address", default=None, help="host:port of a running Ray cluster (default: a local Ray)")
    return parser.parse_args(argv)


def plot_importances(study, path: str) -> dict:
    """Parameter importances (fANOVA) as a bar chart; {} when too few trials finished."""
    import matplotlib
    import optuna

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    finished = [trial for trial in study.trials if trial.state == optuna.trial.TrialState.COMPLETE]
    if len(finished) < 2:
        return {}
    importances = optuna.importance.get_param_importances(study)
    figure, axis = plt.subplots(figsize=(6, 0.6 + 0.45 * len(importances)))
    names = list(importances)[::-1]
    axis.barh(names, [importances[name] for name in names], color="tab:blue")
    axis.set_xlabel("importance for the best validation loss (fANOVA)")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return importances


def main(argv=None) -> dict:
    import optuna

    options = parse_options(argv)
    plan_path = os.path.abspath(options.plan)
    output = os.path.abspath(options.output or os.path.join("checkpoints", "searches", os.path.splitext(os.path.basename(plan_path))[0]))
    os.chdir(ROOT)
    plan = load_search_plan(plan_path)
    os.makedirs(output, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = f"sqlite:///{os.path.join(output, 'study.db')}"
    study = optuna.create_study(study_name=STUDY_NAME, storage=storage, direction="minimize", load_if_exists=True,
                                sampler=optuna.samplers.TPESampler(seed=plan["seed"]), pruner=median_pruner(plan["pruner"]))
    study.set_user_attr("pruner", plan["pruner"])  # the trials' processes build the same pruner
    if not study.trials:
        for parameters in plan["enqueue"]:
            study.enqueue_trial(parameters)
    base = ["--config", plan["base"]] if plan.get("base") else []
    run_dirs = {}
    while len(study.trials) < plan["trials"]:
        batch = [study.ask() for _ in range(min(options.max_parallel, plan["trials"] - len(study.trials)))]
        jobs, trials = [], {}
        for trial in batch:
            values = suggest(trial, plan["space"])
            run_dirs[trial.number] = os.path.join(output, "trials", f"trial_{trial.number:04d}")
            command = [sys.executable, plan["entry"], *base, *flag_arguments({**plan["flags"], **values}),
                       "--run_dir", run_dirs[trial.number], "--results_file", os.path.join(output, "trainer_results.csv"),
                       "--optuna_trial", trial_flag(storage, trial._trial_id)]
            jobs.append((str(trial.number), command))
            trials[str(trial.number)] = trial

        def on_done(key: str, outcome: dict) -> None:
            trial = trials[key]  # noqa: B023 -- called within this batch's iteration, never later
            metrics_path = os.path.join(run_dirs[trial.number], "metrics.json")
            if outcome["status"] == "ok" and os.path.isfile(metrics_path):
                with open(metrics_path) as handle:
                    value = json.load(handle)["best_val_loss"]
                study.tell(trial, value)
                print(f"  trial {trial.number} {trial.params}: best validation loss {value:.6f}", flush=True)
            elif outcome["status"] == "pruned":
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                print(f"  trial {trial.number} {trial.params}: {outcome['error']}", flush=True)
            else:
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
                print(f"  trial {trial.number} {trial.params}: failed, {outcome['error']}", flush=True)

        if options.executor == "ray":
            run_ray(jobs, options.max_parallel, on_done, options.ray_address)
        else:
            run_local(jobs, options.max_parallel, on_done)

    with open(os.path.join(output, "trials.csv"), "w", newline="") as handle:
        names = list(plan["space"])
        writer = csv.writer(handle)
        writer.writerow(["number", "state", "best_val_loss", *names, "run_dir"])
        for trial in study.trials:
            writer.writerow([trial.number, trial.state.name, trial.value, *(trial.params.get(name) for name in names),
                             os.path.join(output, "trials", f"trial_{trial.number:04d}")])
    importances = plot_importances(study, os.path.join(output, "importance.png"))
    complete = [trial for trial in study.trials if trial.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        raise ValueError(f"--plan {plan_path}: no trial finished; see {output}/trials.csv")
    best = study.best_trial
    best_config = os.path.join(output, "best_config.yaml")
    with open(os.path.join(output, "trials", f"trial_{best.number:04d}", "config.yaml")) as source, open(best_config, "w") as target:
        target.write(f"# best of {len(study.trials)} trials (trial {best.number}, best validation loss {best.value:.6f}); {plan_path}\n")
        target.writelines(line for line in source if not line.startswith("optuna_trial:"))
    print(f"best trial {best.number}: {best.params}, best validation loss {best.value:.6f}; "
          f"{sum(t.state.name == 'PRUNED' for t in study.trials)} pruned; config {best_config}")
    return {"best_params": best.params, "best_value": best.value, "importances": importances, "output": output}


if __name__ == "__main__":
    run_entry(main)
