#!/usr/bin/env bash
# Time-LLM on M4 (short-term): one model per seasonal pattern, SMAPE loss, OWA against Naive2.
# Patterns without files under dataset/m4/ are skipped by --seasonal_patterns all.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

launch run_m4.py --model TimeLLM --seasonal_patterns "${SEASONAL_PATTERNS:-all}" --d_model 32 --d_ff 32 \
  --batch_size 24 --learning_rate 0.001 --train_epochs 50 --patience 20 --loss SMAPE "${LLM_ARGS[@]}"
