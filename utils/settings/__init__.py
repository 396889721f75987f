"""The typed configuration: every flag belongs to one section (utils/settings/base.py), in the order
`--help` lists them."""
from utils.settings.addons import (
    DynamicPromptConfig,
    FrequencyConfig,
    GRAMConfig,
    HybridConfig,
    InterVariateConfig,
    MoEConfig,
    MultiScaleConfig,
    TAPRConfig,
    WaveletConfig,
)
from utils.settings.base import Section
from utils.settings.llm import LLMConfig, LLMLoadingConfig, PromptConfig, VocabularyConfig
from utils.settings.models import (
    BASELINE_SECTIONS,
    AutoformerConfig,
    DistributionConfig,
    DLinearConfig,
    ITransformerConfig,
    ModelConfig,
    PatchTSTConfig,
    PAttnConfig,
    TimesNetConfig,
    TimeXerConfig,
)
from utils.settings.run import (
    CheckpointingConfig,
    DAPOConfig,
    DataConfig,
    GRPOConfig,
    InterpretabilityConfig,
    OptimizationConfig,
    PretrainingConfig,
    RunConfig,
    TaskConfig,
    TransferConfig,
)


def all_sections() -> tuple[type[Section], ...]:
    """Every section, in the order `--help` lists them; the add-ons' from the registry
    (layers/registry.py), so a registered add-on's flags exist without another edit."""
    from layers.registry import ADD_ONS

    addons = tuple(dict.fromkeys(entry.section for entry in ADD_ONS))
    return (
        RunConfig, DataConfig, TransferConfig, TaskConfig, ModelConfig, DistributionConfig, LLMConfig, LLMLoadingConfig, PromptConfig, VocabularyConfig,
        InterpretabilityConfig, OptimizationConfig, *addons, *BASELINE_SECTIONS, DAPOConfig, GRPOConfig, PretrainingConfig, CheckpointingConfig,
    )


__all__ = [
    "all_sections", "Section", "RunConfig", "DataConfig", "TransferConfig", "TaskConfig", "ModelConfig", "DistributionConfig", "LLMConfig", "LLMLoadingConfig",
    "PromptConfig", "VocabularyConfig", "InterpretabilityConfig", "OptimizationConfig", "WaveletConfig", "TAPRConfig", "GRAMConfig",
    "HybridConfig", "MultiScaleConfig", "FrequencyConfig", "InterVariateConfig", "DynamicPromptConfig", "MoEConfig", "DLinearConfig",
    "AutoformerConfig", "PatchTSTConfig", "ITransformerConfig", "TimesNetConfig", "TimeXerConfig", "PAttnConfig", "DAPOConfig", "GRPOConfig",
    "PretrainingConfig", "CheckpointingConfig",
]
