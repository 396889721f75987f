"""Time-LLM: every tiny backbone through forward/backward, frozen-LLM checkpoints, the prompt and its
attention mask, LLM ablations, 4-bit loading and offline errors."""
import os

import numpy as np
import pytest
import torch

from models import build_model
from tests.conftest import FAST_RUN, TINY, run_script, series_batch, timellm_config
from utils.checkpoint import load_model_checkpoint, save_model_checkpoint
from utils.prompt import input_statistics, read_description, top_lags


@pytest.mark.parametrize("backbone", TINY)
def test_forward_backward_reaches_only_trainable_parameters(backbone):
    model = build_model(timellm_config("--llm_model", backbone))
    prediction = model(series_batch()).prediction
    assert prediction.shape == (4, 16, 1)
    prediction.pow(2).mean().backward()
    for name, parameter in model.named_parameters():
        if name.startswith("llm."):
            assert not parameter.requires_grad and parameter.grad is None, name
        else:
            assert parameter.requires_grad and parameter.grad is not None and parameter.grad.abs().sum() > 0, name


@pytest.mark.parametrize("backbone", TINY)
def test_checkpoint_has_no_llm_weights_and_reload_reproduces_predictions(backbone, tmp_path):
    config = timellm_config("--llm_model", backbone)
    model = build_model(config)
    with torch.no_grad():  # move away from the initialisation so a failed load would show
        for parameter in model.text_prototypes.parameters():
            parameter.add_(0.01)
    model.eval()
    path = str(tmp_path / "checkpoint.pt")
    save_model_checkpoint(path, model, config)
    saved = torch.load(path, weights_only=False)["model"]
    assert saved and not any(name.startswith("llm.") for name in saved)
    assert sum(t.numel() for t in saved.values()) == sum(p.numel() for p in model.parameters() if p.requires_grad)
    reloaded = build_model(timellm_config("--llm_model", backbone))
    load_model_checkpoint(path, reloaded, config)
    reloaded.eval()
    x = series_batch()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(x).prediction, model(x).prediction, rtol=0, atol=0)


@pytest.mark.parametrize("backbone", ["tiny-llama", "tiny-gpt2", "tiny-bert"])
def test_forecast_does_not_depend_on_batch_mates_prompt_lengths(backbone):
    model = build_model(timellm_config("--llm_model", backbone)).eval()
    x = series_batch(size=6)
    x[1:] = torch.randn(5, 64, 1) * 1e3  # other values, other statistics, other prompt lengths
    x[0] = torch.linspace(0, 1, 64).unsqueeze(1)
    _, mask = model.prompt.encode(model.normalize(x, "norm")[:, :, 0])
    lengths = mask.sum(dim=1)
    assert (lengths[1:] > lengths[0]).any(), "the test needs a batch-mate with a longer prompt"
    with torch.no_grad():
        alone = model(x[:1]).prediction
        together = model(x).prediction[:1]
    torch.testing.assert_close(alone, together, rtol=1e-4, atol=1e-5)

    upstream = build_model(timellm_config("--llm_model", backbone, "--prompt_attention_mask", "0")).eval()
    upstream.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert (upstream(x[:1]).prediction - upstream(x).prediction[:1]).abs().max() > 1e-4  # the unmasked upstream path differs


def test_prompt_holds_the_description_and_numpy_statistics():
    model = build_model(timellm_config())
    x = torch.randn(3, 65)  # odd length: the lower median is the median
    texts = model.prompt.texts(x)
    description = read_description("ETTh1")
    for row, text in zip(x.numpy(), texts):
        assert text.startswith(f"<|start_prompt|>Dataset description: {description}Task description: forecast the next 16 steps given the previous 64 steps")
        assert f"min value {float(np.float32(row.min()))}," in text
        assert f"max value {float(np.float32(row.max()))}," in text
        assert f"median value {float(np.float32(np.median(row)))}," in text
        trend = "upward" if row[-1] - row[0] > 0 else "downward"
        assert f"the trend of input is {trend}," in text
    assert "--content" not in texts[0]
    custom = build_model(timellm_config("--content", "Hourly sales of one shop."))
    assert "Dataset description: Hourly sales of one shop.Task description" in custom.prompt.texts(x)[0]


def test_lags_of_a_period_24_sine_rank_24_first():
    steps = torch.arange(512, dtype=torch.float32)
    sine = torch.sin(2 * torch.pi * steps / 24).unsqueeze(0)
    lags = top_lags(sine, 5)[0].tolist()
    assert lags[0] == 24 and 0 not in lags
    assert set(lags) == {24, 48, 72, 96, 120}
    assert top_lags(sine, 5, "upstream")[0, 0].item() == 0  # upstream always ranks lag 0 first
    stats = input_statistics(sine)
    assert stats["lags"].shape == (1, 5)


@pytest.mark.parametrize("ablation", ["random_init", "no_llm_keep_prompt", "llm2attn_keep_prompt", "llm2trsf_keep_prompt"])
def test_each_llm_replacement_keeping_the_prompt_runs_with_everything_else_identical(ablation):
    reference = build_model(timellm_config())
    model = build_model(timellm_config("--llm_ablation", ablation))
    prediction = model(series_batch()).prediction
    prediction.pow(2).mean().backward()
    assert prediction.shape == (4, 16, 1) and torch.isfinite(prediction).all()
    shared = {name for name, p in reference.named_parameters() if p.requires_grad}
    trained = {name for name, p in model.named_parameters() if p.requires_grad}
    assert shared <= trained
    if ablation in ("llm2attn_keep_prompt", "llm2trsf_keep_prompt"):
        assert any(name.startswith("sequence_model.") for name in trained)
    else:
        assert trained == shared


def test_llm_dim_is_derived_and_a_wrong_value_is_refused():
    config = timellm_config()
    build_model(config)
    assert config.llm_dim == 64
    with pytest.raises(ValueError, match="--llm_dim 768 disagrees"):
        build_model(timellm_config("--llm_dim", "768"))


def test_four_bit_tiny_qwen2_trains_a_few_steps_on_cpu(output_dirs):
    outputs, checkpoints = output_dirs
    args = ["run_main.py", *FAST_RUN, "--model", "TimeLLM", "--llm_model", "tiny-qwen2", "--load_in_4bit",
            "--llm_layers", "2", "--features", "S", "--max_steps", "3", "--batch_size", "8", "--num_tokens", "50", *outputs]
    result = run_script(args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "test: mse" in result.stdout
    run_dir = [p for p in os.listdir(checkpoints) if os.path.isdir(checkpoints / p)][0]
    saved = torch.load(checkpoints / run_dir / "checkpoint.pt", weights_only=False)["model"]
    assert not any(name.startswith("llm.") for name in saved)


def test_four_bit_layers_are_bitsandbytes():
    import bitsandbytes

    model = build_model(timellm_config("--llm_model", "tiny-qwen2", "--load_in_4bit"))
    assert isinstance(model.llm.layers[0].mlp.up_proj, bitsandbytes.nn.Linear4bit)


def test_backbone_unavailable_offline_gives_one_clear_line(output_dirs):
    outputs, _ = output_dirs
    result = run_script(["run_main.py", *FAST_RUN, "--model", "TimeLLM", "--llm_model", "GPT2", *outputs],
                        env_extra={"HF_HUB_OFFLINE": "1"})
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "LLM GPT2 (openai-community/gpt2) is not available offline: pass --llm_model_path" in result.stderr
    missing = run_script(["run_main.py", *FAST_RUN, "--model", "TimeLLM", "--llm_model_path", "/nonexistent/model", *outputs],
                         env_extra={"HF_HUB_OFFLINE": "1"})
    assert missing.returncode == 2 and "not available offline" in missing.stderr


@pytest.mark.slow
def test_smollm2_loads_offline_from_the_package():
    from utils.llm_loader import load_llm

    loaded = load_llm("SmolLM2", layers=2)
    assert loaded.hidden_size == 576 and len(loaded.tokenizer) == 49152 and loaded.is_causal
    assert len(loaded.model.layers) == 2
    ids = loaded.tokenizer(["The capital of France is"], return_tensors="pt")
    hidden = loaded.model(**ids).last_hidden_state
    assert hidden.shape == (1, ids.input_ids.shape[1], 576) and torch.isfinite(hidden).all()


@pytest.mark.slow
def test_converting_smollm2_leaves_the_random_state_alone(tmp_path):
    """The run that converts the GGUF file must initialise its own modules as a run that finds the
    conversion cached does (the conversion once drew from the global random state)."""
    from utils.llm_loader import _smollm2_gguf, convert_gguf

    torch.manual_seed(0)
    before = torch.random.get_rng_state()
    convert_gguf(_smollm2_gguf(), str(tmp_path))
    assert torch.equal(torch.random.get_rng_state(), before)
