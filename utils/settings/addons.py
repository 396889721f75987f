"""One section per Time-LLM add-on (layers/registry.py): its switch, its sizes, its loss weights.

The sizes are part of the architecture (a checkpoint loads only if they match); loss weights and
where things are computed are not. Each add-on module takes its section: e.g.
`TimeSeriesMoE(MoEConfig(num_experts=4, llm_dim=64))`; the shared values (widths, lengths) come from
the run's resolved configuration in `Section.from_config`.
"""
from dataclasses import dataclass
from typing import Optional

from utils.settings.base import Section, option, shared, switch
from utils.settings.run import positive, require

PATTERN_HEADS = 4  # GRA-M's pattern encoder heads (layers/GRAM.py): --d_repr must be a multiple


@dataclass
class AddOnSection(Section):
    architecture = True
    models = ("TimeLLM",)
    exclusive = True
    d_model: int = shared(16)
    dropout: float = shared(0.1)
    seq_len: int = shared(96)
    pred_len: int = shared(96)
    patch_len: int = shared(16)
    stride: int = shared(8)
    llm_dim: Optional[int] = shared()  # the LLM's hidden size, set when the LLM is loaded


@dataclass
class WaveletConfig(AddOnSection):
    group = "wavelet"
    description = "wavelet patch embedding, layers/WaveletEmbed.py (part of the architecture)"
    use_wavelet: int = switch(0, "1: patches of a stationary wavelet transform instead of raw values")
    wavelet: str = option("db4", "PyWavelets discrete wavelet: haar, db4, sym4, ...")
    swt_level: int = option(3, "SWT decomposition levels (bands: level + 1)")
    use_all_coeffs: int = switch(1, "1: approximation and every detail band; 0: the approximation only")
    wavelet_projection: str = option("flatten", "one embedding of all bands, or one per band then a fusion", choices=["flatten", "band"])
    wavelet_mode: str = option("replicate", "how the series is extended at its ends before the transform", choices=["replicate", "reflect", "zero", "periodic"])
    learnable_wavelet: int = switch(0, "1: learn the filters, kept near a perfect-reconstruction pair by --lambda_wavelet")
    wavelet_semantic: int = switch(0, "1: a residual MLP on the embedded patches before reprogramming")
    lambda_wavelet: float = option(1.0, "weight of the learnable wavelet's reconstruction loss", architecture=False)


@dataclass
class TAPRConfig(AddOnSection):
    group = "TAPR"
    description = "trend-aware patch routing, layers/TAPR.py (part of the architecture; the loss weights are not)"
    use_tapr: int = switch(0, "1: multi-scale decomposition, coarse-to-fine trend head and trend token")
    n_scales: int = option(3, "scales 1x, 4x, 16x, 64x: how many")
    c2f_fusion: int = switch(1, "1: the trend head adjusts the forecast (gated, bounded, growing over the horizon)")
    lambda_trend: float = option(0.5, "weight of the TAPR losses", architecture=False)
    lambda_dir: float = option(0.3, "TAPR: direction cross-entropy, inside lambda_trend", architecture=False)
    lambda_mag: float = option(0.3, "TAPR: magnitude cross-entropy, inside lambda_trend", architecture=False)
    lambda_hcl: float = option(0.1, "TAPR: hierarchical consistency KL, inside lambda_trend", architecture=False)
    label_smoothing: float = option(0.1, "TAPR: label smoothing of both cross-entropies", architecture=False)
    trend_thresholds: list[float] = option([-0.02, -0.005, 0.005, 0.02], "TAPR: class boundaries on the future's slope (input-window std per step)", nargs=4, architecture=False)
    n_heads: int = shared(8)


@dataclass
class GRAMConfig(AddOnSection):
    """`--top_k` is TimesNet's periods in Time-Series-Library and GRA-M's retrieval count in seed 002:
    with --model TimeLLM it sets --gram_top_k, with TimesNet its own (utils/config.py, route_top_k)."""

    group = "GRA-M"
    description = "retrieval-augmented memory, layers/GRAM.py (part of the architecture; retrieval in training and the loss weight are not)"
    use_gram: int = switch(0, "1: retrieve similar training windows, gate them into the patches, 2 retrieval tokens")
    gram_top_k: int = option(5, "retrieved windows per series (with --model TimeLLM, --top_k sets this too)")
    d_repr: int = option(128, "width of the pattern and value representations")
    max_memory_size: int = option(10000, "training windows (per variable) held in the memory")
    retrieval_temperature: float = option(0.1, "softmax temperature over the retrieved windows' similarities")
    gram_retrieval: str = option("causal", "which memory windows a training query may retrieve. causal: only windows whose future ends before the query's horizon starts, as for every test query; non_overlapping: any window not overlapping the horizon, later ones included", choices=["causal", "non_overlapping"], architecture=False)
    lambda_retrieval: float = option(0.3, "weight of the GRA-M gate losses", architecture=False)
    build_memory: int = switch(1, "build the memory from the training split at the start of training; 0 keeps a loaded checkpoint's", architecture=False)

    def validate(self) -> None:
        require(self.d_repr > 0 and self.d_repr % PATTERN_HEADS == 0, f"--d_repr must be a positive multiple of {PATTERN_HEADS}, got {self.d_repr}")
        positive(self, "retrieval_temperature")
        require(1 <= self.gram_top_k <= self.max_memory_size, f"--gram_top_k must be in [1, --max_memory_size ({self.max_memory_size})], got {self.gram_top_k}")


@dataclass
class HybridConfig(AddOnSection):
    group = "hybrid"
    description = "forecast fused with ARIMA and Holt-Winters forecasts, models/traditional/ (part of the architecture; where the forecasts are computed is not)"
    use_hybrid: int = switch(0, "1: fuse the forecast with ARIMA and Holt-Winters forecasts (models/traditional/)")
    use_arima: int = switch(1, "hybrid: fuse ARIMA's forecast")
    use_es: int = switch(1, "hybrid: fuse Holt-Winters exponential smoothing's forecast")
    fusion_method: str = option("adaptive", "hybrid: how the forecasts are weighted (weighted: by each model's confidence; learned: learned logits; models/traditional/hybrid.py)", choices=["adaptive", "average", "weighted", "learned"])
    arima_p: int = option(2, "hybrid: ARIMA autoregressive order (d comes from ADF tests)")
    arima_q: int = option(1, "hybrid: ARIMA moving-average order")
    arima_max_differences: int = option(1, "hybrid: at most this many differences (d) from the ADF tests; d = 2 extrapolates curvature over the horizon")
    arima_seasonal_period: int = option(0, "hybrid: seasonal AR(1) term of this period (0: none; slower)")
    ets_seasonal_period: int = option(24, "hybrid: Holt-Winters season length in steps")
    hybrid_workers: int = option(0, "worker processes fitting the statistical models (0: one per CPU)", architecture=False)
    hybrid_cache_dir: Optional[str] = option(None, "cache of statistical forecasts (default: $TIMELLM_CACHE/hybrid)", architecture=False)

    def validate(self) -> None:
        require(not self.use_hybrid or bool(self.use_arima or self.use_es),
                "--use_hybrid 1 with --use_arima 0 and --use_es 0: no statistical forecast to fuse; switch one on")


@dataclass
class MultiScaleConfig(AddOnSection):
    group = "multi-scale"
    description = "multi-scale patch embedding, layers/MultiScaleEmbed.py (part of the architecture)"
    use_multiscale: int = switch(0, "1: patch embeddings of the input pooled at several scales, fused (layers/MultiScaleEmbed.py)")
    scales: list[int] = option([1, 2, 4], "multi-scale: pooling factors")
    multiscale_fusion: str = option("gate", "multi-scale: how the scales are fused", choices=["gate", "attention", "concat", "sum"])


@dataclass
class FrequencyConfig(AddOnSection):
    group = "frequency"
    description = "FFT trend/seasonal patch embedding, layers/FrequencyDecomposition.py (part of the architecture)"
    use_frequency: int = switch(0, "1: FFT trend/seasonal dual-branch patch embedding with a per-series gate (layers/FrequencyDecomposition.py)")
    top_k_freqs: int = option(5, "frequency: strongest frequencies that measure periodicity")
    trend_cutoff: float = option(0.02, "frequency: cycles per step below which the spectrum is trend (0.02: periods over 50 steps)")


@dataclass
class InterVariateConfig(AddOnSection):
    group = "inter-variate"
    description = "attention across a sample's variables, layers/InterVariateAttention.py (part of the architecture)"
    use_inter_variate: int = switch(0, "1: attention across the variables of a sample after reprogramming (--sample_layout auto becomes all_channels)")
    inter_variate_heads: int = option(8, "inter-variate attention heads (must divide the LLM hidden size)")
    inter_variate_ff: int = option(256, "inter-variate feed-forward width (0: 4 x the LLM hidden size, the specification's automatic size)")


@dataclass
class DynamicPromptConfig(AddOnSection):
    group = "dynamic prompt"
    description = "learned and statistics prompt tokens, layers/DynamicPrompt.py (part of the architecture)"
    use_dynamic_prompt: int = switch(0, "1: learned prompt tokens from the series and segment statistics tokens after the text prompt")
    num_dynamic_tokens: int = option(32, "dynamic prompt: learned tokens per series")
    num_prompt_segments: int = option(3, "dynamic prompt: segments with a statistics token each")


@dataclass
class MoEConfig(AddOnSection):
    group = "MoE"
    description = "sparse mixture of expert feed-forwards, layers/TimeSeriesMoE.py (part of the architecture; the loss weight is not)"
    use_moe: int = switch(0, "1: sparse mixture of expert feed-forwards on the reprogrammed patches")
    num_experts: int = option(4)
    top_k_experts: int = option(2, "experts per token")
    moe_d_ff: int = option(256, "width of each expert")
    lambda_moe: float = option(0.01, "weight of the mixture of experts' load-balancing loss", architecture=False)

    def validate(self) -> None:
        positive(self, "num_experts", "moe_d_ff")
        require(1 <= self.top_k_experts <= self.num_experts, f"--top_k_experts must be in [1, --num_experts {self.num_experts}], got {self.top_k_experts}")

