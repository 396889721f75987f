"""Time-LLM's add-ons: the flag that switches each on, the attribute the model holds it under (its
state_dict prefix in checkpoints), its class (imported only when switched on) and its typed config,
whose fields are its flags (utils/settings/). Within a stage, add-ons run in this order. Adding an
add-on is one file in layers/ (an `AddOn`, see layers/AddOn.py, with its `AddOnSection`) and one line
here: the parser reads the flags from this list.
"""
import importlib
from dataclasses import dataclass

from layers.AddOn import AddOn, Stage
from utils.settings import addons as sections


@dataclass(frozen=True)
class AddOnEntry:
    switch: str  # the config attribute (flag) that turns it on
    attribute: str  # Model.<attribute>; the PATCH_EMBEDDING stage's is always "patch_embedding"
    target: str  # "module:Class"
    section: type  # its typed config (a utils.settings.addons.AddOnSection), which the class is built from


ADD_ONS = [
    AddOnEntry("use_wavelet", "patch_embedding", "layers.WaveletEmbed:WaveletPatchEmbedding", sections.WaveletConfig),
    AddOnEntry("use_multiscale", "patch_embedding", "layers.MultiScaleEmbed:MultiScalePatchEmbedding", sections.MultiScaleConfig),
    AddOnEntry("use_frequency", "patch_embedding", "layers.FrequencyDecomposition:FrequencyPatchEmbedding", sections.FrequencyConfig),
    AddOnEntry("use_tapr", "tapr", "layers.TAPR:TAPR", sections.TAPRConfig),
    AddOnEntry("use_gram", "gram", "layers.GRAM:GRAM", sections.GRAMConfig),
    AddOnEntry("use_dynamic_prompt", "dynamic_prompt", "layers.DynamicPrompt:DynamicPrompt", sections.DynamicPromptConfig),
    AddOnEntry("use_inter_variate", "inter_variate", "layers.InterVariateAttention:InterVariateAttention", sections.InterVariateConfig),
    AddOnEntry("use_moe", "moe", "layers.TimeSeriesMoE:TimeSeriesMoE", sections.MoEConfig),
    AddOnEntry("use_hybrid", "hybrid", "models.traditional.hybrid:HybridForecaster", sections.HybridConfig),
]


def addon_class(entry: AddOnEntry) -> type:
    module, name = entry.target.split(":")
    cls = getattr(importlib.import_module(module), name)
    if not (isinstance(cls, type) and issubclass(cls, AddOn)):
        raise TypeError(f"{entry.target} (switched on by --{entry.switch}) is not an AddOn (layers/AddOn.py)")
    return cls


def build_addons(config, *stages: Stage) -> dict[str, AddOn]:
    """The add-ons at `stages` the config switches on, by attribute, in registry order. The model sets
    `config.llm_dim` first."""
    built: dict[str, AddOn] = {}
    for entry in ADD_ONS:
        if not getattr(config, entry.switch, False) or addon_class(entry).stage not in stages:
            continue
        if entry.attribute in built:
            clashing = [other.switch for other in ADD_ONS if other.attribute == entry.attribute and getattr(config, other.switch, False)]
            raise ValueError(f"{', '.join('--' + name for name in clashing)}: each replaces the {entry.attribute.replace('_', ' ')}; switch on one")
        cls = addon_class(entry)
        if (entry.attribute == "patch_embedding") != (cls.stage is Stage.PATCH_EMBEDDING):
            raise ValueError(f"{entry.target}: the PATCH_EMBEDDING stage's add-ons, and only they, are held as patch_embedding")
        built[entry.attribute] = cls(entry.section.from_config(config))
    return built
