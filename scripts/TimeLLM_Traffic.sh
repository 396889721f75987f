#!/usr/bin/env bash
# Time-LLM on Traffic, long-term forecasting over four horizons with the hyper-parameters of upstream's
# scripts/TimeLLM_Traffic.sh (LLaMA-7B, 32 layers by default). Schedules: upstream_type1 (upstream's default type1 as it trains: lr / 25, then halved each epoch).
# Environment overrides: see scripts/common.sh.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

# Upstream's Traffic script runs its last job at pred_len 96 again; 720 is the fourth horizon here.
long_term Traffic 96  --batch_size 24 --d_model 16 --d_ff 32 --learning_rate 0.01 --lradj upstream_type1 --train_epochs 10
long_term Traffic 192 --batch_size 24 --d_model 16 --d_ff 32 --learning_rate 0.01 --lradj upstream_type1 --train_epochs 10
long_term Traffic 336 --batch_size 1 --d_model 16 --d_ff 32 --learning_rate 0.01 --lradj upstream_type1 --train_epochs 10
long_term Traffic 720 --batch_size 24 --d_model 16 --d_ff 32 --learning_rate 0.01 --lradj upstream_type1 --train_epochs 10
