"""Step checkpoints and resume: an interrupted run, resumed, continues exactly as if uninterrupted."""
import os
import re

import pytest

from tests.conftest import ROOT
from tests.conftest import enhanced_run as run
from utils.checkpoint import step_checkpoints
from utils.checkpointer import Checkpointer
from utils.config import parse_config
from utils.trainer import Trainer


class Interrupted(Exception):
    pass


def train_log_losses(run_dir):
    """step -> the logged running train loss, and the per-epoch lines, from train.log."""
    text = open(os.path.join(run_dir, "train.log")).read()
    steps = {int(step): loss for step, loss in re.findall(r"step (\d+) \| epoch \d+ \| train loss (\S+)", text)}
    epochs = re.findall(r"(epoch \d+ \| step \d+ \| train loss .*?) \| lr", text)
    return steps, epochs


def interrupt_after_step(monkeypatch, step, launch):
    """Call launch() with its trainer killed right after the step checkpoint of optimizer step `step`."""
    save = Checkpointer.save_step

    def save_then_die(self, progress):
        save(self, progress)
        if progress.global_step == step:
            raise Interrupted

    monkeypatch.setattr(Checkpointer, "save_step", save_then_die)
    with pytest.raises(Interrupted):
        launch()
    monkeypatch.undo()


def test_interrupted_and_resumed_equals_uninterrupted(tmp_path, monkeypatch):
    _, uninterrupted = run(tmp_path, "uninterrupted")
    steps_a, epochs_a = train_log_losses(tmp_path / "uninterrupted")
    assert max(steps_a) == 75 and len(epochs_a) == 3

    # Kill the second run right after its step-36 checkpoint (mid epoch 2, after a best checkpoint).
    interrupt_after_step(monkeypatch, 36, lambda: run(tmp_path, "resumed", "--save_steps", "12", "--save_total_limit", "2"))
    assert [step for step, _ in step_checkpoints(tmp_path / "resumed")] == [24, 36]  # the limit pruned step 12

    # Resume from the folder: its newest step checkpoint; outputs continue in the same folder.
    trainer, resumed = run(tmp_path, "resumed", "--resume_from_checkpoint", str(tmp_path / "resumed"))
    steps_b, epochs_b = train_log_losses(tmp_path / "resumed")
    assert steps_b == steps_a  # every step's logged loss, before and after the interruption
    assert epochs_b == epochs_a  # epoch lines: train and aux terms, accuracies, validation loss
    for metric in ("mse", "mae"):
        assert resumed[metric] == uninterrupted[metric]
    assert trainer.summary["global_steps"] == 75
    # The best checkpoint holds weights only; resuming from it says where the training state is.
    with pytest.raises(ValueError, match="holds no training state .*--init_checkpoint"):
        run(tmp_path, "again", "--resume_from_checkpoint", str(tmp_path / "uninterrupted" / "checkpoint.pt"))


def test_resume_refuses_a_different_data_order(tmp_path):
    run(tmp_path, "first", "--train_epochs", "1", "--max_steps", "3", "--save_steps", "3")
    with pytest.raises(ValueError, match="--batch_size 16 in the checkpoint vs 8 now"):
        run(tmp_path, "second", "--resume_from_checkpoint", str(tmp_path / "first" / "checkpoint_step_3.pt"), "--batch_size", "8")


M4_ARGS = ["--model", "DLinear", "--data", "m4", "--task_name", "short_term_forecast", "--seasonal_patterns", "Weekly",
           "--root_path", os.path.join(ROOT, "dataset", "m4"), "--features", "S", "--seq_len", "26", "--label_len", "13",
           "--pred_len", "13", "--loss", "SMAPE", "--batch_size", "16", "--train_epochs", "2", "--patience", "5",
           "--log_interval", "1", "--learning_rate", "0.001", "--save_predictions", "0"]


@pytest.mark.parametrize("workers", [0, 2])
def test_m4_interrupted_and_resumed_equals_uninterrupted(tmp_path, monkeypatch, workers):
    """M4 draws a random cut point per item: the items must not depend on the loader fetching ahead
    (the random state saved at step 10 had already served step 11) nor on worker processes."""
    def m4_run(name, *extra):
        config = parse_config(M4_ARGS + ["--num_workers", str(workers), "--checkpoints", str(tmp_path / "checkpoints"), "--run_dir", str(tmp_path / name), *extra])
        trainer = Trainer(config)
        return trainer.run()

    uninterrupted = m4_run("uninterrupted")
    steps_a, epochs_a = train_log_losses(tmp_path / "uninterrupted")
    assert max(steps_a) == 46 and len(epochs_a) == 2  # 359 series, 23 steps per epoch
    interrupt_after_step(monkeypatch, 10, lambda: m4_run("resumed", "--save_steps", "5"))
    resumed = m4_run("resumed", "--resume_from_checkpoint", str(tmp_path / "resumed"))
    steps_b, epochs_b = train_log_losses(tmp_path / "resumed")
    assert steps_b == steps_a and epochs_b == epochs_a
    for metric in ("mse", "mae"):
        assert resumed[metric] == uninterrupted[metric]
