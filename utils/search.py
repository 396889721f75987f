"""Hyper-parameter search with Optuna: TPE sampling, median pruning on the validation loss, the best
validation loss as the objective (never test).

A search plan (YAML):

    entry: run_main.py
    base: configs/dlinear_ETTh1.yaml            # optional
    flags: {train_epochs: 5}                    # common flags
    space:                                      # one entry per flag searched
      learning_rate: {low: 0.0001, high: 0.01, log: true}
      moving_avg: {low: 13, high: 49, step: 12}  # integers when low, high and step are
      d_model: {choices: [16, 32, 64]}
    trials: 20
    seed: 0                                     # the sampler's
    pruner: {n_startup_trials: 3, n_warmup_steps: 1}
    enqueue: [{learning_rate: 0.001}]           # optional: configurations to try first

Trials run as entry-script processes through the suite executors, in batches of --max_parallel,
sharing one SQLite study (<output>/study.db). Each trial process reports its validation loss after
every epoch (`--optuna_trial`, set by the driver) and stops when the median pruner says so.
"""
from typing import Optional

SEARCH_KEYS = {"entry", "base", "flags", "space", "trials", "seed", "pruner", "enqueue"}
STUDY_NAME = "search"
PRUNED_EXIT = 3  # exit status of a trial process stopped by its pruner: not an error


class PrunedRun(Exception):
    """Raised in a trial's process when the pruner stops it."""


def load_search_plan(path: str) -> dict:
    from utils.suite import known_flags, plan_error, read_plan

    plan = read_plan(path, SEARCH_KEYS)
    space = plan.get("space") or {}
    if not space:
        raise plan_error(path, "an empty search space: list flags under 'space'")
    unknown_flags = sorted((set(space) | set(plan.get("flags") or {})) - known_flags())
    if unknown_flags:
        raise plan_error(path, f"unknown flag(s) {unknown_flags}")
    for name, spec in space.items():
        if "choices" in spec:
            if not spec["choices"]:
                raise plan_error(path, f"space {name}: no choices")
        elif not {"low", "high"} <= set(spec) or not spec["low"] < spec["high"]:
            raise plan_error(path, f"space {name}: an empty range (needs low < high, got {spec})")
    plan.setdefault("entry", "run_main.py")
    plan.setdefault("flags", {})
    plan.setdefault("trials", 10)
    plan.setdefault("seed", 0)
    plan.setdefault("pruner", {})
    plan.setdefault("enqueue", [])
    if plan["trials"] < 1:
        raise plan_error(path, f"trials must be >= 1, got {plan['trials']}")
    return plan


def suggest(trial, space: dict) -> dict:
    """The trial's value for every flag of the space."""
    values = {}
    for name, spec in space.items():
        if "choices" in spec:
            values[name] = trial.suggest_categorical(name, spec["choices"])
        elif all(isinstance(spec.get(key, 1), int) for key in ("low", "high", "step")):
            values[name] = trial.suggest_int(name, spec["low"], spec["high"], step=spec.get("step", 1), log=spec.get("log", False))
        else:
            values[name] = trial.suggest_float(name, float(spec["low"]), float(spec["high"]), log=spec.get("log", False))
    return values


def trial_flag(storage: str, trial_id: int) -> str:
    return f"{storage}#{STUDY_NAME}#{trial_id}"


class TrialReporter:
    """In a trial's process: report each epoch's validation loss; raise PrunedRun when told to stop."""

    def __init__(self, flag: str):
        import optuna

        storage, study_name, trial_id = flag.rsplit("#", 2)
        # A pruner is not stored with the study: the driver keeps its settings as a study attribute.
        settings = optuna.load_study(study_name=study_name, storage=storage).user_attrs.get("pruner", {})
        study = optuna.load_study(study_name=study_name, storage=storage, pruner=median_pruner(settings))
        self.trial = optuna.trial.Trial(study, int(trial_id))

    def report(self, epoch: int, validation_loss: float) -> None:
        self.trial.report(validation_loss, epoch)
        if self.trial.should_prune():
            raise PrunedRun(f"trial {self.trial.number} pruned after epoch {epoch + 1} (validation loss {validation_loss:.6f})")


def median_pruner(settings: dict):
    """Optuna's median pruner with the plan's settings over these defaults."""
    import optuna

    return optuna.pruners.MedianPruner(**{"n_startup_trials": 3, "n_warmup_steps": 1, **settings})


def make_reporter(flag: Optional[str]) -> Optional[TrialReporter]:
    return TrialReporter(flag) if flag else None
