"""Sections of Time-LLM's own parts: the backbone and reprogramming, how the LLM is loaded, the prompt,
and the text-prototype vocabulary."""
from dataclasses import dataclass
from typing import Optional

from layers.LLMAblations import KEEP_PROMPT_ABLATIONS, TAN_ABLATIONS
from utils.settings.base import Section, option, switch
from utils.settings.run import positive, require

LLM_ABLATIONS = ("none", "random_init", *TAN_ABLATIONS, *KEEP_PROMPT_ABLATIONS)


@dataclass
class LLMConfig(Section):
    """`--d_ff` means, in Time-LLM, both the reprogramming's key width per head and how many of the
    LLM's output features the head reads (upstream uses one value for both). `--d_keys` and
    `--llm_features` set each on its own; left out, each is `--d_ff`, as upstream. For the baselines
    `--d_ff` is their feed-forward width."""

    group = "llm"
    description = "Time-LLM backbone and reprogramming (part of the architecture)"
    architecture = True
    models = ("TimeLLM",)
    exclusive = True
    llm_model: str = option("SmolLM2", "GPT2, LLAMA, BERT, QWEN, SmolLM2 (offline default) or tiny-gpt2/-llama/-bert/-qwen2 (random, for tests)")
    llm_layers: int = option(6, "keep the first N transformer layers of the LLM")
    llm_dim: Optional[int] = option(None, "LLM hidden size (read from the model; a given value is only checked)")
    d_keys: Optional[int] = option(None, "reprogramming: key/value width per attention head (default: --d_ff, as upstream)")
    llm_features: Optional[int] = option(None, "the head reads the first N features of the LLM's output (default: --d_ff, as upstream; at most the LLM hidden size)")
    num_tokens: int = option(1000, "text prototypes formed by the mapping layer from the vocabulary")
    mapping_rank: int = option(0, "speed option: factorise the mapping layer to this rank (0: full; changes results)")
    use_lora: int = switch(0, "1: train LoRA adapters on the LLM with the reprogramming layers (peft); with --load_in_4bit: QLoRA")
    lora_r: int = option(8, "LoRA rank")
    lora_alpha: int = option(16, "LoRA scale numerator (the update is alpha / r x B A)")
    lora_dropout: float = option(0.05, "dropout on the LoRA branch's input")
    lora_target_modules: Optional[list[str]] = option(None, "module names to adapt (default per family: q/v projections; GPT-2 c_attn; BERT query/value)")
    llm_ablation: str = option("none", "no_llm/llm2attn/llm2trsf: Tan et al. (NeurIPS 2024), the LLM, prompt and reprogramming replaced by nothing/one attention/one transformer layer at d_model before a linear head; *_keep_prompt: only the LLM replaced, at its width; random_init: the LLM untrained (layers/LLMAblations.py)", choices=list(LLM_ABLATIONS))

    def validate(self) -> None:
        if self.use_lora:
            positive(self, "lora_r")
            require(self.llm_ablation not in (*TAN_ABLATIONS, *KEEP_PROMPT_ABLATIONS), f"--use_lora needs the LLM, which --llm_ablation {self.llm_ablation} replaces")
        for name in ("d_keys", "llm_features"):
            require(getattr(self, name) is None or getattr(self, name) > 0, f"--{name} must be positive, got {getattr(self, name)}")


@dataclass
class LLMLoadingConfig(Section):
    group = "llm loading"
    description = "where the LLM comes from and how it is held"
    models = ("TimeLLM",)
    exclusive = True
    llm_model_path: Optional[str] = option(None, "hub id, local folder or .gguf file overriding --llm_model's default source")
    llm_dtype: str = option("float32", "dtype of the LLM weights", choices=["float32", "bfloat16", "float16"])
    load_in_4bit: bool = option(False, "NF4 4-bit weights with double quantisation (bitsandbytes)", store_true=True)
    gradient_checkpointing: int = switch(0, "recompute LLM activations in backward to save memory")
    reference_path: int = switch(0, "1: the straightforward path (per-series prompt strings, mapping every forward, no prefix cache), kept for benchmarks")
    llm_cache_dir: Optional[str] = option(None, "converted/generated backbones (default: $TIMELLM_CACHE or ~/.cache/timellm)")


@dataclass
class PromptConfig(Section):
    group = "prompt"
    description = "prompt-as-prefix"
    models = ("TimeLLM",)
    exclusive = True
    prompt_name: Optional[str] = option(None, "dataset/prompt_bank/<name>.txt (default: the dataset's)")
    content: str = option("", "dataset description text overriding the prompt bank")
    prompt_domain: int = switch(1, "1: the dataset's description (--prompt_name's file or --content); 0: upstream's default, its one-sentence ETT description whatever the data (upstream's scripts never set it)")
    prompt_attention_mask: int = switch(1, "1: mask prompt padding (corrected); 0: upstream, padding attended to")
    prompt_digits: int = option(0, "speed option: print prompt numbers with this many significant digits (0: all, as upstream; changes results)")
    lag_method: str = option("corrected", "top-5 lags in the prompt (see utils/prompt.py)", choices=["corrected", "upstream"])


@dataclass
class VocabularyConfig(Section):
    group = "vocabulary"
    description = "the text prototypes' count and initialisation, utils/vocab_init.py (part of the architecture)"
    architecture = True
    models = ("TimeLLM",)
    exclusive = True
    use_adaptive_vocab: int = switch(0, "1: --num_tokens from the task size (utils/vocab_init.py)")
    base_num_tokens: int = option(1000, "adaptive vocabulary: the prototype count of ETT 96 -> 96 with 7 variables, scaled by the task")
    use_keyword_init: int = switch(0, "1: initialise the text prototypes from time-series keywords")
    vocab_init_method: str = option("weighted", "keyword initialisation method", choices=["weighted", "cluster", "random_from_keywords"])
