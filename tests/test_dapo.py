"""DAPO-style options: per-group gradient clipping, loss-driven sampling weights, and both in the trainer."""
import json

import pytest
import torch
from torch import nn

from tests.conftest import FAST_RUN
from utils.checkpointer import Checkpointer
from utils.config import parse_config
from utils.dapo import (
    CLIP_WARMUP_STEPS,
    ClipPenalty,
    DynamicSampler,
    GroupClipper,
    parameter_groups,
    parse_group_thresholds,
    sampling_weights,
    weight_statistics,
)
from utils.trainer import Trainer


def test_sampling_weights_follow_the_losses_and_the_kl_weight_flattens_them():
    losses = torch.tensor([0.1, 0.2, 0.4, 0.8, 1.6], dtype=torch.float64)
    weights = sampling_weights(losses, temperature=0.5, kl_weight=0.0)
    assert torch.all(weights[1:] > weights[:-1]) and weights.sum().item() == pytest.approx(1.0)
    torch.testing.assert_close(weights, torch.softmax(losses / losses.mean() / 0.5, dim=0))
    kl = [weight_statistics(sampling_weights(losses, 0.5, weight))["sampling_kl"] for weight in (0.0, 1.0, 10.0, 1000.0)]
    assert kl[0] > kl[1] > kl[2] > kl[3] and kl[3] < 1e-4  # large weights: uniform
    # The scale of the losses does not matter, only their ratios to the mean.
    torch.testing.assert_close(sampling_weights(losses * 100, 0.5, 0.1), sampling_weights(losses, 0.5, 0.1))


def test_sampler_draws_high_loss_windows_more_often_and_replays_an_epoch():
    sampler = DynamicSampler(size=100, seed=3, temperature=0.5, kl_weight=0.0, loss_decay=1.0)
    sampler.set_epoch(0)
    torch.testing.assert_close(sampler.weights, torch.full((100,), 0.01, dtype=torch.float64))  # nothing seen: uniform
    losses = torch.linspace(0.1, 2.0, 100)
    sampler.record(torch.arange(100), losses)
    first = list(sampler)  # still epoch 0: the weights are fixed for the epoch
    assert first == list(sampler)
    sampler.set_epoch(1)
    assert torch.all(sampler.weights[1:] > sampler.weights[:-1])
    draws = torch.bincount(torch.tensor(list(sampler)), minlength=100)
    assert draws[80:].sum() > 3 * draws[:20].sum()
    # Windows not seen yet count with the mean loss; the running loss mixes old and new.
    partial = DynamicSampler(size=4, seed=0, temperature=1.0, kl_weight=0.0, loss_decay=0.5)
    partial.record(torch.tensor([0, 1]), torch.tensor([1.0, 3.0]))
    partial.record(torch.tensor([1]), torch.tensor([1.0]))
    torch.testing.assert_close(partial.current_losses(), torch.tensor([1.0, 2.0, 1.5, 1.5], dtype=torch.float64))


def test_each_group_is_clipped_to_its_own_threshold():
    model = nn.ModuleDict({"small": nn.Linear(4, 4), "large": nn.Linear(4, 4)})
    groups = parameter_groups(model)
    assert list(groups) == ["small", "large"]
    thresholds = parse_group_thresholds(["large=0.5"], 10.0, list(groups))
    assert thresholds == {"small": 10.0, "large": 0.5}
    for name, scale in (("small", 0.01), ("large", 100.0)):
        for parameter in groups[name]:
            parameter.grad = torch.full_like(parameter, scale)
    small_before = [p.grad.clone() for p in groups["small"]]
    clipper = GroupClipper(groups, thresholds)
    norms = clipper.clip()
    assert norms["large"] > 0.5 and norms["small"] < 10.0
    large_norm = torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in groups["large"]]))
    assert large_norm.item() == pytest.approx(0.5, rel=1e-4)
    # A global norm would have shrunk the small group too; decoupled clipping leaves it alone.
    for before, parameter in zip(small_before, groups["small"]):
        torch.testing.assert_close(parameter.grad, before)
    statistics = clipper.epoch_statistics()
    assert statistics["clipped/large"] == 1.0 and statistics["clipped/small"] == 0.0
    assert statistics["grad_norm/large"] == pytest.approx(float(norms["large"]))


def test_unknown_group_and_global_clipping_together_are_refused():
    with pytest.raises(ValueError, match="no parameter group 'mlp'; groups: small"):
        parse_group_thresholds(["mlp=1"], 1.0, ["small"])
    with pytest.raises(SystemExit):
        parse_config(["--clip_per_group", "1", "--max_grad_norm", "1.0"])


def dlinear_run(tmp_path, name, *extra):
    config = parse_config([
        "--model", "DLinear", "--data", "ETTh1", "--seq_len", "96", "--pred_len", "24", "--label_len", "24", "--percent", "20",
        "--batch_size", "32", "--eval_batch_size", "256", "--train_epochs", "3", "--patience", "5", "--log_interval", "1",
        "--learning_rate", "0.01", "--save_predictions", "0", "--dynamic_sampling", "1", "--sampling_temperature", "0.5",
        "--clip_per_group", "1", "--group_clip_norm", "1.0", "--group_clip_norms", "seasonal=0.05",
        "--checkpoints", str(tmp_path / "checkpoints"), "--run_dir", str(tmp_path / name), *extra,
    ])
    trainer = Trainer(config)
    return trainer, trainer.run()


def test_both_options_through_the_trainer_log_their_statistics_and_resume_exactly(tmp_path, monkeypatch):
    losses_at_epoch_start = {}
    set_epoch = DynamicSampler.set_epoch

    def recording_set_epoch(self, epoch):
        losses_at_epoch_start.setdefault(epoch, self.current_losses().clone())
        set_epoch(self, epoch)

    monkeypatch.setattr(DynamicSampler, "set_epoch", recording_set_epoch)
    trainer, result = dlinear_run(tmp_path, "full")
    monkeypatch.undo()
    epochs = json.load(open(tmp_path / "full" / "metrics.json"))["epochs"]
    assert epochs[0]["sampling_kl"] == pytest.approx(0.0) and epochs[0]["sampling_ess"] == pytest.approx(1.0)  # epoch 1: nothing seen yet
    assert epochs[1]["sampling_kl"] > 0.01 and epochs[1]["sampling_ess"] < 1.0 and epochs[1]["sampling_max_ratio"] > 1.5
    assert epochs[0]["clipped/seasonal"] > 0.5 and epochs[0]["grad_norm/seasonal"] > 0.05
    assert {"grad_norm/trend", "clipped/trend"} <= set(epochs[0])
    log = open(tmp_path / "full" / "train.log").read()
    assert "sampling_kl" in log and "clipped/seasonal" in log
    # The last epoch drew from the running losses recorded until its start: hard windows weigh more.
    losses = losses_at_epoch_start[2]
    torch.testing.assert_close(trainer.sampler.weights, sampling_weights(losses, 0.5, 0.1))
    order = torch.argsort(losses)
    assert trainer.sampler.weights[order[-50:]].min() > trainer.sampler.weights[order[:50]].max()

    save = Checkpointer.save_step

    def save_then_die(self, progress):
        save(self, progress)
        if progress.global_step == 25:
            raise RuntimeError("interrupted")

    monkeypatch.setattr(Checkpointer, "save_step", save_then_die)
    with pytest.raises(RuntimeError, match="interrupted"):
        dlinear_run(tmp_path, "resumed", "--save_steps", "25")
    monkeypatch.undo()
    _, resumed = dlinear_run(tmp_path, "resumed", "--resume_from_checkpoint", str(tmp_path / "resumed"))
    assert resumed["mse"] == result["mse"] and resumed["mae"] == result["mae"]


class TwoGroups(nn.Module):
    """A small non-linear model with two parameter groups, in double precision."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.first, self.second = nn.Linear(3, 4).double(), nn.Linear(4, 1).double()

    def loss(self, inputs, target):
        return (self.second(torch.tanh(self.first(inputs))) - target).pow(2).mean()


def group_norms(model, loss):
    gradients = torch.autograd.grad(loss, list(model.parameters()))
    first = torch.cat([g.flatten() for g in gradients[:2]]).norm()
    return first, torch.cat([g.flatten() for g in gradients[2:]]).norm()


def test_clip_penalty_is_the_excess_of_each_groups_norm_squared():
    model, inputs, target = TwoGroups(), torch.randn(8, 3, dtype=torch.float64), torch.randn(8, 1, dtype=torch.float64)
    first, second = group_norms(model, model.loss(inputs, target))
    thresholds = {"first": 0.5 * first.item(), "second": 2.0 * second.item()}  # only the first group exceeds
    penalty, statistics = ClipPenalty(parameter_groups(model), 3.0, thresholds, 0.9)(model.loss(inputs, target))
    assert penalty.item() == pytest.approx(3.0 * (0.5 * first.item()) ** 2, rel=1e-9)
    assert statistics["clip_groups_over"].item() == 1


def test_clip_penalty_gradient_matches_finite_differences():
    """Double backward: the penalty's gradient with respect to every parameter against central differences."""
    model, inputs, target = TwoGroups(), torch.randn(8, 3, dtype=torch.float64), torch.randn(8, 1, dtype=torch.float64)
    first, second = group_norms(model, model.loss(inputs, target))
    thresholds = {"first": 0.3 * first.item(), "second": 0.3 * second.item()}

    def penalty_value():
        return ClipPenalty(parameter_groups(model), 2.0, thresholds, 0.9)(model.loss(inputs, target))[0]

    penalty_value().backward()
    analytic = [parameter.grad.clone() for parameter in model.parameters()]
    step = 1e-6
    for parameter, gradient in zip(model.parameters(), analytic):
        numeric = torch.zeros_like(parameter)
        for index in range(parameter.numel()):
            flat = parameter.data.view(-1)
            original = flat[index].item()
            flat[index] = original + step
            upper = penalty_value().item()
            flat[index] = original - step
            lower = penalty_value().item()
            flat[index] = original
            numeric.view(-1)[index] = (upper - lower) / (2 * step)
        torch.testing.assert_close(gradient, numeric, rtol=1e-5, atol=1e-8)


def test_auto_thresholds_are_a_running_quantile_of_each_groups_norms():
    model = TwoGroups()
    penalty = ClipPenalty(parameter_groups(model), 1.0, None, 0.5)
    norms = []
    for step in range(CLIP_WARMUP_STEPS + 1):
        inputs, target = torch.randn(8, 3, dtype=torch.float64) * (1 + step), torch.randn(8, 1, dtype=torch.float64)
        value, _ = penalty(model.loss(inputs, target))
        norms.append(group_norms(model, model.loss(inputs, target)))
        if step < CLIP_WARMUP_STEPS:
            assert value.item() == 0.0  # too few norms known yet
    tau = [torch.quantile(torch.stack([pair[group] for pair in norms[:-1]]), 0.5) for group in (0, 1)]  # of the earlier norms
    expected = sum(max(0.0, norms[-1][group].item() - tau[group].item()) ** 2 for group in (0, 1))
    assert value.item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("flags, refused", [
    (["--gradient_accumulation_steps", "2"], "--gradient_accumulation_steps 2"),
    (["--mixed_precision", "fp16"], "--mixed_precision fp16"),
    (["--deepspeed_config", "ds_config_zero2.json"], "--deepspeed_config"),
    (["--model", "TimeLLM", "--gradient_checkpointing", "1"], "--gradient_checkpointing 1"),
])
def test_clip_penalty_is_refused_where_double_backward_cannot_run(flags, refused, capsys):
    with pytest.raises(SystemExit):
        parse_config(["--lambda_clip", "0.1", *flags])
    error = capsys.readouterr().err
    assert error.startswith("error: --lambda_clip 0.1 backpropagates through each step's gradients") and refused in error


@pytest.mark.parametrize("model_flags", [
    ["--model", "DLinear"],
    ["--model", "TimeLLM", "--llm_model", "tiny-llama", "--llm_layers", "2", "--d_model", "8", "--d_ff", "16", "--batch_size", "4"],
], ids=["DLinear", "TimeLLM"])
def test_clip_penalty_trains_through_the_trainer(model_flags, tmp_path, small_etth1):
    """Time-LLM's frozen LLM switches to eager attention, whose double backward exists."""
    config = parse_config([*FAST_RUN, *small_etth1, "--features", "S", "--max_steps", "3", *model_flags, "--lambda_clip", "1",
                           "--clip_penalty_threshold", "fixed", "--group_clip_norm", "1e-4", "--checkpoints", str(tmp_path), "--report_to", "none"])
    trainer = Trainer(config)
    trainer.run()
    epoch = trainer.epoch_log[0]
    assert epoch["clip_penalty"] > 0 and epoch["clip_groups_over"] >= 1
