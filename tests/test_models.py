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


BASELINES = ["DLinear", "Autoformer", "PatchTST", "iTransformer", "TimesNet", "TimeXer", "PAttn"]


@pytest.mark.parametrize("name", BASELINES)
def test_forward_backward_and_round_trip(name):
    config = model_config(name)
    model = build_model(config)
    inputs = batch(config)
    prediction = model(*inputs).prediction
    assert prediction.shape == (4, config.pred_len, config.c_out)
    prediction.pow(2).mean().backward()
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert trainable and all(p.grad is not None and torch.isfinite(p.grad).all() for p in trainable)

    model.eval()
    clone = build_model(config)
    clone.load_state_dict(model.state_dict())
    clone.eval()
    torch.testing.assert_close(clone(*inputs).prediction, model(*inputs).prediction)


@pytest.mark.parametrize("name", BASELINES)
def test_a_sample_forecast_does_not_depend_on_its_batch(name):
    config = model_config(name)
    model = build_model(config).eval()
    inputs = batch(config)
    alone = model(*(tensor[:1] for tensor in inputs)).prediction
    together = model(*inputs).prediction[:1]
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
    prediction = model(x, x_mark, x_dec, y_mark).prediction
    assert prediction.shape == (4, config.pred_len, 1)
    changed = x.clone()
    changed[:, :, 0] += torch.randn_like(changed[:, :, 0])  # an exogenous variable only
    assert not torch.allclose(model(changed, x_mark, x_dec, y_mark).prediction, prediction)


# Each regulariser flag and the auxiliary-loss name its model reports.
REGULARISED_TERMS = {
    "lambda_attention_orthogonality": "attention_orthogonality",
    "lambda_frequency_consistency": "frequency_consistency",
    "lambda_patch_attention_kl": "patch_attention_kl",
    "lambda_embedding_orthogonality": "embedding_orthogonality",
    "lambda_trend_residual": "trend_residual",
}


@pytest.mark.parametrize("flag", REGULARISED_TERMS)
def test_each_regulariser_changes_the_loss_and_has_a_gradient(flag):
    from utils.config import REGULARISERS

    assert set(REGULARISERS) == set(REGULARISED_TERMS)
    name, term = REGULARISERS[flag][0], REGULARISED_TERMS[flag]
    config = model_config(name, **{flag: 0.5})
    plain, model = build_model(model_config(name)), build_model(config)
    model.load_state_dict(plain.state_dict())
    x, x_mark, x_dec, y_mark = batch(config)
    plain.eval(), model.eval()
    plain_output = plain(x, x_mark, x_dec, y_mark)
    assert not plain_output.aux_losses and plain_output.supervised_terms is None  # off by default: no extra work
    # The regulariser changes the loss, never the forecast.
    torch.testing.assert_close(model(x, x_mark, x_dec, y_mark).prediction, plain_output.prediction)
    model.train()
    output = model(x, x_mark, x_dec, y_mark)
    if output.supervised_terms is not None:
        losses, _ = output.supervised_terms(torch.randn(4, config.pred_len, config.enc_in))
        output.aux_losses.update(losses)
    assert model.aux_loss_weights == {term: 0.5}
    penalty = output.aux_losses[term]
    assert penalty.ndim == 0 and penalty.item() > 0
    penalty.backward()
    gradients = [p.grad.abs().sum() for p in model.parameters() if p.grad is not None]
    assert gradients and sum(gradients) > 0


def test_a_regulariser_flag_of_another_model_is_refused():
    from utils.config import parse_config

    with pytest.raises(SystemExit):
        parse_config(["--model", "DLinear", "--lambda_patch_attention_kl", "0.1"])


def test_regulariser_and_smooth_l1_through_the_trainer(output_dirs, small_etth1):
    outputs, _ = output_dirs
    args = ["run_main.py", *FAST_RUN, *small_etth1, "--model", "iTransformer", "--max_steps", "2", "--d_model", "16", "--n_heads", "4",
            "--e_layers", "1", "--loss", "SmoothL1", "--lambda_embedding_orthogonality", "0.1", "--aux_warmup_steps", "0", *outputs]
    result = run_script(args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(r"aux loss \d\.\d+ \(embedding_orthogonality \d\.\d+\)", result.stdout + result.stderr)


def test_patchtst_masked_pretraining_hides_patches_and_fine_tuning_keeps_the_encoder(tmp_path):
    from models import MASKED_PRETRAIN
    from utils.checkpoint import load_model_checkpoint, save_model_checkpoint

    with pytest.raises(ValueError, match="--stride equal to --patch_len"):
        build_model(model_config("PatchTST", task_name=MASKED_PRETRAIN, mask_ratio=0.4))
    config = model_config("PatchTST", task_name=MASKED_PRETRAIN, mask_ratio=0.4, stride=16, seq_len=64)
    pretrained = build_model(config)
    x = batch(config)[0]
    output = pretrained(x)
    assert output.prediction.shape == x.shape and output.loss_mask.shape == x.shape
    hidden_per_series = output.loss_mask.float().sum(dim=1) / 16  # patches of 16 steps
    assert torch.all(hidden_per_series == 2)  # round(0.4 x 4 real patches)
    output.prediction[output.loss_mask].pow(2).mean().backward()
    assert all(p.grad is not None for p in pretrained.parameters())
    pretrained.eval()
    torch.testing.assert_close(pretrained(x).loss_mask, pretrained(x).loss_mask)  # evaluation hides the same patches
    assert not torch.equal(pretrained.train()(x).loss_mask, pretrained.train()(x).loss_mask)

    path = str(tmp_path / "pretrained.pt")
    save_model_checkpoint(path, pretrained, SimpleNamespace(**vars(config), group_of={}))
    fine_tune_config = model_config("PatchTST", stride=16, seq_len=64)
    fine_tuned = build_model(fine_tune_config)
    load_model_checkpoint(path, fine_tuned, SimpleNamespace(**vars(fine_tune_config), group_of={}))
    for name, value in fine_tuned.state_dict().items():
        if name.startswith("encoder.") or name.startswith("patch_embedding.") or name == "position":
            torch.testing.assert_close(value, pretrained.state_dict()[name])
    assert "pretrain_head.1.weight" not in fine_tuned.state_dict() and "head.1.weight" in fine_tuned.state_dict()


def test_run_pretrain_masked_pretrains_then_fine_tunes(output_dirs, small_etth1):
    outputs, checkpoints = output_dirs
    args = ["run_pretrain.py", "--pretrain_task", "masked", "--model", "PatchTST", *small_etth1, "--seq_len", "96", "--pred_len", "24",
            "--patch_len", "16", "--stride", "16", "--d_model", "16", "--n_heads", "4", "--e_layers", "1", "--pretrain_epochs", "1",
            "--train_epochs", "1", "--max_steps", "3", "--eval_batch_size", "64", *outputs]
    result = run_script(args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(r"masked pre-training custom: test reconstruction mse \d\.\d+ mae \d\.\d+ \(hidden patches", result.stdout)
    assert re.search(r"fine-tuned custom: mse \d\.\d+ mae \d\.\d+ \(217 windows", result.stdout)
    summaries = list(checkpoints.glob("*/pretraining.json"))
    assert len(summaries) == 1
    refused = run_script(["run_pretrain.py", "--pretrain_task", "masked", "--model", "DLinear", *small_etth1, *outputs])
    assert refused.returncode == 2 and "pre-trains PatchTST" in refused.stderr


def test_an_auxiliary_loss_without_a_declared_weight_is_refused(tmp_path, small_etth1, monkeypatch):
    """An add-on that returns a loss its aux_loss_weights do not list fails at the first step
    instead of training at an implicit weight of 1.0."""
    from utils.config import parse_config
    from utils.objective import ForwardPass
    from utils.trainer import Trainer

    forward = ForwardPass.__call__

    def with_an_undeclared_loss(self, model, batch):
        output, target, x, mask = forward(self, model, batch)
        output.aux_losses["undeclared_term"] = output.prediction.abs().mean()
        return output, target, x, mask

    monkeypatch.setattr(ForwardPass, "__call__", with_an_undeclared_loss)
    config = parse_config([*FAST_RUN, *small_etth1, "--max_steps", "1", "--checkpoints", str(tmp_path), "--report_to", "none"])
    with pytest.raises(ValueError, match=r"\['undeclared_term'\] have no weight: .* aux_loss_weights"):
        Trainer(config).run()
