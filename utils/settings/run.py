"""Sections of a run: what to run and where results go, the data, the task, optimisation,
checkpointing, the DAPO options, transfer and pre-training, interpretability."""
from dataclasses import dataclass
from typing import Optional

from utils.schedules import LR_SCHEDULES
from utils.settings.base import Section, option, shared, switch
from utils.tracking import REPORT_TO

TASKS = ("long_term_forecast", "short_term_forecast", "masked_pretrain")
MIXED_PRECISION = ("no", "fp16", "bf16")


def require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def positive(section: Section, *names: str) -> None:
    for name in names:
        require(getattr(section, name) > 0, f"--{name} must be positive, got {getattr(section, name)}")


def non_negative(section: Section, *names: str) -> None:
    for name in names:
        require(getattr(section, name) >= 0, f"--{name} must be >= 0, got {getattr(section, name)}")


@dataclass
class RunConfig(Section):
    group = "run"
    description = "what to run and where results go"
    task_name: str = option("long_term_forecast", "masked_pretrain: PatchTST's self-supervised stage (run_pretrain.py --pretrain_task masked)", choices=TASKS)
    is_training: int = option(1, "1: train then test the best checkpoint; 0: test --checkpoint")
    checkpoint: Optional[str] = option(None, "checkpoint file or run folder to test (--is_training 0)")
    init_checkpoint: Optional[str] = option(None, "start training from this run's weights (fine-tuning)")
    model_id: str = option("test", "name of the experiment, part of the run folder name")
    model_comment: str = option("none", "free-text tag, part of the run folder name")
    des: str = option("Exp", "experiment description tag (upstream)")
    seed: int = option(2021, "seeds python, numpy and torch once at start")
    itr: int = option(1, "repeat the run with seeds --seed, --seed + 1, ...: one folder each and a mean ± std summary (run_main.py, run_main_enhanced.py)")
    seeds: Optional[list[int]] = option(None, "repeat the run with these seeds (instead of --itr)")
    checkpoints: str = option("./checkpoints/", "parent folder of run folders")
    run_dir: Optional[str] = option(None, "exact run folder (default: a new one under --checkpoints)")
    results_file: Optional[str] = option(None, "results CSV (default: <checkpoints>/results.csv)")
    report_to: list[str] = option(["tensorboard"], "experiment trackers, several allowed (utils/tracking.py): tensorboard (in the run folder), mlflow (offline SQLite store, --tracking_uri), wandb (offline unless WANDB_MODE says otherwise), none", choices=REPORT_TO)
    tracking_uri: Optional[str] = option(None, "MLflow store or server (default with --report_to mlflow: sqlite:///<checkpoints>/mlflow.db)")
    log_interval: int = option(100, "optimizer steps between loss logs and finiteness checks")
    save_predictions: int = switch(1, "write test predictions and truths (npz)")
    num_workers: int = option(0, "DataLoader worker processes")
    optuna_trial: Optional[str] = option(None, "set by scripts/search.py: report each epoch's validation loss to this Optuna trial (STORAGE#STUDY#TRIAL_ID) and stop when it is pruned")
    deterministic: int = switch(0, "1: deterministic kernels only (torch.use_deterministic_algorithms, CUBLAS_WORKSPACE_CONFIG, cuDNN without autotuning), so GPU runs repeat bit for bit; an operation without a deterministic kernel is then an error naming it")

    def validate(self) -> None:
        positive(self, "log_interval")
        require(self.is_training != 0 or bool(self.checkpoint), "--is_training 0 tests a saved model: give --checkpoint (a run folder or checkpoint file)")
        require(self.task_name in TASKS, f"--task_name must be one of {TASKS}, got {self.task_name!r}")


@dataclass
class DataConfig(Section):
    group = "data"
    description = "which data"
    data: str = option("ETTh1", "dataset name from data_provider/registry.py")
    root_path: Optional[str] = option(None, "data folder (default: the dataset's folder under dataset/)")
    data_path: Optional[str] = option(None, "data file inside --root_path")
    target: str = option("OT", "target column: forecast under features S and MS; under M every column is forecast and the target only goes last (must still name a column)")
    freq: Optional[str] = option(None, "sampling frequency for time features: h, t (minute), 15min, d, w, m, q, ... (default: a named dataset's own; --data custom: inferred from the dates, and logged)")
    seasonal_patterns: str = option("Monthly", "M4 subset: Yearly, Quarterly, Monthly, Weekly, Daily, Hourly")
    percent: int = option(100, "few-shot: percentage of training windows kept")
    inverse: int = switch(0, "1: also report test metrics in original units (and save forecasts in them); validation and checkpoint selection stay in scaled units")

    def validate(self) -> None:
        require(0 < self.percent <= 100, f"--percent must be in (0, 100], got {self.percent}")


@dataclass
class TransferConfig(Section):
    group = "transfer"
    description = "run_pretrain.py: the dataset a trained model is transferred to"
    target_data: str = option("ETTh2", "dataset to evaluate on (registry name)")
    target_root_path: Optional[str] = option(None)
    target_data_path: Optional[str] = option(None)
    few_shot_percent: int = option(0, "also fine-tune on this percentage of the target's training windows (0: zero-shot only)")


@dataclass
class TaskConfig(Section):
    group = "task"
    description = "forecasting task (part of the architecture)"
    architecture = True
    features: str = option("M", "M: multivariate -> multivariate, S: univariate, MS: multivariate -> target", choices=["M", "S", "MS"])
    seq_len: int = option(96, "input length")
    label_len: int = option(48, "decoder start-token length (encoder-decoder models)")
    pred_len: int = option(96, "forecast horizon")
    sample_layout: str = option("auto", "one variable per sample or all variables per sample; auto: the model's own choice", choices=["auto", "per_channel", "all_channels"])
    embed: str = option("timeF", "time-feature encoding", choices=["timeF", "fixed", "learned"])

    def validate(self) -> None:
        positive(self, "seq_len", "pred_len")
        require(0 <= self.label_len <= self.seq_len, f"--label_len must be between 0 and --seq_len ({self.seq_len}), got {self.label_len}")
        require(not (self.features == "MS" and self.sample_layout == "per_channel"),
                "--features MS needs --sample_layout all_channels (the target is predicted from all variables)")


@dataclass
class InterpretabilityConfig(Section):
    group = "interpretability"
    description = "what the run keeps to look inside Time-LLM (not part of the architecture)"
    models = ("TimeLLM",)
    exclusive = True
    save_attention: int = switch(0, "1: keep the first test batch's attention weights (attention.npz) and plot which text prototypes each patch reads, with the inter-variate map when that module is on (attention.png)")


@dataclass
class OptimizationConfig(Section):
    group = "optimization"
    description = "training"
    train_epochs: int = option(10)
    max_steps: int = option(0, "cap on optimizer steps (0: none); the run still validates and tests")
    batch_size: int = option(32, "training windows per process and micro-batch")
    eval_batch_size: int = option(8, "validation/test windows per process")
    learning_rate: float = option(0.0001)
    weight_decay: float = option(0.0)
    lradj: str = option("type1", "learning-rate schedule (see utils/schedules.py)", choices=LR_SCHEDULES)
    pct_start: float = option(0.2, "TST (OneCycle) warm-up fraction")
    patience: int = option(3, "early stopping: epochs without validation improvement")
    loss: str = option("MSE", "MSE, MAE, MAPE, SMAPE, MASE or SmoothL1")
    gradient_accumulation_steps: int = option(1)
    max_grad_norm: float = option(0.0, "clip the global gradient norm (0: off)")
    mixed_precision: str = option("no", "autocast through Accelerate", choices=MIXED_PRECISION)
    use_amp: bool = option(False, "upstream flag: same as --mixed_precision bf16", store_true=True)
    deepspeed_config: Optional[str] = option(None, "DeepSpeed JSON (e.g. ds_config_zero2.json); GPU nodes")
    aux_warmup_steps: int = option(500, "auxiliary losses (add-ons' and regularisers') ramp up linearly over this many optimizer steps")

    def validate(self) -> None:
        positive(self, "batch_size", "eval_batch_size", "train_epochs", "gradient_accumulation_steps")
        non_negative(self, "max_steps", "aux_warmup_steps")


@dataclass
class DAPOConfig(Section):
    group = "DAPO"
    description = "DAPO-style training options (utils/dapo.py), off by default"
    clip_per_group: int = switch(0, "1: clip each parameter group's gradient norm on its own (decoupled clipping) instead of one global norm")
    group_clip_norm: float = option(1.0, "clipping threshold of every group (with --clip_per_group 1)")
    group_clip_norms: list[str] = option([], "per-group thresholds overriding --group_clip_norm, e.g. head=0.5 reprogramming=2", metavar="GROUP=NORM")
    dynamic_sampling: int = switch(0, "1: draw training windows by a softmax of their recent loss instead of uniformly")
    sampling_temperature: float = option(1.0, "softmax temperature over recent losses (relative to their mean)")
    sampling_kl_weight: float = option(0.1, "KL-to-uniform weight: 0 keeps the softmax, larger pulls the sampling weights toward uniform")
    sampling_loss_decay: float = option(0.5, "weight of the newest loss in each window's running loss")
    lambda_clip: float = option(0.0, "weight of the clip penalty sum over groups max(0, ||g|| - tau)^2, through double backward (0: off)")
    clip_penalty_threshold: str = option("fixed", "the penalty's tau per group: fixed (--group_clip_norm(s)) or auto (a running quantile of each group's gradient norm)", choices=["fixed", "auto"])
    clip_penalty_quantile: float = option(0.9, "auto thresholds: this quantile of each group's last 100 gradient norms")

    def validate(self) -> None:
        non_negative(self, "lambda_clip")
        require(0 < self.clip_penalty_quantile < 1, f"--clip_penalty_quantile must be in (0, 1), got {self.clip_penalty_quantile}")
        require(not self.dynamic_sampling or (self.sampling_temperature > 0 and self.sampling_kl_weight >= 0 and 0 < self.sampling_loss_decay <= 1),
                "--dynamic_sampling needs --sampling_temperature > 0, --sampling_kl_weight >= 0 and --sampling_loss_decay in (0, 1]")


@dataclass
class GRPOConfig(Section):
    group = "GRPO"
    description = "--objective grpo: reward fine-tuning of a probabilistic run (utils/grpo.py)"
    objective: str = option("supervised", "supervised: the forecasting loss; grpo: fine-tune --init_checkpoint's forecast distribution by a group-relative reward", choices=["supervised", "grpo"])
    grpo_group_size: int = option(8, "futures sampled from the old policy per training window")
    grpo_beta: float = option(1.0, "temperature of the target q = pi_old exp(r / beta) / Z (rewards are standardised within the group)")
    grpo_target: str = option("seed", "weights q of a group's draws: seed (pi_old(x_i) exp(r_i / beta) / Z, as seed 004) or self_normalised (exp(r_i / beta) / Z: the draws already come from pi_old)", choices=["seed", "self_normalised"])
    grpo_reward: str = option("mse", "reward: minus this error of a sampled future against the true one", choices=["mse", "mae"])
    grpo_refresh_steps: int = option(10, "optimizer steps between refreshes of the old policy pi_old")
    grpo_kl_weight: float = option(0.1, "weight of KL(pi || pi_ref) to the starting checkpoint, per forecast value")

    def validate(self) -> None:
        require(self.grpo_group_size >= 2, f"--grpo_group_size must be at least 2 (rewards are standardised within the group), got {self.grpo_group_size}")
        positive(self, "grpo_beta", "grpo_refresh_steps")
        non_negative(self, "grpo_kl_weight")


@dataclass
class PretrainingConfig(Section):
    group = "pretraining"
    description = "run_pretrain.py"
    pretrain_task: str = option("transfer", "transfer: train, then zero-/few-shot on --target_data; masked: PatchTST masked self-supervised pre-training, then fine-tuning", choices=["transfer", "masked"])
    mask_ratio: float = option(0.4, "masked pre-training: fraction of patches hidden")
    pretrain_epochs: int = option(10, "masked pre-training: epochs of the self-supervised stage")
    finetune: str = option("none", "bad_cases: fine-tune --init_checkpoint's run with LoRA on its worst training windows (utils/bad_cases.py) instead of pre-training", choices=["none", "bad_cases"])
    bad_case_fraction: float = option(0.1, "--finetune bad_cases: the fraction of training windows, those of largest error, to fine-tune on")
    replay_fraction: float = option(0.1, "--finetune bad_cases: also this fraction of ordinary training windows, drawn at random, against forgetting")

    def validate(self) -> None:
        require(0 < self.mask_ratio < 1, f"--mask_ratio must be in (0, 1), got {self.mask_ratio}")
        require(0 < self.bad_case_fraction <= 1, f"--bad_case_fraction must be in (0, 1], got {self.bad_case_fraction}")
        require(0 <= self.replay_fraction and self.bad_case_fraction + self.replay_fraction <= 1,
                f"--replay_fraction must be >= 0 and at most 1 - --bad_case_fraction, got {self.replay_fraction}")


@dataclass
class CheckpointingConfig(Section):
    group = "checkpointing"
    description = "step checkpoints and resume"
    save_steps: int = option(0, "write a full training checkpoint every N optimizer steps (0: off)")
    save_total_limit: int = option(0, "keep only the newest N step checkpoints (0: all)")
    resume_from_checkpoint: Optional[str] = option(None, "continue a run from a step checkpoint, its best checkpoint, or its folder (the newest step checkpoint)")
    resume_counter: int = option(-1, "on resume, set the early-stopping counter to this (-1: as saved)")
    is_training: int = shared(1)

    def validate(self) -> None:
        non_negative(self, "save_steps", "save_total_limit")
        require(not (self.resume_from_checkpoint and not self.is_training),
                "--resume_from_checkpoint continues training; to test a checkpoint use --is_training 0 --checkpoint")
