#!/usr/bin/env bash
# TimesNet on ETTh1 with the paper's hyper-parameters (input 96; 2 layers, d_model 16, d_ff 32, top 5
# periods, 6 kernel sizes; batch 32, lr 1e-4, 10 epochs, patience 3). Launch options: scripts/common.sh.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

for pred_len in 96 192 336 720; do
  launch run_main.py --model TimesNet --data ETTh1 --features M --seq_len 96 --label_len 48 --pred_len "$pred_len" \
    --model_id "ETTh1_96_${pred_len}" --e_layers 2 --d_model 16 --d_ff 32 --top_k 5 --num_kernels 6 --dropout 0.1 \
    --batch_size 32 --learning_rate 0.0001 --lradj type1 --train_epochs 10 --patience 3
done
