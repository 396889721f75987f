"""Conformance of every registered baseline: shapes, backward, state_dict round-trip, batch independence in
eval, and a 2-step fit through the trainer."""
import re
from types import SimpleNamespace

import pytest
import torch

from models import MODELS, build_model
from tests.conftest import FAST_RUN, run_script


def model_config(name, **overrides):
    values = dict(
        model=name, seq_len=48, label_len=24, pred_len=12, enc_in=3, dec_in=3, c_out=3, d_model=16, n_heads=4,
        e_layers=2, d_layers=1, d_ff=32, moving_avg=25, factor=1, dropout=0.1, activation="gelu", individual=0,
        embed="timeF", freq="h", patch_len=16, stride=8, features="M", top_k=3, num_kernels=3,
    )
    values.update(overrides)
    return SimpleNamespace(**values)


def batch(config, size=4):
    torch.manual_seed(0)
    x = torch.randn(size, config.seq_len, config.enc_in)
    x_mark = torch.randn(size, config.seq_len, 4)
    x_dec = torch.randn(size, config.label_len + config.pred_len, config.dec_in)
    y_mark = torch.randn(size, config.label_len + config.pred_len, 4)
    return x, x_mark, x_dec, y_mark


BASELINES = ["DLinear", "Autoformer", "PatchTST", "iTransformer", "TimesNet", "TimeXer"]


@pytest.mark.parametrize("name", BASELINES)
def test_forward_backward_and_round_trip(name):
    config = model_config(name)
    model = build_model(config)
    inputs = batch(config)
    prediction = model(*inputs)
    assert prediction.shape == (4, config.pred_len, config.c_out)
    prediction.pow(2).mean().backward()
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert trainable and all(p.grad is not None and torch.isfinite(p.grad).all() for p in trainable)

    model.eval()
    clone = build_model(config)
    clone.load_state_dict(model.state_dict())
    clone.eval()
    torch.testing.assert_close(clone(*inputs), model(*inputs))


@pytest.mark.parametrize("name", BASELINES)
def test_a_sample_forecast_does_not_depend_on_its_batch(name):
    config = model_config(name)
    model = build_model(config).eval()
    inputs = batch(config)
    alone = model(*(tensor[:1] for tensor in inputs))
    together = model(*inputs)[:1]
    torch.testing.assert_close(alone, together, rtol=1e-4, atol=1e-5)


def test_dlinear_individual_has_one_map_per_variable():
    model = build_model(model_config("DLinear", individual=1))
    assert len(model.seasonal) == 3 and len(model.trend) == 3


def test_unknown_model_lists_the_registry():
    with pytest.raises(ValueError, match="valid: " + ", ".join(MODELS)):
        build_model(model_config("Informer"))


@pytest.mark.parametrize("name", BASELINES)
def test_two_step_fit_through_the_trainer(name, output_dirs, small_etth1):
    outputs, _ = output_dirs
    args = ["run_main.py", *FAST_RUN, *small_etth1, "--model", name, "--max_steps", "2", "--d_model", "16", "--n_heads", "4", "--e_layers", "1", *outputs]
    result = run_script(args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(r"test: mse \d\.\d+ mae \d\.\d+ .* windows 217 ", result.stdout)


def test_timexer_ms_forecasts_the_target_from_exogenous_variables():
    config = model_config("TimeXer", features="MS", c_out=1, dropout=0.0)
    model = build_model(config).eval()
    x, x_mark, x_dec, y_mark = batch(config)
    prediction = model(x, x_mark, x_dec, y_mark)
    assert prediction.shape == (4, config.pred_len, 1)
    changed = x.clone()
    changed[:, :, 0] += torch.randn_like(changed[:, :, 0])  # an exogenous variable only
    assert not torch.allclose(model(changed, x_mark, x_dec, y_mark), prediction)
