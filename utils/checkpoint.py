"""Checkpoints of what was trained: trainable parameters and module buffers, never frozen weights.

A run folder holds
    checkpoint.pt              the best model: weights, configuration and data scaling; what testing,
                               inference and fine-tuning (--init_checkpoint) need, nothing more
    checkpoint_last.pt         the full training state at the end of the latest epoch (optimizer,
                               scheduler, AMP scaler, progress, random states: see utils/checkpointer.py),
                               for resuming an interrupted run; deleted when the run finishes
    checkpoint_step_<N>.pt     with --save_steps: the full training state every N optimizer steps
The optimizer state is the bulk (Adam keeps two moments per parameter: twice the weights), hence
only in the files that resume needs.

A frozen submodule (the LLM backbone) is listed by the model in `frozen_prefixes`; its parameters
and buffers are left out and come from the backbone itself on load, except parameters that train
inside it (LoRA adapters). Every write goes to a temporary file in the same folder and is renamed
over the target, so a crash mid-save leaves the previous checkpoint intact; a temporary file left
by a killed process is swept when a run next uses the folder. Files are created with the usual
permissions (0644 under umask 022), readable by the colleagues who test them.
Loading compares the architecture flags and names any that differ.
"""
import glob
import os
import random
import re
import uuid
from typing import Any

import numpy as np
import torch
from torch import nn

from models import MASKED_PRETRAIN
from utils.config import architecture_of, upgrade_saved_config
from utils.run_outputs import remove_if_present

CHECKPOINT_NAME = "checkpoint.pt"
LAST_STATE_NAME = "checkpoint_last.pt"
STEP_CHECKPOINT = "checkpoint_step_{}.pt"
TEMPORARY_PATTERN = ".tmp-*.pt"


def atomic_save(payload: Any, path: str) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    temporary = os.path.join(folder, f".tmp-{uuid.uuid4().hex}.pt")
    # Mode 0666 before the umask, as open() would give: tempfile.mkstemp's 0600 hid checkpoints from colleagues.
    handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(handle, "wb") as stream:
            torch.save(payload, stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        remove_if_present(temporary)
        raise


def trainable_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """State entries that training changes or modules own: every trainable parameter, and the other
    entries except frozen parameters and whatever lies under the model's `frozen_prefixes`."""
    frozen_prefixes = tuple(prefix + "." for prefix in getattr(model, "frozen_prefixes", ()))
    trainable, frozen = set(), set()
    for name, parameter in model.named_parameters():
        (trainable if parameter.requires_grad else frozen).add(name)
    return {
        name: tensor.detach().cpu().clone()
        for name, tensor in model.state_dict().items()
        if name in trainable or (name not in frozen and not name.startswith(frozen_prefixes))
    }


def sweep_temporary_files(run_dir: str) -> list[str]:
    """Delete the temporary files of saves that were killed part-way in this run folder."""
    stale = glob.glob(os.path.join(run_dir, TEMPORARY_PATTERN))
    for path in stale:
        os.remove(path)
    return stale


def resolve_checkpoint_path(path: str, flag: str = "--checkpoint") -> str:
    """A run folder or a checkpoint file -> the checkpoint file; a clear error naming `flag` when missing."""
    candidate = os.path.join(path, CHECKPOINT_NAME) if os.path.isdir(path) else path
    if not os.path.isfile(candidate):
        raise FileNotFoundError(f"{flag} {path}: no checkpoint file found (expected a run folder or a .pt file)")
    return candidate


def save_model_checkpoint(path: str, model: nn.Module, config, **extra: Any) -> None:
    payload = {"model": trainable_state_dict(model), "config": {k: v for k, v in vars(config).items()}, **extra}
    atomic_save(payload, path)


LORA_FLAGS = ("use_lora", "lora_r", "lora_alpha", "lora_dropout", "lora_target_modules")
ADAPTER_MARK = "lora_"  # in the state names of peft's LoRA adapters


def check_architecture(saved_config: dict, config, path: str, ignored: tuple = ()) -> None:
    # Both in today's terms: a hand-built namespace, like an old checkpoint's, may lack newer flags.
    saved, current = architecture_of(upgrade_saved_config(saved_config)), architecture_of(upgrade_saved_config(vars(config)))
    differing = {name: (saved.get(name), value) for name, value in current.items() if saved.get(name) != value and name not in ignored}
    if differing:
        listed = ", ".join(f"--{name} {old!r} in the checkpoint vs {new!r} now" for name, (old, new) in differing.items())
        raise ValueError(f"checkpoint {path} was trained with a different architecture: {listed}")


def read_checkpoint(path: str) -> dict:
    """A checkpoint's payload, its configuration in today's flags (utils.config.upgrade_saved_config)."""
    payload = torch.load(path, map_location="cpu", weights_only=False)
    payload["config"] = upgrade_saved_config(payload["config"])
    return payload


def load_model_checkpoint(path: str, model: nn.Module, config=None, new_adapters: bool = False) -> dict:
    """Load trained state into `model` (after checking `config`'s architecture); returns the payload.
    new_adapters: `model` adds LoRA adapters to a run trained without them (bad-case fine-tuning,
    utils/bad_cases.py): the LoRA flags may differ and the adapters keep their fresh initialisation."""
    payload = read_checkpoint(path)
    if config is not None:
        check_architecture(payload["config"], config, path, LORA_FLAGS if new_adapters else ())
    expected, saved = set(trainable_state_dict(model)), payload["model"]
    if new_adapters:
        expected = {name for name in expected if ADAPTER_MARK not in name}
    pretrained = payload["config"].get("task_name") == MASKED_PRETRAIN and getattr(config, "task_name", None) != MASKED_PRETRAIN
    if pretrained:  # a self-supervised encoder: its pre-training head is left behind, the task head starts fresh
        heads = tuple(f"{name}." for name in getattr(model, "task_heads", ()))
        expected = {name for name in expected if not name.startswith(heads)}
        saved = {name: value for name, value in saved.items() if not name.startswith(heads)}
    missing, unexpected = sorted(expected - set(saved)), sorted(set(saved) - expected)
    if missing or unexpected:
        raise ValueError(f"checkpoint {path} does not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
    model.load_state_dict(saved, strict=False)
    return payload


def step_checkpoints(run_dir: str) -> list[tuple[int, str]]:
    """(step, path) of the run folder's step checkpoints, oldest first."""
    found = []
    for path in glob.glob(os.path.join(run_dir, STEP_CHECKPOINT.format("*"))):
        match = re.fullmatch(STEP_CHECKPOINT.format(r"(\d+)"), os.path.basename(path))
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def prune_step_checkpoints(run_dir: str, keep: int) -> None:
    """Delete all but the newest `keep` step checkpoints (keep 0: delete none)."""
    if keep > 0:
        for _, path in step_checkpoints(run_dir)[:-keep]:
            os.remove(path)


def resolve_resume_path(path: str) -> str:
    """A checkpoint file, or a run folder -> the one of its training states that is furthest on: the
    newest step checkpoint or the last epoch's state."""
    if os.path.isdir(path):
        last_state = os.path.join(path, LAST_STATE_NAME)
        # On a tie (a step checkpoint at an epoch's last step) the epoch's state, which has validated too.
        candidates = [last_state] if os.path.isfile(last_state) else []
        candidates += [candidate for _, candidate in step_checkpoints(path)[-1:]]
        if not candidates:
            raise FileNotFoundError(
                f"--resume_from_checkpoint {path}: no training state in this folder (a finished run keeps only its best "
                "model, checkpoint.pt: start from its weights with --init_checkpoint)"
            )
        path = max(candidates, key=saved_global_step)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--resume_from_checkpoint {path}: no checkpoint file found")
    return path


def saved_global_step(path: str) -> int:
    """The optimizer step a training-state checkpoint was written at."""
    payload = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    return payload["training_state"]["progress"]["global_step"]


def capture_rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
