#!/usr/bin/env bash
# Time-LLM on ETTm1, long-term forecasting over four horizons with the upstream hyper-parameters
# (LLaMA-7B, 32 layers by default). Environment overrides: see scripts/common.sh.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

#         data  seq_len batch d_model d_ff epochs  pred_len:learning_rate:lradj
long_term ETTm1 512 24 32 128 100 "96:0.001:TST 192:0.001:TST 336:0.001:TST 720:0.001:TST"
