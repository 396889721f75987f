"""The fast Time-LLM path computes what the straightforward reference path computes."""
import re

import pytest
import torch

from layers.Reprogramming import TextPrototypes
from models import build_model
from tests.conftest import run_script, series_batch, timellm_config


def pair(backbone, *extra):
    """Reference-path and fast-path models with identical weights, dropout off."""
    reference = build_model(timellm_config("--llm_model", backbone, "--reference_path", "1", "--dropout", "0", *extra))
    fast = build_model(timellm_config("--llm_model", backbone, "--dropout", "0", *extra))
    fast.load_state_dict(reference.state_dict())
    return reference, fast


@pytest.mark.parametrize("backbone", ["tiny-gpt2", "tiny-llama", "tiny-qwen2", "tiny-bert"])
def test_fast_path_equals_reference_predictions_and_gradients(backbone):
    reference, fast = pair(backbone)
    assert fast.backbone.use_prefix_cache == (backbone != "tiny-bert")  # encoders fall back to the full path
    x = series_batch(size=6)
    x[3:] *= 50
    outputs = [model(x).prediction for model in (reference, fast)]
    torch.testing.assert_close(outputs[1], outputs[0], rtol=1e-4, atol=1e-5)
    for output in outputs:
        output.pow(2).mean().backward()
    for (name, p_ref), (_, p_fast) in zip(reference.named_parameters(), fast.named_parameters()):
        if p_ref.requires_grad:
            # Relative to the tensor's largest gradient; the floor covers the key bias, whose true
            # gradient is zero (softmax is invariant to it), so both paths hold rounding noise only.
            difference = (p_fast.grad - p_ref.grad).abs().max().item()
            assert difference <= 1e-4 * p_ref.grad.abs().max().item() + 1e-4, name
    reference.eval(), fast.eval()
    with torch.no_grad():
        torch.testing.assert_close(fast(x).prediction, reference(x).prediction, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("backbone", ["tiny-gpt2", "tiny-llama", "tiny-bert"])
@pytest.mark.parametrize("digits", [0, 3])
def test_prompt_pieces_give_the_whole_string_token_ids(backbone, digits):
    model = build_model(timellm_config("--llm_model", backbone, "--prompt_digits", str(digits)))
    prompt = model.prompt
    assert prompt.segmented and prompt.prefix_length > 50
    x = torch.randn(16, 64) * torch.logspace(-3, 3, 16).unsqueeze(1)
    fast_ids, fast_mask = prompt.encode(x)
    whole_ids, whole_mask = prompt.encode_texts(x)
    for row in range(16):
        assert fast_ids[row][fast_mask[row].bool()].tolist() == whole_ids[row][whole_mask[row].bool()].tolist()
    assert (fast_ids[:, : prompt.prefix_length] == torch.tensor(prompt.prefix_ids)).all()


def test_prototypes_are_computed_once_per_evaluation_pass(monkeypatch):
    model = build_model(timellm_config()).eval()
    calls = []
    original = TextPrototypes.forward
    monkeypatch.setattr(TextPrototypes, "forward", lambda self, e: calls.append(1) or original(self, e))
    with torch.no_grad():
        for seed in range(3):
            model(series_batch(seed=seed))
    assert len(calls) == 1
    # A fused optimizer step changes the weights without bumping tensor versions; the next
    # evaluation pass (eval() again) must still see the new weights.
    mapping = model.text_prototypes.mapping
    optimizer = torch.optim.Adam(mapping.parameters(), lr=0.1, fused=True)
    for parameter in mapping.parameters():
        parameter.grad = torch.ones_like(parameter)
    optimizer.step()
    model.eval()
    with torch.no_grad():
        model(series_batch())
        word_embeddings = model.llm.get_input_embeddings().weight
        torch.testing.assert_close(model.text_prototypes.cached(word_embeddings), original(model.text_prototypes, word_embeddings))
    assert len(calls) == 2


@pytest.mark.parametrize("accumulation, deferred", [(1, False), (4, True)])
def test_the_trainer_defers_prototype_gradients_under_accumulation_in_one_process(accumulation, deferred, small_etth1, tmp_path):
    """The trainer decides, from --gradient_accumulation_steps and its process count (the model reads no
    environment variable)."""
    from utils.config import parse_config
    from utils.trainer import Trainer

    config = parse_config(["--model", "TimeLLM", "--llm_model", "tiny-gpt2", "--llm_layers", "2", "--seq_len", "64", "--pred_len", "16",
                           "--num_tokens", "50", "--features", "S", "--gradient_accumulation_steps", str(accumulation),
                           "--checkpoints", str(tmp_path), "--report_to", "none", *small_etth1])
    trainer = Trainer(config)
    assert trainer.model.text_prototypes.defer_gradients is deferred


def test_prototypes_once_per_optimizer_step_under_gradient_accumulation(monkeypatch):
    reference = build_model(timellm_config("--reference_path", "1", "--dropout", "0"))
    fast = build_model(timellm_config("--dropout", "0", "--gradient_accumulation_steps", "4"))
    fast.load_state_dict(reference.state_dict())
    fast.text_prototypes.defer_gradients = True  # what the trainer sets under gradient accumulation in one process
    calls = []
    original = TextPrototypes.forward
    monkeypatch.setattr(TextPrototypes, "forward", lambda self, e: calls.append(1) or original(self, e))
    for micro_batch in range(4):
        for model in (reference, fast):
            model(series_batch(seed=micro_batch)).prediction.pow(2).mean().div(4).backward()
    assert len(calls) == 4 + 1  # reference: every micro-batch; fast: once
    assert fast.text_prototypes.mapping.weight.grad is None  # deferred until the flush
    fast.text_prototypes.flush_gradients()
    for name in ("weight", "bias"):
        torch.testing.assert_close(getattr(fast.text_prototypes.mapping, name).grad,
                                   getattr(reference.text_prototypes.mapping, name).grad, rtol=1e-4, atol=1e-7)


def test_gradient_checkpointing_runs_without_the_prefix_cache():
    model = build_model(timellm_config("--llm_model", "tiny-llama", "--gradient_checkpointing", "1", "--dropout", "0"))
    assert not model.backbone.use_prefix_cache
    model.train()
    model(series_batch()).prediction.pow(2).mean().backward()
    assert model.head.linear.weight.grad is not None


def test_speed_options_change_the_model_as_documented():
    full = build_model(timellm_config())
    low_rank = build_model(timellm_config("--mapping_rank", "8"))
    count = lambda model: sum(p.numel() for p in model.text_prototypes.parameters())
    assert count(low_rank) < count(full) / 4
    short = build_model(timellm_config("--prompt_digits", "2"))
    x = torch.randn(4, 64)
    assert short.prompt.encode(x)[0].shape[1] < full.prompt.encode(x)[0].shape[1]
    assert "min value" in short.prompt.texts(x)[0] and re.search(r"min value -?\d\.?\d?(e[-+]\d+)?,", short.prompt.texts(x)[0])


def test_training_with_gradient_accumulation_through_the_trainer(output_dirs):
    outputs, _ = output_dirs
    result = run_script(["run_main.py", "--model", "TimeLLM", "--llm_model", "tiny-gpt2", "--llm_layers", "2", "--features", "S",
                         "--seq_len", "64", "--pred_len", "16", "--num_tokens", "50", "--batch_size", "4",
                         "--gradient_accumulation_steps", "3", "--max_steps", "4", "--eval_batch_size", "256", *outputs])
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(r"epoch 1 \| step 4 \|", result.stdout)


def test_benchmark_script_prints_the_side_by_side_comparison():
    result = run_script(["scripts/benchmark.py", "--paths", "reference", "exact", "flagged", "--steps", "2", "--warmup", "1",
                         "--eval_batches", "2", "--llm_model", "tiny-gpt2", "--llm_layers", "2", "--seq_len", "64",
                         "--pred_len", "16", "--batch_size", "4", "--eval_batch_size", "4", "--flagged_args", "--mapping_rank 8"])
    assert result.returncode == 0, result.stderr[-3000:]
    difference = float(re.search(r"exact vs reference: .* max \|prediction difference\| (\S+)", result.stdout).group(1))
    assert difference < 1e-4
    assert re.search(r"^speedup: train \d+\.\d+x eval \d+\.\d+x$", result.stdout, re.M)
