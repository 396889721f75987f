"""Distribution heads (layers/DistributionHead.py) and their scores (utils/scoring.py): each head's loss
and sampling against its parameters, the CRPS against numerical integration, RevIN's location and scale,
bad flags, and a probabilistic run's outputs."""
import csv
import glob
import json
import os

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import integrate, stats

from layers.DistributionHead import ForecastDistribution, ProbabilisticForecaster, denormalise
from models import ForecastOutput, build_model
from tests.conftest import FAST_RUN, ROOT, run_script, tiny_config
from utils.config import parse_config
from utils.scoring import DistributionAccumulator, crps, numpy_parameters, quantile_values
from utils.settings import DistributionConfig

LEVELS = (0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95)


def parametric(kind: str, location=0.3, scale=1.7, degrees=4.5, shape=(1, 1, 1)) -> ForecastDistribution:
    full = lambda value: torch.full(shape, value, dtype=torch.float64)  # noqa: E731
    return ForecastDistribution(kind, full(location), scale=full(scale), degrees_of_freedom=full(degrees) if kind == "student_t" else None)


def quantile_forecast(values=(-2.0, -1.4, -0.6, 0.1, 0.9, 1.5, 2.4)) -> ForecastDistribution:
    quantiles = torch.tensor(values, dtype=torch.float64).view(1, 1, 1, -1)
    return ForecastDistribution("quantile", quantiles[..., LEVELS.index(0.5)], quantiles=quantiles, levels=LEVELS)


def cdf_of(kind: str, location=0.3, scale=1.7, degrees=4.5):
    if kind == "gaussian":
        return lambda z: stats.norm.cdf(z, location, scale)
    return lambda z: stats.t.cdf(z, degrees, location, scale)


def crps_by_integration(cdf, observation: float, low=-60.0, high=60.0) -> float:
    """CRPS(F, y) = integral of (F(z) - 1{z >= y})^2 dz."""
    below, _ = integrate.quad(lambda z: cdf(z) ** 2, low, observation, limit=400)
    above, _ = integrate.quad(lambda z: (1 - cdf(z)) ** 2, observation, high, limit=400)
    return below + above


@pytest.mark.parametrize("kind", ["gaussian", "student_t"])
def test_likelihood_and_samples_match_the_parameters(kind):
    distribution = parametric(kind)
    target = torch.tensor([[[1.1]]], dtype=torch.float64)
    reference = stats.norm(0.3, 1.7) if kind == "gaussian" else stats.t(4.5, 0.3, 1.7)
    assert float(distribution.loss(target)) == pytest.approx(-reference.logpdf(1.1), rel=1e-9)
    draws = distribution.sample(200_000, torch.Generator().manual_seed(0)).flatten().numpy()
    assert draws.mean() == pytest.approx(0.3, abs=0.02)
    for level in (0.1, 0.5, 0.9):
        assert np.quantile(draws, level) == pytest.approx(reference.ppf(level), abs=0.03)
        assert float(quantile_values(distribution, numpy_parameters(distribution), level)[0, 0, 0]) == pytest.approx(reference.ppf(level), rel=1e-9)


def test_quantile_head_loss_is_the_pinball_loss_and_its_samples_follow_its_quantiles():
    distribution = quantile_forecast()
    values = distribution.quantiles.flatten().tolist()
    observation = 0.5
    pinball = [max(level * (observation - q), (level - 1) * (observation - q)) for level, q in zip(LEVELS, values)]
    assert float(distribution.loss(torch.tensor([[[observation]]], dtype=torch.float64))) == pytest.approx(np.mean(pinball), rel=1e-12)
    draws = distribution.sample(200_000, torch.Generator().manual_seed(0)).flatten().numpy()
    assert draws.min() >= values[0] and draws.max() <= values[-1]
    # Draws are uniform over [0.05, 0.95] in probability: the draws' quantile at p is the forecast's at 0.05 + 0.9 p.
    for level, value in zip(LEVELS, values):
        assert np.quantile(draws, (level - 0.05) / 0.9) == pytest.approx(value, abs=0.02)


@pytest.mark.parametrize("kind", ["gaussian", "student_t"])
@pytest.mark.parametrize("observation", [-3.0, 0.3, 2.2])
def test_closed_form_crps_equals_numerical_integration(kind, observation):
    distribution = parametric(kind)
    closed = crps(distribution, numpy_parameters(distribution), np.full((1, 1, 1), observation))["crps"]
    assert float(closed.squeeze()) == pytest.approx(crps_by_integration(cdf_of(kind), observation), rel=1e-5)


@pytest.mark.parametrize("observation", [-3.0, 0.3, 2.2])
def test_quantile_crps_is_the_quantile_score_and_the_sample_crps_integrates_its_quantile_function(observation):
    distribution = quantile_forecast()
    values = distribution.quantiles.flatten().numpy()
    scores = crps(distribution, numpy_parameters(distribution), np.full((1, 1, 1), observation))
    pinball = [max(level * (observation - q), (level - 1) * (observation - q)) for level, q in zip(LEVELS, values)]
    assert float(scores["crps"].squeeze()) == pytest.approx(2 * np.mean(pinball), rel=1e-9)
    # CRPS = 2 * integral over u of the pinball loss of the quantile function Q(u); the ensemble's quantile
    # function is the forecast's, stretched from [0.05, 0.95] to [0, 1].
    quantile_function = lambda u: np.interp(0.05 + 0.9 * u, LEVELS, values)  # noqa: E731
    exact, _ = integrate.quad(lambda u: 2 * max(u * (observation - quantile_function(u)), (u - 1) * (observation - quantile_function(u))), 0, 1, limit=200, points=[(level - 0.05) / 0.9 for level in LEVELS[1:-1]])
    assert float(scores["sample_crps"].squeeze()) == pytest.approx(exact, rel=0.01)


def test_intervals_cover_as_often_as_their_level_and_scale_into_original_units():
    generator = torch.Generator().manual_seed(1)
    shape = (500, 24, 2)
    distribution = parametric("gaussian", location=0.0, scale=2.0, shape=shape)
    truth = 2.0 * torch.randn(shape, generator=generator, dtype=torch.float64)
    scaled, original = DistributionAccumulator(), DistributionAccumulator()
    scaled.update(distribution, truth)
    original.update(distribution, truth, unit=torch.full(shape, 3.0, dtype=torch.float64))
    scores, original_scores = scaled.compute(), original.compute()
    for level in (50, 80, 90):
        assert scores[f"coverage_{level}"] == pytest.approx(level / 100, abs=0.01)
        assert scores[f"width_{level}"] == pytest.approx(2 * 2.0 * stats.norm.ppf(0.5 + level / 200), rel=1e-9)
        assert original_scores[f"width_{level}"] == pytest.approx(3 * scores[f"width_{level}"], rel=1e-12)
        assert original_scores[f"coverage_{level}"] == scores[f"coverage_{level}"]
    assert original_scores["crps"] == pytest.approx(3 * scores["crps"], rel=1e-12)


class RepeatLastValue(torch.nn.Module):
    """The last input value over the horizon: its forecast moves exactly with the window."""

    def __init__(self, pred_len: int):
        super().__init__()
        self.pred_len = pred_len

    def forward(self, x_enc, *unused):
        return ForecastOutput(x_enc[:, -1:].expand(-1, self.pred_len, -1))


@pytest.mark.parametrize("kind", ["gaussian", "student_t", "quantile"])
def test_revin_carries_location_and_scale_and_the_point_is_the_models_forecast(kind):
    torch.manual_seed(0)
    config = tiny_config("DLinear", 2, "--output_distribution", kind)
    model = build_model(config)
    assert isinstance(model, ProbabilisticForecaster)
    x = torch.randn(3, config.seq_len, 2).cumsum(1)
    output = model(x)
    assert torch.equal(output.prediction, model.model(x).prediction)  # the point forecast is the model's own
    output.distribution.loss(torch.zeros_like(output.prediction)).backward()
    assert all(parameter.grad is not None for parameter in model.parameters())  # the head and the model learn
    if kind == "quantile":
        assert (output.distribution.quantiles.diff(dim=-1) > 0).all()  # they never cross
        torch.testing.assert_close(output.distribution.quantiles[..., LEVELS.index(0.5)], output.prediction)

    # Shifting and scaling the window moves the location and the quantiles, and scales the spread, the
    # same way (RevIN), for a point forecaster whose forecast moves with the window.
    naive = ProbabilisticForecaster(RepeatLastValue(config.pred_len), DistributionConfig.from_config(config)).double()
    naive.eps = 0.0  # the variance floor is the one term that does not scale with the window
    x = x.double()
    before, after = naive(x).distribution, naive(5.0 * x + 2.0).distribution
    for name, value in before.tensors().items():
        expected = 5.0 * value if name == "scale" else value if name == "degrees_of_freedom" else 5.0 * value + 2.0
        torch.testing.assert_close(getattr(after, name), expected, rtol=1e-9, atol=1e-9)


def test_denormalise_by_hand():
    distribution = ForecastDistribution("student_t", torch.tensor([[[1.0, -1.0]]]), scale=torch.tensor([[[0.5, 2.0]]]),
                                        degrees_of_freedom=torch.tensor([[[3.0, 7.0]]]))
    center, stdev = torch.tensor([[[10.0, 0.0]]]), torch.tensor([[[2.0, 0.1]]])
    restored = denormalise(distribution, center, stdev)
    torch.testing.assert_close(restored.location, torch.tensor([[[12.0, -0.1]]]))
    torch.testing.assert_close(restored.scale, torch.tensor([[[1.0, 0.2]]]))
    torch.testing.assert_close(restored.degrees_of_freedom, distribution.degrees_of_freedom)


@pytest.mark.parametrize("flags, message", [
    (["--output_distribution", "quantile", "--quantiles", "0.1", "0.5", "1.2"], "--quantiles must lie in (0, 1)"),
    (["--output_distribution", "quantile", "--quantiles", "0.9", "0.5", "0.1"], "--quantiles must be increasing"),
    (["--output_distribution", "quantile", "--quantiles", "0.1", "0.9"], "--quantiles must include 0.5"),
    (["--output_distribution", "student_t", "--loss", "MAE"], "--output_distribution student_t is trained by its own likelihood: --loss MAE"),
    (["--output_distribution", "gaussian", "--task_name", "masked_pretrain", "--model", "PatchTST"], "--output_distribution gaussian forecasts the future"),
])
def test_bad_distribution_flags_name_the_flag(flags, message, capsys):
    with pytest.raises(SystemExit):
        parse_config(flags)
    assert capsys.readouterr().err.startswith(f"error: {message}")


def test_a_section_checks_its_levels():
    with pytest.raises(ValueError, match="--quantiles must be increasing"):
        DistributionConfig(output_distribution="quantile", quantiles=[0.5, 0.2])


def test_probabilistic_run_reports_crps_and_intervals(output_dirs):
    outputs, checkpoints = output_dirs
    result = run_script(["run_main.py", *FAST_RUN, "--features", "S", "--output_distribution", "quantile", "--inverse", "1", *outputs])
    assert result.returncode == 0, result.stderr[-3000:]
    test_line = next(line for line in result.stdout.splitlines() if line.startswith("test:"))
    assert " crps " in test_line and " coverage_90 " in test_line
    (run_dir,) = glob.glob(os.path.join(str(checkpoints), "long_term_forecast_*"))
    metrics = json.load(open(os.path.join(run_dir, "metrics.json")))["test"]
    for scores in (metrics["distribution"], metrics["original_units"]["distribution"]):
        assert {"crps", "sample_crps", "coverage_50", "width_50", "coverage_80", "width_80", "coverage_90", "width_90"} <= set(scores)
        assert 0 <= scores["coverage_50"] <= scores["coverage_80"] <= scores["coverage_90"] <= 1
    arrays = np.load(os.path.join(run_dir, "predictions.npz"))
    quantiles = arrays["quantiles"]
    assert quantiles.shape == (*arrays["prediction"].shape, 5)
    assert (np.diff(quantiles, axis=-1) >= 0).all()
    np.testing.assert_allclose(quantiles[..., 2], arrays["prediction"], rtol=1e-5, atol=1e-5)  # the median is the point
    row = next(csv.DictReader(open(checkpoints / "results.csv")))
    assert float(row["crps"]) == pytest.approx(metrics["distribution"]["crps"], rel=1e-5)

    # Inference: quantile columns for the test split and for the future of a new file.
    quantile_columns = ["q0.05", "q0.25", "q0.5", "q0.75", "q0.95"]
    assert run_script(["-m", "utils.inference", "--run", run_dir]).returncode == 0
    table = pd.read_csv(os.path.join(run_dir, "forecast_test.csv"))
    assert list(table.columns) == ["window", "window_start_row", "step", "variable", "forecast", *quantile_columns, "truth"]
    assert (np.diff(table[quantile_columns].to_numpy(), axis=1) >= -1e-9).all()
    np.testing.assert_allclose(table["q0.5"], table["forecast"], rtol=1e-4)
    new_file = checkpoints / "recent.csv"
    pd.read_csv(os.path.join(ROOT, "dataset", "ETT-small", "ETTh1.csv")).head(300).to_csv(new_file, index=False)
    assert run_script(["-m", "utils.inference", "--run", run_dir, "--data_path", str(new_file)]).returncode == 0
    future = pd.read_csv(os.path.join(run_dir, "forecast_recent.csv"))
    assert list(future.columns) == ["date", "OT", *(f"OT_{name}" for name in quantile_columns)] and len(future) == 24


def test_a_wrapped_model_keeps_its_frozen_llm_and_its_parameter_groups():
    from utils.dapo import parameter_groups

    model = build_model(tiny_config("TimeLLM", 1, "--llm_model", "tiny-llama", "--output_distribution", "student_t"))
    assert model.frozen_prefixes == ("model.llm",)  # checkpoints leave the LLM out under the wrapper's names too
    assert set(parameter_groups(model)) == {"patch_embedding", "text_prototypes", "reprogramming", "head", "distribution_head"}
