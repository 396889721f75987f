"""Experiment trackers, Hugging Face's `--report_to` convention, through Accelerate's tracker classes.

    --report_to tensorboard          the default: <run folder>/tensorboard
    --report_to mlflow               offline, a SQLite store: --tracking_uri (default sqlite:///<checkpoints>/mlflow.db),
                                     artifacts beside it in <checkpoints>/mlartifacts; browse with
                                     mlflow ui --backend-store-uri sqlite:///<checkpoints>/mlflow.db
    --report_to wandb                Weights & Biases, offline unless WANDB_MODE says otherwise (files in
                                     <run folder>/wandb; `wandb sync` uploads them)
    --report_to tensorboard mlflow   several at once; --report_to none: no tracker

Every tracker gets the resolved configuration as parameters, the training loss and learning rate at
each logged step, the epoch means and validation loss per epoch, the final test metrics, and
(MLflow, W&B) forecast.png and metrics.json as artifacts. MLflow's experiment is --model_id, its run
name the run folder's name. A SQLite store rather than MLflow's plain-folder store: MLflow 3 keeps
that one in maintenance mode and refuses to start it without an opt-out.
"""
import importlib.util
import os
from typing import Iterable

REPORT_TO = ("none", "tensorboard", "mlflow", "wandb")
# The module each tracker needs, and what to install for it.
_REQUIREMENTS = {"mlflow": ("mlflow", "mlflow-skinny sqlalchemy alembic"), "wandb": ("wandb", "wandb")}


def resolve_tracking(config) -> None:
    """Check --report_to and fill --tracking_uri's default; errors name the flag."""
    chosen = list(dict.fromkeys(config.report_to))  # in order, once each
    if "none" in chosen and len(chosen) > 1:
        raise ValueError(f"--report_to none means no tracker; it cannot be combined with {', '.join(c for c in chosen if c != 'none')}")
    for name in chosen:
        module, package = _REQUIREMENTS.get(name, (None, None))
        if module and importlib.util.find_spec(module) is None:
            raise ValueError(f"--report_to {name} needs the {module} package: pip install {package}")
    config.report_to = [name for name in chosen if name != "none"]
    if "mlflow" in config.report_to and not config.tracking_uri:
        config.tracking_uri = "sqlite:///" + os.path.abspath(os.path.join(config.checkpoints, "mlflow.db"))


def sqlite_path(tracking_uri: str):
    """The database file of a sqlite:/// URI, else None (a server or another store)."""
    prefix = "sqlite:///"
    return tracking_uri[len(prefix):] if tracking_uri and tracking_uri.startswith(prefix) else None


def check_tracking_location(config) -> None:
    """A local MLflow store that cannot be written is an error naming --tracking_uri, before training."""
    from utils.run_outputs import check_writable_file

    database = sqlite_path(config.tracking_uri) if "mlflow" in config.report_to else None
    if database:
        check_writable_file(database, "--tracking_uri")


def build_trackers(config, run_dir: str) -> list:
    """Accelerate tracker objects for --report_to, writing where this run's flags say."""
    from accelerate.tracking import MLflowTracker, TensorBoardTracker, WandBTracker

    run_name = os.path.basename(os.path.normpath(run_dir))
    trackers = []
    if "tensorboard" in config.report_to:
        trackers.append(TensorBoardTracker("tensorboard", run_dir))
    if "mlflow" in config.report_to:
        import mlflow

        mlflow.set_tracking_uri(config.tracking_uri)
        database = sqlite_path(config.tracking_uri)
        # A new experiment keeps its files beside a local store (MLflow's default is ./mlruns of the working folder).
        artifacts = os.path.join(os.path.dirname(database), "mlartifacts") if database else None
        trackers.append(MLflowTracker(
            experiment_name=config.model_id, logging_dir=artifacts and _file_uri(artifacts), run_name=run_name,
            tags={"run_dir": os.path.abspath(run_dir), "model": config.model, "data": config.data},
        ))
    if "wandb" in config.report_to:
        trackers.append(WandBTracker(
            config.model_id, name=run_name, dir=run_dir, mode=os.environ.get("WANDB_MODE", "offline"),
        ))
    return trackers


def _file_uri(path: str) -> str:
    from pathlib import Path

    return Path(os.path.abspath(path)).as_uri()


def as_parameters(values: dict) -> dict:
    """Flag values as tracker parameters: numbers, strings and booleans kept, the rest (None, lists)
    written as text, which every tracker accepts (TensorBoard's hparams refuse anything else)."""
    return {name: value if isinstance(value, (bool, int, float, str)) else str(value) for name, value in values.items()}


def log_artifacts(trackers: Iterable, paths: Iterable[str]) -> None:
    """Attach files to the run of every tracker that keeps files."""
    existing = [path for path in paths if os.path.isfile(path)]
    for tracker in trackers:
        for path in existing:
            if tracker.name == "mlflow":
                tracker.log_artifact(path)
            elif tracker.name == "wandb":
                tracker.run.save(path, base_path=os.path.dirname(path), policy="now")
