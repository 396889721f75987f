"""Wavelet patch embedding: the SWT inverts, shapes match the standard patching, gradients reach the
band weights and (when learnable) the filters, and the whole model trains with it and with TAPR/GRA-M."""
import argparse

import ptwt
import pytest
import torch

from layers.Embed import PatchEmbedding
from layers.WaveletEmbed import WaveletPatchEmbedding
from models import build_model
from tests.conftest import MODULE_ARGS, series_batch, timellm_config, training_set


def embedding_config(**overrides):
    values = dict(wavelet="db4", swt_level=3, wavelet_mode="replicate", wavelet_projection="flatten", use_all_coeffs=1,
                  learnable_wavelet=0, wavelet_semantic=0, lambda_wavelet=1.0, patch_len=16, stride=8, seq_len=96,
                  d_model=32, dropout=0.0)
    values.update(overrides)
    return argparse.Namespace(**values)


@pytest.mark.parametrize("wavelet", ["db4", "sym4", "haar"])
@pytest.mark.parametrize("level", [1, 2, 3, 4])
@pytest.mark.parametrize("mode", ["replicate", "periodic"])
def test_fixed_filter_swt_inverts(wavelet, level, mode):
    embedding = WaveletPatchEmbedding(embedding_config(wavelet=wavelet, swt_level=level, wavelet_mode=mode, seq_len=200))
    series = torch.randn(6, 97)  # odd length: padded to a multiple of 2^level, then cropped
    coefficients = embedding.transform(series)
    extended, offset = embedding.extend(series)
    assert len(coefficients) == level + 1 and all(c.shape == extended.shape for c in coefficients)
    assert extended.shape[-1] % 2**level == 0
    reconstructed = ptwt.iswt(coefficients, embedding.wavelet)
    torch.testing.assert_close(reconstructed[:, offset : offset + 97], series, rtol=0, atol=1e-5)


@pytest.mark.parametrize("projection", ["flatten", "band"])
@pytest.mark.parametrize("seq_len", [96, 97, 512])
def test_output_has_the_standard_patch_count(projection, seq_len):
    embedding = WaveletPatchEmbedding(embedding_config(wavelet_projection=projection, seq_len=seq_len, wavelet_semantic=1))
    output = embedding(torch.randn(2, 3, seq_len)).value
    assert output.shape == (6, PatchEmbedding.patch_count(seq_len, 16, 8), 32)


def test_use_all_coeffs_0_keeps_the_approximation_only():
    embedding = WaveletPatchEmbedding(embedding_config(use_all_coeffs=0))
    assert embedding.bands == 1 and embedding(torch.randn(2, 1, 96)).value.shape == (2, 12, 32)


def test_boundary_mode_is_honoured():
    """The same interior, different boundary extensions: the first patches differ, middle ones agree."""
    x = torch.randn(1, 1, 96)
    outputs = {}
    for mode in ("replicate", "zero", "periodic"):
        torch.manual_seed(0)
        outputs[mode] = WaveletPatchEmbedding(embedding_config(wavelet_mode=mode, swt_level=2))(x).value
    assert not torch.allclose(outputs["replicate"][:, 0], outputs["zero"][:, 0])
    assert not torch.allclose(outputs["replicate"][:, -1], outputs["periodic"][:, -1])
    torch.testing.assert_close(outputs["replicate"][:, 5], outputs["zero"][:, 5])


def test_gradients_reach_band_weights_and_learnable_filters():
    embedding = WaveletPatchEmbedding(embedding_config(learnable_wavelet=1, wavelet_projection="band"))
    result = embedding(torch.randn(4, 2, 96))
    output, losses = result.value, result.aux_losses
    assert 0 <= losses["wavelet_reconstruction"] < 1e-6  # initialised at a perfect-reconstruction pair
    (output.pow(2).mean() + losses["wavelet_reconstruction"]).backward()
    assert embedding.band_logits.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in embedding.filters.parameters())


def test_float32_inside_autocast():
    embedding = WaveletPatchEmbedding(embedding_config())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output = embedding(torch.randn(2, 1, 96).bfloat16()).value
    assert torch.isfinite(output).all()


@pytest.mark.parametrize("flag, value, message", [
    ("wavelet", "db99", "--wavelet 'db99' is not a discrete"),
    ("swt_level", 0, "--swt_level must be >= 1"),
    ("wavelet_projection", "concat", "--wavelet_projection must be one of"),
    ("wavelet_mode", "reflect", "--wavelet_mode reflect needs --seq_len > 105"),
])
def test_invalid_flags_name_the_flag(flag, value, message):
    with pytest.raises(ValueError, match=message):
        WaveletPatchEmbedding(embedding_config(**{flag: value, "swt_level": 4} if flag == "wavelet_mode" else {flag: value}))


@pytest.mark.parametrize("extra", [[], ["--learnable_wavelet", "1", "--wavelet_projection", "band"],
                                   ["--use_tapr", "1", "--use_gram", "1"]])
def test_full_model_trains_with_the_wavelet_embedding(extra):
    model = build_model(timellm_config(*MODULE_ARGS, "--use_wavelet", "1", "--swt_level", "2", *extra))
    assert isinstance(model.patch_embedding, WaveletPatchEmbedding)
    if "--use_gram" in extra:
        model.gram.prepare({"train": training_set()})
    output = model(series_batch())
    prediction = output.prediction
    assert prediction.shape == (4, 16, 1)
    losses = output.aux_losses
    if "--learnable_wavelet" in extra:
        assert "wavelet_reconstruction" in losses and "wavelet_reconstruction" in model.aux_loss_weights
    (prediction.pow(2).mean() + sum(losses.values())).backward()
    assert model.patch_embedding.band_logits.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.llm.parameters())
