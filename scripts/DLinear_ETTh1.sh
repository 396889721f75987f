#!/usr/bin/env bash
# DLinear on ETTh1 for every horizon (Zeng et al., AAAI 2023 settings); CPU-friendly.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

for pred_len in 96 192 336 720; do
  launch run_main.py --config configs/dlinear_ETTh1.yaml --pred_len "$pred_len" --model_id ETTh1_336_"$pred_len"
done
