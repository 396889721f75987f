#!/usr/bin/env bash
# PatchTST self-supervised on ETTh1: masked pre-training (40 % of the non-overlapping patches hidden,
# reconstructed) on the training split, then fine-tuning of the pre-trained encoder with a forecasting
# head, input 336, patch 16 = stride 16; the model sizes of scripts/PatchTST_ETTh1.sh.
# PRETRAIN_EPOCHS / EPOCHS shorten the budget (e.g. 10 each on a CPU). Launch options: scripts/common.sh.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
PRETRAIN_EPOCHS=${PRETRAIN_EPOCHS:-100}
EPOCHS=${EPOCHS:-100}

for pred_len in 96 192 336 720; do
  launch run_pretrain.py --pretrain_task masked --mask_ratio 0.4 --pretrain_epochs "$PRETRAIN_EPOCHS" \
    --model PatchTST --data ETTh1 --features M --seq_len 336 --label_len 48 --pred_len "$pred_len" \
    --model_id "ETTh1_336_${pred_len}_selfsup" --patch_len 16 --stride 16 --e_layers 3 --n_heads 4 --d_model 16 --d_ff 128 \
    --dropout 0.3 --batch_size 128 --learning_rate 0.0001 --lradj TST --pct_start 0.3 --train_epochs "$EPOCHS" --patience 20
done
