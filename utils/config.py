"""The one argparse/YAML configuration builder shared by every entry script.

Every flag is a field of one typed section (utils/settings/): its default, help text and checks are
written there once, and the argparse groups, the YAML keys, the record of which flags define a
model's architecture (checked when a checkpoint loads) and which are Time-LLM's alone are generated
from the sections. Flags keep the upstream Time-LLM names. `--config FILE.yaml` supplies defaults and
the command line overrides them; an unknown YAML key is an error naming it. Values that can be
derived from the data (`enc_in`, `c_out`, the sample layout) default to None/auto and are filled in
by the trainer. The namespace stays flat (upstream's spelling `config.seq_len`); a module takes its
section, `MoEConfig.from_config(config)`.
"""
import argparse
import difflib
import sys
from dataclasses import MISSING
from typing import Callable, Optional, Sequence

import yaml

from layers.LLMAblations import TAN_ABLATIONS
from layers.registry import ADD_ONS
from utils.settings import all_sections
from utils.settings.base import add_section
from utils.settings.models import BASELINE_SECTIONS
from utils.tracking import resolve_tracking


def _field_default(item):
    return item.default if item.default is not MISSING else item.default_factory()


def flag_fields() -> dict:
    """flag name -> (its section, its dataclass field), over every section."""
    return {item.name: (section, item) for section in all_sections() for item in section.flag_fields()}


def flag_defaults() -> dict:
    return {name: _field_default(item) for name, (_, item) in flag_fields().items()}


def architecture_flags() -> tuple[str, ...]:
    return tuple(name for name, (section, item) in flag_fields().items() if section.is_architecture(item))


def timellm_flags() -> tuple[str, ...]:
    """Flags of Time-LLM's own parts: given for another model, they would change nothing."""
    return tuple(name for name, (section, _) in flag_fields().items() if section.exclusive)


def timellm_add_ons() -> tuple[str, ...]:
    """The switches of Time-LLM's add-ons (the registry's) and of its vocabulary options."""
    return (*(entry.switch for entry in ADD_ONS), "use_adaptive_vocab", "use_keyword_init")


# Regulariser flags of the baselines: flag -> (the model it belongs to, its help).
REGULARISERS = {
    item.name: (item.metadata["models"][0], item.metadata["help"])
    for section in BASELINE_SECTIONS for item in section.flag_fields() if item.metadata["models"]
}
# The spellings of an overloaded flag, routed by --model: TSLib's --top_k is TimesNet's periods, seed 002's GRA-M's retrieval count.
TOP_K_ROUTES = {"TimeLLM": "gram_top_k"}


class ConfigParser(argparse.ArgumentParser):
    """ArgumentParser that takes flags only spelled out
    (a prefix such as --learning would silently pick one of several flags) and reports a mistake in
    one line, with the nearest flag for a misspelt one, instead of the full usage."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, allow_abbrev=False, **kwargs)

    def group(self, name: str, description: str = "") -> "_Group":
        return _Group(self.add_argument_group(name, description))

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


class _Group:
    def __init__(self, group):
        self.group = group

    def add(self, *flags, **kwargs) -> None:
        self.group.add_argument(*flags, **kwargs)

    def switch(self, *flags: str, default: int, help: str) -> None:
        """An on/off flag taking 0 or 1, or nothing for 1: `--use_tapr`, `--use_tapr 1`, `--use_tapr 0`
        (upstream's bare `--use_amp` style and the explicit values of the shell scripts both work)."""
        self.add(*flags, type=int, nargs="?", const=1, default=default, choices=[0, 1], metavar="{0,1}", help=help)


def build_parser(description: str = "Time-LLM forecasting") -> ConfigParser:
    parser = ConfigParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--config", type=str, action="append", default=None, help="YAML file of defaults; give several to layer them (later files override earlier ones, e.g. configs/demo.yaml configs/upstream_compat.yaml); command-line flags override them all")
    for section in all_sections():
        add_section(parser, section)
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
    try:
        route_overloaded_flags(config, entry_defaults)
        validate_sections(config)
        validate(config)
        refuse_unused_components(config, entry_defaults)
        for validator in validators:
            validator(config)
    except ValueError as error:
        parser.error(str(error))
    return config


def route_overloaded_flags(config: argparse.Namespace, entry_defaults: dict) -> None:
    """--top_k keeps Time-Series-Library's meaning (TimesNet's periods) except with --model TimeLLM,
    where it is seed 002's GRA-M retrieval count, --gram_top_k; there --top_k itself goes back to its
    default, so the saved configuration names one value per module. In Time-LLM --d_ff sets both
    --d_keys and --llm_features unless they are given (upstream uses one value for both)."""
    target = TOP_K_ROUTES.get(config.model)
    if target and config.top_k != entry_defaults["top_k"]:
        routed = getattr(config, target)
        if routed != entry_defaults[target] and routed != config.top_k:
            raise ValueError(f"--top_k {config.top_k} and --{target} {routed}: with --model {config.model} both set --{target}; give one")
        setattr(config, target, config.top_k)
        config.top_k = entry_defaults["top_k"]
    if config.model == "TimeLLM":
        config.d_keys = config.d_keys or config.d_ff
        config.llm_features = config.llm_features or config.d_ff


def refuse_unused_components(config: argparse.Namespace, entry_defaults: dict) -> None:
    """A TimeLLM flag given (on the command line or in YAML) for another model is an error naming it:
    `--load_in_4bit` with DLinear would otherwise be silently ignored. The sub-flags of a TimeLLM
    add-on that is switched off stay allowed, so an ablation can toggle just the add-on's switch."""
    if config.model == "TimeLLM":
        return
    given = [name for name in timellm_flags() if getattr(config, name) != entry_defaults.get(name)]
    if given:
        raise ValueError(f"{', '.join('--' + name for name in given)}: {'flag' if len(given) == 1 else 'flags'} of TimeLLM's components; --model is {config.model}, which does not use {'it' if len(given) == 1 else 'them'}")


def validate_sections(config: argparse.Namespace) -> None:
    """Each section's own checks (utils/settings/), for the sections that configure this model."""
    for section in all_sections():
        if not section.models or config.model in section.models:
            section.from_config(config)


def validate(config: argparse.Namespace) -> None:
    """Checks across sections that need no data; each error names the flag."""
    if config.use_amp and config.mixed_precision == "no":
        config.mixed_precision = "bf16"
    resolve_tracking(config)
    embeddings = [entry.switch for entry in ADD_ONS if entry.attribute == "patch_embedding" and getattr(config, entry.switch)]
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
    if config.llm_ablation in TAN_ABLATIONS:
        unused = [flag for flag in (*timellm_add_ons(), "load_in_4bit") if getattr(config, flag)]
        if unused:
            raise ValueError(
                f"--llm_ablation {config.llm_ablation} (Tan et al.) keeps only the patch embedding and a linear head: "
                f"{', '.join('--' + flag for flag in unused)} would have nothing to act on (the *_keep_prompt variants keep the LLM input)"
            )
    if config.clip_per_group and config.deepspeed_config:
        raise ValueError("--clip_per_group needs whole gradients in each process; DeepSpeed ZeRO partitions them (use its gradient_clipping)")
    if config.clip_per_group and config.max_grad_norm > 0:
        raise ValueError("--clip_per_group replaces the global --max_grad_norm clipping: give one of them")
    if config.task_name == "masked_pretrain" and config.model != "PatchTST":
        raise ValueError(f"--task_name masked_pretrain (masked self-supervised pre-training) is PatchTST's; --model is {config.model}")
    if config.use_gram and config.data == "m4":
        raise ValueError("--use_gram needs sliding-window data (ETT, custom CSV): M4 series have no shared time axis to exclude overlaps on")
    if config.output_distribution != "point":
        if config.task_name not in ("long_term_forecast", "short_term_forecast"):
            raise ValueError(f"--output_distribution {config.output_distribution} forecasts the future; --task_name is {config.task_name}")
        if config.loss != "MSE":
            raise ValueError(f"--output_distribution {config.output_distribution} is trained by its own "
                             f"{'pinball loss' if config.output_distribution == 'quantile' else 'likelihood'}: --loss {config.loss} would not be used")
    validate_training_methods(config)
    if config.deepspeed_config and (config.save_steps or config.resume_from_checkpoint):
        raise ValueError("--save_steps and --resume_from_checkpoint need the optimizer state in one process; not available with --deepspeed_config (ZeRO shards it)")


def validate_training_methods(config: argparse.Namespace) -> None:
    """GRPO, bad-case fine-tuning and the clip penalty: what they need from the rest of the configuration."""
    if config.objective == "grpo":
        if config.output_distribution not in ("gaussian", "student_t"):
            raise ValueError(f"--objective grpo needs a policy with a density: --output_distribution gaussian or student_t (the run's), not {config.output_distribution}")
        if not config.init_checkpoint:
            raise ValueError("--objective grpo fine-tunes a trained probabilistic run: give --init_checkpoint RUN (e.g. with --config RUN/config.yaml)")
    if config.finetune == "bad_cases":
        if not config.init_checkpoint:
            raise ValueError("--finetune bad_cases fine-tunes a trained run on its worst training windows: give --init_checkpoint RUN")
        if not config.use_lora:
            raise ValueError("--finetune bad_cases trains LoRA adapters on the LLM: give --use_lora 1 (with --model TimeLLM)")
    if config.lambda_clip > 0:
        unsupported = {
            "--deepspeed_config": bool(config.deepspeed_config), "--gradient_checkpointing 1": bool(config.gradient_checkpointing),
            "--mixed_precision fp16": config.mixed_precision == "fp16", f"--gradient_accumulation_steps {config.gradient_accumulation_steps}": config.gradient_accumulation_steps > 1,
        }
        refused = [flag for flag, present in unsupported.items() if present]
        if refused:
            raise ValueError(f"--lambda_clip {config.lambda_clip} backpropagates through each step's gradients (double backward), which {', '.join(refused)} rules out")


def single_run(config: argparse.Namespace) -> None:
    """Validator of the entry scripts that run their own sequence of stages (run_m4.py, run_pretrain.py)."""
    if config.itr != 1 or config.seeds:
        raise ValueError("--itr/--seeds repeat run_main.py and run_main_enhanced.py runs; repeat this entry over seeds with scripts/suite.py")


def architecture_of(config) -> dict:
    """The flags that define the model's shape and parameters (compared when loading checkpoints)."""
    values = vars(config) if not isinstance(config, dict) else config
    return {name: values.get(name) for name in architecture_flags()}


def upgrade_saved_config(saved: dict) -> dict:
    """A configuration saved by an earlier version, in today's terms: a flag it predates gets the
    value that reproduces what that version did (its default, or the renamed flag's value)."""
    values = dict(saved)
    if values.get("model") == "TimeLLM":
        values.setdefault("gram_top_k", values.get("top_k", 5))  # --top_k was GRA-M's too
        for name in ("d_keys", "llm_features"):  # both were --d_ff
            values.setdefault(name, values.get("d_ff"))
    if "use_arima" not in values and values.get("fusion_method") == "weighted":  # 'weighted' then meant learned logits
        values["fusion_method"] = "learned"
    for name, default in flag_defaults().items():
        values.setdefault(name, default)
    return values
