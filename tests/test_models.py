"""Conformance of every registered baseline: shapes, backward, state_dict round-trip, determinism in eval."""
from types import SimpleNamespace

import pytest
import torch

from models import MODELS, build_model


def model_config(name, **overrides):
    values = dict(
        model=name, seq_len=48, label_len=24, pred_len=12, enc_in=3, dec_in=3, c_out=3, d_model=16, n_heads=4,
        e_layers=2, d_layers=1, d_ff=32, moving_avg=25, factor=1, dropout=0.1, activation="gelu", individual=0,
        embed="timeF", freq="h", patch_len=16, stride=8, features="M",
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


BASELINES = ["DLinear", "Autoformer"]


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
