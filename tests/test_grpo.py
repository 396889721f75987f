"""GRPO fine-tuning (utils/grpo.py): the target q and the seed's surrogate by hand, the rewards, a toy
policy whose reward rises, and a fine-tuning run from a probabilistic checkpoint."""
import json
import math
import os

import pytest
import torch

from layers.DistributionHead import ForecastDistribution
from tests.conftest import FAST_RUN
from utils.config import parse_config
from utils.grpo import (
    group_rewards,
    group_target,
    grpo_surrogate,
    kl_divergence,
    q_statistics,
    standardise,
    window_log_prob,
)
from utils.trainer import Trainer, train_and_test


def test_target_and_surrogate_on_a_toy_group_by_hand():
    # One window, a group of three draws.
    old_log_prob = torch.tensor([[-1.0], [-2.0], [-0.5]])
    new_log_prob = torch.tensor([[-1.5], [-1.0], [-0.7]])
    rewards = torch.tensor([[1.0], [-1.0], [0.0]])
    beta = 0.5
    logits = [-1.0 + 2.0, -2.0 - 2.0, -0.5 + 0.0]  # log pi_old + r / beta
    z = sum(math.exp(value) for value in logits)
    q = [math.exp(value) / z for value in logits]
    torch.testing.assert_close(group_target(old_log_prob, rewards, beta)[:, 0], torch.tensor(q))
    expected = sum(q_i * (old - new + r / beta) for q_i, old, new, r in zip(q, [-1.0, -2.0, -0.5], [-1.5, -1.0, -0.7], [1.0, -1.0, 0.0]))
    loss = grpo_surrogate(group_target(old_log_prob, rewards, beta), old_log_prob, new_log_prob, rewards, beta)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    # The surrogate is KL(q || pi) + log Z over the group (pi the new log-probabilities, unnormalised).
    kl_plus_log_z = sum(q_i * (math.log(q_i) - new) for q_i, new in zip(q, [-1.5, -1.0, -0.7])) + math.log(z)
    assert loss.item() == pytest.approx(kl_plus_log_z, rel=1e-6)

    # Self-normalised: the draws' weights are exp(r / beta) / Z alone.
    weights = [math.exp(r / beta) for r in (1.0, -1.0, 0.0)]
    torch.testing.assert_close(group_target(old_log_prob, rewards, beta, "self_normalised")[:, 0], torch.tensor([w / sum(weights) for w in weights]))

    statistics = q_statistics(torch.tensor([[0.5, 1 / 3], [0.5, 1 / 3], [0.0, 1 / 3]]))
    assert statistics["grpo_ess"].item() == pytest.approx((2 + 3) / 2)
    assert statistics["grpo_q_entropy"].item() == pytest.approx((math.log(2) + math.log(3)) / 2)


def test_rewards_are_minus_the_error_standardised_within_the_group():
    target = torch.zeros(1, 2, 1)
    samples = torch.tensor([[[[1.0], [1.0]]], [[[2.0], [0.0]]], [[[0.0], [0.0]]]])  # [G=3, B=1, H=2, c=1]
    torch.testing.assert_close(group_rewards(samples, target, "mse")[:, 0], torch.tensor([-1.0, -2.0, 0.0]))
    torch.testing.assert_close(group_rewards(samples, target, "mae")[:, 0], torch.tensor([-1.0, -1.0, 0.0]))
    mask = torch.tensor([[[1.0], [0.0]]])  # the second step is padding: only the first counts
    torch.testing.assert_close(group_rewards(samples, target, "mse", mask)[:, 0], torch.tensor([-1.0, -4.0, 0.0]))
    standard = standardise(torch.tensor([[-1.0], [-2.0], [0.0]]))
    assert standard.mean().item() == pytest.approx(0.0, abs=1e-7) and standard.std().item() == pytest.approx(1.0, abs=1e-5)


def test_joint_log_density_and_kl_to_the_reference():
    location, scale = torch.zeros(2, 3, 1), torch.ones(2, 3, 1)
    policy = ForecastDistribution("gaussian", location, scale=scale)
    values = torch.randn(4, 2, 3, 1)
    expected = torch.distributions.Normal(0.0, 1.0).log_prob(values).sum((-1, -2))
    torch.testing.assert_close(window_log_prob(policy, values), expected)
    reference = ForecastDistribution("gaussian", location + 1.0, scale=scale)
    torch.testing.assert_close(kl_divergence(policy, reference, 8), torch.full((2, 3, 1), 0.5))  # (mu difference)^2 / 2
    # Student-t: a Monte Carlo estimate, close to the Gaussian's at many degrees of freedom.
    torch.manual_seed(0)
    student = ForecastDistribution("student_t", location, scale=scale, degrees_of_freedom=torch.full_like(location, 1000.0))
    shifted = ForecastDistribution("student_t", location + 1.0, scale=scale, degrees_of_freedom=torch.full_like(location, 1000.0))
    assert kl_divergence(student, shifted, 20000).mean().item() == pytest.approx(0.5, abs=0.03)


@pytest.mark.parametrize("target", ["seed", "self_normalised"])
def test_grpo_raises_the_reward_of_a_toy_policy(target):
    """A Gaussian policy over a 4-step future, trained by the surrogate alone: its expected reward
    -E||x - y||^2 / H = -(mean (mu - y)^2 + sigma^2) rises."""
    torch.manual_seed(0)
    truth = torch.tensor([[[1.0], [-0.5], [2.0], [0.3]]])  # [B=1, H=4, c=1]
    location = torch.zeros(1, 4, 1, requires_grad=True)
    log_scale = torch.zeros(1, 4, 1, requires_grad=True)
    optimizer = torch.optim.Adam([location, log_scale], lr=0.05)

    def policy():
        return ForecastDistribution("gaussian", location, scale=log_scale.exp())

    def expected_reward():
        return -((location - truth).pow(2) + log_scale.exp().pow(2)).mean().item()

    before = expected_reward()
    old = ForecastDistribution("gaussian", location.detach().clone(), scale=log_scale.exp().detach().clone())
    for step in range(300):
        samples = old.sample(16)
        rewards = standardise(group_rewards(samples, truth, "mse"))
        old_log_prob = window_log_prob(old, samples)
        q = group_target(old_log_prob, rewards, 1.0, target)
        loss = grpo_surrogate(q, old_log_prob, window_log_prob(policy(), samples), rewards, 1.0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 5 == 4:  # refresh pi_old
            old = ForecastDistribution("gaussian", location.detach().clone(), scale=log_scale.exp().detach().clone())
    after = expected_reward()
    assert after > before + 0.5, (before, after)
    if target == "self_normalised":  # the location itself moves to the truth
        assert (location.detach() - truth).abs().mean() < 0.5 * truth.abs().mean()


@pytest.mark.parametrize("flags, message", [
    (["--objective", "grpo", "--init_checkpoint", "run"], "--objective grpo needs a policy with a density: --output_distribution gaussian or student_t"),
    (["--objective", "grpo", "--output_distribution", "quantile", "--init_checkpoint", "run"], "--objective grpo needs a policy with a density"),
    (["--objective", "grpo", "--output_distribution", "student_t"], "--objective grpo fine-tunes a trained probabilistic run: give --init_checkpoint"),
    (["--grpo_group_size", "1"], "--grpo_group_size must be at least 2"),
    (["--grpo_beta", "0"], "--grpo_beta must be positive"),
])
def test_bad_grpo_flags_name_the_flag(flags, message, capsys):
    with pytest.raises(SystemExit):
        parse_config(flags)
    error = capsys.readouterr().err
    assert error.startswith(f"error: {message}") and error.count("\n") == 1


def test_grpo_fine_tunes_a_probabilistic_run(tmp_path, small_etth1):
    base = parse_config([*FAST_RUN, *small_etth1, "--features", "S", "--output_distribution", "student_t", "--checkpoints", str(tmp_path), "--report_to", "none"])
    _, run_dir = train_and_test(base)
    start = torch.load(os.path.join(run_dir, "checkpoint.pt"), weights_only=False)["model"]

    config = parse_config(["--config", os.path.join(run_dir, "config.yaml"), "--objective", "grpo", "--init_checkpoint", run_dir,
                           "--max_steps", "6", "--grpo_group_size", "4", "--grpo_refresh_steps", "3", "--run_dir", str(tmp_path / "grpo")])
    assert config.output_distribution == "student_t" and config.seq_len == base.seq_len  # the run's own configuration
    trainer = Trainer(config)
    refreshed = []
    objective = trainer.losses
    original_refresh = objective.refresh
    objective.refresh = lambda model: (refreshed.append(trainer.progress.global_step), original_refresh(model))
    result = trainer.run()
    assert refreshed == [3, 6]
    assert "crps" in result["distribution"]
    epoch = json.load(open(tmp_path / "grpo" / "metrics.json"))["epochs"][0]
    assert {"grpo_reward", "grpo_kl", "grpo_q_entropy", "grpo_ess"} <= set(epoch)
    assert 1.0 <= epoch["grpo_ess"] <= 4.0 and epoch["grpo_kl"] >= 0
    # The reference stays the starting checkpoint; the policy moved away from it.
    reference = dict(objective.reference.named_parameters())
    for name, value in start.items():
        torch.testing.assert_close(reference[name], value)
    tuned = torch.load(tmp_path / "grpo" / "checkpoint.pt", weights_only=False)["model"]
    assert any(not torch.equal(tuned[name], start[name]) for name in start)

    # The old policy's forecast never sees the true future: changing it changes nothing.
    batch = next(iter(trainer.test_loader))
    before = objective.frozen_distribution(objective.old_policy, batch).location
    batch.targets[:, -config.pred_len :] += 100.0
    torch.testing.assert_close(objective.frozen_distribution(objective.old_policy, batch).location, before)
