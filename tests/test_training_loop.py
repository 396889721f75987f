"""The trainer's loop and its callbacks: each hook fires where the loop says, a user's callback runs
after the built-in ones and can end training, and the flags switch exactly the callbacks they name."""
import pytest

from utils.callbacks import (
    Callback,
    DynamicSampling,
    EarlyStopping,
    EpochLog,
    GradientClipping,
    MaxSteps,
    NonFiniteGuard,
    StepCheckpoints,
    StepLog,
    TrialReport,
    build_callbacks,
)
from utils.config import parse_config
from utils.trainer import Trainer

# 840 training windows at batch 32: 27 micro-batches per epoch, 14 optimizer steps with accumulation 2.
LOOP_RUN = ["--model", "DLinear", "--seq_len", "48", "--label_len", "12", "--pred_len", "12", "--batch_size", "32",
            "--gradient_accumulation_steps", "2", "--train_epochs", "3", "--patience", "9", "--report_to", "none"]


class Recorder(Callback):
    """Counts every hook and records the loop state each one saw."""

    def __init__(self, stop_after_epoch=None):
        self.calls, self.steps_seen, self.summaries, self.stop_after_epoch = [], [], [], stop_after_epoch

    def on_epoch_start(self, trainer):
        self.calls.append("epoch_start")

    def on_batch_loss(self, trainer, batch, output, target, loss):
        assert output.prediction.shape == target.shape and loss.requires_grad
        self.calls.append("batch")

    def on_before_optimizer_step(self, trainer):
        assert all(p.grad is not None for p in trainer.model.parameters() if p.requires_grad)
        self.calls.append("before_step")

    def on_step_end(self, trainer):
        self.steps_seen.append(trainer.progress.global_step)

    def on_epoch_end(self, trainer):
        self.calls.append("epoch_end")

    def stop_reason(self, trainer):
        return "told to stop" if trainer.progress.epoch == self.stop_after_epoch else None

    def on_validation(self, trainer, summary):
        self.summaries.append(summary)


def test_hooks_fire_once_per_batch_step_and_epoch_and_a_callback_can_stop_training(tmp_path, small_etth1):
    recorder = Recorder(stop_after_epoch=2)
    config = parse_config([*LOOP_RUN, *small_etth1, "--checkpoints", str(tmp_path)])
    trainer = Trainer(config, callbacks=(recorder,))
    trainer.run()
    batches_per_epoch = len(trainer.train_loader)
    steps_per_epoch = (batches_per_epoch + 1) // 2
    assert trainer.callbacks[-1] is recorder  # after the built-in ones
    assert recorder.calls.count("epoch_start") == recorder.calls.count("epoch_end") == 2  # stopped after epoch 2 of 3
    assert recorder.calls.count("batch") == 2 * batches_per_epoch
    assert recorder.calls.count("before_step") == 2 * steps_per_epoch
    assert recorder.steps_seen == list(range(1, 2 * steps_per_epoch + 1))
    assert trainer.summary["epochs_run"] == 2 and trainer.summary["global_steps"] == 2 * steps_per_epoch
    assert [summary.val["loss"] for summary in recorder.summaries] == [epoch["val_loss"] for epoch in trainer.epoch_log]
    log = open(f"{trainer.run_dir}/train.log").read()
    assert "told to stop" in log and "epoch 3 " not in log


def test_max_steps_ends_the_epoch_mid_way_and_validates_it(tmp_path, small_etth1):
    recorder = Recorder()
    trainer = Trainer(parse_config([*LOOP_RUN, *small_etth1, "--checkpoints", str(tmp_path), "--max_steps", "5"]), callbacks=(recorder,))
    trainer.run()
    assert recorder.steps_seen == [1, 2, 3, 4, 5] and recorder.calls.count("batch") == 10
    assert len(recorder.summaries) == 1 and "reached --max_steps 5" in open(f"{trainer.run_dir}/train.log").read()


@pytest.mark.parametrize("extra, expected", [
    ([], [NonFiniteGuard, GradientClipping, StepLog, StepCheckpoints, EarlyStopping, EpochLog]),
    (["--max_steps", "3", "--dynamic_sampling", "1", "--clip_per_group", "1"],
     [NonFiniteGuard, GradientClipping, DynamicSampling, StepLog, StepCheckpoints, EarlyStopping, MaxSteps, EpochLog]),
])
def test_the_flags_switch_the_callbacks_they_name(extra, expected, small_etth1):
    from models import build_model

    config = parse_config([*LOOP_RUN, *small_etth1, *extra])
    config.enc_in = config.dec_in = config.c_out = 1
    model = build_model(config)
    sampling = DynamicSampling(config, range(10)) if config.dynamic_sampling else None
    callbacks = build_callbacks(config, model, list(model.parameters()), sampling, reporter=None)
    assert [type(callback) for callback in callbacks] == expected
    assert TrialReport in [type(c) for c in build_callbacks(config, model, [], sampling, reporter=object())]
    clipping = callbacks[1]
    assert (clipping.clipper is not None) == bool(config.clip_per_group)
