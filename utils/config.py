"""The one argparse/YAML configuration builder shared by every entry script.

Flags keep the upstream Time-LLM names. `--config FILE.yaml` supplies defaults and the command line
overrides them; an unknown YAML key is an error naming it. Values that can be derived from the data
(`enc_in`, `c_out`, the sample layout) default to None/auto and are filled in by the trainer.
The groups double as the record of which flags define a model's architecture: a checkpoint can only
be loaded by a run whose architecture flags match (see ARCHITECTURE_GROUPS).
"""
import argparse
import difflib
import sys
from typing import Callable, Optional, Sequence

import yaml

from layers.LLMAblations import KEEP_PROMPT_ABLATIONS, TAN_ABLATIONS
from utils.schedules import LR_SCHEDULES
from utils.tracking import REPORT_TO, resolve_tracking

ARCHITECTURE_GROUPS = ("task", "model", "llm", "wavelet", "TAPR", "GRA-M", "schemes")
TASKS = ("long_term_forecast", "short_term_forecast", "masked_pretrain")
MIXED_PRECISION = ("no", "fp16", "bf16")


# Flags that switch on a TimeLLM add-on module.
TIMELLM_ADD_ONS = (
    "use_tapr", "use_gram", "use_wavelet", "use_hybrid", "use_multiscale", "use_frequency", "use_inter_variate",
    "use_dynamic_prompt", "use_moe", "use_adaptive_vocab", "use_keyword_init",
)

# Regulariser flags of the baselines: flag -> (the model it belongs to, what it weighs).
REGULARISERS = {
    "lambda_attention_orthogonality": ("TimeXer", "||W^T W - I||_F^2 of each layer's cross-attention projections"),
    "lambda_frequency_consistency": ("TimesNet", "the change of the amplitude spectrum between consecutive TimesBlocks"),
    "lambda_patch_attention_kl": ("PatchTST", "KL(patch attention || uniform)"),
    "lambda_embedding_orthogonality": ("iTransformer", "||E E^T - I||_F^2 of the normalised variable tokens"),
    "lambda_trend_residual": ("DLinear", "MSE of the trend branch's forecast alone against the future"),
}


class ConfigParser(argparse.ArgumentParser):
    """ArgumentParser that remembers which group each flag belongs to, takes flags only spelled out
    (a prefix such as --learning would silently pick one of several flags) and reports a mistake in
    one line, with the nearest flag for a misspelt one, instead of the full usage."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, allow_abbrev=False, **kwargs)
        self.group_of: dict[str, str] = {}

    def group(self, name: str, description: str = "") -> "_RecordingGroup":
        return _RecordingGroup(self, name, self.add_argument_group(name, description))

    def parse_args(self, args=None, namespace=None):
        namespace, unknown = self.parse_known_args(args, namespace)
        if unknown:
            self.error(self.unknown_argument_message(unknown))
        return namespace

    def unknown_argument_message(self, unknown: list[str]) -> str:
        flags = [flag for action in self._actions for flag in action.option_strings if flag.startswith("--")]
        first = next((word for word in unknown if word.startswith("-")), unknown[0])
        message = f"unrecognized argument {first}"
        nearest = difflib.get_close_matches(first.split("=")[0], flags, n=1, cutoff=0.6)
        return message + (f"; did you mean {nearest[0]}?" if nearest else "")

    def error(self, message: str):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


class _RecordingGroup:
    def __init__(self, parser: ConfigParser, name: str, group):
        self.parser, self.name, self.group = parser, name, group

    def add(self, *flags, **kwargs) -> None:
        action = self.group.add_argument(*flags, **kwargs)
        self.parser.group_of[action.dest] = self.name

    def switch(self, flag: str, default: int, help: str) -> None:
        """An on/off flag taking 0 or 1, or nothing for 1: `--use_tapr`, `--use_tapr 1`, `--use_tapr 0`
        (upstream's bare `--use_amp` style and the explicit values of the shell scripts both work)."""
        self.add(flag, type=int, nargs="?", const=1, default=default, choices=[0, 1], metavar="{0,1}", help=help)


def build_parser(description: str = "Time-LLM forecasting") -> ConfigParser:
    parser = ConfigParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)

    run = parser.group("run", "what to run and where results go")
    run.add("--config", type=str, action="append", default=None, help="YAML file of defaults; give several to layer them (later files override earlier ones, e.g. configs/demo.yaml configs/upstream_compat.yaml); command-line flags override them all")
    run.add("--task_name", type=str, default="long_term_forecast", choices=TASKS, help="masked_pretrain: PatchTST's self-supervised stage (run_pretrain.py --pretrain_task masked)")
    run.add("--is_training", type=int, default=1, help="1: train then test the best checkpoint; 0: test --checkpoint")
    run.add("--checkpoint", type=str, default=None, help="checkpoint file or run folder to test (--is_training 0)")
    run.add("--init_checkpoint", type=str, default=None, help="start training from this run's weights (fine-tuning)")
    run.add("--model_id", type=str, default="test", help="name of the experiment, part of the run folder name")
    run.add("--model_comment", type=str, default="none", help="free-text tag, part of the run folder name")
    run.add("--des", type=str, default="Exp", help="experiment description tag (upstream)")
    run.add("--seed", type=int, default=2021, help="seeds python, numpy and torch once at start")
    run.add("--itr", type=int, default=1, help="repeat the run with seeds --seed, --seed + 1, ...: one folder each and a mean ± std summary (run_main.py, run_main_enhanced.py)")
    run.add("--seeds", type=int, nargs="+", default=None, help="repeat the run with these seeds (instead of --itr)")
    run.add("--checkpoints", type=str, default="./checkpoints/", help="parent folder of run folders")
    run.add("--run_dir", type=str, default=None, help="exact run folder (default: a new one under --checkpoints)")
    run.add("--results_file", type=str, default=None, help="results CSV (default: <checkpoints>/results.csv)")
    run.add("--report_to", type=str, nargs="+", default=["tensorboard"], choices=REPORT_TO, help="experiment trackers, several allowed (utils/tracking.py): tensorboard (in the run folder), mlflow (offline SQLite store, --tracking_uri), wandb (offline unless WANDB_MODE says otherwise), none")
    run.add("--tracking_uri", type=str, default=None, help="MLflow store or server (default with --report_to mlflow: sqlite:///<checkpoints>/mlflow.db)")
    run.add("--log_interval", type=int, default=100, help="optimizer steps between loss logs and finiteness checks")
    run.switch("--save_predictions", default=1, help="write test predictions and truths (npz)")
    run.add("--num_workers", type=int, default=0, help="DataLoader worker processes")
    run.add("--optuna_trial", type=str, default=None, help="set by scripts/search.py: report each epoch's validation loss to this Optuna trial (STORAGE#STUDY#TRIAL_ID) and stop when it is pruned")
    run.switch("--deterministic", default=0, help="1: deterministic kernels only (torch.use_deterministic_algorithms, CUBLAS_WORKSPACE_CONFIG, cuDNN without autotuning), so GPU runs repeat bit for bit; an operation without a deterministic kernel is then an error naming it")

    data = parser.group("data", "which data")
    data.add("--data", type=str, default="ETTh1", help="dataset name from data_provider/registry.py")
    data.add("--root_path", type=str, default=None, help="data folder (default: the dataset's folder under dataset/)")
    data.add("--data_path", type=str, default=None, help="data file inside --root_path")
    data.add("--target", type=str, default="OT", help="target column: forecast under features S and MS; under M every column is forecast and the target only goes last (must still name a column)")
    data.add("--freq", type=str, default=None, help="sampling frequency for time features: h, t (minute), 15min, d, w, m, q, ... (default: a named dataset's own; --data custom: inferred from the dates, and logged)")
    data.add("--seasonal_patterns", type=str, default="Monthly", help="M4 subset: Yearly, Quarterly, Monthly, Weekly, Daily, Hourly")
    data.add("--percent", type=int, default=100, help="few-shot: percentage of training windows kept")
    data.switch("--inverse", default=0, help="1: also report test metrics in original units (and save forecasts in them); validation and checkpoint selection stay in scaled units")

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
    model.switch("--individual", default=0, help="DLinear: one linear layer per variable")
    model.add("--num_kernels", type=int, default=6, help="TimesNet: kernel sizes 1, 3, .. of each Inception block")
    model.add("--patch_len", type=int, default=16)
    model.add("--stride", type=int, default=8)

    llm = parser.group("llm", "Time-LLM backbone and reprogramming (part of the architecture)")
    llm.add("--llm_model", type=str, default="SmolLM2", help="GPT2, LLAMA, BERT, QWEN, SmolLM2 (offline default) or tiny-gpt2/-llama/-bert/-qwen2 (random, for tests)")
    llm.add("--llm_layers", type=int, default=6, help="keep the first N transformer layers of the LLM")
    llm.add("--llm_dim", type=int, default=None, help="LLM hidden size (read from the model; a given value is only checked)")
    llm.add("--num_tokens", type=int, default=1000, help="text prototypes formed by the mapping layer from the vocabulary")
    llm.add("--mapping_rank", type=int, default=0, help="speed option: factorise the mapping layer to this rank (0: full; changes results)")
    llm.switch("--use_lora", default=0, help="1: train LoRA adapters on the LLM with the reprogramming layers (peft); with --load_in_4bit: QLoRA")
    llm.add("--lora_r", type=int, default=8, help="LoRA rank")
    llm.add("--lora_alpha", type=int, default=16, help="LoRA scale numerator (the update is alpha / r x B A)")
    llm.add("--lora_dropout", type=float, default=0.05, help="dropout on the LoRA branch's input")
    llm.add("--lora_target_modules", type=str, nargs="+", default=None, help="module names to adapt (default per family: q/v projections; GPT-2 c_attn; BERT query/value)")
    llm.add("--llm_ablation", type=str, default="none", choices=["none", "random_init", *TAN_ABLATIONS, *KEEP_PROMPT_ABLATIONS], help="no_llm/llm2attn/llm2trsf: Tan et al. (NeurIPS 2024), the LLM, prompt and reprogramming replaced by nothing/one attention/one transformer layer at d_model before a linear head; *_keep_prompt: only the LLM replaced, at its width; random_init: the LLM untrained (layers/LLMAblations.py)")

    loading = parser.group("llm loading", "where the LLM comes from and how it is held")
    loading.add("--llm_model_path", type=str, default=None, help="hub id, local folder or .gguf file overriding --llm_model's default source")
    loading.add("--llm_dtype", type=str, default="float32", choices=["float32", "bfloat16", "float16"], help="dtype of the LLM weights")
    loading.add("--load_in_4bit", action="store_true", help="NF4 4-bit weights with double quantisation (bitsandbytes)")
    loading.switch("--gradient_checkpointing", default=0, help="recompute LLM activations in backward to save memory")
    loading.switch("--reference_path", default=0, help="1: the straightforward path (per-series prompt strings, mapping every forward, no prefix cache), kept for benchmarks")
    loading.add("--llm_cache_dir", type=str, default=None, help="converted/generated backbones (default: $TIMELLM_CACHE or ~/.cache/timellm)")

    prompt = parser.group("prompt", "prompt-as-prefix")
    prompt.add("--prompt_name", type=str, default=None, help="dataset/prompt_bank/<name>.txt (default: the dataset's)")
    prompt.add("--content", type=str, default="", help="dataset description text overriding the prompt bank")
    prompt.switch("--prompt_domain", default=1, help="1: the dataset's description (--prompt_name's file or --content); 0: upstream's default, its one-sentence ETT description whatever the data (upstream's scripts never set it)")
    prompt.switch("--prompt_attention_mask", default=1, help="1: mask prompt padding (corrected); 0: upstream, padding attended to")
    prompt.add("--prompt_digits", type=int, default=0, help="speed option: print prompt numbers with this many significant digits (0: all, as upstream; changes results)")
    prompt.add("--lag_method", type=str, default="corrected", choices=["corrected", "upstream"], help="top-5 lags in the prompt (see utils/prompt.py)")

    interpretability = parser.group("interpretability", "what the run keeps to look inside Time-LLM (not part of the architecture)")
    interpretability.switch("--save_attention", default=0, help="1: keep the first test batch's attention weights (attention.npz) and plot which text prototypes each patch reads, with the inter-variate map when that module is on (attention.png)")

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
    optimization.add("--loss", type=str, default="MSE", help="MSE, MAE, MAPE, SMAPE, MASE or SmoothL1")
    optimization.add("--gradient_accumulation_steps", type=int, default=1)
    optimization.add("--max_grad_norm", type=float, default=0.0, help="clip the global gradient norm (0: off)")
    optimization.add("--mixed_precision", type=str, default="no", choices=MIXED_PRECISION, help="autocast through Accelerate")
    optimization.add("--use_amp", action="store_true", help="upstream flag: same as --mixed_precision bf16")
    optimization.add("--deepspeed_config", type=str, default=None, help="DeepSpeed JSON (e.g. ds_config_zero2.json); GPU nodes")

    wavelet = parser.group("wavelet", "wavelet patch embedding, layers/WaveletEmbed.py (part of the architecture)")
    wavelet.switch("--use_wavelet", default=0, help="1: patches of a stationary wavelet transform instead of raw values")
    wavelet.add("--wavelet", type=str, default="db4", help="PyWavelets discrete wavelet: haar, db4, sym4, ...")
    wavelet.add("--swt_level", type=int, default=3, help="SWT decomposition levels (bands: level + 1)")
    wavelet.switch("--use_all_coeffs", default=1, help="1: approximation and every detail band; 0: the approximation only")
    wavelet.add("--wavelet_projection", type=str, default="flatten", choices=["flatten", "band"], help="one embedding of all bands, or one per band then a fusion")
    wavelet.add("--wavelet_mode", type=str, default="replicate", choices=["replicate", "reflect", "zero", "periodic"], help="how the series is extended at its ends before the transform")
    wavelet.switch("--learnable_wavelet", default=0, help="1: learn the filters, kept near a perfect-reconstruction pair by --lambda_wavelet")
    wavelet.switch("--wavelet_semantic", default=0, help="1: a residual MLP on the embedded patches before reprogramming")

    tapr = parser.group("TAPR", "trend-aware patch routing, layers/TAPR.py (part of the architecture)")
    tapr.switch("--use_tapr", default=0, help="1: multi-scale decomposition, coarse-to-fine trend head and trend token")
    tapr.add("--n_scales", type=int, default=3, help="scales 1x, 4x, 16x, 64x: how many")
    tapr.switch("--c2f_fusion", default=1, help="1: the trend head adjusts the forecast (gated, bounded, growing over the horizon)")

    gram = parser.group("GRA-M", "retrieval-augmented memory, layers/GRAM.py (part of the architecture)")
    gram.switch("--use_gram", default=0, help="1: retrieve similar training windows, gate them into the patches, 2 retrieval tokens")
    gram.add("--top_k", type=int, default=5, help="retrieved windows per series (TimesNet: periods per sample)")
    gram.add("--d_repr", type=int, default=128, help="width of the pattern and value representations")
    gram.add("--max_memory_size", type=int, default=10000, help="training windows (per variable) held in the memory")
    gram.add("--retrieval_temperature", type=float, default=0.1, help="softmax temperature over the retrieved windows' similarities")
    gram_training = parser.group("GRA-M retrieval in training", "which memory windows a training query may retrieve (not part of the architecture)")
    gram_training.add("--gram_retrieval", type=str, default="causal", choices=["causal", "non_overlapping"], help="causal: only windows whose future ends before the query's horizon starts, as for every test query; non_overlapping: any window not overlapping the horizon, later ones included")

    schemes = parser.group("schemes", "the seven add-on schemes of Time-LLM, each off by default (part of the architecture)")
    schemes.switch("--use_hybrid", default=0, help="1: fuse the forecast with ARIMA and Holt-Winters forecasts (models/traditional/)")
    schemes.switch("--use_arima", default=1, help="hybrid: fuse ARIMA's forecast")
    schemes.switch("--use_es", default=1, help="hybrid: fuse Holt-Winters exponential smoothing's forecast")
    schemes.add("--fusion_method", type=str, default="adaptive", choices=["adaptive", "average", "weighted", "learned"],
                help="hybrid: how the forecasts are weighted (weighted: by each model's confidence; learned: learned logits; models/traditional/hybrid.py)")
    schemes.add("--arima_p", type=int, default=2, help="hybrid: ARIMA autoregressive order (d comes from ADF tests)")
    schemes.add("--arima_q", type=int, default=1, help="hybrid: ARIMA moving-average order")
    schemes.add("--arima_max_differences", type=int, default=1, help="hybrid: at most this many differences (d) from the ADF tests; d = 2 extrapolates curvature over the horizon")
    schemes.add("--arima_seasonal_period", type=int, default=0, help="hybrid: seasonal AR(1) term of this period (0: none; slower)")
    schemes.add("--ets_seasonal_period", type=int, default=24, help="hybrid: Holt-Winters season length in steps")
    schemes.switch("--use_multiscale", default=0, help="1: patch embeddings of the input pooled at several scales, fused (layers/MultiScaleEmbed.py)")
    schemes.add("--scales", type=int, nargs="+", default=[1, 2, 4], help="multi-scale: pooling factors")
    schemes.add("--multiscale_fusion", type=str, default="gate", choices=["gate", "attention", "concat", "sum"], help="multi-scale: how the scales are fused")
    schemes.switch("--use_frequency", default=0, help="1: FFT trend/seasonal dual-branch patch embedding with a per-series gate (layers/FrequencyDecomposition.py)")
    schemes.add("--top_k_freqs", type=int, default=5, help="frequency: strongest frequencies that measure periodicity")
    schemes.add("--trend_cutoff", type=float, default=0.02, help="frequency: cycles per step below which the spectrum is trend (0.02: periods over 50 steps)")
    schemes.switch("--use_inter_variate", default=0, help="1: attention across the variables of a sample after reprogramming (--sample_layout auto becomes all_channels)")
    schemes.add("--inter_variate_heads", type=int, default=8, help="inter-variate attention heads (must divide the LLM hidden size)")
    schemes.add("--inter_variate_ff", type=int, default=256, help="inter-variate feed-forward width (0: 4 x the LLM hidden size, the specification's automatic size)")
    schemes.switch("--use_dynamic_prompt", default=0, help="1: learned prompt tokens from the series and segment statistics tokens after the text prompt")
    schemes.add("--num_dynamic_tokens", type=int, default=32, help="dynamic prompt: learned tokens per series")
    schemes.add("--num_prompt_segments", type=int, default=3, help="dynamic prompt: segments with a statistics token each")
    schemes.switch("--use_moe", default=0, help="1: sparse mixture of expert feed-forwards on the reprogrammed patches")
    schemes.add("--num_experts", type=int, default=4)
    schemes.add("--top_k_experts", type=int, default=2, help="experts per token")
    schemes.add("--moe_d_ff", type=int, default=256, help="width of each expert")
    schemes.switch("--use_adaptive_vocab", default=0, help="1: --num_tokens from the task size (utils/vocab_init.py)")
    schemes.add("--base_num_tokens", type=int, default=1000, help="adaptive vocabulary: the prototype count of ETT 96 -> 96 with 7 variables, scaled by the task")
    schemes.switch("--use_keyword_init", default=0, help="1: initialise the text prototypes from time-series keywords")
    schemes.add("--vocab_init_method", type=str, default="weighted", choices=["weighted", "cluster", "random_from_keywords"], help="keyword initialisation method")
    hybrid_run = parser.group("hybrid forecasts", "where and how the statistical forecasts are computed (not part of the architecture)")
    hybrid_run.add("--hybrid_workers", type=int, default=0, help="worker processes fitting the statistical models (0: one per CPU)")
    hybrid_run.add("--hybrid_cache_dir", type=str, default=None, help="cache of statistical forecasts (default: $TIMELLM_CACHE/hybrid)")

    aux = parser.group("auxiliary losses", "weights of the add-on modules' training signals")
    aux.add("--lambda_trend", type=float, default=0.5, help="weight of the TAPR losses")
    aux.add("--lambda_dir", type=float, default=0.3, help="TAPR: direction cross-entropy, inside lambda_trend")
    aux.add("--lambda_mag", type=float, default=0.3, help="TAPR: magnitude cross-entropy, inside lambda_trend")
    aux.add("--lambda_hcl", type=float, default=0.1, help="TAPR: hierarchical consistency KL, inside lambda_trend")
    aux.add("--label_smoothing", type=float, default=0.1, help="TAPR: label smoothing of both cross-entropies")
    aux.add("--trend_thresholds", type=float, nargs=4, default=[-0.02, -0.005, 0.005, 0.02], help="TAPR: class boundaries on the future's slope (input-window std per step)")
    aux.add("--lambda_retrieval", type=float, default=0.3, help="weight of the GRA-M gate losses")
    aux.add("--lambda_wavelet", type=float, default=1.0, help="weight of the learnable wavelet's reconstruction loss")
    aux.add("--lambda_moe", type=float, default=0.01, help="weight of the mixture of experts' load-balancing loss")
    aux.add("--aux_warmup_steps", type=int, default=500, help="auxiliary losses ramp up linearly over this many optimizer steps")

    regularisers = parser.group("baseline regularisers", "extra loss terms from the notes, not in the papers; each for one model, 0: off")
    for flag, (model_name, description) in REGULARISERS.items():
        regularisers.add(f"--{flag}", type=float, default=0.0, help=f"{model_name}: weight of {description}")

    dapo = parser.group("DAPO", "DAPO-style training options (utils/dapo.py), off by default")
    dapo.switch("--clip_per_group", default=0, help="1: clip each parameter group's gradient norm on its own (decoupled clipping) instead of one global norm")
    dapo.add("--group_clip_norm", type=float, default=1.0, help="clipping threshold of every group (with --clip_per_group 1)")
    dapo.add("--group_clip_norms", type=str, nargs="+", default=[], metavar="GROUP=NORM", help="per-group thresholds overriding --group_clip_norm, e.g. head=0.5 reprogramming=2")
    dapo.switch("--dynamic_sampling", default=0, help="1: draw training windows by a softmax of their recent loss instead of uniformly")
    dapo.add("--sampling_temperature", type=float, default=1.0, help="softmax temperature over recent losses (relative to their mean)")
    dapo.add("--sampling_kl_weight", type=float, default=0.1, help="KL-to-uniform weight: 0 keeps the softmax, larger pulls the sampling weights toward uniform")
    dapo.add("--sampling_loss_decay", type=float, default=0.5, help="weight of the newest loss in each window's running loss")

    pretraining = parser.group("pretraining", "run_pretrain.py")
    pretraining.add("--pretrain_task", type=str, default="transfer", choices=["transfer", "masked"], help="transfer: train, then zero-/few-shot on --target_data; masked: PatchTST masked self-supervised pre-training, then fine-tuning")
    pretraining.add("--mask_ratio", type=float, default=0.4, help="masked pre-training: fraction of patches hidden")
    pretraining.add("--pretrain_epochs", type=int, default=10, help="masked pre-training: epochs of the self-supervised stage")

    checkpointing = parser.group("checkpointing", "step checkpoints, resume and the retrieval memory")
    checkpointing.add("--save_steps", type=int, default=0, help="write a full training checkpoint every N optimizer steps (0: off)")
    checkpointing.add("--save_total_limit", type=int, default=0, help="keep only the newest N step checkpoints (0: all)")
    checkpointing.add("--resume_from_checkpoint", type=str, default=None, help="continue a run from a step checkpoint, its best checkpoint, or its folder (the newest step checkpoint)")
    checkpointing.add("--resume_counter", type=int, default=-1, help="on resume, set the early-stopping counter to this (-1: as saved)")
    checkpointing.switch("--build_memory", default=1, help="GRA-M: build the memory from the training split at the start of training; 0 keeps a loaded checkpoint's")
    return parser


def _load_yaml_defaults(parser: ConfigParser, path: str) -> dict:
    try:
        with open(path) as handle:
            values = yaml.safe_load(handle) or {}
    except OSError as error:
        raise ValueError(f"--config {path}: {error.strerror.lower()}") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark is not None else ""
        raise ValueError(f"--config {path}{where}: not valid YAML ({getattr(error, 'problem', None) or error})") from None
    if not isinstance(values, dict):
        raise ValueError(f"--config {path}: expected a mapping of flag names to values")
    known = {action.dest for action in parser._actions} - {"config"}
    unknown = sorted(set(values) - known)
    if unknown:
        nearest = {key: difflib.get_close_matches(key, known, n=1) for key in unknown}
        hints = "".join(f"; {key}: did you mean {match[0]}?" for key, match in nearest.items() if match)
        raise ValueError(f"--config {path}: unknown key(s) {unknown}; keys are flag names without '--'{hints}")
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
    # What the entry script means by default, before YAML files set any value.
    entry_defaults = {action.dest: action.default for action in parser._actions}
    first_pass, _ = parser.parse_known_args(argv)
    try:
        for path in first_pass.config or []:
            parser.set_defaults(**_load_yaml_defaults(parser, path))
    except ValueError as error:
        parser.error(str(error))
    config = parser.parse_args(argv)
    config.group_of = dict(parser.group_of)
    try:
        validate(config)
        refuse_unused_components(config, entry_defaults)
        for validator in validators:
            validator(config)
    except ValueError as error:
        parser.error(str(error))
    return config


# Flag groups that configure parts of TimeLLM alone; a value set for another model would change nothing.
TIMELLM_GROUPS = (
    "llm", "llm loading", "prompt", "wavelet", "TAPR", "GRA-M", "GRA-M retrieval in training", "schemes", "hybrid forecasts",
    "auxiliary losses", "interpretability",
)
SHARED_WITH_BASELINES = ("top_k", "aux_warmup_steps")  # top_k: GRA-M's retrieved windows and TimesNet's periods; the warm-up ramps every model's auxiliary losses


def refuse_unused_components(config: argparse.Namespace, entry_defaults: dict) -> None:
    """A TimeLLM flag given (on the command line or in YAML) for another model is an error naming it:
    `--load_in_4bit` with DLinear would otherwise be silently ignored. The sub-flags of a TimeLLM
    add-on that is switched off stay allowed, so an ablation can toggle just the add-on's switch."""
    if config.model == "TimeLLM":
        return
    given = [
        name for name, group in config.group_of.items()
        if group in TIMELLM_GROUPS and name not in SHARED_WITH_BASELINES and getattr(config, name) != entry_defaults.get(name)
    ]
    if given:
        raise ValueError(f"{', '.join('--' + name for name in given)}: {'flag' if len(given) == 1 else 'flags'} of TimeLLM's components; --model is {config.model}, which does not use {'it' if len(given) == 1 else 'them'}")


def validate(config: argparse.Namespace) -> None:
    """Cross-flag checks that need no data; each error names the flag."""
    if config.use_amp and config.mixed_precision == "no":
        config.mixed_precision = "bf16"
    resolve_tracking(config)
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
    embeddings = [flag for flag in ("use_wavelet", "use_multiscale", "use_frequency") if getattr(config, flag)]
    if len(embeddings) > 1:
        raise ValueError(f"{' and '.join('--' + flag for flag in embeddings)} each replace the patch embedding: choose one")
    if config.use_inter_variate and config.sample_layout == "auto":  # derived: it needs every variable of a window
        config.sample_layout = "all_channels"
    if config.use_inter_variate and (config.sample_layout != "all_channels" or config.features == "S"):
        raise ValueError(
            "--use_inter_variate attends across the variables of one sample: it needs --sample_layout all_channels and "
            f"--features M or MS (now --sample_layout {config.sample_layout}, --features {config.features})"
        )
    if config.use_keyword_init and config.mapping_rank:
        raise ValueError("--use_keyword_init initialises the full mapping layer: it needs --mapping_rank 0")
    if config.use_hybrid and config.data == "m4":
        raise ValueError("--use_hybrid caches statistical forecasts per data file and split: not available for M4")
    for flag, (model_name, _) in REGULARISERS.items():
        if getattr(config, flag) and config.model != model_name:
            raise ValueError(f"--{flag} is a {model_name} regulariser; --model is {config.model}")
        if getattr(config, flag) < 0:
            raise ValueError(f"--{flag} must be >= 0, got {getattr(config, flag)}")
    if config.use_lora and config.model != "TimeLLM":
        raise ValueError(f"--use_lora adapts the LLM of TimeLLM; --model is {config.model}")
    if config.use_lora and config.llm_ablation in (*TAN_ABLATIONS, *KEEP_PROMPT_ABLATIONS):
        raise ValueError(f"--use_lora needs the LLM, which --llm_ablation {config.llm_ablation} replaces")
    if config.llm_ablation in TAN_ABLATIONS:
        unused = [flag for flag in (*TIMELLM_ADD_ONS, "load_in_4bit") if getattr(config, flag)]
        if unused:
            raise ValueError(
                f"--llm_ablation {config.llm_ablation} (Tan et al.) keeps only the patch embedding and a linear head: "
                f"{', '.join('--' + flag for flag in unused)} would have nothing to act on (the *_keep_prompt variants keep the LLM input)"
            )
    if config.use_lora and config.lora_r <= 0:
        raise ValueError(f"--lora_r must be positive, got {config.lora_r}")
    if config.clip_per_group and config.deepspeed_config:
        raise ValueError("--clip_per_group needs whole gradients in each process; DeepSpeed ZeRO partitions them (use its gradient_clipping)")
    if config.clip_per_group and config.max_grad_norm > 0:
        raise ValueError("--clip_per_group replaces the global --max_grad_norm clipping: give one of them")
    if config.dynamic_sampling and (config.sampling_temperature <= 0 or config.sampling_kl_weight < 0 or not 0 < config.sampling_loss_decay <= 1):
        raise ValueError("--dynamic_sampling needs --sampling_temperature > 0, --sampling_kl_weight >= 0 and --sampling_loss_decay in (0, 1]")
    if config.task_name == "masked_pretrain" and config.model != "PatchTST":
        raise ValueError(f"--task_name masked_pretrain (masked self-supervised pre-training) is PatchTST's; --model is {config.model}")
    if not 0 < config.mask_ratio < 1:
        raise ValueError(f"--mask_ratio must be in (0, 1), got {config.mask_ratio}")
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


def single_run(config: argparse.Namespace) -> None:
    """Validator of the entry scripts that run their own sequence of stages (run_m4.py, run_pretrain.py)."""
    if config.itr != 1 or config.seeds:
        raise ValueError("--itr/--seeds repeat run_main.py and run_main_enhanced.py runs; repeat this entry over seeds with scripts/suite.py")


def architecture_of(config) -> dict:
    """The flags that define the model's shape and parameters (compared when loading checkpoints)."""
    values = vars(config) if not isinstance(config, dict) else config
    group_of = values.get("group_of", {})
    return {name: values.get(name) for name, group in group_of.items() if group in ARCHITECTURE_GROUPS}
