"""Enhanced Time-LLM: the same engine as run_main.py with TAPR and GRA-M on and the specification's
tuned defaults (learning rate 5e-4, dropout 0.15, patience 15). Every flag can still be overridden,
so `--use_tapr 0 --use_gram 0` is the baseline of an ablation.

    python run_main_enhanced.py --config configs/enhanced_cpu.yaml
    python run_main_enhanced.py --config configs/enhanced_cpu.yaml --save_steps 100 --save_total_limit 3
    python run_main_enhanced.py --config configs/enhanced_cpu.yaml --resume_from_checkpoint checkpoints/<run folder>
"""
from utils.cli import run_entry
from utils.config import parse_config
from utils.repeats import run_over_seeds
from utils.trainer import train_and_test

ENHANCED_DEFAULTS = {
    "model": "TimeLLM",
    "use_tapr": 1,
    "use_gram": 1,
    "learning_rate": 5e-4,
    "dropout": 0.15,
    "patience": 15,
    "model_comment": "enhanced",
}


def main(argv=None) -> dict:
    config = parse_config(argv, defaults=ENHANCED_DEFAULTS)
    return run_over_seeds(config, train_and_test)


if __name__ == "__main__":
    run_entry(main)
