#!/usr/bin/env bash
# Time-LLM on M4 (short-term): one model per seasonal pattern, SMAPE loss, OWA against Naive2, with the
# hyper-parameters of upstream's scripts/TimeLLM_M4.sh. Schedule: upstream_m4_type1 (what upstream's
# run_m4.py trains at with its default type1: lr / 25 in epoch 0, then lr, lr / 2, ...).
# Patterns without files under dataset/m4/ are skipped by --seasonal_patterns all.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

launch run_m4.py --model TimeLLM --seasonal_patterns "${SEASONAL_PATTERNS:-all}" --d_model 32 --d_ff 32 \
  --batch_size 24 --learning_rate 0.001 --lradj upstream_m4_type1 --train_epochs 50 --patience 20 --loss SMAPE \
  "${COMPAT_ARGS[@]}" "${LLM_ARGS[@]}"
