import os
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from utils.checkpoint import atomic_save, load_model_checkpoint, save_model_checkpoint, trainable_state_dict


class WithFrozenBackbone(nn.Module):
    frozen_prefixes = ("backbone",)

    def __init__(self):
        super().__init__()
        self.backbone = nn.Linear(4, 4)
        self.backbone.requires_grad_(False)
        self.backbone.register_buffer("cache", torch.ones(2))
        self.head = nn.Linear(4, 2)
        self.register_buffer("memory", torch.zeros(3))


def config(**overrides):
    values = dict(seq_len=96, pred_len=24, model="X", group_of={"seq_len": "task", "pred_len": "task", "model": "model", "learning_rate": "optimization"}, learning_rate=0.1)
    values.update(overrides)
    return SimpleNamespace(**values)


def test_checkpoint_holds_trained_state_and_buffers_but_no_frozen_weights(tmp_path):
    model = WithFrozenBackbone()
    assert set(trainable_state_dict(model)) == {"head.weight", "head.bias", "memory"}
    path = str(tmp_path / "checkpoint.pt")
    save_model_checkpoint(path, model, config())
    other = WithFrozenBackbone()
    load_model_checkpoint(path, other, config(learning_rate=0.5))  # training flags may differ
    torch.testing.assert_close(other.head.weight, model.head.weight)


def test_loading_names_every_differing_architecture_flag(tmp_path):
    path = str(tmp_path / "checkpoint.pt")
    save_model_checkpoint(path, WithFrozenBackbone(), config())
    with pytest.raises(ValueError, match=r"--seq_len 96 in the checkpoint vs 512 now"):
        load_model_checkpoint(path, WithFrozenBackbone(), config(seq_len=512))


def test_a_crash_mid_save_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    path = str(tmp_path / "checkpoint.pt")
    atomic_save({"value": torch.tensor(1.0)}, path)

    def crashing_save(payload, stream, *args, **kwargs):
        stream.write(b"partial bytes")
        raise KeyboardInterrupt("killed mid-save")

    monkeypatch.setattr(torch, "save", crashing_save)
    with pytest.raises(KeyboardInterrupt):
        atomic_save({"value": torch.tensor(2.0)}, path)
    monkeypatch.undo()
    assert torch.load(path)["value"].item() == 1.0
    assert os.listdir(tmp_path) == ["checkpoint.pt"]  # no temporary file left behind
