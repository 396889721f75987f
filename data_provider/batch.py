"""The records the datasets serve: one `Window` per item, one `Batch` per loader step.

Every dataset's item is a Window of numpy arrays; the loaders collate Windows into a Batch of tensors
(`Batch.collate`, the loaders' collate_fn). Fields that a dataset has no use for are None (M4 has no
calendar marks; every tabular target value is real), never a tensor whose meaning changes by dataset.
"""
from dataclasses import dataclass, fields, replace
from typing import Optional

import numpy as np
import torch


@dataclass
class Window:
    inputs: np.ndarray  # [seq_len, C]
    targets: np.ndarray  # [label_len + pred_len, C]: the last label_len known steps, then the future
    window_position: np.ndarray  # [2] int64: (series, first row of the input) in tabular data, (series, cut) in M4
    input_marks: Optional[np.ndarray] = None  # [seq_len, F] time features of the input steps
    target_marks: Optional[np.ndarray] = None  # [label_len + pred_len, F]
    input_mask: Optional[np.ndarray] = None  # [seq_len, C] 1 where an input value is real (M4 zero padding); None: all
    target_mask: Optional[np.ndarray] = None  # [label_len + pred_len, C] likewise for the targets
    index: Optional[int] = None  # the item's index in its dataset (dynamic sampling records losses by it)
    # --use_hybrid (data_provider/statistical.py): each variable's K statistical forecasts of the future,
    # their confidences, and the input window's characteristics.
    statistical_forecasts: Optional[np.ndarray] = None  # [C, K, pred_len]
    statistical_confidences: Optional[np.ndarray] = None  # [C, K]
    window_characteristics: Optional[np.ndarray] = None  # [C, 4]


@dataclass
class Batch:
    """Window fields stacked along a leading batch dimension B (shapes as in Window, with B first)."""

    inputs: torch.Tensor
    targets: Optional[torch.Tensor]  # None at inference, where the future is unknown
    window_position: Optional[torch.Tensor]
    input_marks: Optional[torch.Tensor] = None
    target_marks: Optional[torch.Tensor] = None
    input_mask: Optional[torch.Tensor] = None
    target_mask: Optional[torch.Tensor] = None
    index: Optional[torch.Tensor] = None
    statistical_forecasts: Optional[torch.Tensor] = None
    statistical_confidences: Optional[torch.Tensor] = None
    window_characteristics: Optional[torch.Tensor] = None

    @classmethod
    def collate(cls, windows: list[Window]) -> "Batch":
        stacked = {}
        for item in fields(Window):
            values = [getattr(window, item.name) for window in windows]
            # Stacked as torch's default collate does: contiguous, whatever the memory order of the items.
            stacked[item.name] = None if values[0] is None else torch.stack([torch.as_tensor(value) for value in values])
        return cls(**stacked)

    def _map(self, function) -> "Batch":
        return replace(self, **{item.name: function(getattr(self, item.name)) for item in fields(self) if getattr(self, item.name) is not None})

    def to(self, device, non_blocking: bool = False) -> "Batch":
        """What Accelerate's loaders call to move a batch to the device."""
        return self._map(lambda tensor: tensor.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> "Batch":
        return self._map(torch.Tensor.pin_memory)

    def __len__(self) -> int:
        return self.inputs.shape[0]
