#!/usr/bin/env bash
# Transfer: train Time-LLM on ETTh1, test zero-shot on ETTh2 and after 10 % few-shot fine-tuning.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

for pred_len in 96 192 336 720; do
  launch run_pretrain.py --model TimeLLM --data ETTh1 --target_data ETTh2 --few_shot_percent 10 --features M \
    --seq_len 512 --label_len 48 --pred_len "$pred_len" --model_id ETTh1_ETTh2_512_"$pred_len" --d_model 32 --d_ff 128 \
    --batch_size 24 --learning_rate 0.01 --train_epochs 10 --patience 5 "${LLM_ARGS[@]}"
done
