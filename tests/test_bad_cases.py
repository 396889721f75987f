"""Bad-case LoRA fine-tuning (utils/bad_cases.py): the selection, and a run from a trained Time-LLM."""
import json
import os

import pytest
import torch

import utils.bad_cases as bad_cases
from data_provider.registry import WindowSubset
from tests.conftest import FAST_RUN
from utils.config import parse_config
from utils.trainer import Trainer, train_and_test


def test_the_worst_windows_are_selected_and_the_replay_is_drawn_from_the_others():
    errors = torch.tensor([0.1, 0.9, 0.3, 0.8, 0.2, 0.05, 0.7, 0.4, 0.6, 0.5])
    bad, replay = bad_cases.select_bad_cases(errors, 0.25, 0.3, seed=1)
    assert bad == [1, 3, 6]  # ceil(0.25 x 10) = 3, worst first
    assert len(replay) == 3 and not set(replay) & set(bad)
    assert bad_cases.select_bad_cases(errors, 0.25, 0.3, seed=1) == (bad, replay)  # seeded
    assert bad_cases.select_bad_cases(errors, 0.25, 0.0, seed=1)[1] == []


@pytest.mark.parametrize("flags, message", [
    (["--finetune", "bad_cases", "--use_lora", "1", "--model", "TimeLLM"], "--finetune bad_cases fine-tunes a trained run on its worst training windows: give --init_checkpoint"),
    (["--finetune", "bad_cases", "--init_checkpoint", "run"], "--finetune bad_cases trains LoRA adapters on the LLM: give --use_lora 1"),
    (["--bad_case_fraction", "0"], "--bad_case_fraction must be in (0, 1]"),
    (["--bad_case_fraction", "0.6", "--replay_fraction", "0.5"], "--replay_fraction must be >= 0 and at most 1 - --bad_case_fraction"),
])
def test_bad_fine_tuning_flags_name_the_flag(flags, message, capsys):
    with pytest.raises(SystemExit):
        parse_config(flags)
    error = capsys.readouterr().err
    assert error.startswith(f"error: {message}") and error.count("\n") == 1


def test_bad_case_fine_tuning_trains_on_the_worst_training_windows_only(tmp_path, small_etth1, monkeypatch):
    timellm = ["--model", "TimeLLM", "--llm_model", "tiny-gpt2", "--llm_layers", "2", "--d_model", "8", "--d_ff", "16", "--batch_size", "8"]
    base = parse_config([*FAST_RUN, *small_etth1, *timellm, "--features", "S", "--checkpoints", str(tmp_path / "base"), "--report_to", "none"])
    base_result, base_run = train_and_test(base)

    scored, trainers = [], []
    original_errors, original_run = bad_cases.window_errors, Trainer.run
    def recorded_errors(trainer, model, dataset):
        scored.append((dataset, original_errors(trainer, model, dataset)))
        return scored[-1][1]

    monkeypatch.setattr(bad_cases, "window_errors", recorded_errors)
    monkeypatch.setattr(Trainer, "run", lambda self: (trainers.append(self), original_run(self))[1])
    config = parse_config(["--config", os.path.join(base_run, "config.yaml"), "--finetune", "bad_cases", "--init_checkpoint", base_run,
                           "--use_lora", "1", "--bad_case_fraction", "0.2", "--replay_fraction", "0.1", "--max_steps", "2",
                           "--checkpoints", str(tmp_path / "sft")])
    summary = bad_cases.bad_case_finetuning(config)
    (trainer,) = trainers
    train_split = trainer.datasets["train"]
    selection_set, errors = scored[0]
    assert selection_set is train_split  # selection scores the training split, nothing else
    windows = len(train_split)
    assert summary["bad_case_indices"] == torch.argsort(errors, descending=True, stable=True)[: summary["bad_cases"]].tolist()
    assert summary["training_windows"] == windows and summary["bad_cases"] == -(-windows * 2 // 10)
    # The fine-tuning run trains on those windows of the training split; validation and test are whole.
    assert isinstance(trainer.train_set, WindowSubset) and trainer.train_set.dataset is train_split
    assert set(trainer.train_set.indices) >= set(summary["bad_case_indices"]) and max(trainer.train_set.indices) < windows
    assert len(trainer.train_set) == summary["bad_cases"] + summary["replayed"]
    # Fresh adapters start from the base run's forecasts: its test MSE before fine-tuning is the base run's.
    assert summary["mse_before"]["test"] == pytest.approx(base_result["mse"], rel=1e-5)
    assert summary["mse_before"]["bad cases"] > summary["mse_before"]["replayed"]
    written = json.load(open(os.path.join(trainer.run_dir, "bad_cases.json")))
    assert written["mse_after"] == summary["mse_after"] and written["test"]["mse"] == pytest.approx(summary["mse_after"]["test"], rel=1e-5)
    # The merged model loads without adapters and forecasts as the fine-tuned one.
    merged = parse_config(["--config", os.path.join(base_run, "config.yaml"), "--is_training", "0", "--checkpoint", summary["merged_checkpoint"],
                           "--llm_model_path", os.path.join(trainer.run_dir, "merged", "llm"), "--run_dir", str(tmp_path / "merged_test")])
    assert Trainer(merged).run()["mse"] == pytest.approx(summary["test"]["mse"], rel=1e-4)
