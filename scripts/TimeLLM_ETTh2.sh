#!/usr/bin/env bash
# Time-LLM on ETTh2, long-term forecasting over four horizons with the upstream hyper-parameters
# (LLaMA-7B, 32 layers by default). Environment overrides: see scripts/common.sh.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

#         data  seq_len batch d_model d_ff epochs  pred_len:learning_rate:lradj
long_term ETTh2 512 24 32 128 100 "96:0.01:type1 192:0.002:type1 336:0.005:COS 720:0.005:type1"
