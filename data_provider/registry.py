"""Dataset registry: `--data` name -> Dataset class and the default file under `dataset/`.

`--root_path/--data_path` override the default file; `custom` takes any CSV with a `date` column.
"""
import os
from dataclasses import dataclass
from typing import Optional

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from data_provider.batch import Batch
from data_provider.m4 import M4Dataset
from data_provider.tabular import CustomDataset, ETTHourDataset, ETTMinuteDataset, infer_file_frequency
from models import model_entry


@dataclass(frozen=True)
class DatasetEntry:
    dataset_class: type
    root_path: Optional[str]  # None: the user must give --root_path/--data_path
    data_path: Optional[str]
    freq: Optional[str]  # None: inferred from the file's dates
    prompt_name: str  # dataset/prompt_bank/<prompt_name>.txt
    seasonal_period: int = 0  # steps per season for the seasonal-naive baseline (0: from --freq)


DATASETS = {
    "ETTh1": DatasetEntry(ETTHourDataset, "./dataset/ETT-small/", "ETTh1.csv", "h", "ETTh1", 24),
    "ETTh2": DatasetEntry(ETTHourDataset, "./dataset/ETT-small/", "ETTh2.csv", "h", "ETTh2", 24),
    "ETTm1": DatasetEntry(ETTMinuteDataset, "./dataset/ETT-small/", "ETTm1.csv", "t", "ETTm1", 96),
    "ETTm2": DatasetEntry(ETTMinuteDataset, "./dataset/ETT-small/", "ETTm2.csv", "t", "ETTm2", 96),
    "Weather": DatasetEntry(CustomDataset, "./dataset/weather/", "weather.csv", "t", "Weather", 144),
    "ECL": DatasetEntry(CustomDataset, "./dataset/electricity/", "electricity.csv", "h", "ECL", 24),
    "Traffic": DatasetEntry(CustomDataset, "./dataset/traffic/", "traffic.csv", "h", "Traffic", 24),
    "Exchange": DatasetEntry(CustomDataset, "./dataset/exchange_rate/", "exchange_rate.csv", "d", "Exchange", 7),
    "ILI": DatasetEntry(CustomDataset, "./dataset/illness/", "national_illness.csv", "w", "ILI", 52),
    "custom": DatasetEntry(CustomDataset, None, None, None, "custom"),
    "m4": DatasetEntry(M4Dataset, "./dataset/m4/", None, "h", "m4"),
}


# Steps per season by sampling frequency, for datasets without their own (custom CSVs).
SEASONAL_PERIODS = {"h": 24, "t": 60, "15min": 96, "10min": 144, "s": 60, "d": 7, "b": 5, "w": 52, "m": 12, "q": 4}


def seasonal_period(config, dataset) -> int:
    """The season of the seasonal-naive baseline: M4's pattern frequency, the dataset's own, or --freq's."""
    if getattr(dataset, "frequency", None):
        return int(dataset.frequency)
    return dataset_entry(config.data).seasonal_period or SEASONAL_PERIODS.get(str(config.freq).lower(), 1)


def dataset_entry(name: str) -> DatasetEntry:
    if name not in DATASETS:
        raise ValueError(f"--data {name!r} is not a known dataset; valid: {', '.join(DATASETS)}")
    return DATASETS[name]


def build_dataset(config, split: str):
    """The split's dataset; with --use_hybrid its windows also carry their statistical forecasts."""
    dataset = dataset_entry(config.data).dataset_class(config, split)
    if getattr(config, "use_hybrid", 0):
        from data_provider.statistical import WithStatisticalForecasts, cached_forecasts

        dataset = WithStatisticalForecasts(dataset, *cached_forecasts(config, split, dataset))
    return dataset


def resolve_data_defaults(config) -> list[str]:
    """Fill what the dataset and model names imply: file location, frequency (a custom CSV's from its
    dates), sample layout. Returns notes on what was inferred, for the run's log."""
    notes = []
    entry = dataset_entry(config.data)
    if config.root_path is None:
        if entry.root_path is None:
            raise ValueError(f"--data {config.data} needs --root_path and --data_path")
        config.root_path = entry.root_path
    if config.data_path is None:
        if entry.data_path is None and config.data != "m4":
            raise ValueError(f"--data {config.data} needs --data_path")
        config.data_path = entry.data_path
    if config.freq is None and entry.freq is None:
        path = os.path.join(config.root_path, config.data_path)
        config.freq, regular = infer_file_frequency(path)
        how = "its dates" if regular else "its most common step between dates (the dates are irregular; give --freq if this is wrong)"
        notes.append(f"--freq {config.freq}: inferred from {how} in {path}")
    elif config.freq is None:
        config.freq = entry.freq
    if config.prompt_name is None and config.model == "TimeLLM":  # the prompt bank is TimeLLM's alone
        config.prompt_name = entry.prompt_name
    if config.sample_layout == "auto":
        config.sample_layout = model_entry(config.model).sample_layout
    return notes


def resolve_channels(config, dataset) -> None:
    """enc_in/dec_in/c_out are the variables each sample carries; a given value must agree."""
    channels = dataset.channels_per_sample
    for name in ("enc_in", "dec_in", "c_out"):
        given = getattr(config, name)
        if given is not None and given != channels:
            raise ValueError(
                f"--{name} {given} disagrees with the data: each sample has {channels} variable(s) "
                f"(--features {config.features}, --sample_layout {config.sample_layout}); leave --{name} out"
            )
        setattr(config, name, channels)


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of everything random that an epoch's data loading draws: its permutation, its loader
    workers' seeds. A pure function of (--seed, epoch), so a resumed run redraws the same."""
    return seed * 100_003 + epoch


class EpochShuffleSampler(Sampler):
    """A permutation of the dataset drawn from (seed, epoch) alone, so a resumed run can replay
    the epoch it stopped in (and skip what it had done) without the global random state."""

    def __init__(self, size: int, seed: int):
        self.size, self.seed, self.epoch = size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        return iter(torch.randperm(self.size, generator=generator).tolist())

    def __len__(self) -> int:
        return self.size


class WindowSubset(Dataset):
    """The windows `indices` of a dataset, which keeps its other attributes (scaler, columns, ...)."""

    def __init__(self, dataset: Dataset, indices: list[int]):
        self.dataset, self.indices = dataset, list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int):
        return self.dataset[self.indices[index]]

    def __getattr__(self, name):
        if name in ("dataset", "indices"):
            raise AttributeError(name)
        return getattr(self.dataset, name)


def build_loader(config, dataset, split: str, sampler: Optional[Sampler] = None) -> DataLoader:
    """Training batches are shuffled by epoch (or drawn by `sampler`, which must have set_epoch);
    evaluation keeps every window (no drop_last) in order.
    Each loader has its own generator (worker seeds), so iterating never draws from the global
    random state that dropout uses: a resumed run consumes it exactly as an uninterrupted one.
    Training workers are started anew each epoch: they then hold the dataset as `set_epoch` left it
    (M4's cut points depend on the epoch) and take their seeds from the generator, which the
    trainer seeds with `epoch_seed` before each epoch."""
    training = split == "train"
    return DataLoader(
        dataset,
        batch_size=config.batch_size if training else config.eval_batch_size,
        sampler=(sampler or EpochShuffleSampler(len(dataset), config.seed)) if training else None,
        drop_last=False,
        num_workers=config.num_workers,
        persistent_workers=config.num_workers > 0 and not training,
        generator=torch.Generator().manual_seed(config.seed),
        collate_fn=Batch.collate,
    )
