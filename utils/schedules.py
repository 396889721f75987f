"""Learning-rate schedules selected by `--lradj`, stepped once per optimizer step.

Per-epoch schedules are expressed per step (epoch = step // steps_per_epoch) so one scheduler
object covers every option and resumes from its state_dict. Epochs are counted from 0.

    type1     lr for epochs 0 and 1, then halved every epoch (Time-Series-Library's exact sequence:
              its adjust_learning_rate(epoch + 1) sets lr * 0.5 ** epoch after epoch `epoch`)
    type2     Time-Series-Library's fixed table: 5e-5 from epoch 2, 1e-5 from 4, 5e-6 from 6, ...
    type3     lr for epochs 0-3, then x0.9 per epoch (upstream Time-LLM's exact sequence)
    TST       OneCycle over all training steps with warm-up fraction --pct_start (PatchTST / Time-LLM)
    COS       cosine from lr to 1e-8 over --train_epochs, per epoch
    constant  lr throughout
Upstream Time-LLM builds OneCycle whatever --lradj says and then overwrites its values; here each
option is only what its name says.
"""
import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, OneCycleLR

_TYPE2_TABLE = {2: 5e-5, 4: 1e-5, 6: 5e-6, 8: 1e-6, 10: 5e-7, 15: 1e-7, 20: 5e-8}
COSINE_MIN_LR = 1e-8


def epoch_factor(schedule: str, epoch: int, train_epochs: int, base_lr: float) -> float:
    """Multiplier of the base learning rate during `epoch` (0-based) for the per-epoch schedules."""
    if schedule == "type1":
        return 0.5 ** max(epoch - 1, 0)
    if schedule == "type2":
        reached = [lr for start, lr in _TYPE2_TABLE.items() if epoch >= start]
        return reached[-1] / base_lr if reached else 1.0
    if schedule == "type3":
        return 0.9 ** max(epoch - 3, 0)
    if schedule == "COS":
        cosine = 0.5 * (1 + math.cos(math.pi * min(epoch, train_epochs) / train_epochs))
        return (COSINE_MIN_LR + (base_lr - COSINE_MIN_LR) * cosine) / base_lr
    if schedule == "constant":
        return 1.0
    raise ValueError(f"--lradj {schedule!r} is not a per-epoch schedule")


def build_scheduler(
    optimizer: Optimizer, schedule: str, steps_per_epoch: int, train_epochs: int, total_steps: int, pct_start: float
) -> LRScheduler:
    """total_steps: optimizer steps the run will take (epochs x steps per epoch, or --max_steps)."""
    if schedule == "TST":
        base_lr = optimizer.param_groups[0]["lr"]
        return OneCycleLR(optimizer, max_lr=base_lr, total_steps=max(total_steps, 2), pct_start=pct_start)
    base_lr = optimizer.param_groups[0]["lr"]
    return LambdaLR(
        optimizer, lambda step: epoch_factor(schedule, step // steps_per_epoch, train_epochs, base_lr)
    )
