"""What makes the fork's numbers comparable with published tables: selection in scaled units, the
upstream learning-rate schedules, Tan et al.'s LLM ablations, the upstream-compatible preset."""
import json

import numpy as np

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
