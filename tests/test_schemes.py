"""The seven add-on schemes: each on and off (forward, backward, state_dict round trip), with TAPR and
GRA-M, the promises of each module, the hybrid's cache, the report and the innovation config."""
import os
import re

import numpy as np
import pytest
import torch

from data_provider import statistical as statistical_module
from layers.AddOn import SeriesContext
from layers.FrequencyDecomposition import FrequencyDecomposition, dominant_periods
from layers.InterVariateAttention import InterVariateAttention
from layers.StandardNorm import Normalize
from layers.TimeSeriesMoE import TimeSeriesMoE
from models import build_model
from tests.conftest import FAST_RUN, MODULE_ARGS, ROOT, fit_with_a_failing, run_script, timellm_config, training_set
from utils.config import parse_config
from utils.vocab_init import adaptive_num_tokens, keyword_token_ids

SCHEMES = {
    "hybrid": ["--use_hybrid", "1"],
    "hybrid-weighted": ["--use_hybrid", "1", "--fusion_method", "weighted"],
    "hybrid-learned": ["--use_hybrid", "1", "--fusion_method", "learned"],
    "hybrid-arima-only": ["--use_hybrid", "1", "--use_es", "0"],
    "multiscale-gate": ["--use_multiscale", "1"],
    "multiscale-attention": ["--use_multiscale", "1", "--multiscale_fusion", "attention"],
    "multiscale-concat": ["--use_multiscale", "1", "--multiscale_fusion", "concat"],
    "frequency": ["--use_frequency", "1"],
    "inter-variate": ["--use_inter_variate", "1", "--inter_variate_heads", "4", "--inter_variate_ff", "32"],
    "dynamic-prompt": ["--use_dynamic_prompt", "1", "--num_dynamic_tokens", "4"],
    "moe": ["--use_moe", "1", "--moe_d_ff", "32"],
    "keyword-weighted": ["--use_keyword_init", "1"],
    "keyword-cluster": ["--use_keyword_init", "1", "--vocab_init_method", "cluster"],
    "keyword-random": ["--use_keyword_init", "1", "--vocab_init_method", "random_from_keywords"],
    "adaptive-vocab": ["--use_adaptive_vocab", "1"],
}
MULTIVARIATE = ["--sample_layout", "all_channels", "--features", "M"]


def scheme_config(name, *extra, n_vars=None):
    args = list(SCHEMES[name]) + list(extra)
    if name == "inter-variate" or n_vars:
        args += MULTIVARIATE
    config = timellm_config("--llm_model", "tiny-llama", "--dropout", "0", *args)
    config.enc_in = config.dec_in = config.c_out = 3 if name == "inter-variate" else (n_vars or 1)
    return config


def inputs(config, size=4):
    generator = torch.Generator().manual_seed(0)
    return torch.randn(size, 64, config.enc_in, generator=generator).cumsum(dim=1)


@pytest.mark.parametrize("name", SCHEMES)
def test_scheme_on_and_off_forward_backward_round_trip(name, tmp_path):
    config = scheme_config(name, "--hybrid_cache_dir", str(tmp_path))
    model = build_model(config)
    x = inputs(config)
    output = model(x)
    prediction = output.prediction
    assert prediction.shape == (4, 16, config.enc_in) and torch.isfinite(prediction).all()
    aux = sum(output.aux_losses.values())
    (prediction.pow(2).mean() + aux).backward()
    new = [n for n, p in model.named_parameters() if p.requires_grad and n.split(".")[0] in ("patch_embedding", "dynamic_prompt", "inter_variate", "moe", "hybrid")]
    for parameter_name in new:
        if parameter_name.startswith("moe.experts."):  # sparse: only the experts a token was routed to
            continue
        assert model.get_parameter(parameter_name).grad is not None, parameter_name
    if name == "moe":
        assert sum(model.get_parameter(n).grad is not None for n in new if n.startswith("moe.experts.")) >= 4  # >= 1 expert, 4 tensors each
    # Off: the same configuration without the scheme builds the plain model.
    off = timellm_config("--llm_model", "tiny-llama", *(MULTIVARIATE if name == "inter-variate" else []))
    plain = build_model(off)
    assert not any(n.split(".")[0] in ("dynamic_prompt", "inter_variate", "moe", "hybrid") for n, _ in plain.named_parameters())
    # Round trip: a second model loaded from the first one's state predicts the same.
    model.eval()
    clone = build_model(scheme_config(name, "--hybrid_cache_dir", str(tmp_path)))
    clone.load_state_dict(model.state_dict())
    clone.eval()
    torch.testing.assert_close(clone(x).prediction, model(x).prediction)


@pytest.mark.parametrize("name", ["multiscale-gate", "frequency", "dynamic-prompt", "moe", "keyword-weighted", "hybrid"])
def test_scheme_with_tapr_and_gram(name, tmp_path):
    config = scheme_config(name, *MODULE_ARGS, "--use_tapr", "1", "--use_gram", "1", "--hybrid_cache_dir", str(tmp_path))
    model = build_model(config)
    model.gram.prepare({"train": training_set()})
    x = inputs(config, size=8)
    output = model(x)
    losses, _ = output.supervised_terms(torch.randn(8, 16, 1))
    (output.prediction.pow(2).mean() + sum(output.aux_losses.values()) + sum(losses.values())).backward()
    assert {"trend_direction", "retrieval_gate_entropy"} <= set(output.aux_losses) | set(losses)


def test_frequency_decomposition_reconstructs_its_input():
    x = torch.randn(5, 3, 96).cumsum(dim=-1) + torch.sin(torch.arange(96) * 2 * torch.pi / 24)
    trend, seasonal = FrequencyDecomposition(0.02)(x)
    torch.testing.assert_close(trend + seasonal, x, atol=1e-5, rtol=0)
    assert trend.diff(dim=-1).abs().mean() < x.diff(dim=-1).abs().mean()  # the trend is the smooth part
    periods = dominant_periods(torch.sin(torch.arange(96) * 2 * torch.pi / 24).unsqueeze(0), 1)
    assert periods.item() == pytest.approx(24.0)
    with pytest.raises(ValueError, match="--trend_cutoff"):
        FrequencyDecomposition(0.7)


def test_frequency_gate_is_decided_per_series_not_per_batch():
    config = scheme_config("frequency")
    model = build_model(config).eval()
    x = inputs(config, size=6)
    alone = model(x[:1]).prediction
    together = model(x).prediction[:1]
    torch.testing.assert_close(alone, together, rtol=1e-4, atol=1e-5)


def test_moe_balancing_loss_has_a_gradient_on_the_router_and_usage_sums_to_one():
    config = parse_config(["--model", "TimeLLM", "--num_experts", "4", "--top_k_experts", "2", "--moe_d_ff", "16"])
    config.llm_dim = 8
    moe = TimeSeriesMoE(config)
    result = moe(torch.randn(6, 5, 8), context=None)  # the experts read nothing of the context
    output, losses, usage = result.value, result.aux_losses, result.diagnostics
    assert output.shape == (6, 5, 8)
    losses["moe_balance"].backward()
    assert moe.router.weight.grad is not None and moe.router.weight.grad.abs().sum() > 0
    assert sum(float(v) for v in usage.values()) == pytest.approx(1.0)
    assert moe.aux_loss_weights == {"moe_balance": 0.01}


@pytest.mark.parametrize("method", ["weighted", "cluster", "random_from_keywords"])
def test_keyword_initialised_prototypes_are_distinct(method):
    config = scheme_config({"weighted": "keyword-weighted", "cluster": "keyword-cluster", "random_from_keywords": "keyword-random"}[method])
    model = build_model(config)
    prototypes = model.text_prototypes(model.llm.get_input_embeddings().weight).detach()
    distances = torch.cdist(prototypes, prototypes) + torch.eye(len(prototypes)) * 1e9
    assert distances.min() > 1e-4  # no two rows start equal
    weights = model.text_prototypes.mapping.weight
    keywords = keyword_token_ids(model.prompt.tokenizer)
    if method != "cluster":
        torch.testing.assert_close(weights[:, keywords].sum(dim=1), torch.ones(len(weights)))


def test_adaptive_vocabulary_size_follows_the_task():
    assert adaptive_num_tokens(96, 96, 7) == 1000
    assert adaptive_num_tokens(512, 720, 21) == 2000 and adaptive_num_tokens(96, 96, 1) == 500


def test_inter_variate_attention_is_equivariant_to_permuting_variables():
    config = parse_config(["--model", "TimeLLM", "--inter_variate_heads", "2", "--inter_variate_ff", "16", "--dropout", "0"])
    config.llm_dim = 8
    layer = InterVariateAttention(config).eval()
    layer.keep_attention = True
    batch, n_vars, patches = 2, 4, 5
    context = SeriesContext.from_input(torch.randn(batch, 32, n_vars), Normalize(n_vars, affine=False))
    x = torch.randn(batch * n_vars, patches, 8)
    permutation = torch.tensor([2, 0, 3, 1])
    permuted_rows = (torch.arange(batch).unsqueeze(1) * n_vars + permutation).flatten()
    torch.testing.assert_close(layer(x[permuted_rows], context).value, layer(x, context).value[permuted_rows])
    assert layer.attention_maps.shape == (batch, patches, 2, n_vars, n_vars)
    assert not torch.allclose(layer(x, context).value, x)


def test_inter_variate_needs_all_channels_and_says_so():
    with pytest.raises(SystemExit):
        parse_config(["--model", "TimeLLM", "--use_inter_variate", "1", "--features", "S"])
    assert parse_config(["--model", "TimeLLM", "--use_inter_variate", "1"]).sample_layout == "all_channels"  # auto, derived
    result = run_script(["run_main.py", *FAST_RUN, "--model", "TimeLLM", "--use_inter_variate", "1", "--sample_layout", "per_channel"])
    assert result.returncode == 2 and "--use_inter_variate attends across the variables of one sample" in result.stderr
    with pytest.raises(SystemExit):
        parse_config(["--model", "TimeLLM", "--use_multiscale", "1", "--use_frequency", "1"])


def test_failed_statistical_fits_fall_back_to_the_last_value_and_are_counted(monkeypatch):
    windows, (forecasts, confidences, _, failures) = fit_with_a_failing(monkeypatch, statistical_module.ARIMAForecaster, "forecast")
    assert failures.tolist() == [3, 0]
    np.testing.assert_allclose(forecasts[:, 0], np.repeat(windows[:, -1:], 8, axis=1).astype(np.float32))
    assert np.all(confidences[:, 0] == 0) and np.all(confidences[:, 1] > 0)


@pytest.mark.slow  # 48 s: the default suite stays under 10 minutes on 2 cores
def test_hybrid_cache_is_hit_on_the_second_run_and_the_report_prints(output_dirs, tmp_path):
    outputs, checkpoints = output_dirs
    import pandas as pd

    data = tmp_path / "ETTh1_head.csv"
    pd.read_csv(os.path.join(ROOT, "dataset", "ETT-small", "ETTh1.csv")).head(400).to_csv(data, index=False)
    args = ["run_main.py", "--model", "TimeLLM", "--llm_model", "tiny-llama", "--llm_layers", "2", "--data", "custom", "--root_path", str(tmp_path),
            "--data_path", data.name, "--features", "S", "--seq_len", "64", "--label_len", "16", "--pred_len", "16", "--num_tokens", "20",
            "--d_model", "16", "--d_ff", "32", "--n_heads", "4", "--batch_size", "16", "--eval_batch_size", "64", "--train_epochs", "1",
            "--max_steps", "4", "--use_hybrid", "1", "--hybrid_workers", "2", "--hybrid_cache_dir", str(tmp_path / "hybrid_cache"), *outputs]
    first = run_script(args)
    assert first.returncode == 0, first.stderr[-3000:]
    fitted = re.findall(r"hybrid: (\w+) split, (\d+) series windows \(fitted in 2 worker", first.stdout)
    assert [split for split, _ in fitted] == ["train", "val", "test"] and all(int(count) > 0 for _, count in fitted)
    assert len(os.listdir(tmp_path / "hybrid_cache")) == 3
    second = run_script(args)
    assert second.returncode == 0, second.stderr[-3000:]
    assert len(re.findall(r"hybrid: \w+ split, \d+ series windows \(cache ", second.stdout)) == 3 and "fitted in" not in second.stdout
    assert re.search(r"hybrid_weight_timellm \d\.\d+", second.stdout)

    run_dir = sorted(p for p in checkpoints.iterdir() if p.is_dir())[-1]
    report = run_script(["-m", "models.traditional.report", "--run", str(run_dir), "--samples", "2"])
    assert report.returncode == 0, report.stderr[-3000:]
    assert report.stdout.count("test window") == 2 and "fusion weights" in report.stdout and "ARIMA confidence" in report.stdout


def test_innovation_config_loads_with_every_scheme_off():
    config = parse_config(["--config", os.path.join(ROOT, "configs", "innovation_config.yaml")])
    flags = ("use_hybrid", "use_multiscale", "use_frequency", "use_inter_variate", "use_dynamic_prompt", "use_moe", "use_adaptive_vocab", "use_keyword_init")
    assert config.model == "TimeLLM" and not any(getattr(config, flag) for flag in flags)
    assert config.scales == [1, 2, 4] and config.num_experts == 4


def test_cached_forecasts_round_trip_keys_ending_in_zero_bytes(tmp_path):
    keys = [bytes(15) + b"\x00", b"\x01" * 16]  # a bytes dtype would strip the first key's zeros
    stored = statistical_module.StatisticalForecasts(keys, np.ones((2, 2, 4), np.float32), np.ones((2, 2), np.float32), np.ones((2, 4), np.float32), np.zeros(2, np.int64))
    stored.save(str(tmp_path / "split.npz"))
    assert statistical_module.StatisticalForecasts.load(str(tmp_path / "split.npz")).keys == keys
