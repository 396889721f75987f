"""The one argparse/YAML configuration builder shared by every entry script.

Flags keep the upstream Time-LLM names. `--config FILE.yaml` supplies defaults and the command line
overrides them; an unknown YAML key is an error naming it. Values that can be derived from the data
(`enc_in`, `c_out`, the sample layout) default to None/auto and are filled in by the trainer.
The groups double as the record of which flags define a model's architecture: a checkpoint can only
be loaded by a run whose architecture flags match (see ARCHITECTURE_GROUPS).
"""
import argparse
import sys
from typing import Callable, Optional, Sequence

import yaml

ARCHITECTURE_GROUPS = ("task", "model", "llm", "wavelet", "TAPR", "GRA-M")
LR_SCHEDULES = ("type1", "type2", "type3", "TST", "COS", "constant")
MIXED_PRECISION = ("no", "fp16", "bf16")


class ConfigParser(argparse.ArgumentParser):
    """ArgumentParser that remembers which group each flag belongs to."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.group_of: dict[str, str] = {}

    def group(self, name: str, description: str = "") -> "_RecordingGroup":
        return _RecordingGroup(self, name, self.add_argument_group(name, description))


class _RecordingGroup:
    def __init__(self, parser: ConfigParser, name: str, group):
        self.parser, self.name, self.group = parser, name, group

    def add(self, *flags, **kwargs) -> None:
        action = self.group.add_argument(*flags, **kwargs)
        self.parser.group_of[action.dest] = self.name


def build_parser(description: str = "Time-LLM forecasting") -> ConfigParser:
    parser = ConfigParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)

    run = parser.group("run", "what to run and where results go")
    run.add("--config", type=str, default=None, help="YAML file of defaults; command-line flags override it")
    run.add("--task_name", type=str, default="long_term_forecast", choices=["long_term_forecast", "short_term_forecast"])
    run.add("--is_training", type=int, default=1, help="1: train then test the best checkpoint; 0: test --checkpoint")
    run.add("--checkpoint", type=str, default=None, help="checkpoint file or run folder to test (--is_training 0)")
    run.add("--init_checkpoint", type=str, default=None, help="start training from this run's weights (fine-tuning)")
    run.add("--model_id", type=str, default="test", help="name of the experiment, part of the run folder name")
    run.add("--model_comment", type=str, default="none", help="free-text tag, part of the run folder name")
    run.add("--des", type=str, default="Exp", help="experiment description tag (upstream)")
    run.add("--seed", type=int, default=2021, help="seeds python, numpy and torch once at start")
    run.add("--checkpoints", type=str, default="./checkpoints/", help="parent folder of run folders")
    run.add("--run_dir", type=str, default=None, help="exact run folder (default: a new one under --checkpoints)")
    run.add("--results_file", type=str, default=None, help="results CSV (default: <checkpoints>/results.csv)")
    run.add("--log_interval", type=int, default=100, help="optimizer steps between loss logs and finiteness checks")
    run.add("--save_predictions", type=int, default=1, help="write test predictions and truths (npz)")
    run.add("--num_workers", type=int, default=0, help="DataLoader worker processes")

    data = parser.group("data", "which data")
    data.add("--data", type=str, default="ETTh1", help="dataset name from data_provider/registry.py")
    data.add("--root_path", type=str, default=None, help="data folder (default: the dataset's folder under dataset/)")
    data.add("--data_path", type=str, default=None, help="data file inside --root_path")
    data.add("--target", type=str, default="OT", help="target column for features S and MS")
    data.add("--freq", type=str, default=None, help="sampling frequency for time features: h, t (minute), 15min, d, w, ...")
    data.add("--seasonal_patterns", type=str, default="Monthly", help="M4 subset: Yearly, Quarterly, Monthly, Weekly, Daily, Hourly")
    data.add("--percent", type=int, default=100, help="few-shot: percentage of training windows kept")
    data.add("--inverse", type=int, default=0, help="report metrics in original units instead of scaled ones")

    transfer = parser.group("transfer", "run_pretrain.py: the dataset a trained model is transferred to")
    transfer.add("--target_data", type=str, default="ETTh2", help="dataset to evaluate on (registry name)")
    transfer.add("--target_root_path", type=str, default=None)
    transfer.add("--target_data_path", type=str, default=None)
    transfer.add("--few_shot_percent", type=int, default=0, help="also fine-tune on this percentage of the target's training windows (0: zero-shot only)")

    task = parser.group("task", "forecasting task (part of the architecture)")
    task.add("--features", type=str, default="M", choices=["M", "S", "MS"], help="M: multivariate -> multivariate, S: univariate, MS: multivariate -> target")
    task.add("--seq_len", type=int, default=96, help="input length")
    task.add("--label_len", type=int, default=48, help="decoder start-token length (encoder-decoder models)")
    task.add("--pred_len", type=int, default=96, help="forecast horizon")
    task.add("--sample_layout", type=str, default="auto", choices=["auto", "per_channel", "all_channels"], help="one variable per sample or all variables per sample; auto: the model's own choice")
    task.add("--embed", type=str, default="timeF", choices=["timeF", "fixed", "learned"], help="time-feature encoding")

    model = parser.group("model", "model architecture")
    model.add("--model", type=str, default="DLinear", help="model name from models/__init__.py")
    model.add("--enc_in", type=int, default=None, help="input variables (derived from the data)")
    model.add("--dec_in", type=int, default=None, help="decoder input variables (derived from the data)")
    model.add("--c_out", type=int, default=None, help="output variables (derived from the data)")
    model.add("--d_model", type=int, default=16, help="model width")
    model.add("--n_heads", type=int, default=8, help="attention heads")
    model.add("--e_layers", type=int, default=2, help="encoder layers")
    model.add("--d_layers", type=int, default=1, help="decoder layers")
    model.add("--d_ff", type=int, default=32, help="feed-forward width")
    model.add("--moving_avg", type=int, default=25, help="moving-average window of series decomposition")
    model.add("--factor", type=int, default=1, help="auto-correlation top-k factor")
    model.add("--dropout", type=float, default=0.1)
    model.add("--activation", type=str, default="gelu", choices=["gelu", "relu"])
    model.add("--individual", type=int, default=0, help="DLinear: one linear layer per variable")
    model.add("--num_kernels", type=int, default=6, help="TimesNet: kernel sizes 1, 3, .. of each Inception block")
    model.add("--patch_len", type=int, default=16)
    model.add("--stride", type=int, default=8)

    llm = parser.group("llm", "Time-LLM backbone and reprogramming (part of the architecture)")
    llm.add("--llm_model", type=str, default="SmolLM2", help="GPT2, LLAMA, BERT, QWEN, SmolLM2 (offline default) or tiny-gpt2/-llama/-bert/-qwen2 (random, for tests)")
    llm.add("--llm_layers", type=int, default=6, help="keep the first N transformer layers of the LLM")
    llm.add("--llm_dim", type=int, default=None, help="LLM hidden size (read from the model; a given value is only checked)")
    llm.add("--num_tokens", type=int, default=1000, help="text prototypes formed by the mapping layer from the vocabulary")
    llm.add("--mapping_rank", type=int, default=0, help="speed option: factorise the mapping layer to this rank (0: full; changes results)")
    llm.add("--llm_ablation", type=str, default="none", choices=["none", "random_init", "no_llm", "llm2attn", "llm2trsf"], help="replace the LLM (Tan et al., NeurIPS 2024)")

    loading = parser.group("llm loading", "where the LLM comes from and how it is held")
    loading.add("--llm_model_path", type=str, default=None, help="hub id, local folder or .gguf file overriding --llm_model's default source")
    loading.add("--llm_dtype", type=str, default="float32", choices=["float32", "bfloat16", "float16"], help="dtype of the LLM weights")
    loading.add("--load_in_4bit", action="store_true", help="NF4 4-bit weights with double quantisation (bitsandbytes)")
    loading.add("--gradient_checkpointing", type=int, default=0, help="recompute LLM activations in backward to save memory")
    loading.add("--reference_path", type=int, default=0, help="1: the straightforward path (per-series prompt strings, mapping every forward, no prefix cache), kept for benchmarks")
    loading.add("--llm_cache_dir", type=str, default=None, help="converted/generated backbones (default: $TIMELLM_CACHE or ~/.cache/timellm)")

    prompt = parser.group("prompt", "prompt-as-prefix")
    prompt.add("--prompt_name", type=str, default=None, help="dataset/prompt_bank/<name>.txt (default: the dataset's)")
    prompt.add("--content", type=str, default="", help="dataset description text overriding the prompt bank")
    prompt.add("--prompt_attention_mask", type=int, default=1, help="1: mask prompt padding (corrected); 0: upstream, padding attended to")
    prompt.add("--prompt_digits", type=int, default=0, help="speed option: print prompt numbers with this many significant digits (0: all, as upstream; changes results)")
    prompt.add("--lag_method", type=str, default="corrected", choices=["corrected", "upstream"], help="top-5 lags in the prompt (see utils/prompt.py)")

    optimization = parser.group("optimization", "training")
    optimization.add("--train_epochs", type=int, default=10)
    optimization.add("--max_steps", type=int, default=0, help="cap on optimizer steps (0: none); the run still validates and tests")
    optimization.add("--batch_size", type=int, default=32, help="training windows per process and micro-batch")
    optimization.add("--eval_batch_size", type=int, default=8, help="validation/test windows per process")
    optimization.add("--learning_rate", type=float, default=0.0001)
    optimization.add("--weight_decay", type=float, default=0.0)
    optimization.add("--lradj", type=str, default="type1", choices=LR_SCHEDULES, help="learning-rate schedule (see utils/schedules.py)")
    optimization.add("--pct_start", type=float, default=0.2, help="TST (OneCycle) warm-up fraction")
    optimization.add("--patience", type=int, default=3, help="early stopping: epochs without validation improvement")
    optimization.add("--loss", type=str, default="MSE", help="MSE, MAE, MAPE, SMAPE or MASE")
    optimization.add("--gradient_accumulation_steps", type=int, default=1)
    optimization.add("--max_grad_norm", type=float, default=0.0, help="clip the global gradient norm (0: off)")
    optimization.add("--mixed_precision", type=str, default="no", choices=MIXED_PRECISION, help="autocast through Accelerate")
    optimization.add("--use_amp", action="store_true", help="upstream flag: same as --mixed_precision bf16")
    optimization.add("--deepspeed_config", type=str, default=None, help="DeepSpeed JSON (e.g. ds_config_zero2.json); GPU nodes")

    wavelet = parser.group("wavelet", "wavelet patch embedding, layers/WaveletEmbed.py (part of the architecture)")
    wavelet.add("--use_wavelet", type=int, default=0, help="1: patches of a stationary wavelet transform instead of raw values")
    wavelet.add("--wavelet", type=str, default="db4", help="PyWavelets discrete wavelet: haar, db4, sym4, ...")
    wavelet.add("--swt_level", type=int, default=3, help="SWT decomposition levels (bands: level + 1)")
    wavelet.add("--use_all_coeffs", type=int, default=1, help="1: approximation and every detail band; 0: the approximation only")
    wavelet.add("--wavelet_projection", type=str, default="flatten", choices=["flatten", "band"], help="one embedding of all bands, or one per band then a fusion")
    wavelet.add("--wavelet_mode", type=str, default="replicate", choices=["replicate", "reflect", "zero", "periodic"], help="how the series is extended at its ends before the transform")
    wavelet.add("--learnable_wavelet", type=int, default=0, help="1: learn the filters, kept near a perfect-reconstruction pair by --lambda_wavelet")
    wavelet.add("--wavelet_semantic", type=int, default=0, help="1: a residual MLP on the embedded patches before reprogramming")

    tapr = parser.group("TAPR", "trend-aware patch routing, layers/TAPR.py (part of the architecture)")
    tapr.add("--use_tapr", type=int, default=0, help="1: multi-scale decomposition, coarse-to-fine trend head and trend token")
    tapr.add("--n_scales", type=int, default=3, help="scales 1x, 4x, 16x, 64x: how many")
    tapr.add("--c2f_fusion", type=int, default=1, help="1: the trend head adjusts the forecast (gated, bounded, growing over the horizon)")

    gram = parser.group("GRA-M", "retrieval-augmented memory, layers/GRAM.py (part of the architecture)")
    gram.add("--use_gram", type=int, default=0, help="1: retrieve similar training windows, gate them into the patches, 2 retrieval tokens")
    gram.add("--top_k", type=int, default=5, help="retrieved windows per series (TimesNet: periods per sample)")
    gram.add("--d_repr", type=int, default=128, help="width of the pattern and value representations")
    gram.add("--max_memory_size", type=int, default=10000, help="training windows (per variable) held in the memory")
    gram.add("--retrieval_temperature", type=float, default=0.1, help="softmax temperature over the retrieved windows' similarities")

    aux = parser.group("auxiliary losses", "weights of the add-on modules' training signals")
    aux.add("--lambda_trend", type=float, default=0.5, help="weight of the TAPR losses")
    aux.add("--lambda_dir", type=float, default=0.3, help="TAPR: direction cross-entropy, inside lambda_trend")
    aux.add("--lambda_mag", type=float, default=0.3, help="TAPR: magnitude cross-entropy, inside lambda_trend")
    aux.add("--lambda_hcl", type=float, default=0.1, help="TAPR: hierarchical consistency KL, inside lambda_trend")
    aux.add("--label_smoothing", type=float, default=0.1, help="TAPR: label smoothing of both cross-entropies")
    aux.add("--trend_thresholds", type=float, nargs=4, default=[-0.02, -0.005, 0.005, 0.02], help="TAPR: class boundaries on the future's slope (input-window std per step)")
    aux.add("--lambda_retrieval", type=float, default=0.3, help="weight of the GRA-M gate losses")
    aux.add("--lambda_wavelet", type=float, default=1.0, help="weight of the learnable wavelet's reconstruction loss")
    aux.add("--aux_warmup_steps", type=int, default=500, help="auxiliary losses ramp up linearly over this many optimizer steps")

    checkpointing = parser.group("checkpointing", "step checkpoints, resume and the retrieval memory")
    checkpointing.add("--save_steps", type=int, default=0, help="write a full training checkpoint every N optimizer steps (0: off)")
    checkpointing.add("--save_total_limit", type=int, default=0, help="keep only the newest N step checkpoints (0: all)")
    checkpointing.add("--resume_from_checkpoint", type=str, default=None, help="continue a run from a step checkpoint, its best checkpoint, or its folder (the newest step checkpoint)")
    checkpointing.add("--resume_counter", type=int, default=-1, help="on resume, set the early-stopping counter to this (-1: as saved)")
    checkpointing.add("--build_memory", type=int, default=1, help="GRA-M: build the memory from the training split at the start of training; 0 keeps a loaded checkpoint's")
    return parser


def _load_yaml_defaults(parser: ConfigParser, path: str) -> dict:
    try:
        with open(path) as handle:
            values = yaml.safe_load(handle) or {}
    except FileNotFoundError:
        raise SystemExit(f"error: --config {path}: file not found") from None
    if not isinstance(values, dict):
        raise SystemExit(f"error: --config {path}: expected a mapping of flag names to values")
    known = {action.dest for action in parser._actions}
    unknown = sorted(set(values) - known)
    if unknown:
        raise SystemExit(f"error: --config {path}: unknown key(s) {unknown}; keys are flag names without '--'")
    return values


def parse_config(
    argv: Optional[Sequence[str]] = None,
    parser: Optional[ConfigParser] = None,
    defaults: Optional[dict] = None,
    validators: Sequence[Callable] = (),
) -> argparse.Namespace:
    """Parse `argv` over (parser defaults < `defaults` < YAML < command line) and validate."""
    parser = parser or build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if defaults:
        parser.set_defaults(**defaults)
    first_pass, _ = parser.parse_known_args(argv)
    if first_pass.config:
        parser.set_defaults(**_load_yaml_defaults(parser, first_pass.config))
    config = parser.parse_args(argv)
    config.group_of = dict(parser.group_of)
    try:
        validate(config)
        for validator in validators:
            validator(config)
    except ValueError as error:
        parser.error(str(error))
    return config


def validate(config: argparse.Namespace) -> None:
    """Cross-flag checks that need no data; each error names the flag."""
    if config.use_amp and config.mixed_precision == "no":
        config.mixed_precision = "bf16"
    positive = ("seq_len", "pred_len", "batch_size", "eval_batch_size", "train_epochs", "gradient_accumulation_steps", "log_interval")
    for name in positive:
        if getattr(config, name) <= 0:
            raise ValueError(f"--{name} must be positive, got {getattr(config, name)}")
    if config.label_len < 0 or config.label_len > config.seq_len:
        raise ValueError(f"--label_len must be between 0 and --seq_len ({config.seq_len}), got {config.label_len}")
    if not 0 < config.percent <= 100:
        raise ValueError(f"--percent must be in (0, 100], got {config.percent}")
    if config.max_steps < 0:
        raise ValueError(f"--max_steps must be >= 0, got {config.max_steps}")
    if config.is_training == 0 and not config.checkpoint:
        raise ValueError("--is_training 0 tests a saved model: give --checkpoint (a run folder or checkpoint file)")
    if (config.use_tapr or config.use_gram or config.use_wavelet) and config.model != "TimeLLM":
        raise ValueError(f"--use_tapr, --use_gram and --use_wavelet are TimeLLM modules; --model is {config.model}")
    if config.use_gram and config.data == "m4":
        raise ValueError("--use_gram needs sliding-window data (ETT, custom CSV): M4 series have no shared time axis to exclude overlaps on")
    for name in ("save_steps", "save_total_limit", "aux_warmup_steps"):
        if getattr(config, name) < 0:
            raise ValueError(f"--{name} must be >= 0, got {getattr(config, name)}")
    if config.deepspeed_config and (config.save_steps or config.resume_from_checkpoint):
        raise ValueError("--save_steps and --resume_from_checkpoint need the optimizer state in one process; not available with --deepspeed_config (ZeRO shards it)")
    if config.resume_from_checkpoint and not config.is_training:
        raise ValueError("--resume_from_checkpoint continues training; to test a checkpoint use --is_training 0 --checkpoint")
    if config.features == "MS" and config.sample_layout == "per_channel":
        raise ValueError("--features MS needs --sample_layout all_channels (the target is predicted from all variables)")


def architecture_of(config) -> dict:
    """The flags that define the model's shape and parameters (compared when loading checkpoints)."""
    values = vars(config) if not isinstance(config, dict) else config
    group_of = values.get("group_of", {})
    return {name: values.get(name) for name, group in group_of.items() if group in ARCHITECTURE_GROUPS}
