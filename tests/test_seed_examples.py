"""The design documents as written, where they are sound (../shared/seeds; the project never reads
them, so their text is copied here).

- Seed 000's unit-test examples ("测试与验证 / 单元测试示例"), against this API. Adapted where the sketch
  is defective: `InterVariateAttention(d_model=64, n_heads=8)` and `attn(x, n_vars)` become the
  add-on protocol's config and context; `FrequencyDecomposition()` on x [B, T, N] filtered along the
  variables, so it now takes time last and refuses [B, T, N] by its shape.
- Seed 000's command lines of the seven schemes, and seed 002's ablation guide (the variables of
  scripts/TimeLLM_ETTh1_enhanced.sh), each a valid configuration as written.
- Seed 000's hybrid as specified: ARIMA and exponential-smoothing switches, confidence weighting,
  simple exponential smoothing where Holt-Winters cannot fit; `--base_num_tokens`; `--inter_variate_ff 0`.
"""
import numpy as np
import pytest
import torch

from layers.AddOn import SeriesContext
from layers.FrequencyDecomposition import FrequencyDecomposition
from layers.InterVariateAttention import InterVariateAttention
from layers.StandardNorm import Normalize
from models import build_model
from models.traditional import exponential_smoothing
from models.traditional import hybrid as hybrid_module
from run_main_enhanced import ENHANCED_DEFAULTS
from tests.conftest import fit_with_a_failing, script_commands, timellm_config
from utils.config import parse_config
from utils.settings import HybridConfig
from utils.vocab_init import adaptive_num_tokens


def test_inter_variate_attention_forward_shape():  # seed: TestInterVariateAttention.test_forward_shape
    config = parse_config(["--model", "TimeLLM", "--inter_variate_heads", "8", "--inter_variate_ff", "0"])
    config.llm_dim = 64
    attention = InterVariateAttention(config)
    x = torch.randn(28, 12, 64)  # B*N = 28, L = 12, D = 64
    n_vars = 7
    context = SeriesContext.from_input(torch.randn(28 // n_vars, 96, n_vars), Normalize(n_vars, affine=False))
    out = attention(x, context).value
    assert out.shape == (28, 12, 64)
    assert attention.feed_forward[0].out_features == 4 * 64  # --inter_variate_ff 0: the seed's automatic size
    with pytest.raises(ValueError, match=r"patches \[B\*N, P, d_llm\] = \[4\*7, P, d_llm\]; got \(27, 12, 64\)"):
        attention(x[:27], context)


def test_frequency_decomposition():  # seed: TestFrequencyDecomposition.test_decomposition
    decomposition = FrequencyDecomposition(0.1, seq_len=96)  # the seed's configuration: trend_cutoff 0.1
    x = torch.randn(4, 96, 7)  # B = 4, T = 96, N = 7
    with pytest.raises(ValueError, match=r"takes x \[\.\.\., T=96\] with time last; got \(4, 96, 7\)"):
        decomposition(x)
    trend, seasonal = (part.transpose(1, 2) for part in decomposition(x.transpose(1, 2)))
    assert trend.shape == (4, 96, 7) and seasonal.shape == (4, 96, 7)
    assert torch.allclose(x, trend + seasonal, atol=1e-5)  # the decomposition is exact


# Seed 000's run commands, each scheme's flags as written (the seed elides the rest with "...").
SEED_000_COMMANDS = [
    "--task_name long_term_forecast --model TimeLLM --data ETTh1 --pred_len 96",
    "--task_name long_term_forecast --model TimeLLM --data ETTh1 --pred_len 96 --use_hybrid --fusion_method adaptive",
    "--task_name long_term_forecast --model TimeLLM --data ETTh1 --pred_len 96 --use_multiscale --scales 1 2",
    "--task_name long_term_forecast --model TimeLLM --data ETTh1 --pred_len 96 --use_frequency --top_k_freqs 5 --trend_cutoff 0.1",
    "--task_name long_term_forecast --model TimeLLM --data ETTh1 --features M --pred_len 96 --use_inter_variate --inter_variate_heads 8",
    "--task_name long_term_forecast --model TimeLLM --data ETTh1 --pred_len 96 --use_dynamic_prompt --num_dynamic_tokens 32",
    "--task_name long_term_forecast --model TimeLLM --data ETTh1 --pred_len 96 --use_moe --num_experts 4 --top_k_experts 2",
    "--task_name long_term_forecast --model TimeLLM --data ETTh1 --pred_len 96 --use_adaptive_vocab --use_keyword_init --vocab_init_method weighted",
]


@pytest.mark.parametrize("command", SEED_000_COMMANDS)
def test_seed_000_commands_are_valid_as_written(command):
    config = parse_config(command.split())
    switches = [word[2:] for word in command.split() if word.startswith("--use_")]
    assert all(getattr(config, switch) == 1 for switch in switches)  # a bare switch means on


# Seed 002's ablation guide: experiments 1-4 and the sensitivity settings, as variables of the script.
SEED_002_ABLATIONS = [
    {"USE_TAPR": "1", "USE_GRAM": "0"}, {"USE_TAPR": "0", "USE_GRAM": "1"}, {"USE_TAPR": "1", "USE_GRAM": "1"},
    {"USE_TAPR": "0", "USE_GRAM": "0"}, {"N_SCALES": "2"}, {"N_SCALES": "4"}, {"TOP_K": "3"}, {"TOP_K": "10"},
    {"LAMBDA_TREND": "0.3"}, {"LAMBDA_TREND": "0.7"}, {"LAMBDA_RETRIEVAL": "0.2"}, {"LAMBDA_RETRIEVAL": "0.5"},
]


@pytest.mark.parametrize("variables", SEED_002_ABLATIONS, ids=lambda variables: ",".join(f"{k}={v}" for k, v in variables.items()))
def test_seed_002_ablation_guide_runs_as_written(variables, tmp_path):
    (command,) = script_commands(tmp_path, "TimeLLM_ETTh1_enhanced.sh", **variables)
    assert command[0].endswith("run_main_enhanced.py")
    config = parse_config(command[1:], defaults=ENHANCED_DEFAULTS)
    expected = {"USE_TAPR": ("use_tapr", int), "USE_GRAM": ("use_gram", int), "N_SCALES": ("n_scales", int), "TOP_K": ("gram_top_k", int),
                "LAMBDA_TREND": ("lambda_trend", float), "LAMBDA_RETRIEVAL": ("lambda_retrieval", float)}
    for variable, value in variables.items():
        name, kind = expected[variable]
        assert getattr(config, name) == kind(value), variable


def confidence_hybrid(**flags):
    args = ["--use_hybrid", "1", "--fusion_method", "weighted", *[item for name, value in flags.items() for item in (f"--{name}", str(value))]]
    return hybrid_module.HybridForecaster(HybridConfig.from_config(timellm_config(*args)))


def test_confidence_weighting_is_the_seeds_formula_per_series():
    hybrid = confidence_hybrid()
    assert not list(hybrid.parameters())  # nothing learned
    series = np.cumsum(np.random.default_rng(0).normal(size=(2, 64)), axis=1)
    forecasts, confidences, _ = hybrid.statistical(series)
    x = torch.as_tensor(series.T[None], dtype=torch.float32)  # [1, T, 2]: two series
    context = SeriesContext.from_input(x, Normalize(2, affine=False))
    own = torch.randn(1, 16, 2)
    fused = hybrid(own, context).value
    for column in range(2):  # w_llm = 1 / (1 + c_arima + c_es), w_k = c_k / (1 + c_arima + c_es)
        c = confidences[column]
        total = 1 + c.sum()
        expected = (own[0, :, column].numpy() + c[0] * forecasts[column, 0] + c[1] * forecasts[column, 1]) / total
        np.testing.assert_allclose(fused[0, :, column].numpy(), expected, rtol=1e-5, atol=1e-6)


def test_each_statistical_model_can_be_switched_off():
    arima_only, ets_only = confidence_hybrid(use_es=0), confidence_hybrid(use_arima=0)
    assert arima_only.sources == ("timellm", "arima") and ets_only.sources == ("timellm", "ets")
    forecasts, confidences, _ = ets_only.statistical(np.cumsum(np.random.default_rng(1).normal(size=(3, 64)), axis=1))
    assert forecasts.shape == (3, 1, 16) and confidences.shape == (3, 1)
    with pytest.raises(ValueError, match="--use_arima 0 and --use_es 0"):  # the hybrid's section refuses it
        HybridConfig(use_hybrid=1, use_arima=0, use_es=0)
    with pytest.raises(SystemExit):  # and so does the command line
        confidence_hybrid(use_arima=0, use_es=0)


def test_simple_exponential_smoothing_stands_in_where_holt_winters_cannot_fit(monkeypatch):
    windows, (forecasts, confidences, _, failures) = fit_with_a_failing(
        monkeypatch, exponential_smoothing.ExponentialSmoothingForecaster, "holt_winters"
    )
    assert failures.tolist() == [0, 0]  # no last-value fallback: the simpler model fitted
    for row, window in enumerate(windows):
        expected, _ = exponential_smoothing.simple_exponential_smoothing(window, 8)
        np.testing.assert_allclose(forecasts[row, 1], expected.astype(np.float32))
        assert np.allclose(forecasts[row, 1], forecasts[row, 1, 0])  # level only: a flat forecast
    assert np.all(confidences[:, 1] > 0)


def test_base_num_tokens_scales_the_adaptive_vocabulary():
    assert adaptive_num_tokens(96, 96, 7, base_tokens=1500) == 1500
    model = build_model(timellm_config("--use_adaptive_vocab", "1", "--base_num_tokens", "1500"))
    assert model.text_prototypes.mapping.out_features == adaptive_num_tokens(64, 16, 1, 1500) == 500
    model = build_model(timellm_config("--use_adaptive_vocab", "1", "--base_num_tokens", "4000"))
    assert model.text_prototypes.mapping.out_features == adaptive_num_tokens(64, 16, 1, 4000) == 837
