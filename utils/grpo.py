"""GRPO fine-tuning of a probabilistic forecaster (seed 004, "GRPO"): `--objective grpo`.

The policy pi is the forecast distribution of a trained run (--init_checkpoint, --output_distribution
gaussian or student_t): it gives a density to every possible future x [H, c] of a window. Per training
window, with G = --grpo_group_size and beta = --grpo_beta:

    x_1..x_G ~ pi_old                  a frozen copy of the policy, refreshed every --grpo_refresh_steps
    r_i = -error(x_i, y)               --grpo_reward mse|mae against the true future y, then standardised
                                       within the group: (r_i - mean r) / (std r + 1e-6)
    q_i = pi_old(x_i) exp(r_i / beta) / Z      Z over the group (a softmax of log pi_old + r / beta);
                                       --grpo_target self_normalised: exp(r_i / beta) / Z (see below)
    L_GRPO = sum_i q_i [log pi_old(x_i) / pi(x_i) + r_i / beta]         (q held fixed)
    loss = (L_GRPO + --grpo_kl_weight x KL(pi || pi_ref)) / (H c)

log pi(x) is the joint log-density of the whole window's future (the sum over its H x c values) and pi_ref
the starting checkpoint's policy. Since log q_i = log pi_old(x_i) + r_i / beta - log Z, the surrogate
equals KL(q || pi) + log Z over the group: its gradient, -sum_i q_i grad log pi(x_i), moves pi towards
the reward-preferring target q. Dividing by the number of forecast values H c gives the loss the scale
of the per-value likelihood the run was trained with, so --learning_rate keeps its meaning.

The seed's q multiplies by pi_old(x_i) although the x_i are already drawn from pi_old: over a 96-step
future the joint log-densities of a group's draws differ by several nats, so q concentrates on the most
likely draw whatever the rewards (`grpo_ess` near 1) and the update sharpens the policy around it.
`--grpo_target self_normalised` estimates the same continuous target, q(x) proportional to pi_old(x)
exp(r(x) / beta), from the draws of pi_old: its weights on them are exp(r_i / beta) / Z.
The true future enters only the rewards, never a forecast. Logged per epoch (means over batches): the
group's mean raw reward `grpo_reward` (-MSE or -MAE, before standardising), the entropy of q
`grpo_q_entropy` (log G: uniform), its effective sample size 1 / sum q^2 `grpo_ess` (of G), and the
KL to the reference per value `grpo_kl`.

Validation and checkpoint selection keep the distribution's negative log-likelihood.
"""
import copy
from typing import Optional

import torch
from torch import nn

from utils.callbacks import Callback, due
from utils.checkpoint import load_model_checkpoint, resolve_checkpoint_path, trainable_state_dict
from utils.objective import LossComposer

REWARD_STANDARDISATION_EPS = 1e-6


def frozen_copy(model: nn.Module, checkpoint: Optional[str] = None) -> nn.Module:
    """A copy of `model` for evaluation only, with a checkpoint's weights if given: its trainable
    tensors copied, its frozen ones (the LLM) shared, no gradients."""
    shared = {id(parameter): parameter for parameter in model.parameters() if not parameter.requires_grad}
    duplicate = copy.deepcopy(model, memo=shared)
    duplicate.__dict__.pop("forward", None)  # Accelerate's autocast wrapper would call the original's forward
    if checkpoint is not None:
        load_model_checkpoint(checkpoint, duplicate)
    for parameter in duplicate.parameters():
        parameter.requires_grad_(False)
    return duplicate.eval()


def sync_policy(target: nn.Module, source: nn.Module) -> None:
    """target's copies of source's trained state := source's, through load_state_dict (which also
    clears the modules' evaluation caches, such as the text prototypes)."""
    target.load_state_dict(trainable_state_dict(source), strict=False)
    target.eval()


def window_log_prob(distribution, values: torch.Tensor, mask=None) -> torch.Tensor:
    """Joint log-density of whole futures: values [G, B, H, c] -> [G, B] (masked values excluded)."""
    log_prob = distribution.torch_distribution().log_prob(values)
    if mask is not None:
        log_prob = log_prob * mask
    return log_prob.flatten(2).sum(-1)


def group_rewards(samples: torch.Tensor, target: torch.Tensor, reward: str, mask=None) -> torch.Tensor:
    """-MSE or -MAE of each sampled future against the truth: samples [G, B, H, c], target [B, H, c] -> [G, B]."""
    error = samples - target.unsqueeze(0)
    error = error.pow(2) if reward == "mse" else error.abs()
    if mask is None:
        return -error.flatten(2).mean(-1)
    weights = mask.unsqueeze(0).expand_as(error)
    return -(error * weights).flatten(2).sum(-1) / weights.flatten(2).sum(-1).clamp_min(1)


def standardise(rewards: torch.Tensor) -> torch.Tensor:
    """Within each group (dimension 0): zero mean, unit standard deviation."""
    return (rewards - rewards.mean(0, keepdim=True)) / (rewards.std(0, keepdim=True) + REWARD_STANDARDISATION_EPS)


def group_target(old_log_prob: torch.Tensor, rewards: torch.Tensor, beta: float, target: str = "seed") -> torch.Tensor:
    """q_i = pi_old(x_i) exp(r_i / beta) / Z over each group (self_normalised: exp(r_i / beta) / Z):
    [G, B] -> [G, B], summing to 1 over G."""
    logits = rewards / beta if target == "self_normalised" else old_log_prob + rewards / beta
    return torch.softmax(logits, dim=0)


def grpo_surrogate(q: torch.Tensor, old_log_prob: torch.Tensor, log_prob: torch.Tensor, rewards: torch.Tensor, beta: float) -> torch.Tensor:
    """The seed's sum_i q_i [log pi_old(x_i) - log pi(x_i) + r_i / beta] per group, averaged over the
    groups; q [G, B] is a constant of the step."""
    return (q.detach() * (old_log_prob - log_prob + rewards / beta)).sum(0).mean()


def kl_divergence(distribution, reference, samples: int) -> torch.Tensor:
    """KL(pi || pi_ref) per value [B, H, c]: closed form where torch has one (gaussian), else a Monte
    Carlo estimate from `samples` reparameterised draws of pi (student_t)."""
    policy, anchor = distribution.torch_distribution(), reference.torch_distribution()
    try:
        return torch.distributions.kl_divergence(policy, anchor)
    except NotImplementedError:
        draws = policy.rsample((samples,))
        return (policy.log_prob(draws) - anchor.log_prob(draws)).mean(0)


def q_statistics(q: torch.Tensor) -> dict:
    """The target's entropy and effective sample size, averaged over groups; q [G, B]."""
    entropy = -(q * q.clamp_min(1e-30).log()).sum(0).mean()
    return {"grpo_q_entropy": entropy, "grpo_ess": (1.0 / q.pow(2).sum(0)).mean()}


class GRPOObjective(LossComposer):
    """LossComposer whose main loss is the GRPO loss of the module docstring. The old policy and the
    reference are frozen copies made when training starts (after the add-ons' `prepare`, so they hold
    the same data-built state); the reference is the --init_checkpoint's weights, also after a resume."""

    def __init__(self, config, forward, criterion, weights: dict, warmup_steps: int):
        super().__init__(criterion, weights, warmup_steps)
        self.config, self.forward = config, forward
        self.group_size, self.beta, self.reward = config.grpo_group_size, config.grpo_beta, config.grpo_reward
        self.kl_weight, self.refresh_steps = config.grpo_kl_weight, config.grpo_refresh_steps
        self.old_policy = self.reference = None
        self.accelerator = None

    def callbacks(self) -> list[Callback]:
        return [PolicySync(self)]

    def attach(self, trainer) -> None:
        model = trainer.accelerator.unwrap_model(trainer.model)
        self.accelerator = trainer.accelerator
        self.old_policy = frozen_copy(model)
        self.reference = frozen_copy(model, resolve_checkpoint_path(self.config.init_checkpoint, "--init_checkpoint"))

    def refresh(self, model: nn.Module) -> None:
        sync_policy(self.old_policy, self.accelerator.unwrap_model(model))

    @torch.no_grad()
    def frozen_distribution(self, policy: nn.Module, batch):
        with self.accelerator.autocast():
            output, *_ = self.forward(policy, batch)
        return output.distribution

    def main_loss(self, output, target, x, mask, batch) -> tuple[torch.Tensor, dict]:
        if batch is None:
            raise ValueError("--objective grpo samples from the old policy on the batch: compose(..., batch=batch)")
        old = self.frozen_distribution(self.old_policy, batch)
        samples = old.sample(self.group_size)  # [G, B, H, c]
        raw_rewards = group_rewards(samples, target, self.reward, mask)
        rewards = standardise(raw_rewards)
        old_log_prob = window_log_prob(old, samples, mask)
        q = group_target(old_log_prob, rewards, self.beta, self.config.grpo_target)
        log_prob = window_log_prob(output.distribution, samples, mask)
        values = target[0].numel() if mask is None else mask.flatten(1).sum(-1).mean().clamp_min(1)
        surrogate = grpo_surrogate(q, old_log_prob, log_prob, rewards, self.beta)
        kl = kl_divergence(output.distribution, self.frozen_distribution(self.reference, batch), self.group_size)
        kl = kl.mean() if mask is None else (kl * mask).sum() / mask.sum().clamp_min(1)
        loss = surrogate / values + self.kl_weight * kl
        diagnostics = {"grpo_reward": raw_rewards.mean().detach(), "grpo_kl": kl.detach(), **{k: v.detach() for k, v in q_statistics(q).items()}}
        return loss, diagnostics


class PolicySync(Callback):
    """Makes GRPO's frozen policies when training starts and refreshes pi_old every
    --grpo_refresh_steps optimizer steps."""

    def __init__(self, objective: GRPOObjective):
        self.objective = objective

    def on_epoch_start(self, trainer) -> None:
        if self.objective.old_policy is None:
            self.objective.attach(trainer)

    def on_step_end(self, trainer) -> None:
        if due(trainer.progress.global_step, self.objective.refresh_steps):
            self.objective.refresh(trainer.model)
