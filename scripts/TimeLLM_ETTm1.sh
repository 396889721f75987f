#!/usr/bin/env bash
# Time-LLM on ETTm1, long-term forecasting over four horizons with the hyper-parameters of upstream's
# scripts/TimeLLM_ETTm1.sh (LLaMA-7B, 32 layers by default). Schedules: TST (OneCycle, as upstream).
# Environment overrides: see scripts/common.sh.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

long_term ETTm1 96  --batch_size 24 --d_model 32 --d_ff 128 --learning_rate 0.001 --lradj TST --train_epochs 100
long_term ETTm1 192 --batch_size 24 --d_model 32 --d_ff 128 --learning_rate 0.001 --lradj TST --train_epochs 100 --patience 20
long_term ETTm1 336 --batch_size 24 --d_model 32 --d_ff 128 --learning_rate 0.001 --lradj TST --train_epochs 100 --patience 20
long_term ETTm1 720 --batch_size 24 --d_model 32 --d_ff 128 --learning_rate 0.001 --lradj TST --train_epochs 100 --patience 20
