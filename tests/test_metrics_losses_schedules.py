import math
import os

import numpy as np
import pytest
import torch

from data_provider.m4 import M4_PATTERNS, read_m4_file
from tests.conftest import ROOT
from utils.losses import build_loss
from utils.m4_summary import m4_summary, naive2_forecast
from utils.metrics import MetricAccumulator, forecast_metrics
from utils.schedules import build_scheduler


def test_metrics_on_known_values():
    prediction = np.array([[1.0, 2.0], [3.0, 5.0]])
    truth = np.array([[2.0, 2.0], [1.0, 4.0]])
    metrics = forecast_metrics(prediction, truth)
    assert metrics["mse"] == pytest.approx((1 + 0 + 4 + 1) / 4)
    assert metrics["mae"] == pytest.approx((1 + 0 + 2 + 1) / 4)
    assert metrics["rmse"] == pytest.approx(math.sqrt(1.5))
    assert metrics["mape"] == pytest.approx((0.5 + 0 + 2 + 0.25) / 4)
    assert metrics["mspe"] == pytest.approx((0.25 + 0 + 4 + 0.0625) / 4)


def test_accumulated_metrics_equal_numpy_over_all_values_not_batch_means():
    rng = np.random.default_rng(0)
    prediction, truth = rng.normal(size=(103, 24, 7)), rng.normal(size=(103, 24, 7)) + 3
    accumulator = MetricAccumulator()
    for start in range(0, 103, 10):  # uneven last batch: a mean of batch means would differ
        accumulator.update(torch.tensor(prediction[start : start + 10]), torch.tensor(truth[start : start + 10]))
    expected = forecast_metrics(prediction, truth)
    for name, value in accumulator.compute().items():
        assert value == pytest.approx(expected[name], rel=1e-12)
    assert expected["mse"] == pytest.approx(np.mean((prediction - truth) ** 2))


def test_losses_match_their_definitions():
    forecast = torch.tensor([[[2.0], [4.0]]])
    target = torch.tensor([[[1.0], [5.0]]])
    insample = torch.tensor([[[1.0], [3.0], [2.0]]])
    assert build_loss("MSE")(forecast, target).item() == pytest.approx(1.0)
    assert build_loss("MAE")(forecast, target).item() == pytest.approx(1.0)
    assert build_loss("MAPE")(forecast, target).item() == pytest.approx((1 + 0.2) / 2)
    assert build_loss("SMAPE")(forecast, target).item() == pytest.approx(200 * (1 / 3 + 1 / 9) / 2)
    # In-sample naive error: mean(|3-1|, |2-3|) = 1.5
    assert build_loss("MASE")(forecast, target, insample=insample).item() == pytest.approx(1.0 / 1.5)
    mask = torch.tensor([[[1.0], [0.0]]])
    assert build_loss("MSE")(forecast, target, mask=mask).item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="--loss"):
        build_loss("Huber")


def _learning_rates(schedule, epochs=6, steps_per_epoch=3, lr=0.01, pct_start=0.3):
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.Adam([parameter], lr=lr)
    scheduler = build_scheduler(optimizer, schedule, steps_per_epoch, epochs, epochs * steps_per_epoch, pct_start)
    rates = []
    for _ in range(epochs * steps_per_epoch):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return np.array(rates).reshape(epochs, steps_per_epoch)


def test_type1_halves_after_the_second_epoch():
    rates = _learning_rates("type1")
    np.testing.assert_allclose(rates[:, 0], [0.01, 0.01, 0.005, 0.0025, 0.00125, 0.000625])
    assert (rates == rates[:, :1]).all()  # constant within an epoch


def test_type3_keeps_four_epochs_then_decays_by_a_tenth():
    np.testing.assert_allclose(_learning_rates("type3")[:, 0], [0.01] * 4 + [0.009, 0.0081])


def test_type2_table_and_constant():
    np.testing.assert_allclose(_learning_rates("type2")[:, 0], [0.01, 0.01, 5e-5, 5e-5, 1e-5, 1e-5])
    np.testing.assert_allclose(_learning_rates("constant"), 0.01)


def test_cosine_decays_per_epoch_to_the_floor():
    rates = _learning_rates("COS", epochs=4)[:, 0]
    expected = [1e-8 + (0.01 - 1e-8) * 0.5 * (1 + math.cos(math.pi * e / 4)) for e in range(4)]
    np.testing.assert_allclose(rates, expected)


def test_tst_is_one_cycle_per_step():
    rates = _learning_rates("TST", epochs=10, steps_per_epoch=10).ravel()
    peak = int(np.argmax(rates))
    assert peak == pytest.approx(0.3 * 100 - 1, abs=1)
    assert rates[peak] == pytest.approx(0.01)
    assert rates[0] < rates[peak] / 20 and rates[-1] < rates[peak] / 1000
    assert (np.diff(rates[: peak + 1]) > 0).all() and (np.diff(rates[peak:]) < 0).all()


def test_naive2_reproduces_the_published_m4_benchmark():
    results = {}
    for pattern in ("Hourly", "Weekly"):
        _, history = read_m4_file(os.path.join(ROOT, "dataset", "m4", f"{pattern}-train.csv"))
        _, future = read_m4_file(os.path.join(ROOT, "dataset", "m4", f"{pattern}-test.csv"))
        spec = M4_PATTERNS[pattern]
        forecasts = [np.repeat(series[-1], spec.horizon) for series in history]  # Naive1
        results[pattern] = (forecasts, future, history)
    table = m4_summary(results)
    # Naive2 sMAPE and MASE published by the M4 competition.
    assert table.loc["Hourly", "naive2_smape"] == pytest.approx(18.383, abs=1e-3)
    assert table.loc["Hourly", "naive2_mase"] == pytest.approx(2.395, abs=1e-3)
    assert table.loc["Weekly", "naive2_smape"] == pytest.approx(9.161, abs=1e-3)
    assert table.loc["Weekly", "naive2_mase"] == pytest.approx(2.777, abs=1e-3)
    # Naive1 on Hourly, published sMAPE 43.003 and MASE 11.608, so OWA (43.003/18.383 + 11.608/2.395) / 2.
    assert table.loc["Hourly", "smape"] == pytest.approx(43.003, abs=1e-3)
    assert table.loc["Hourly", "mase"] == pytest.approx(11.608, abs=1e-3)
    assert table.loc["Hourly", "owa"] == pytest.approx(3.593, abs=1e-3)
    assert "Others" in table.index


def test_naive2_is_seasonal_naive_on_a_perfectly_seasonal_series():
    pattern = np.array([1.0, 2.0, 3.0, 2.0])
    series = np.tile(pattern, 10) * 10
    np.testing.assert_allclose(naive2_forecast(series, 8, 4), np.tile(pattern, 2) * 10, rtol=1e-6)


def _upstream_epoch_rates(lradj, lr, epochs=6, steps_per_epoch=3, train_epochs=10, pct_start=0.2, copies_rate_back=True):
    """The rate of each epoch as upstream Time-LLM's run_main.py sets it (run_m4.py: copies_rate_back
    False): its scheduler objects and its adjust_learning_rate (utils/tools.py), in the order its loop
    calls them."""
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.Adam([parameter], lr=lr)
    if lradj == "COS":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=20, eta_min=1e-8)
    else:
        scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, steps_per_epoch=steps_per_epoch, pct_start=pct_start,
                                                        epochs=train_epochs, max_lr=lr)
    args_learning_rate = lr
    table = {2: 5e-5, 4: 1e-5, 6: 5e-6, 8: 1e-6, 10: 5e-7, 15: 1e-7, 20: 5e-8}

    def adjust(epoch):  # upstream's adjust_learning_rate(epoch) for the per-epoch options
        adjusted = {
            "type1": {epoch: args_learning_rate * 0.5 ** ((epoch - 1) // 1)},
            "type2": table,
            "type3": {epoch: args_learning_rate if epoch < 3 else args_learning_rate * 0.9 ** ((epoch - 3) // 1)},
            "constant": {epoch: args_learning_rate},
        }[lradj]
        if epoch in adjusted:
            optimizer.param_groups[0]["lr"] = adjusted[epoch]

    rates = []
    for epoch in range(epochs):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        if lradj == "COS":
            scheduler.step()
        else:
            if epoch == 0 and copies_rate_back:
                args_learning_rate = optimizer.param_groups[0]["lr"]
            adjust(epoch + 1)
    return np.array(rates)


@pytest.mark.parametrize("lradj", ["type1", "type2", "type3", "constant", "COS"])
def test_upstream_schedules_reproduce_upstream_time_llm(lradj):
    ours = _learning_rates(f"upstream_{lradj}", epochs=6, lr=0.01)
    assert (ours == ours[:, :1]).all()  # per epoch
    np.testing.assert_allclose(ours[:, 0], _upstream_epoch_rates(lradj, 0.01), rtol=1e-9)


def test_upstream_etth1_script_trains_at_a_25th_of_its_learning_rate():
    np.testing.assert_allclose(_learning_rates("upstream_type1", epochs=4)[:, 0], [4e-4, 4e-4, 2e-4, 1e-4])


def test_upstream_cosine_has_a_20_epoch_period_and_climbs_back():
    ours = _learning_rates("upstream_COS", epochs=26, steps_per_epoch=1, lr=0.01)[:, 0]
    np.testing.assert_allclose(ours, _upstream_epoch_rates("COS", 0.01, epochs=26, steps_per_epoch=1), rtol=1e-6)
    assert ours[20] == pytest.approx(1e-8) and ours[25] > ours[21] > ours[20]


def test_upstream_m4_schedule_reproduces_upstream_run_m4():
    ours = _learning_rates("upstream_m4_type1", epochs=6, lr=0.001)[:, 0]
    np.testing.assert_allclose(ours, _upstream_epoch_rates("type1", 0.001, copies_rate_back=False), rtol=1e-9)
    np.testing.assert_allclose(ours[:3], [4e-5, 1e-3, 5e-4])


@pytest.mark.parametrize("steps", [1, 2, 3, 5])
def test_tst_works_for_runs_shorter_than_its_warm_up(steps):
    rates = _learning_rates("TST", epochs=1, steps_per_epoch=steps, pct_start=0.2).ravel()
    assert len(rates) == steps and np.isfinite(rates).all()
