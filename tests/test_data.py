import hashlib
import os
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from data_provider.m4 import M4Dataset
from data_provider.registry import EpochShuffleSampler, build_loader, dataset_entry
from data_provider.tabular import CustomDataset, ETTHourDataset, ETTMinuteDataset
from tests.conftest import ROOT
from utils.timefeatures import time_features

ETTH1 = os.path.join(ROOT, "dataset", "ETT-small", "ETTh1.csv")


def data_config(**overrides):
    values = dict(
        data="ETTh1", root_path=os.path.join(ROOT, "dataset", "ETT-small"), data_path="ETTh1.csv", target="OT",
        features="M", seq_len=96, label_len=48, pred_len=96, percent=100, freq="h", embed="timeF",
        sample_layout="all_channels", seasonal_patterns="Hourly", batch_size=32, eval_batch_size=8, num_workers=0,
        seed=2021,
    )
    values.update(overrides)
    return SimpleNamespace(**values)


def test_shipped_data_matches_checksums():
    folder = os.path.join(ROOT, "dataset")
    for line in open(os.path.join(folder, "SHA256SUMS")):
        digest, name = line.split()
        with open(os.path.join(folder, name), "rb") as handle:
            assert hashlib.sha256(handle.read()).hexdigest() == digest, name


@pytest.mark.parametrize("layout, factor", [("all_channels", 1), ("per_channel", 7)])
def test_etth1_split_sizes_follow_time_series_library(layout, factor):
    sizes = [len(ETTHourDataset(data_config(sample_layout=layout), split)) for split in ("train", "val", "test")]
    assert sizes == [8449 * factor, 2785 * factor, 2785 * factor]


def test_per_channel_item_is_a_column_of_the_all_channel_item():
    every = ETTHourDataset(data_config(), "test")
    single = ETTHourDataset(data_config(sample_layout="per_channel"), "test")
    x_all, y_all, mark_all, position_all = (getattr(every[100], name) for name in ("inputs", "targets", "input_marks", "window_position"))
    one = single[3 * single.windows_per_channel + 100]
    x_one, y_one, mark_one, position_one = one.inputs, one.targets, one.input_marks, one.window_position
    np.testing.assert_array_equal(x_one[:, 0], x_all[:, 3])
    np.testing.assert_array_equal(y_one[:, 0], y_all[:, 3])
    np.testing.assert_array_equal(mark_one, mark_all)
    np.testing.assert_array_equal(position_one, position_all)  # the same rows of the file
    assert x_all.shape == (96, 7) and y_all.shape == (48 + 96, 7) and mark_all.shape == (96, 4)


def test_windows_are_contiguous_and_the_label_overlaps_the_input():
    dataset = ETTHourDataset(data_config(), "val")
    x, y, position = dataset[5].inputs, dataset[5].targets, dataset[5].window_position
    np.testing.assert_array_equal(y[:48], x[-48:])
    x_next = dataset[6].inputs
    np.testing.assert_array_equal(x_next[:-1], x[1:])
    # The position is the file row of x's first step: val starts seq_len rows before month 12.
    assert position.tolist() == [0, 12 * 30 * 24 - 96 + 5]


def test_scaler_is_fitted_on_training_rows_only(tmp_path):
    frame = pd.read_csv(ETTH1)
    baseline = ETTHourDataset(data_config(), "train").scaler
    frame.loc[12 * 30 * 24 :, frame.columns[1:]] = 1e6  # everything after the training months
    frame.to_csv(tmp_path / "ETTh1.csv", index=False)
    changed = ETTHourDataset(data_config(root_path=str(tmp_path)), "train").scaler
    np.testing.assert_allclose(changed.mean_, baseline.mean_)
    np.testing.assert_allclose(changed.scale_, baseline.scale_)
    train_rows = frame.iloc[: 12 * 30 * 24, 1:].to_numpy()
    np.testing.assert_allclose(baseline.mean_, train_rows.mean(axis=0), rtol=1e-6)


def test_features_s_and_ms_put_the_target_last():
    single = ETTHourDataset(data_config(features="S"), "train")
    assert single.columns == ["OT"]
    multi = ETTHourDataset(data_config(features="MS", target="HUFL"), "train")
    assert multi.columns[-1] == "HUFL" and len(multi.columns) == 7


def test_percent_keeps_the_first_training_windows():
    full = ETTHourDataset(data_config(), "train")
    tenth = ETTHourDataset(data_config(percent=10), "train")
    assert len(tenth) == (8640 - 96) * 10 // 100 + 96 - 96 - 96 + 1
    np.testing.assert_array_equal(tenth[0].inputs, full[0].inputs)
    assert len(ETTHourDataset(data_config(percent=10), "test")) == len(ETTHourDataset(data_config(), "test"))


def test_custom_csv_split_and_odd_column_names():
    config = data_config(data="Weather", root_path=os.path.join(ROOT, "dataset", "weather"), data_path="weather.csv", freq="10min")
    train, val, test = (CustomDataset(config, split) for split in ("train", "val", "test"))
    rows = 52696
    n_train, n_test = int(rows * 0.7), int(rows * 0.2)
    assert len(train) == n_train - 96 - 96 + 1
    assert len(val) == rows - n_train - n_test - 96 + 1
    assert len(test) == n_test - 96 + 1
    assert len(train.columns) == 21 and train.columns[-1] == "OT"
    assert any("\ufffd" in name for name in train.columns)
    assert train[0].input_marks.shape == (96, 5)  # minute-level time features


def test_minute_ett_uses_four_times_the_rows(tmp_path):
    dates = pd.date_range("2016-07-01", periods=20 * 30 * 24 * 4, freq="15min")
    values = np.random.default_rng(0).normal(size=(len(dates), 2))
    pd.DataFrame({"date": dates, "A": values[:, 0], "OT": values[:, 1]}).to_csv(tmp_path / "m.csv", index=False)
    config = data_config(root_path=str(tmp_path), data_path="m.csv", freq="t")
    assert len(ETTMinuteDataset(config, "train")) == 12 * 30 * 24 * 4 - 96 - 96 + 1
    assert len(ETTMinuteDataset(config, "test")) == 4 * 30 * 24 * 4 - 96 + 1


def test_time_features_timef_and_fixed():
    dates = pd.Series(pd.to_datetime(["2016-07-01 00:00", "2016-12-31 23:00"]))
    hourly = time_features(dates, "h", "timeF")
    np.testing.assert_allclose(hourly[0, 0], -0.5)  # hour 0
    np.testing.assert_allclose(hourly[1, 0], 0.5)  # hour 23
    fixed = time_features(dates, "h", "fixed")
    np.testing.assert_array_equal(fixed[1], [12, 31, 5, 23, 0])
    with pytest.raises(ValueError, match="--freq"):
        time_features(dates, "fortnightly", "timeF")


def test_evaluation_loader_keeps_every_window():
    dataset = ETTHourDataset(data_config(), "test")
    loader = build_loader(data_config(eval_batch_size=64), dataset, "test")
    assert sum(len(batch) for batch in loader) == 2785


def test_m4_validation_is_carved_from_training_series():
    config = data_config(data="m4", root_path=os.path.join(ROOT, "dataset", "m4"), seasonal_patterns="Hourly",
                         seq_len=96, label_len=48, pred_len=48)
    train, val, test = (M4Dataset(config, split) for split in ("train", "val", "test"))
    assert len(train) == len(val) == len(test) == 414
    x, y, x_mask, y_mask = val[0].inputs, val[0].targets, val[0].input_mask, val[0].target_mask
    series = val.train_series[0]
    np.testing.assert_allclose(y[48:, 0], series[-48:])  # validation truth: the end of the training series
    np.testing.assert_allclose(x[-1, 0], series[-49])
    assert len(train.history[0]) == len(series) - 48  # training never sees the validation horizon
    y_test = test[0].targets
    np.testing.assert_allclose(y_test[:48, 0], series[-48:])
    assert y_mask.sum() == 96 and x_mask.sum() == 96


def test_m4_missing_file_is_named(tmp_path):
    config = data_config(data="m4", root_path=str(tmp_path), seasonal_patterns="Yearly", pred_len=6)
    with pytest.raises(FileNotFoundError, match="Yearly-train.csv"):
        M4Dataset(config, "train")


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(ValueError, match="ETTh1, ETTh2"):
        dataset_entry("ETTh9")


def test_every_registered_dataset_has_a_prompt_description():
    from data_provider.registry import DATASETS

    for name, entry in DATASETS.items():
        path = os.path.join(ROOT, "dataset", "prompt_bank", f"{entry.prompt_name}.txt")
        assert os.path.getsize(path) > 100, name


def test_training_order_depends_on_seed_and_epoch_only():
    """What makes a resumed run replay its epoch: the permutation comes from (seed, epoch)."""
    orders = {}
    for seed, epoch in [(1, 0), (1, 0), (1, 1), (2, 0)]:
        sampler = EpochShuffleSampler(50, seed)
        sampler.set_epoch(epoch)
        torch.manual_seed(len(orders))  # the global random state plays no part
        orders.setdefault((seed, epoch), []).append(list(sampler))
    assert orders[(1, 0)][0] == orders[(1, 0)][1] and sorted(orders[(1, 0)][0]) == list(range(50))
    assert orders[(1, 1)][0] != orders[(1, 0)][0] and orders[(2, 0)][0] != orders[(1, 0)][0]


def _scored_target_is_the_future(dataset, index, item):
    """The positions the trainer scores (the last pred_len of y, where y_mask is 1) hold the series'
    values right after the item's cut point."""
    y, y_mask, position = item.targets, item.target_mask, item.window_position
    cut, history = int(position[1]), dataset.history[index]
    scored = y_mask[-dataset.pred_len:, 0] == 1
    future = history[cut:cut + dataset.pred_len]
    assert scored.sum() == len(future), (index, cut)
    np.testing.assert_allclose(y[-dataset.pred_len:, 0][scored], future, err_msg=f"series {index}, cut {cut}")


def test_m4_training_target_is_the_future_for_every_cut_of_a_short_series(tmp_path):
    # Weekly: horizon 13; one series of 20 points (shorter than label_len + horizon), one of 60.
    values = [np.arange(1, 21, dtype=float), np.arange(100, 160, dtype=float)]
    width = max(len(v) for v in values)
    rows = [[f"W{i + 1}", *v, *[""] * (width - len(v))] for i, v in enumerate(values)]
    header = ["V1", *[f"V{i + 2}" for i in range(width)]]
    for name in ("Weekly-train.csv", "Weekly-test.csv"):
        pd.DataFrame(rows, columns=header).to_csv(tmp_path / name, index=False)
    config = data_config(data="m4", root_path=str(tmp_path), seasonal_patterns="Weekly", seq_len=26, label_len=13, pred_len=13)
    train = M4Dataset(config, "train")
    cuts = set()
    for epoch in range(300):
        train.set_epoch(epoch)
        item = train[0]
        cuts.add(int(item.window_position[1]))
        _scored_target_is_the_future(train, 0, item)
    assert cuts == set(range(1, len(train.history[0])))  # every cut point was drawn and checked


@pytest.mark.parametrize("pattern, horizon", [("Weekly", 13), ("Hourly", 48)])
def test_m4_training_target_is_the_future_on_real_series(pattern, horizon):
    config = data_config(data="m4", root_path=os.path.join(ROOT, "dataset", "m4"), seasonal_patterns=pattern,
                         seq_len=2 * horizon, label_len=horizon, pred_len=horizon)
    train = M4Dataset(config, "train")
    shortest = np.argsort([len(series) for series in train.history])[:20]
    sample = np.concatenate([shortest, np.random.default_rng(0).choice(len(train), 30, replace=False)])
    for epoch in range(5):
        train.set_epoch(epoch)
        for index in sample:
            _scored_target_is_the_future(train, int(index), train[int(index)])


def test_m4_training_items_are_a_function_of_seed_epoch_and_index():
    config = data_config(data="m4", root_path=os.path.join(ROOT, "dataset", "m4"), seasonal_patterns="Weekly",
                         seq_len=26, label_len=13, pred_len=13)
    first, second = M4Dataset(config, "train"), M4Dataset(config, "train")
    np.random.seed(0)
    drawn = [first[i].window_position[1] for i in range(50)]
    np.random.seed(1)  # the global random state plays no part, nor does the order of loading
    assert [second[i].window_position[1] for i in reversed(range(50))][::-1] == drawn
    second.set_epoch(1)
    assert [second[i].window_position[1] for i in range(50)] != drawn


@pytest.mark.parametrize("name", ["ETTm1", "ETTm2"])
def test_shipped_ettm_split_sizes_follow_time_series_library(name):
    config = data_config(data=name, data_path=f"{name}.csv", freq="t")
    assert [len(ETTMinuteDataset(config, split)) for split in ("train", "val", "test")] == [34369, 11425, 11425]
