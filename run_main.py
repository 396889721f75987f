"""Long-term forecasting: train a model on one dataset and test its best checkpoint.

    python run_main.py --model DLinear --data ETTh1 --features M --seq_len 336 --pred_len 96
    python run_main.py --config configs/demo.yaml --max_steps 20
    python run_main.py --is_training 0 --checkpoint checkpoints/<run folder> [same architecture flags]
    python run_main.py --config configs/demo.yaml --seeds 2021 2022 2023   # or --itr 3: mean ± std summary
"""
from utils.cli import run_entry
from utils.config import parse_config
from utils.repeats import run_over_seeds
from utils.trainer import train_and_test


def main(argv=None) -> dict:
    config = parse_config(argv)
    return run_over_seeds(config, train_and_test)


if __name__ == "__main__":
    run_entry(main)
