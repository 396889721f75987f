"""One conformance suite, parametrised from the registries: every model (models.MODELS) and every
Time-LLM add-on (layers.registry.ADD_ONS), each on and the plain model off. For each: forward and
backward, finite auxiliary losses that all have a declared weight, gradients exactly where parameters
train, the frozen LLM untouched by an optimizer step, a checkpoint round trip that predicts the same,
and a sample's forecast independent of its batch-mates. An add-on defined in this file shows the
protocol's promise: one class (with its typed config) and one registry line, no edit of the model,
the trainer or the parser. Every model also runs with a distribution head (layers/DistributionHead.py).
The typed sections themselves (utils/settings/) are checked at the end."""
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from layers import registry
from layers.AddOn import AddOn, AddOnOutput, Stage
from models import MODELS, build_model
from tests.conftest import tiny_config, training_set
from utils.checkpoint import load_model_checkpoint, save_model_checkpoint
from utils.config import architecture_of
from utils.settings.addons import AddOnSection
from utils.settings.base import option, switch

# What each add-on needs besides its switch, to run on the tiny backbone. A registry entry missing
# here fails `test_every_registered_addon_is_covered`.
ADDON_SETTINGS = {
    "use_wavelet": ["--swt_level", "2"],
    "use_multiscale": [],
    "use_frequency": [],
    "use_tapr": [],
    "use_gram": ["--d_repr", "16", "--top_k", "3", "--max_memory_size", "400"],
    "use_dynamic_prompt": ["--num_dynamic_tokens", "4"],
    "use_inter_variate": ["--sample_layout", "all_channels", "--features", "M", "--inter_variate_heads", "2", "--inter_variate_ff", "32"],
    "use_moe": ["--moe_d_ff", "16"],
    "use_hybrid": ["--hybrid_workers", "1"],
}
# Parameters that may miss a gradient in one step: sparse routing sends a token to k experts only.
SPARSE = ("moe.experts.",)
ADDON_CASES = ["off", *ADDON_SETTINGS]


def addon_model(case: str, tmp_path):
    extra = [] if case == "off" else [f"--{case}", "1", *ADDON_SETTINGS[case]]
    n_vars = 3 if case == "use_inter_variate" else 1
    config = tiny_config("TimeLLM", n_vars, "--llm_model", "tiny-llama", "--hybrid_cache_dir", str(tmp_path / "hybrid"), *extra)
    model = build_model(config)
    if case == "use_gram":  # the memory comes from the training split; the hybrid fits unseen windows on the spot
        model.gram.prepare({"train": training_set()})
    return config, model


def inputs(config, size=4, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(size, config.seq_len, config.enc_in, generator=generator).cumsum(dim=1)
    marks = torch.randn(size, config.seq_len, 4, generator=generator)
    decoder = torch.randn(size, config.label_len + config.pred_len, config.enc_in, generator=generator)
    decoder_marks = torch.randn(size, config.label_len + config.pred_len, 4, generator=generator)
    return x, marks, decoder, decoder_marks


def trainable_names(model) -> set:
    return {name for name, parameter in model.named_parameters() if parameter.requires_grad}


def check_forward_backward(model, config, tensors):
    """Forward, finite declared aux losses, backward reaching exactly the trainable parameters, an
    optimizer step that leaves frozen parameters as they were."""
    model.train()
    output = model(*tensors)
    assert output.prediction.shape == (len(tensors[0]), config.pred_len, config.c_out)
    assert torch.isfinite(output.prediction).all()
    losses = dict(output.aux_losses)
    if output.supervised_terms is not None:
        supervised, diagnostics = output.supervised_terms(torch.randn(len(tensors[0]), config.pred_len, config.enc_in))
        losses.update(supervised)
        assert all(torch.isfinite(value) for value in diagnostics.values())
    assert set(losses) <= set(getattr(model, "aux_loss_weights", {})), "every auxiliary loss has a declared weight"
    assert all(value.ndim == 0 and torch.isfinite(value) for value in losses.values())
    frozen = {name: parameter.detach().clone() for name, parameter in model.named_parameters() if not parameter.requires_grad}
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    (output.prediction.pow(2).mean() + sum(losses.values())).backward()
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            assert parameter.grad is None, name
        elif not name.startswith(SPARSE):
            assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name
    optimizer.step()
    for name, parameter in model.named_parameters():
        if name in frozen:
            assert torch.equal(parameter, frozen[name]), f"{name} is frozen but changed"


def check_round_trip_and_batch_independence(model, config, rebuild, tensors, tmp_path):
    model.eval()
    path = str(tmp_path / "checkpoint.pt")
    save_model_checkpoint(path, model, config)
    clone = rebuild()
    load_model_checkpoint(path, clone, config)
    clone.eval()
    with torch.no_grad():
        expected = model(*tensors).prediction
        torch.testing.assert_close(clone(*tensors).prediction, expected)
        alone = model(*(tensor[:1] for tensor in tensors)).prediction
    torch.testing.assert_close(alone, expected[:1], rtol=1e-4, atol=1e-5)


def test_every_registered_addon_is_covered():
    assert [entry.switch for entry in registry.ADD_ONS] == list(ADDON_SETTINGS)
    for entry in registry.ADD_ONS:
        cls = registry.addon_class(entry)
        assert isinstance(cls.stage, Stage) and cls.forward is not AddOn.forward, entry.target


@pytest.mark.parametrize("case", ADDON_CASES)
def test_timellm_addon_conforms(case, tmp_path):
    config, model = addon_model(case, tmp_path)
    tensors = inputs(config)
    if case != "off":
        attribute = next(entry.attribute for entry in registry.ADD_ONS if entry.switch == case)
        assert isinstance(getattr(model, attribute), AddOn)
    check_forward_backward(model, config, tensors)
    check_round_trip_and_batch_independence(model, config, lambda: addon_model(case, tmp_path)[1], tensors, tmp_path)
    assert not any(name.startswith("llm.") for name in trainable_names(model))


@pytest.mark.parametrize("name", [name for name in MODELS if name != "TimeLLM"])
def test_baseline_conforms(name, tmp_path):
    config = tiny_config(name, 3, "--sample_layout", "all_channels", "--features", "M", "--d_model", "16", "--n_heads", "4")
    model = build_model(config)
    tensors = inputs(config)
    check_forward_backward(model, config, tensors)
    check_round_trip_and_batch_independence(model, config, lambda: build_model(config), tensors, tmp_path)


DISTRIBUTIONS = ("gaussian", "student_t", "quantile")


@pytest.mark.parametrize("name", list(MODELS))
def test_distribution_head_conforms(name, tmp_path):
    """Every model with a distribution head (the kinds in turn): its loss reaches every trainable
    parameter, the frozen LLM stays frozen, and the whole distribution survives a checkpoint round trip."""
    kind = DISTRIBUTIONS[list(MODELS).index(name) % len(DISTRIBUTIONS)]
    extra = ["--llm_model", "tiny-llama"] if name == "TimeLLM" else ["--sample_layout", "all_channels", "--features", "M", "--n_heads", "4"]
    config = tiny_config(name, 1 if name == "TimeLLM" else 3, "--output_distribution", kind, *extra)
    model, tensors = build_model(config), inputs(config)
    model.train()
    output = model(*tensors)
    assert output.distribution.kind == kind and torch.equal(output.prediction, output.distribution.point())
    output.distribution.loss(torch.randn_like(output.prediction)).backward()
    for parameter_name, parameter in model.named_parameters():
        assert (parameter.grad is not None) == parameter.requires_grad, parameter_name
    model.eval()
    path = str(tmp_path / "checkpoint.pt")
    save_model_checkpoint(path, model, config)
    clone = build_model(config)
    load_model_checkpoint(path, clone, config)
    clone.eval()
    with torch.no_grad():
        expected, restored = model(*tensors).distribution.tensors(), clone(*tensors).distribution.tensors()
    assert set(expected) == set(restored)
    for tensor_name in expected:
        torch.testing.assert_close(restored[tensor_name], expected[tensor_name])


@dataclass
class ScaleConfig(AddOnSection):
    """The toy add-on's flags: its switch and its loss weight."""

    group = "forecast scale"
    use_scale: int = switch(0, "1: a learned scale of the forecast")
    lambda_scale: float = option(0.5, "weight of the scale's pull towards 1", architecture=False)


class ForecastScale(AddOn):
    """A toy add-on at the FORECAST stage: a learned scale of the forecast, pulled towards 1."""

    stage = Stage.FORECAST

    def __init__(self, config: ScaleConfig):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))
        self.aux_loss_weights = {"scale_penalty": config.lambda_scale}

    def forward(self, prediction, context):
        return AddOnOutput(prediction * self.scale, aux_losses={"scale_penalty": (self.scale - 1).pow(2).sum()})


def test_a_new_addon_is_one_class_and_one_registry_line(monkeypatch, tmp_path, small_etth1):
    from utils.config import parse_config
    from utils.trainer import Trainer

    monkeypatch.setattr(registry, "ADD_ONS", [*registry.ADD_ONS, registry.AddOnEntry("use_scale", "scale", f"{__name__}:ForecastScale", ScaleConfig)])
    config = parse_config(["--model", "TimeLLM", "--llm_model", "tiny-llama", "--llm_layers", "2", "--seq_len", "64", "--pred_len", "16",
                           "--num_tokens", "50", "--features", "S", "--max_steps", "2", "--train_epochs", "1", "--report_to", "none",
                           "--checkpoints", str(tmp_path), "--aux_warmup_steps", "0", "--use_scale", "--lambda_scale", "0.5", *small_etth1])
    assert "lambda_scale" not in architecture_of(config) and architecture_of(config)["use_scale"] == 1  # its flags, parsed
    with pytest.raises(SystemExit):  # and refused for another model, like every add-on's
        parse_config(["--model", "DLinear", "--use_scale"])
    trainer = Trainer(config)
    trainer.run()
    model = trainer.accelerator.unwrap_model(trainer.model)
    assert isinstance(model.scale, ForecastScale) and model.scale.scale.item() != 1.0  # trained
    assert "scale_penalty" in trainer.epoch_log[0] and trainer.epoch_log[0]["scale_penalty"] > 0
