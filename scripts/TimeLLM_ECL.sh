#!/usr/bin/env bash
# Time-LLM on ECL, long-term forecasting over four horizons with the hyper-parameters of upstream's
# scripts/TimeLLM_ECL.sh (LLaMA-7B, 32 layers by default). Schedules: upstream_type1 (upstream's default type1 as it trains: lr / 25, then halved each epoch).
# Environment overrides: see scripts/common.sh.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

long_term ECL 96  --batch_size 24 --d_model 16 --d_ff 32 --learning_rate 0.01 --lradj upstream_type1 --train_epochs 10
long_term ECL 192 --batch_size 24 --d_model 16 --d_ff 32 --learning_rate 0.01 --lradj upstream_type1 --train_epochs 10
long_term ECL 336 --batch_size 24 --d_model 16 --d_ff 32 --learning_rate 0.01 --lradj upstream_type1 --train_epochs 10
long_term ECL 720 --batch_size 24 --d_model 16 --d_ff 32 --learning_rate 0.01 --lradj upstream_type1 --train_epochs 10
