#!/usr/bin/env bash
# iTransformer on ETTh1 with the paper's hyper-parameters (input 96; 2 layers, d_model 256, d_ff 256;
# batch 32, lr 1e-4, 10 epochs, patience 3). Launch options: see scripts/common.sh.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

for pred_len in 96 192 336 720; do
  launch run_main.py --model iTransformer --data ETTh1 --features M --seq_len 96 --label_len 48 --pred_len "$pred_len" \
    --model_id "ETTh1_96_${pred_len}" --e_layers 2 --n_heads 8 --d_model 256 --d_ff 256 --dropout 0.1 \
    --batch_size 32 --learning_rate 0.0001 --lradj type1 --train_epochs 10 --patience 3
done
