"""Experiment suites: a plan expanded into runs, run through an executor, resumable by content hash.

A plan (YAML):

    entry: run_main.py                  # the entry script of every run (default run_main.py)
    base: configs/schemes_cpu.yaml      # --config of every run (optional)
    flags: {max_steps: 200}             # flags common to every run (optional)
    matrix:                             # the cartesian product of these, any flag (optional)
      data: [ETTh1]
      pred_len: [96, 192]
    settings:                           # the compared settings: a name and their flags
      - {name: Time-LLM}
      - {name: no_llm, flags: {llm_ablation: no_llm}}
      - {name: DLinear, flags: {model: DLinear}}
    baseline: Time-LLM                  # the setting the others are compared with
    seeds: [2021, 2022, 2023]

Each (matrix cell, setting, seed) is one run. Its identity is the hash of its resolved
configuration (every flag after the base, the matrix, the setting and the seed are applied, minus
where outputs go), and its folder is <output>/runs/<hash>: a run whose folder holds metrics.json is
never run again, so a suite that was stopped resumes where it stopped, and a finished run's folder
is never written to. A failed run leaves failed.json with its error line; the suite goes on, and
the next invocation tries it again.
"""
import hashlib
import itertools
import json
import os
from dataclasses import dataclass, field
from typing import Optional

import yaml

from utils.run_outputs import remove_if_present, saved_config

PLAN_KEYS = {"entry", "base", "flags", "matrix", "settings", "baseline", "seeds"}
ENTRIES = ("run_main.py", "run_main_enhanced.py", "run_m4.py", "run_pretrain.py")
# Where outputs go, not what is computed: left out of a run's identity.
NOT_HASHED = ("checkpoints", "results_file", "run_dir", "log_interval", "num_workers", "hybrid_cache_dir", "llm_cache_dir")


@dataclass
class Run:
    setting: str  # the setting's name
    cell: dict  # the matrix values of this run
    seed: int
    flags: dict  # every flag of the run (common, matrix, setting, seed), in that order of precedence
    key: str = ""  # content hash of the resolved configuration
    config: dict = field(default_factory=dict)  # the resolved configuration

    def folder(self, output: str) -> str:
        return os.path.join(output, "runs", self.key)

    def command(self, plan: "Plan", output: str, python: str) -> list[str]:
        base = ["--config", plan.base] if plan.base else []
        return [python, plan.entry, *base, *flag_arguments(self.flags), "--run_dir", self.folder(output),
                "--results_file", os.path.join(output, "trainer_results.csv")]


@dataclass
class Plan:
    path: str
    entry: str
    base: Optional[str]
    flags: dict
    matrix: dict
    settings: list
    baseline: str
    seeds: list

    @property
    def setting_names(self) -> list[str]:
        return [setting["name"] for setting in self.settings]


def flag_arguments(flags: dict) -> list[str]:
    """{name: value} -> ["--name", "value", ...]; a list value is several arguments of one flag."""
    arguments = []
    for name, value in flags.items():
        values = value if isinstance(value, list) else [value]
        arguments += [f"--{name}", *(str(item) for item in values)]
    return arguments


def plan_error(plan_path: str, message: str) -> ValueError:
    return ValueError(f"--plan {plan_path}: {message}")


def read_plan(path: str, keys: set) -> dict:
    """A plan file's mapping; a missing file, another YAML type or an unknown key is an error."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--plan {path}: file not found")
    with open(path) as handle:
        raw = yaml.safe_load(handle) or {}
    if not isinstance(raw, dict):
        raise plan_error(path, "expected a mapping with keys " + ", ".join(sorted(keys)))
    unknown = sorted(set(raw) - keys)
    if unknown:
        raise plan_error(path, f"unknown key(s) {unknown}; keys are {sorted(keys)}")
    return raw


def known_flags() -> set:
    """Every flag name a plan may set (without '--')."""
    from utils.config import build_parser

    return {action.dest for action in build_parser()._actions} - {"config", "seed", "seeds", "itr", "run_dir", "optuna_trial"}


def load_plan(path: str) -> Plan:
    """Read and check a plan: unknown keys, unknown flags, empty settings or seeds are errors."""
    raw = read_plan(path, PLAN_KEYS)
    entry = raw.get("entry", "run_main.py")
    if entry not in ENTRIES:
        raise plan_error(path, f"entry {entry!r} is not one of {ENTRIES}")
    flags, matrix = raw.get("flags") or {}, raw.get("matrix") or {}
    settings = raw.get("settings") or []
    seeds = raw.get("seeds") or []
    if not settings:
        raise plan_error(path, "no settings: list at least one under 'settings' (each {name, flags})")
    for index, setting in enumerate(settings):
        if not isinstance(setting, dict) or "name" not in setting or set(setting) - {"name", "flags"}:
            raise plan_error(path, f"settings[{index}] must be {{name: ..., flags: {{...}}}}, got {setting!r}")
        setting.setdefault("flags", {})
    names = [setting["name"] for setting in settings]
    if len(set(names)) != len(names):
        raise plan_error(path, f"setting names repeat: {names}")
    baseline = raw.get("baseline", names[0])
    if baseline not in names:
        raise plan_error(path, f"baseline {baseline!r} is not a setting; settings: {names}")
    if not seeds or not all(isinstance(seed, int) for seed in seeds):
        raise plan_error(path, f"seeds must be a non-empty list of integers, got {seeds!r}")
    for name, values in matrix.items():
        if not isinstance(values, list) or not values:
            raise plan_error(path, f"matrix {name!r} expands to no run: give a non-empty list")
    known = known_flags()
    used = [*flags, *matrix, *(name for setting in settings for name in setting["flags"])]
    unknown_flags = sorted({name for name in used if name not in known})
    if unknown_flags:
        raise plan_error(path, f"unknown flag(s) {unknown_flags} (plan flags are flag names without '--'; seeds go under 'seeds')")
    base = raw.get("base")
    if base and not os.path.isfile(base):
        raise plan_error(path, f"base {base}: file not found")
    return Plan(path, entry, base, flags, matrix, settings, baseline, seeds)


def expand(plan: Plan) -> list[Run]:
    """Every (matrix cell, setting, seed), each resolved and hashed; an invalid run is an error
    naming it before anything runs."""
    from data_provider.registry import dataset_entry
    from models import model_entry
    from utils.config import parse_config

    names = list(plan.matrix)
    runs = []
    for values in itertools.product(*(plan.matrix[name] for name in names)):
        cell = dict(zip(names, values))
        for setting in plan.settings:
            for seed in plan.seeds:
                flags = {**plan.flags, **cell, **setting["flags"], "seed": seed}
                run = Run(setting["name"], cell, seed, flags)
                arguments = (["--config", plan.base] if plan.base else []) + flag_arguments(flags)
                try:
                    config = parse_config(arguments)
                except SystemExit as exit_:  # argparse's error: the message is already printed
                    raise plan_error(plan.path, f"setting {setting['name']!r} {cell} seed {seed} is not a valid run ({exit_})") from None
                try:  # the registries name the valid models and datasets
                    model_entry(config.model)
                    dataset_entry(config.data)
                except ValueError as error:
                    raise plan_error(plan.path, f"setting {setting['name']!r}: {error}") from None
                run.config = {name: value for name, value in saved_config(config).items() if name not in NOT_HASHED}
                run.config["entry"] = plan.entry
                run.key = config_hash(run.config)
                runs.append(run)
    keys = [run.key for run in runs]
    if len(set(keys)) != len(keys):
        raise plan_error(plan.path, "two runs resolve to the same configuration (a setting that changes nothing?)")
    return runs


def config_hash(config: dict) -> str:
    """Content hash of a resolved configuration: equal configurations, equal hashes, in any key order."""
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def is_complete(run: Run, output: str) -> bool:
    return os.path.isfile(os.path.join(run.folder(output), "metrics.json"))


def record_failure(run: Run, output: str, error: str) -> None:
    folder = run.folder(output)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "failed.json"), "w") as handle:
        json.dump({"error": error, "flags": run.flags}, handle, indent=2)


def clear_failure(run: Run, output: str) -> None:
    remove_if_present(os.path.join(run.folder(output), "failed.json"))


def last_error_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:") or "Error" in line]
    return (errors or lines or ["(no output)"])[-1][:500]


def result_row(run: Run, output: str) -> dict:
    """One row of results.csv: the varied keys, seed, validation and test metrics, cost, status."""
    row = {"setting": run.setting, **run.cell, "seed": run.seed, "key": run.key}
    folder = run.folder(output)
    metrics_path, failed_path = os.path.join(folder, "metrics.json"), os.path.join(folder, "failed.json")
    if os.path.isfile(metrics_path):
        with open(metrics_path) as handle:
            metrics = json.load(handle)
        test = metrics["test"]
        row.update(
            status="ok", best_val_loss=metrics.get("best_val_loss"), test_mse=test["mse"], test_mae=test["mae"],
            last_value_mse=test["last_value_baseline"]["mse"], last_value_mae=test["last_value_baseline"]["mae"],
            seasonal_naive_mse=(test.get("seasonal_naive_baseline") or {}).get("mse"),
            seasonal_naive_mae=(test.get("seasonal_naive_baseline") or {}).get("mae"),
            train_time_s=metrics.get("train_time_s"), trainable_parameters=metrics.get("trainable_parameters"),
            peak_memory_mb=metrics.get("peak_memory_mb"), error="",
        )
    elif os.path.isfile(failed_path):
        with open(failed_path) as handle:
            row.update(status="failed", error=json.load(handle)["error"])
    else:
        row.update(status="pending", error="")
    row["model"] = run.config.get("model")
    row["data"] = run.config.get("data")
    row["pred_len"] = run.config.get("pred_len")
    return row

