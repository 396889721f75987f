#!/usr/bin/env bash
# PatchTST/42 on ETTh1 with the paper's hyper-parameters (input 336; patch 16, stride 8; 3 layers,
# 4 heads, d_model 16, d_ff 128, dropout 0.3; batch 128, lr 1e-4, OneCycle; 100 epochs, patience 20).
# EPOCHS shortens the budget (e.g. EPOCHS=10 on a CPU). Launch options: see scripts/common.sh.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
EPOCHS=${EPOCHS:-100}

for pred_len in 96 192 336 720; do
  launch run_main.py --model PatchTST --data ETTh1 --features M --seq_len 336 --label_len 48 --pred_len "$pred_len" \
    --model_id "ETTh1_336_${pred_len}" --patch_len 16 --stride 8 --e_layers 3 --n_heads 4 --d_model 16 --d_ff 128 \
    --dropout 0.3 --batch_size 128 --learning_rate 0.0001 --lradj TST --pct_start 0.3 --train_epochs "$EPOCHS" --patience 20
done
