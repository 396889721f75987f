"""What makes the fork's numbers comparable with published tables: selection in scaled units, the
upstream learning-rate schedules, Tan et al.'s LLM ablations, the upstream-compatible preset."""
import json

import numpy as np
import pytest
import torch

from models import build_model
from tests.conftest import script_commands
from utils.config import parse_config
from utils.metrics import forecast_metrics
from utils.trainer import Trainer


def _dlinear_run(tmp_path, small_etth1, name, *extra):
    config = parse_config([
        "--model", "DLinear", *small_etth1, "--features", "M", "--seq_len", "48", "--pred_len", "24", "--label_len", "24",
        "--train_epochs", "3", "--patience", "3", "--batch_size", "32", "--learning_rate", "0.01",
        "--checkpoints", str(tmp_path / "checkpoints"), "--run_dir", str(tmp_path / name), *extra,
    ])
    trainer = Trainer(config)
    result = trainer.run()
    return trainer, result, json.load(open(tmp_path / name / "metrics.json"))


def test_inverse_only_adds_original_unit_test_metrics(tmp_path, small_etth1):
    _, scaled, scaled_metrics = _dlinear_run(tmp_path, small_etth1, "scaled")
    _, inverse, inverse_metrics = _dlinear_run(tmp_path, small_etth1, "inverse", "--inverse", "1")
    # Validation (and so the chosen checkpoint) is in scaled units whatever --inverse says.
    assert [epoch["val_loss"] for epoch in inverse_metrics["epochs"]] == [epoch["val_loss"] for epoch in scaled_metrics["epochs"]]
    assert inverse_metrics["best_val_loss"] == scaled_metrics["best_val_loss"]
    for name in ("mse", "mae"):
        assert inverse[name] == scaled[name]
    # The original-unit metrics are those of the saved forecasts, which are in original units.
    arrays = np.load(tmp_path / "inverse" / "predictions.npz")
    expected = forecast_metrics(arrays["prediction"], arrays["truth"])
    assert abs(inverse["original_units"]["mse"] - expected["mse"]) < 1e-6 * expected["mse"]
    assert inverse["original_units"]["mse"] > 3 * inverse["mse"]  # ETTh1's loads are in the tens
    assert "original_units" not in scaled


# ------------------------------------------------------------------------ Tan et al.'s ablations
SEQ_LEN, PRED_LEN, D_MODEL, PATCH_LEN, STRIDE = 64, 16, 16, 16, 8
PATCHES = (SEQ_LEN - PATCH_LEN) // STRIDE + 2
PATCH_EMBEDDING = 3 * PATCH_LEN * D_MODEL  # Time-LLM's token embedding: Conv1d(patch_len, d_model, 3), no bias
LINEAR_HEAD = PATCHES * D_MODEL * PRED_LEN + PRED_LEN
TAN_ATTENTION = 4 * D_MODEL * D_MODEL + 2 * D_MODEL  # bias-free q, k, v, output; LayerNorm
TRANSFORMER_LAYER = (3 * D_MODEL * D_MODEL + 3 * D_MODEL) + (D_MODEL * D_MODEL + D_MODEL) + (D_MODEL * 2048 + 2048) + (2048 * D_MODEL + D_MODEL) + 4 * D_MODEL


def _ablation_config(*extra):
    config = parse_config(["--model", "TimeLLM", "--llm_model", "tiny-gpt2", "--seq_len", str(SEQ_LEN), "--pred_len", str(PRED_LEN),
                           "--d_model", str(D_MODEL), "--patch_len", str(PATCH_LEN), "--stride", str(STRIDE), *extra])
    config.enc_in = config.dec_in = config.c_out = 1
    config.prompt_name = "ETTh1"
    return config


@pytest.mark.parametrize("ablation, expected", [
    ("no_llm", PATCH_EMBEDDING + LINEAR_HEAD),
    ("llm2attn", PATCH_EMBEDDING + TAN_ATTENTION + LINEAR_HEAD),
    ("llm2trsf", PATCH_EMBEDDING + TRANSFORMER_LAYER + LINEAR_HEAD),
])
def test_tan_ablations_train_exactly_their_definition(ablation, expected):
    model = build_model(_ablation_config("--llm_ablation", ablation))
    assert sum(p.numel() for p in model.parameters()) == expected  # nothing else, frozen or not: no LLM
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == expected
    x = torch.randn(4, SEQ_LEN, 7).cumsum(dim=1)
    prediction = model(x).prediction
    assert prediction.shape == (4, PRED_LEN, 7)
    prediction.pow(2).mean().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_pattn_trains_exactly_its_definition():
    config = parse_config(["--model", "PAttn", "--seq_len", str(SEQ_LEN), "--pred_len", str(PRED_LEN), "--d_model", str(D_MODEL)])
    config.enc_in = config.dec_in = config.c_out = 3
    model = build_model(config)
    expected = (PATCH_LEN * D_MODEL + D_MODEL) + TAN_ATTENTION + LINEAR_HEAD  # Linear(patch_len, d_model) with bias
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == expected


def test_tan_ablations_refuse_add_ons_they_cannot_use(capsys):
    with pytest.raises(SystemExit):
        _ablation_config("--llm_ablation", "no_llm", "--use_tapr", "1")
    assert "--llm_ablation no_llm (Tan et al.) keeps only the patch embedding and a linear head: --use_tapr" in capsys.readouterr().err


# ---------------------------------------------------------------------- the upstream-compatible preset
def test_upstream_compat_preset_layers_over_a_preset_and_switches_every_upstream_behaviour():
    config = parse_config(["--config", "configs/demo.yaml", "--config", "configs/upstream_compat.yaml", "--learning_rate", "0.01"])
    assert (config.model, config.llm_layers, config.max_steps) == ("TimeLLM", 2, 150)  # from the preset
    assert (config.prompt_domain, config.lag_method, config.prompt_attention_mask, config.lradj) == (0, "upstream", 0, "upstream_type1")
    assert config.learning_rate == 0.01  # the command line overrides both files


def test_prompt_domain_0_is_upstreams_default_description():
    from utils.prompt import UPSTREAM_DEFAULT_DESCRIPTION, read_description

    assert read_description("Weather", prompt_domain=0) == UPSTREAM_DEFAULT_DESCRIPTION
    assert read_description("Weather", prompt_domain=1) != UPSTREAM_DEFAULT_DESCRIPTION
    model = build_model(_ablation_config("--prompt_domain", "0", "--data", "Weather"))
    assert model.prompt.prefix.startswith(f"<|start_prompt|>Dataset description: {UPSTREAM_DEFAULT_DESCRIPTION}Task description")


@pytest.mark.parametrize("script", ["TimeLLM_ETTh1.sh", "TimeLLM_ETTh2.sh", "TimeLLM_ETTm1.sh", "TimeLLM_ETTm2.sh", "TimeLLM_ECL.sh",
                                    "TimeLLM_Traffic.sh", "TimeLLM_Weather.sh", "TimeLLM_ETTh1_ETTh2.sh", "TimeLLM_M4.sh"])
def test_scripts_that_reproduce_upstream_use_its_effective_schedules(tmp_path, script):
    from tests.conftest import ROOT

    header = open(f"{ROOT}/scripts/{script}").read().split("source")[0]
    assert "upstream's" in header and "Schedule" in header  # each says what it reproduces and which schedule it uses
    commands = script_commands(tmp_path, script, UPSTREAM_COMPAT="1")
    assert len(commands) in (1, 4)
    for command in commands:
        config = parse_config(command[1:])  # every flag valid; the preset's files found
        assert config.lradj in ("TST", "upstream_type1", "upstream_COS", "upstream_m4_type1"), command
        assert (config.prompt_domain, config.lag_method, config.prompt_attention_mask) == (0, "upstream", 0)


def test_ablation_table_leads_with_the_validation_loss(tmp_path):
    import sys

    from tests.conftest import ROOT

    sys.path.insert(0, f"{ROOT}/scripts")
    import ablation

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    metrics = {"test": {"mse": 0.5, "mae": 0.6, "last_value_baseline": {"mse": 0.7}}, "best_val_loss": 0.25, "epochs": []}
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    row = ablation.summarise("study", "setting", "ok", str(run_dir))
    assert row["best_val_loss"] == 0.25
    ablation.write_outputs([row], str(tmp_path))
    table = (tmp_path / "comparison.md").read_text()
    assert "compared on best_val_loss" in table and "| best_val_loss | mse |" in table


def test_hybrid_cache_key_changes_with_the_statistical_code(tmp_path, monkeypatch):
    import shutil
    from types import SimpleNamespace

    from data_provider import statistical as hybrid
    from tests.conftest import ROOT

    config = SimpleNamespace(root_path=f"{ROOT}/dataset/ETT-small", data_path="ETTh1.csv", data="ETTh1", features="S",
                             target="OT", seq_len=96, pred_len=96, percent=100)
    settings = hybrid.StatisticalSettings(pred_len=96)
    key = hybrid.cache_key(config, "train", settings)
    assert hybrid.cache_key(config, "train", settings) == key
    assert hybrid.cache_key(config, "train", hybrid.StatisticalSettings(pred_len=96, arima_p=3)) != key  # settings
    monkeypatch.setattr(hybrid, "FORECAST_CACHE_VERSION", hybrid.FORECAST_CACHE_VERSION + 1)
    assert hybrid.cache_key(config, "train", settings) != key  # the version
    monkeypatch.undo()
    # An edit of a statistical model's source: a copy of the sources with one line changed.
    edited = tmp_path / "repo"
    for relative in hybrid.STATISTICAL_SOURCES:
        (edited / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(f"{ROOT}/{relative}", edited / relative)
    with open(edited / "models/traditional/arima.py", "a") as handle:
        handle.write("\n# changed\n")
    sources = tuple(str(edited / relative) for relative in hybrid.STATISTICAL_SOURCES)
    monkeypatch.setattr(hybrid, "STATISTICAL_SOURCES", sources)  # absolute paths: os.path.join keeps them
    assert hybrid.cache_key(config, "train", settings) != key


# ------------------------------------------------------------------------------- deterministic mode
@pytest.mark.parametrize("length, target", [(12, 3), (12, 5), (7, 7), (3, 12), (5, 9)])
def test_matrix_resampling_equals_torchs_functions(length, target):
    from torch.nn import functional as F

    from layers.Resample import adaptive_average, interpolate_linear

    values = torch.randn(4, length, 6)
    channels_first = values.transpose(1, 2)
    for corners in (False, True):
        expected = F.interpolate(channels_first, size=target, mode="linear", align_corners=corners).transpose(1, 2)
        torch.testing.assert_close(interpolate_linear(values, target, corners), expected, rtol=1e-5, atol=1e-6)
    if target <= length:
        torch.testing.assert_close(adaptive_average(values, target), F.adaptive_avg_pool1d(channels_first, target).transpose(1, 2), rtol=1e-5, atol=1e-6)


def test_deterministic_flag_switches_on_deterministic_kernels(tmp_path, small_etth1, monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    try:
        _dlinear_run(tmp_path, small_etth1, "deterministic", "--deterministic", "1", "--train_epochs", "1")
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
        import os

        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    finally:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.deterministic = False


def test_tapr_and_gram_train_under_deterministic_algorithms(tmp_path):
    """Every operation of TAPR + GRA-M has a deterministic kernel (CPU here; on CUDA the resampling
    used to be atomics-based interpolation and pooling, now matrix products)."""
    from tests.conftest import enhanced_run as run

    torch.use_deterministic_algorithms(True)
    try:
        _, first = run(tmp_path, "first", "--train_epochs", "1", "--max_steps", "4", "--deterministic", "1")
        _, second = run(tmp_path, "second", "--train_epochs", "1", "--max_steps", "4", "--deterministic", "1")
        assert first["mse"] == second["mse"]
    finally:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.deterministic = False


def test_seasonal_naive_baseline_repeats_the_last_season(tmp_path, small_etth1):
    _, result, _ = _dlinear_run(tmp_path, small_etth1, "seasonal", "--train_epochs", "1")
    arrays = np.load(tmp_path / "seasonal" / "predictions.npz")
    x, truth = arrays["input"], arrays["truth"]  # custom CSV with freq h: period 24
    forecast = x[:, -24:][:, np.arange(truth.shape[1]) % 24]
    expected = forecast_metrics(forecast, truth)
    assert result["seasonal_naive_baseline"]["period"] == 24
    assert abs(result["seasonal_naive_baseline"]["mse"] - expected["mse"]) < 1e-9 * expected["mse"]
