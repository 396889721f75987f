"""The model's section (its name, widths shared by the Transformer baselines) and one section per
baseline: its own flags and its regulariser from the notes (not in the papers; 0: off).

Every baseline takes its section (models/__init__.py `build_model`); the shared widths come from
`ModelConfig`'s flags through `Section.from_config`, as in Time-Series-Library, where one
`--d_model` serves every model.
"""
from dataclasses import dataclass
from typing import Optional

from utils.settings.base import Section, option, shared, switch
from utils.settings.run import positive, require


@dataclass
class ModelConfig(Section):
    group = "model"
    description = "model architecture"
    architecture = True
    model: str = option("DLinear", "model name from models/__init__.py")
    enc_in: Optional[int] = option(None, "input variables (derived from the data)")
    dec_in: Optional[int] = option(None, "decoder input variables (derived from the data)")
    c_out: Optional[int] = option(None, "output variables (derived from the data)")
    d_model: int = option(16, "model width")
    n_heads: int = option(8, "attention heads")
    e_layers: int = option(2, "encoder layers")
    d_layers: int = option(1, "decoder layers")
    d_ff: int = option(32, "feed-forward width (Time-LLM: --d_keys and --llm_features, unless given)")
    moving_avg: int = option(25, "moving-average window of series decomposition (DLinear, Autoformer)")
    dropout: float = option(0.1)
    activation: str = option("gelu", choices=["gelu", "relu"])
    patch_len: int = option(16)
    stride: int = option(8)


@dataclass
class DistributionConfig(Section):
    group = "distribution"
    description = "probabilistic forecasts (layers/DistributionHead.py), for every model"
    architecture = True
    output_distribution: str = option("point", "the forecast: a point, or a distribution per step and variable whose mean "
                                      "(gaussian, student_t) or median (quantile) is the point forecast",
                                      choices=["point", "gaussian", "student_t", "quantile"])
    quantiles: list[float] = option([0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95], "quantile head: its levels, increasing, in (0, 1), 0.5 among them")
    distribution_hidden: int = option(64, "distribution head: hidden width of the network giving the spread")
    seq_len: int = shared(96)
    pred_len: int = shared(96)

    def validate(self) -> None:
        levels = self.quantiles
        require(all(0 < level < 1 for level in levels), f"--quantiles must lie in (0, 1), got {levels}")
        require(all(low < high for low, high in zip(levels, levels[1:])), f"--quantiles must be increasing, got {levels}")
        if self.output_distribution == "quantile":
            require(0.5 in levels and len(levels) >= 2, f"--quantiles must include 0.5 (the median is the point forecast) and another level, got {levels}")
        positive(self, "distribution_hidden")


@dataclass
class BaselineSection(Section):
    """The values every baseline may read: the task's shape and the shared widths."""

    architecture = True
    task_name: str = shared("long_term_forecast")
    features: str = shared("M")
    seq_len: int = shared(96)
    label_len: int = shared(48)
    pred_len: int = shared(96)
    embed: str = shared("timeF")
    freq: Optional[str] = shared("h")
    enc_in: Optional[int] = shared()
    dec_in: Optional[int] = shared()
    c_out: Optional[int] = shared()
    d_model: int = shared(16)
    n_heads: int = shared(8)
    e_layers: int = shared(2)
    d_layers: int = shared(1)
    d_ff: int = shared(32)
    moving_avg: int = shared(25)
    dropout: float = shared(0.1)
    activation: str = shared("gelu")
    patch_len: int = shared(16)
    stride: int = shared(8)


def regulariser(model: str, what: str):
    return option(0.0, f"{model}: weight of {what}", architecture=False, models=(model,))


@dataclass
class DLinearConfig(BaselineSection):
    group = "DLinear"
    models = ("DLinear",)
    description = "DLinear (Zeng et al., 2023)"
    individual: int = switch(0, "DLinear: one linear layer per variable")
    lambda_trend_residual: float = regulariser("DLinear", "MSE of the trend branch's forecast alone against the future")


@dataclass
class AutoformerConfig(BaselineSection):
    group = "Autoformer"
    models = ("Autoformer",)
    description = "Autoformer (Wu et al., 2021)"
    factor: int = option(1, "auto-correlation top-k factor")


@dataclass
class PatchTSTConfig(BaselineSection):
    group = "PatchTST"
    models = ("PatchTST",)
    description = "PatchTST (Nie et al., 2023)"
    lambda_patch_attention_kl: float = regulariser("PatchTST", "KL(patch attention || uniform)")
    mask_ratio: float = shared(0.4)


@dataclass
class ITransformerConfig(BaselineSection):
    group = "iTransformer"
    models = ("iTransformer",)
    description = "iTransformer (Liu et al., 2024)"
    lambda_embedding_orthogonality: float = regulariser("iTransformer", "||E E^T - I||_F^2 of the normalised variable tokens")


@dataclass
class TimesNetConfig(BaselineSection):
    """`--top_k` keeps Time-Series-Library's meaning here; with --model TimeLLM it is GRA-M's."""

    group = "TimesNet"
    models = ("TimesNet",)
    description = "TimesNet (Wu et al., 2023)"
    top_k: int = option(5, "TimesNet: periods per sample (with --model TimeLLM: GRA-M's --gram_top_k, seed 002's spelling)")
    num_kernels: int = option(6, "TimesNet: kernel sizes 1, 3, .. of each Inception block")
    lambda_frequency_consistency: float = regulariser("TimesNet", "the change of the amplitude spectrum between consecutive TimesBlocks")

    def validate(self) -> None:
        if self.seq_len is not None and self.pred_len is not None:
            limit = (self.seq_len + self.pred_len) // 2
            require(1 <= self.top_k <= limit, f"--top_k (TimesNet periods) must be in [1, (seq_len + pred_len) // 2], got {self.top_k}")


@dataclass
class TimeXerConfig(BaselineSection):
    group = "TimeXer"
    models = ("TimeXer",)
    description = "TimeXer (Wang et al., 2024)"
    lambda_attention_orthogonality: float = regulariser("TimeXer", "||W^T W - I||_F^2 of each layer's cross-attention projections")


@dataclass
class PAttnConfig(BaselineSection):
    group = "PAttn"
    models = ("PAttn",)
    description = "PAttn (Tan et al., 2024): patches, one attention layer, a linear head"


BASELINE_SECTIONS = (DLinearConfig, AutoformerConfig, PatchTSTConfig, ITransformerConfig, TimesNetConfig, TimeXerConfig, PAttnConfig)
