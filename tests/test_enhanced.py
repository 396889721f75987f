"""Enhanced Time-LLM: TAPR and GRA-M conformance, trend labels, retrieval leakage, memory in checkpoints."""
import json
import os
import re

import pytest
import torch
import yaml

from data_provider.batch import Batch
from data_provider.tabular import ETTHourDataset
from layers.GRAM import search_keys, window_statistics
from layers.TAPR import TAPR, trend_labels
from models import ForecastOutput, build_model
from tests.conftest import MODULE_ARGS, PRED_LEN, SEQ_LEN, etth1_config, run_script, timellm_config, training_set
from utils.checkpoint import load_model_checkpoint, save_model_checkpoint
from utils.settings import GRAMConfig, TAPRConfig


def enhanced_model(tapr, gram, *extra):
    model = build_model(timellm_config(*MODULE_ARGS, "--use_tapr", str(tapr), "--use_gram", str(gram), *extra))
    if gram:
        model.gram.prepare({"train": training_set()})
    return model


def training_batch(dataset, indices):
    batch = Batch.collate([dataset[i] for i in indices])
    return batch.inputs, batch.targets[:, -PRED_LEN:], batch.window_position


@pytest.mark.parametrize("tapr, gram", [(1, 0), (0, 1), (1, 1)])
def test_each_combination_trains_with_finite_positive_aux_losses_reaching_its_modules(tapr, gram):
    model = enhanced_model(tapr, gram).train()
    dataset = training_set()
    x, future, position = training_batch(dataset, range(0, 4000, 500))
    output = model(x, window_position=position)
    assert isinstance(output, ForecastOutput) and output.prediction.shape == (8, PRED_LEN, 1)
    losses = dict(output.aux_losses)
    if tapr:
        supervised, accuracies = output.supervised_terms(future)
        losses.update(supervised)
        assert set(accuracies) == {"trend_direction_accuracy", "trend_magnitude_accuracy"}
    expected = ({"trend_direction", "trend_magnitude", "trend_consistency"} if tapr else set()) | (
        {"retrieval_gate_entropy", "retrieval_gate_consistency"} if gram else set())
    assert set(losses) == expected == set(model.aux_loss_weights)
    for name, value in losses.items():
        assert torch.isfinite(value) and value > 0, name
    # Each auxiliary loss alone reaches the parameters of the module that produced it.
    for name, value in losses.items():
        model.zero_grad()
        value.backward(retain_graph=True)
        module = getattr(model, "tapr" if name.startswith("trend") else "gram")
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters()), name
    # The forecasting loss plus the weighted auxiliary ones reaches every add-on parameter.
    model.zero_grad()
    total = output.prediction.sub(future).pow(2).mean() + sum(model.aux_loss_weights[n] * v for n, v in losses.items())
    total.backward()
    for module in (getattr(model, "tapr", None), getattr(model, "gram", None)):
        for name, parameter in (module.named_parameters() if module is not None else []):
            assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name
            assert parameter.grad.abs().sum() > 0, name
    assert all(parameter.grad is None for parameter in model.llm.parameters())  # the LLM stays frozen


@pytest.mark.parametrize("backbone", ["tiny-llama", "tiny-gpt2", "tiny-bert", "tiny-qwen2"])
def test_evaluation_runs_the_training_function(backbone):
    """Same weights, dropout off, no positions (nothing to exclude): train and eval mode give the same
    forecast, so the C2F fusion and the retrieval are applied alike, on every backbone family."""
    model = enhanced_model(1, 1, "--llm_model", backbone)
    x = torch.randn(4, SEQ_LEN, 1).cumsum(dim=1)
    trained = model.train()(x).prediction
    with torch.no_grad():
        evaluated = model.eval()(x).prediction
    torch.testing.assert_close(trained.detach(), evaluated)


def test_c2f_fusion_moves_the_forecast_within_its_bound():
    model = enhanced_model(1, 0)
    x = torch.randn(4, SEQ_LEN, 1).cumsum(dim=1)
    model.eval()
    with torch.no_grad():
        fused = model(x).prediction
        model.tapr.fusion = None  # the same model without the fusion
        plain = model(x).prediction
    # |gate| < 0.5, |slope| <= 2 * 0.02: at most 0.02 * h input standard deviations at step h.
    bound = 0.02 * torch.arange(1, PRED_LEN + 1).view(1, -1, 1) * x.std(dim=1, unbiased=False, keepdim=True)
    assert (fused != plain).any() and ((fused - plain).abs() <= bound + 1e-5).all()


def test_trend_labels_follow_the_slope_thresholds():
    steps = torch.arange(PRED_LEN, dtype=torch.float32)
    slopes = torch.tensor([-0.05, -0.01, -0.001, 0.003, 0.01, 0.05])
    direction, magnitude = trend_labels(slopes.unsqueeze(1) * steps, (-0.02, -0.005, 0.005, 0.02))
    assert direction.tolist() == [0, 0, 1, 1, 2, 2]  # down, flat, up
    assert magnitude.tolist() == [0, 1, 1, 2, 2, 3]  # strong down, weak down, weak up, strong up


@pytest.mark.parametrize("flag, value, message", [
    ("--n_scales", "5", "--n_scales must be between 1 and 4"),
    ("--trend_thresholds", ["0.01", "-0.005", "0.005", "0.02"], "--trend_thresholds must be 4 increasing"),
])
def test_invalid_module_flags_name_the_flag(flag, value, message):
    values = value if isinstance(value, list) else [value]
    config = timellm_config(*MODULE_ARGS, "--use_tapr", "1", "--use_gram", "1", flag, *values)
    config.llm_dim = 64
    with pytest.raises(ValueError, match=message):
        TAPR(TAPRConfig.from_config(config))


@pytest.mark.parametrize("flag, value, message", [
    ("--d_repr", "30", "--d_repr must be a positive multiple of 4"),
    ("--top_k", "0", "--gram_top_k must be in"),  # with --model TimeLLM, seed 002's --top_k is GRA-M's --gram_top_k
    ("--gram_top_k", "0", "--gram_top_k must be in"),
])
def test_invalid_gram_flags_are_refused_by_its_section(flag, value, message, capsys):
    with pytest.raises(SystemExit):
        timellm_config("--llm_model", "tiny-llama", "--use_gram", "1", flag, value)
    assert message in capsys.readouterr().err
    with pytest.raises(ValueError, match=message.replace("--top_k", "--gram_top_k")):
        GRAMConfig(**{"d_repr": 30} if flag == "--d_repr" else {"gram_top_k": 0})


def test_retrieval_never_sees_a_window_overlapping_the_query_horizon():
    dataset = training_set()
    model = enhanced_model(0, 1)
    memory = model.gram.retriever.memory
    # Built from training rows only: every memory window (input and future) ends inside them.
    assert len(memory) == 400
    assert int((memory.positions[:, 1] + SEQ_LEN + PRED_LEN).max()) <= dataset.first_row + len(dataset.data)
    with pytest.raises(ValueError, match="training split"):
        memory.build(ETTHourDataset(etth1_config(), "val"))
    # Queries: training windows, some of them exactly memory windows (their own window must not return).
    x, _, position = training_batch(dataset, range(0, len(dataset), 97))
    series = (x[..., 0] - x[..., 0].mean(1, keepdim=True)) / x[..., 0].std(1, unbiased=False, keepdim=True)
    keys = search_keys(series, window_statistics(series, x[..., 0].mean(1), x[..., 0].std(1, unbiased=False)))
    indices, eligible = memory.search(keys, position, 3, exclusion="non_overlapping")
    horizon_start = position[:, 1:2] + SEQ_LEN
    retrieved_start = memory.positions[indices, 1]
    overlap = (retrieved_start < horizon_start + PRED_LEN) & (retrieved_start + SEQ_LEN + PRED_LEN > horizon_start)
    assert eligible.all() and not overlap.any()
    assert ((retrieved_start > horizon_start) & eligible).any()  # later windows are retrievable there
    # Causal (the default): only windows whose future ends before the horizon starts, as at test time.
    indices, eligible = memory.search(keys, position, 3, exclusion="causal")
    retrieved_end = memory.positions[indices, 1] + SEQ_LEN + PRED_LEN
    assert not (eligible & (retrieved_end > horizon_start)).any()
    assert not eligible[0].any() and eligible[1:].all()  # the first training window has no past to retrieve
    # Without the exclusion, the nearest window of a query that is in memory is itself: the guard matters.
    unguarded, _ = memory.search(keys, position, 1, exclusion=None)
    own = (memory.positions[unguarded[:, 0], 1] == position[:, 1])
    assert own.any()


def test_training_retrieval_is_causal_by_default():
    model = enhanced_model(0, 1)
    assert model.gram.retriever.training_exclusion == "causal"
    x, _, position = training_batch(training_set(), [0, 500, 1000])
    model.train()
    output = model(x, window_position=position)
    assert torch.isfinite(output.prediction).all()


@pytest.mark.parametrize("tapr, gram", [(1, 0), (0, 1), (1, 1)])
def test_state_round_trips_through_a_checkpoint_memory_included(tmp_path, tapr, gram):
    flags = ["--use_tapr", str(tapr), "--use_gram", str(gram)]
    trained = enhanced_model(tapr, gram)
    path = str(tmp_path / "checkpoint.pt")
    save_model_checkpoint(path, trained, timellm_config(*MODULE_ARGS, *flags))
    fresh = build_model(timellm_config(*MODULE_ARGS, *flags, "--build_memory", "0"))
    if gram:
        fresh.gram.prepare({"train": training_set()})  # --build_memory 0: keeps what it has (nothing yet)
        with pytest.raises(RuntimeError, match="--build_memory 1"):
            fresh(torch.randn(2, SEQ_LEN, 1))
    load_model_checkpoint(path, fresh)
    for name, buffer in trained.named_buffers():
        torch.testing.assert_close(dict(fresh.named_buffers())[name], buffer)
    fresh.eval(), trained.eval()
    x = torch.randn(2, SEQ_LEN, 1)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x).prediction, trained(x).prediction)


@pytest.mark.slow  # 51 s: the default suite stays under 10 minutes on 2 cores
def test_run_main_enhanced_logs_aux_terms_and_tests_a_saved_run(output_dirs):
    flags, checkpoints = output_dirs
    common = ["--llm_model", "tiny-llama", "--llm_layers", "2", "--data", "ETTh1", "--features", "S", "--seq_len", "64",
              "--pred_len", "16", "--label_len", "16", "--d_model", "16", "--n_heads", "4", "--num_tokens", "20",
              "--d_repr", "16", "--top_k", "3", "--max_memory_size", "300", "--eval_batch_size", "512", *flags]
    result = run_script(["run_main_enhanced.py", *common, "--percent", "5", "--batch_size", "16", "--train_epochs", "1", "--max_steps", "6", "--aux_warmup_steps", "3"])
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = re.search(r"run (\S+)$", result.stdout.strip().splitlines()[-1]).group(1)
    log = open(os.path.join(run_dir, "train.log")).read()
    assert re.search(r"aux loss \d\.\d+ \(.*trend_direction_accuracy \d\.\d+, trend_magnitude_accuracy \d\.\d+\)", log)
    with open(os.path.join(run_dir, "metrics.json")) as handle:
        epoch = json.load(handle)["epochs"][0]
    assert epoch["aux"] > 0 and 0 <= epoch["trend_direction_accuracy"] <= 1
    with open(os.path.join(run_dir, "config.yaml")) as handle:
        saved = yaml.safe_load(handle)
    assert (saved["use_tapr"], saved["use_gram"], saved["learning_rate"], saved["dropout"], saved["patience"]) == (1, 1, 5e-4, 0.15, 15)
    # Test the saved run on its own: the memory comes from the checkpoint (--build_memory 0).
    tested = run_script(["run_main_enhanced.py", *common, "--is_training", "0", "--checkpoint", run_dir, "--build_memory", "0"])
    assert tested.returncode == 0, tested.stderr[-3000:]
    assert tested.stdout.strip().splitlines()[-1].split("windows")[0] == result.stdout.strip().splitlines()[-1].split("windows")[0]


def test_gram_refuses_m4():
    result = run_script(["run_m4.py", "--model", "TimeLLM", "--use_gram", "1", "--seasonal_patterns", "Weekly"])
    assert result.returncode == 2 and "--use_gram needs sliding-window data" in result.stderr


def test_a_query_with_nothing_to_retrieve_gets_zero_weights_and_finite_gradients():
    model = enhanced_model(0, 1).train()
    memory = model.gram.retriever.memory
    # Every memory window overlaps this query's horizon: the whole memory made of one position.
    memory.positions[:, 1] = 1000
    x = torch.randn(2, SEQ_LEN, 1).cumsum(dim=1)
    output = model(x, window_position=torch.tensor([[0, 1000 - SEQ_LEN], [0, 1000 - SEQ_LEN]]))
    assert output.diagnostics["retrieval_confidence"] == 0
    (output.prediction.pow(2).mean() + sum(output.aux_losses.values())).backward()
    for name, parameter in model.gram.named_parameters():
        assert parameter.grad is None or torch.isfinite(parameter.grad).all(), name


@pytest.mark.slow
def test_enhanced_cpu_config_runs_with_smollm2_and_resumes(output_dirs, tmp_path):
    """The shipped CPU config on the real backbone: a few steps, a step checkpoint, a resume from it."""
    flags, _ = output_dirs
    common = ["run_main_enhanced.py", "--config", "configs/enhanced_cpu.yaml", "--max_steps", "6", "--save_steps", "3",
              "--max_memory_size", "2000", "--eval_batch_size", "128", *flags]
    first = run_script([*common, "--run_dir", str(tmp_path / "run")])
    assert first.returncode == 0, first.stderr[-3000:]
    assert os.path.isfile(tmp_path / "run" / "checkpoint_step_3.pt")
    resumed = run_script([*common, "--resume_from_checkpoint", str(tmp_path / "run" / "checkpoint_step_3.pt")])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    # The second run replays steps 4-6 from the step-3 state: the same test figures.
    assert first.stdout.strip().splitlines()[-1].split("windows")[0] == resumed.stdout.strip().splitlines()[-1].split("windows")[0]
