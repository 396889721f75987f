#!/usr/bin/env bash
# Time-LLM on Traffic, long-term forecasting over four horizons with the upstream hyper-parameters
# (LLaMA-7B, 32 layers by default). Environment overrides: see scripts/common.sh.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

#         data  seq_len batch d_model d_ff epochs  pred_len:learning_rate:lradj
long_term Traffic 512 24 16 32 10 "96:0.01:TST 192:0.01:TST 336:0.01:TST 720:0.01:TST"
