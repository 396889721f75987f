"""Learning-rate schedules selected by `--lradj`, stepped once per optimizer step.

Per-epoch schedules are expressed per step (epoch = step // steps_per_epoch) so one scheduler
object covers every option and resumes from its state_dict. Epochs are counted from 0.

Each name does what it says:
    type1     lr for epochs 0 and 1, then halved every epoch (Time-Series-Library's exact sequence:
              its adjust_learning_rate(epoch + 1) sets lr * 0.5 ** epoch after epoch `epoch`)
    type2     Time-Series-Library's fixed table: 5e-5 from epoch 2, 1e-5 from 4, 5e-6 from 6, ...
    type3     lr for epochs 0-3, then x0.9 per epoch
    TST       OneCycle over all training steps with warm-up fraction --pct_start (PatchTST / Time-LLM)
    COS       cosine from lr to 1e-8 over --train_epochs, per epoch
    constant  lr throughout

What upstream Time-LLM actually trains at (its run_main.py and run_m4.py), for reproduction runs:
    upstream_type1, upstream_type2, upstream_type3, upstream_constant
              Upstream builds OneCycleLR for every --lradj but COS and never steps it outside TST;
              its constructor sets the rate to lr / 25 (div_factor), and after epoch 0 upstream copies
              that rate into args.learning_rate before its per-epoch adjustment. So each of these is
              the schedule of the same name at lr / 25: with upstream's ETTh1 script (lr 0.01, type1)
              4e-4, 4e-4, 2e-4, 1e-4, ... (type2: lr / 25 for epochs 0 and 1, then the table).
    upstream_COS
              CosineAnnealingLR(T_max=20, eta_min=1e-8) stepped per epoch, whatever --train_epochs:
              it reaches 1e-8 at epoch 20 and climbs back after it.
    upstream_m4_type1
              upstream's run_m4.py, which does not copy the rate back: lr / 25 in epoch 0, then
              type1 at the full lr (lr, lr / 2, lr / 4, ... from epoch 1).
    TST is upstream's own (OneCycle stepped per batch over --train_epochs); it needs no twin.
"""
import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, OneCycleLR

_TYPE2_TABLE = {2: 5e-5, 4: 1e-5, 6: 5e-6, 8: 1e-6, 10: 5e-7, 15: 1e-7, 20: 5e-8}
COSINE_MIN_LR = 1e-8
UPSTREAM_ONE_CYCLE_DIVISOR = 25  # OneCycleLR's default div_factor: its starting rate is max_lr / 25
UPSTREAM_COSINE_PERIOD = 20  # upstream's CosineAnnealingLR T_max, in epochs
UPSTREAM_SCHEDULES = ("upstream_type1", "upstream_type2", "upstream_type3", "upstream_constant", "upstream_COS", "upstream_m4_type1")
LR_SCHEDULES = ("type1", "type2", "type3", "TST", "COS", "constant", *UPSTREAM_SCHEDULES)


def _cosine(base_lr: float, epoch: int, period: int) -> float:
    """CosineAnnealingLR's closed form: from base_lr at epoch 0 to 1e-8 at `period`, then back up."""
    return COSINE_MIN_LR + (base_lr - COSINE_MIN_LR) * 0.5 * (1 + math.cos(math.pi * epoch / period))


def epoch_factor(schedule: str, epoch: int, train_epochs: int, base_lr: float) -> float:
    """Multiplier of the base learning rate during `epoch` (0-based) for the per-epoch schedules."""
    if schedule == "upstream_COS":
        return _cosine(base_lr, epoch, UPSTREAM_COSINE_PERIOD) / base_lr
    if schedule == "upstream_m4_type1" and epoch >= 1:
        return epoch_factor("type1", epoch, train_epochs, base_lr)
    if schedule == "upstream_m4_type1":
        return 1 / UPSTREAM_ONE_CYCLE_DIVISOR
    if schedule == "upstream_type2" and epoch >= 2:  # the table holds rates, not multipliers
        return epoch_factor("type2", epoch, train_epochs, base_lr)
    if schedule in UPSTREAM_SCHEDULES:
        own = schedule.removeprefix("upstream_")
        return epoch_factor(own, epoch, train_epochs, base_lr) / UPSTREAM_ONE_CYCLE_DIVISOR
    if schedule == "type1":
        return 0.5 ** max(epoch - 1, 0)
    if schedule == "type2":
        reached = [lr for start, lr in _TYPE2_TABLE.items() if epoch >= start]
        return reached[-1] / base_lr if reached else 1.0
    if schedule == "type3":
        return 0.9 ** max(epoch - 3, 0)
    if schedule == "COS":
        return _cosine(base_lr, min(epoch, train_epochs), train_epochs) / base_lr
    if schedule == "constant":
        return 1.0
    raise ValueError(f"--lradj {schedule!r} is not a per-epoch schedule")


def build_scheduler(
    optimizer: Optimizer, schedule: str, steps_per_epoch: int, train_epochs: int, total_steps: int, pct_start: float
) -> LRScheduler:
    """total_steps: optimizer steps the run will take (epochs x steps per epoch, or --max_steps)."""
    if schedule == "TST":
        base_lr = optimizer.param_groups[0]["lr"]
        # OneCycle's warm-up phase must span at least one step (pct_start x total > 1), else it divides
        # by zero: a very short run (a smoke test's --max_steps 5) gets the shortest valid cycle.
        return OneCycleLR(optimizer, max_lr=base_lr, total_steps=max(total_steps, 2, math.floor(1 / pct_start) + 1), pct_start=pct_start)
    base_lr = optimizer.param_groups[0]["lr"]
    return LambdaLR(
        optimizer, lambda step: epoch_factor(schedule, step // steps_per_epoch, train_epochs, base_lr)
    )
