#!/usr/bin/env bash
# Time-LLM on ETTh2, long-term forecasting over four horizons with the hyper-parameters of upstream's
# scripts/TimeLLM_ETTh2.sh (LLaMA-7B, 32 layers by default). Schedules: upstream_type1 (96: upstream's default type1 as it trains, lr / 25 then halved) and TST (OneCycle, as upstream).
# Environment overrides: see scripts/common.sh.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

long_term ETTh2 96  --batch_size 24 --d_model 32 --d_ff 128 --learning_rate 0.01 --lradj upstream_type1 --train_epochs 10
long_term ETTh2 192 --batch_size 24 --d_model 32 --d_ff 128 --learning_rate 0.002 --lradj TST --train_epochs 10
long_term ETTh2 336 --batch_size 24 --d_model 32 --d_ff 128 --learning_rate 0.005 --lradj TST --train_epochs 10
long_term ETTh2 720 --batch_size 24 --d_model 16 --d_ff 128 --learning_rate 0.005 --lradj TST --train_epochs 20
