#!/usr/bin/env bash
# Time-LLM on ETTh1, long-term forecasting over four horizons with the hyper-parameters of upstream's
# scripts/TimeLLM_ETTh1.sh (LLaMA-7B, 32 layers by default). Schedules: upstream_type1 (upstream's default type1 as it trains: lr / 25, then halved each epoch) and upstream_COS (336).
# Environment overrides: see scripts/common.sh.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

long_term ETTh1 96  --batch_size 24 --d_model 32 --d_ff 128 --learning_rate 0.01 --lradj upstream_type1 --train_epochs 100
long_term ETTh1 192 --batch_size 24 --d_model 32 --d_ff 128 --learning_rate 0.02 --lradj upstream_type1 --train_epochs 100
long_term ETTh1 336 --batch_size 24 --d_model 32 --d_ff 128 --learning_rate 0.001 --lradj upstream_COS --train_epochs 100
long_term ETTh1 720 --batch_size 24 --d_model 32 --d_ff 128 --learning_rate 0.01 --lradj upstream_type1 --train_epochs 100
