"""LoRA on the LLM backbone: which parameters train, what the checkpoint holds, the merged export, QLoRA."""
import os

import pytest
import torch

from data_provider.batch import Batch
from models import build_model
from tests.conftest import FAST_RUN, TINY, run_script, series_batch, timellm_config
from utils.checkpoint import load_model_checkpoint, save_model_checkpoint, trainable_state_dict
from utils.export_merged import export_merged
from utils.inference import Forecaster


def lora_model(backbone="tiny-llama", *extra):
    return build_model(timellm_config("--llm_model", backbone, "--use_lora", "1", "--lora_r", "4", *extra))


@pytest.mark.parametrize("backbone", TINY)
def test_only_adapters_and_reprogramming_receive_gradients(backbone):
    model = lora_model(backbone)
    model(series_batch()).prediction.pow(2).mean().backward()
    adapters = 0
    for name, parameter in model.named_parameters():
        if "lora_" in name:
            adapters += 1
            assert parameter.requires_grad and parameter.grad is not None, name
        elif name.startswith("llm."):
            assert not parameter.requires_grad and parameter.grad is None, name
        else:
            assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    # LoRA's B starts at zero, so B gets the gradient first (A's is zero until B moves).
    assert adapters == 2 * 2 * (1 if backbone == "tiny-gpt2" else 2)  # A and B, 2 layers, q/v (GPT-2: fused c_attn)
    assert all(p.grad.abs().sum() > 0 for n, p in model.named_parameters() if "lora_B" in n)
    assert not model.backbone.use_prefix_cache  # adapters change the prompt's keys and values every step


def test_adapter_dropout_trains_while_the_base_stays_in_eval_mode():
    model = lora_model("tiny-llama", "--lora_dropout", "0.2").train()
    modes = {name: module.training for name, module in model.llm.named_modules()}
    assert all(mode for name, mode in modes.items() if "lora_dropout" in name)
    assert not modes["base_model.model.layers.0.self_attn"]


def perturbed_adapters(model):
    torch.manual_seed(1)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.2)
    return model.eval()


def test_checkpoint_holds_adapters_not_base_weights(tmp_path):
    config = timellm_config("--llm_model", "tiny-llama", "--use_lora", "1", "--lora_r", "4")
    model = perturbed_adapters(build_model(config))
    path = str(tmp_path / "checkpoint.pt")
    save_model_checkpoint(path, model, config)
    saved = torch.load(path, weights_only=False)["model"]
    llm_entries = [name for name in saved if name.startswith("llm.")]
    assert llm_entries and all("lora_" in name for name in llm_entries)
    assert sum(t.numel() for t in saved.values()) == sum(p.numel() for p in model.parameters() if p.requires_grad)
    base = sum(p.numel() for n, p in model.llm.named_parameters() if "lora_" not in n)
    assert sum(saved[name].numel() for name in llm_entries) < 0.05 * base
    reloaded = build_model(config)
    load_model_checkpoint(path, reloaded, config)
    x = series_batch()
    torch.testing.assert_close(reloaded.eval()(x).prediction, model(x).prediction)


def test_merged_export_predicts_as_the_adapter_model(tmp_path):
    config = timellm_config("--llm_model", "tiny-llama", "--use_lora", "1", "--lora_r", "4")
    model = perturbed_adapters(build_model(config))
    run = tmp_path / "run"
    save_model_checkpoint(str(run / "checkpoint.pt"), model, config)
    exported = export_merged(str(run), str(tmp_path / "merged"))
    merged = Forecaster(exported)
    assert not merged.config.use_lora and not any("lora_" in n for n, _ in merged.model.named_parameters())
    x, marks = series_batch(), torch.zeros(4, 64, 4)  # TimeLLM reads no time features
    with torch.no_grad():
        adapter_prediction = model(x).prediction
    batch = Batch(x, targets=None, window_position=None, input_marks=marks, target_marks=marks)
    torch.testing.assert_close(torch.as_tensor(merged.predict(batch)), adapter_prediction[:, -16:], rtol=1e-4, atol=1e-5)
    # Without the merge the exported base would predict differently: the adapters matter here.
    plain = build_model(timellm_config("--llm_model", "tiny-llama"))
    plain.load_state_dict({k: v for k, v in trainable_state_dict(model).items() if not k.startswith("llm.")}, strict=False)
    assert not torch.allclose(plain.eval()(x).prediction, adapter_prediction, atol=1e-4)


def test_export_refuses_a_run_without_adapters(tmp_path):
    config = timellm_config()
    save_model_checkpoint(str(tmp_path / "checkpoint.pt"), build_model(config), config)
    with pytest.raises(ValueError, match="--use_lora 0"):
        export_merged(str(tmp_path), str(tmp_path / "merged"))


@pytest.mark.slow  # 25 s; 4-bit training through the trainer stays in the default suite (test_timellm)
def test_qlora_four_bit_tiny_qwen2_trains_through_the_trainer(output_dirs):
    outputs, checkpoints = output_dirs
    args = ["run_main.py", *FAST_RUN, "--model", "TimeLLM", "--llm_model", "tiny-qwen2", "--load_in_4bit", "--use_lora", "1",
            "--llm_layers", "2", "--features", "S", "--max_steps", "3", "--batch_size", "8", "--num_tokens", "50", *outputs]
    result = run_script(args)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = [p for p in os.listdir(checkpoints) if os.path.isdir(checkpoints / p)][0]
    saved = torch.load(checkpoints / run_dir / "checkpoint.pt", weights_only=False)["model"]
    lora = [name for name in saved if "lora_" in name]
    assert len(lora) == 8 and all(name.startswith("llm.") for name in lora)
    assert not any(name.startswith("llm.") and "lora_" not in name for name in saved)


def test_unknown_target_module_is_named():
    with pytest.raises(ValueError, match=r"--lora_target_modules \['wq'\] match no module"):
        lora_model("tiny-llama", "--lora_target_modules", "wq")
