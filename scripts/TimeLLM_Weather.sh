#!/usr/bin/env bash
# Time-LLM on Weather, long-term forecasting over four horizons with the hyper-parameters of upstream's
# scripts/TimeLLM_Weather.sh (LLaMA-7B, 32 layers by default). Schedules: upstream_type1 (upstream's default type1 as it trains: lr / 25, then halved each epoch).
# Environment overrides: see scripts/common.sh.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

long_term Weather 96  --batch_size 24 --d_model 32 --d_ff 32 --learning_rate 0.01 --lradj upstream_type1 --train_epochs 10
long_term Weather 192 --batch_size 24 --d_model 32 --d_ff 32 --learning_rate 0.01 --lradj upstream_type1 --train_epochs 10
long_term Weather 336 --batch_size 24 --d_model 32 --d_ff 128 --learning_rate 0.01 --lradj upstream_type1 --train_epochs 10
long_term Weather 720 --batch_size 24 --d_model 32 --d_ff 128 --learning_rate 0.01 --lradj upstream_type1 --train_epochs 15
