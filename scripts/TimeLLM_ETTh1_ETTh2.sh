#!/usr/bin/env bash
# Transfer: train Time-LLM on ETTh1, test zero-shot on ETTh2 and after 10 % few-shot fine-tuning, with the
# hyper-parameters of upstream's scripts/TimeLLM_ETTh1_ETTh2.sh (5 epochs). Schedules: upstream_type1
# (upstream's default type1 as it trains: lr / 25, then halved each epoch) and upstream_COS (336).
# Environment overrides: see scripts/common.sh.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

for setting in 96:0.01:upstream_type1 192:0.02:upstream_type1 336:0.001:upstream_COS 720:0.01:upstream_type1; do
  IFS=: read -r pred_len learning_rate lradj <<< "$setting"
  launch run_pretrain.py --model TimeLLM --data ETTh1 --target_data ETTh2 --few_shot_percent 10 --features M \
    --seq_len 512 --label_len 48 --pred_len "$pred_len" --model_id ETTh1_ETTh2_512_"$pred_len" --d_model 32 --d_ff 128 \
    --batch_size 24 --learning_rate "$learning_rate" --lradj "$lradj" --train_epochs 5 --patience 10 \
    "${COMPAT_ARGS[@]}" "${LLM_ARGS[@]}"
done
