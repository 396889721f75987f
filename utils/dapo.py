"""DAPO-style training options (the notes' "Decoupled Clip and Dynamic sAmpling"), used by the trainer;
both off by default.

Decoupled clipping (`--clip_per_group 1`): the trainable parameters are grouped by the model's
top-level submodule (Time-LLM: patch_embedding, text_prototypes, reprogramming, head, llm for LoRA
adapters, tapr, gram, ...) and each group's gradient norm is clipped to its own threshold
(`--group_clip_norm`, per group `--group_clip_norms head=0.5 reprogramming=2`), so one module's
large gradient no longer shrinks every other module's update as a single global norm does.
Logged per epoch: each group's mean norm before clipping and the fraction of steps it was clipped.

Clip penalty (`--lambda_clip W`, seed 004's DAPO step 2): the loss gains W x sum over groups of
max(0, ||g_group|| - tau_group)^2, g the loss's gradient, so that training itself prefers steps whose
gradients stay under the thresholds. The gradient of that penalty is a second derivative: the loss's
gradients are taken with `torch.autograd.grad(..., create_graph=True)` and the penalty backpropagates
through them (double backward). tau: `--clip_penalty_threshold fixed` takes --group_clip_norm(s);
`auto` takes the --clip_penalty_quantile of each group's norms over its last CLIP_HISTORY steps (the
seed's adaptive clipping; no penalty before CLIP_WARMUP_STEPS norms are known). It works with or
without --clip_per_group. Refused where double backward cannot run (utils/config.py): DeepSpeed, LLM
gradient checkpointing, fp16 loss scaling, gradient accumulation (its micro-batch gradients are not the
step's), several processes.

Dynamic sampling (`--dynamic_sampling 1`): every training window i keeps a running loss s_i (its
newest per-window MSE enters with weight `--sampling_loss_decay`; windows not seen yet count with the
mean). Each epoch draws its N windows with replacement from

    q = argmin_q KL(q || p) + lambda KL(q || uniform),  p = softmax(s / (T mean(s)))
      = softmax(s / (T mean(s) (1 + lambda)))

with T = `--sampling_temperature` (relative to the mean loss, so it does not depend on the data's
scale) and lambda = `--sampling_kl_weight`: windows with a high recent loss are drawn more often, and
the KL term keeps the distribution from collapsing onto a few of them (lambda = 0: the plain
softmax, large lambda: uniform). The weights are fixed at the start of each epoch and saved with the
running losses in checkpoints, so a resumed run replays the same draws. Logged per epoch: KL(q ||
uniform), the effective sample size 1 / sum q^2 as a fraction of N, and N max q.
"""
from dataclasses import replace
from typing import Optional

import torch
from torch import nn
from torch.utils.data import Dataset, Sampler

from data_provider.registry import epoch_seed
from layers.DistributionHead import top_level_name


# ------------------------------------------------------------------------------ decoupled clipping
def parameter_groups(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """Trainable parameters by top-level submodule name (parameters directly on the model: "model"), or
    by the model's own `parameter_group(name)` (a distribution head's wrapper: the wrapped model's groups)."""
    group_of = getattr(model, "parameter_group", top_level_name)
    groups: dict[str, list[nn.Parameter]] = {}
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            groups.setdefault(group_of(name), []).append(parameter)
    return groups


def parse_group_thresholds(overrides: list[str], default: float, groups: list[str]) -> dict[str, float]:
    """["head=0.5", ...] over the default threshold; unknown groups and bad values name the flag."""
    thresholds = dict.fromkeys(groups, default)
    for item in overrides:
        name, _, value = item.partition("=")
        if name not in thresholds:
            raise ValueError(f"--group_clip_norms {item}: no parameter group {name!r}; groups: {', '.join(groups)}")
        try:
            thresholds[name] = float(value)
        except ValueError:
            raise ValueError(f"--group_clip_norms {item}: expected GROUP=NORM with a number") from None
    bad = [name for name, value in thresholds.items() if not value > 0]
    if bad:
        raise ValueError(f"--group_clip_norm(s): thresholds must be positive, not for {bad}")
    return thresholds


class GroupClipper:
    """Clips each parameter group's gradient norm to its threshold; keeps per-epoch statistics on the
    device (no synchronisation per step)."""

    def __init__(self, groups: dict[str, list[nn.Parameter]], thresholds: dict[str, float]):
        self.groups, self.thresholds = groups, thresholds
        self.reset()

    def reset(self) -> None:
        self.norm_sums: dict[str, torch.Tensor] = {}
        self.clipped_counts: dict[str, torch.Tensor] = {}
        self.steps = 0

    @torch.no_grad()
    def clip(self) -> dict[str, torch.Tensor]:
        """Clip in place (gradients must be unscaled); returns each group's norm before clipping."""
        norms = {}
        for name, parameters in self.groups.items():
            norm = nn.utils.clip_grad_norm_(parameters, self.thresholds[name])
            norms[name] = norm
            self.norm_sums[name] = self.norm_sums.get(name, 0) + norm
            self.clipped_counts[name] = self.clipped_counts.get(name, 0) + (norm > self.thresholds[name]).float()
        self.steps += 1
        return norms

    def epoch_statistics(self) -> dict[str, float]:
        """{"grad_norm/<group>": mean norm, "clipped/<group>": fraction of steps clipped}; then resets."""
        statistics = {}
        for name in self.norm_sums:
            statistics[f"grad_norm/{name}"] = float(self.norm_sums[name]) / max(self.steps, 1)
            statistics[f"clipped/{name}"] = float(self.clipped_counts[name]) / max(self.steps, 1)
        self.reset()
        return statistics


CLIP_HISTORY = 100
CLIP_WARMUP_STEPS = 10


class ClipPenalty:
    """loss -> (W x sum_groups max(0, ||grad loss||_group - tau_group)^2, its statistics)."""

    def __init__(self, groups: dict[str, list[nn.Parameter]], weight: float, thresholds: Optional[dict[str, float]], quantile: float):
        self.groups, self.weight, self.thresholds, self.quantile = groups, weight, thresholds, quantile
        self.history: dict[str, list[torch.Tensor]] = {name: [] for name in groups}  # auto: recent norms, on the device

    @classmethod
    def from_config(cls, config, model: nn.Module) -> "ClipPenalty":
        groups = parameter_groups(model)
        fixed = config.clip_penalty_threshold == "fixed"
        thresholds = parse_group_thresholds(config.group_clip_norms, config.group_clip_norm, list(groups)) if fixed else None
        return cls(groups, config.lambda_clip, thresholds, config.clip_penalty_quantile)

    def threshold(self, name: str, norm: torch.Tensor) -> Optional[torch.Tensor]:
        """tau of a group: fixed, or the quantile of its recent norms (None while too few are known)."""
        if self.thresholds is not None:
            return norm.new_tensor(self.thresholds[name])
        history = self.history[name]
        tau = torch.quantile(torch.stack(history), self.quantile) if len(history) >= CLIP_WARMUP_STEPS else None
        history.append(norm.detach())
        del history[:-CLIP_HISTORY]
        return tau

    def __call__(self, loss: torch.Tensor) -> tuple[torch.Tensor, dict]:
        names = list(self.groups)
        parameters = [parameter for name in names for parameter in self.groups[name]]
        gradients = torch.autograd.grad(loss, parameters, create_graph=True, allow_unused=True)
        penalty, excess_groups, start = loss.new_zeros(()), loss.new_zeros(()), 0
        for name in names:
            count = len(self.groups[name])
            squares = [gradient.pow(2).sum() for gradient in gradients[start : start + count] if gradient is not None]
            start += count
            if not squares:
                continue
            norm = torch.stack(squares).sum().clamp_min(1e-24).sqrt()  # the floor keeps sqrt's derivative finite
            tau = self.threshold(name, norm)
            if tau is not None:
                excess = torch.relu(norm - tau)
                penalty = penalty + excess.pow(2)
                excess_groups = excess_groups + (excess.detach() > 0).float()
        return self.weight * penalty, {"clip_penalty": penalty.detach(), "clip_groups_over": excess_groups}


# -------------------------------------------------------------------------------- dynamic sampling
def sampling_weights(running_loss: torch.Tensor, temperature: float, kl_weight: float) -> torch.Tensor:
    """The module docstring's q over windows, from running losses [N] (any non-negative scale)."""
    relative = running_loss / running_loss.mean().clamp_min(1e-12)
    return torch.softmax(relative / (temperature * (1.0 + kl_weight)), dim=0)


def weight_statistics(weights: torch.Tensor) -> dict[str, float]:
    n = weights.numel()
    kl = float((weights * (weights.clamp_min(1e-30) * n).log()).sum())
    return {"sampling_kl": kl, "sampling_ess": float(1.0 / weights.pow(2).sum()) / n, "sampling_max_ratio": float(weights.max() * n)}


class IndexedDataset(Dataset):
    """Sets each item's index, so the trainer knows which windows a batch holds."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        return replace(self.dataset[index], index=index)

    def __getattr__(self, name):  # the wrapped dataset's attributes (scaler, frequency, ...)
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)


class DynamicSampler(Sampler):
    """N draws with replacement from the epoch's weights, seeded by (seed, epoch) like the uniform
    sampler, so every process and a resumed run draw the same windows."""

    def __init__(self, size: int, seed: int, temperature: float, kl_weight: float, loss_decay: float):
        self.size, self.seed = size, seed
        self.temperature, self.kl_weight, self.loss_decay = temperature, kl_weight, loss_decay
        self.running_loss = torch.zeros(size, dtype=torch.float64)
        self.seen = torch.zeros(size, dtype=torch.bool)
        self.epoch: Optional[int] = None
        self.weights = torch.full((size,), 1.0 / size, dtype=torch.float64)

    def current_losses(self) -> torch.Tensor:
        """Running losses, with windows not seen yet at the mean of the seen ones (all equal before any)."""
        if not self.seen.any():
            return torch.ones(self.size, dtype=torch.float64)
        return torch.where(self.seen, self.running_loss, self.running_loss[self.seen].mean())

    def set_epoch(self, epoch: int) -> None:
        """Fix this epoch's weights from the running losses (once: a replay keeps them)."""
        if self.epoch != epoch:
            self.epoch = epoch
            self.weights = sampling_weights(self.current_losses(), self.temperature, self.kl_weight)

    @torch.no_grad()
    def record(self, indices: torch.Tensor, losses: torch.Tensor) -> None:
        """Fold per-window losses [b] of windows `indices` [b] into the running losses."""
        indices, losses = indices.cpu().long(), losses.detach().cpu().double()
        previous = torch.where(self.seen[indices], self.running_loss[indices], losses)
        self.running_loss[indices] = (1 - self.loss_decay) * previous + self.loss_decay * losses
        self.seen[indices] = True

    def statistics(self) -> dict[str, float]:
        return weight_statistics(self.weights)

    def __iter__(self):
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch or 0))
        return iter(torch.multinomial(self.weights, self.size, replacement=True, generator=generator).tolist())

    def __len__(self) -> int:
        return self.size

    def state_dict(self) -> dict:
        return {"running_loss": self.running_loss, "seen": self.seen, "epoch": self.epoch, "weights": self.weights}

    def load_state_dict(self, state: dict) -> None:
        self.running_loss, self.seen, self.epoch, self.weights = state["running_loss"], state["seen"], state["epoch"], state["weights"]


def per_window_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """[B, H, c] x 2 -> the MSE of each window [B] (detached): what dynamic sampling ranks windows by."""
    return (prediction.detach().float() - target.float()).pow(2).flatten(1).mean(dim=1)
