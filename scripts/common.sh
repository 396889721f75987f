#!/usr/bin/env bash
# Shared launcher for the per-dataset scripts. Environment overrides:
#   NUM_PROCESSES (1)          processes/GPUs; >1 runs accelerate's multi-process launcher
#   MAIN_PROCESS_PORT (29500)  rendezvous port (unprivileged)
#   MIXED_PRECISION (bf16 on GPU, no on CPU)
#   LLM_MODEL (LLAMA), LLM_LAYERS (32), LLM_MODEL_PATH     the paper's LLaMA-7B by default
#   DEEPSPEED (0)              1: DeepSpeed ZeRO-2 with ds_config_zero2.json
#   EXTRA_ARGS                 appended to every command (e.g. "--max_steps 20" for a smoke run)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python )}
NUM_PROCESSES=${NUM_PROCESSES:-1}
MAIN_PROCESS_PORT=${MAIN_PROCESS_PORT:-29500}
if [ -z "${MIXED_PRECISION:-}" ]; then
  MIXED_PRECISION=$($PYTHON -c "import torch; print('bf16' if torch.cuda.is_available() else 'no')")
fi
LLM_MODEL=${LLM_MODEL:-LLAMA}
LLM_LAYERS=${LLM_LAYERS:-32}
LLM_ARGS=(--llm_model "$LLM_MODEL" --llm_layers "$LLM_LAYERS")
[ -n "${LLM_MODEL_PATH:-}" ] && LLM_ARGS+=(--llm_model_path "$LLM_MODEL_PATH")
DS_ARGS=()
[ "${DEEPSPEED:-0}" = 1 ] && DS_ARGS=(--deepspeed_config ds_config_zero2.json)

# launch SCRIPT ARGS...: one run; several processes through accelerate on GPUs, torchrun (gloo) on CPUs.
launch() {
  local script=$1; shift
  local launcher=("$PYTHON")
  if [ "$NUM_PROCESSES" -gt 1 ]; then
    if ! $PYTHON -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
      launcher=("$PYTHON" -m torch.distributed.run --nproc_per_node "$NUM_PROCESSES" --master_port "$MAIN_PROCESS_PORT")
    else
      launcher=("$PYTHON" -m accelerate.commands.launch --multi_gpu --num_processes "$NUM_PROCESSES" --main_process_port "$MAIN_PROCESS_PORT")
    fi
  fi
  # shellcheck disable=SC2086
  "${launcher[@]}" "$script" --mixed_precision "$MIXED_PRECISION" "${DS_ARGS[@]}" "$@" ${EXTRA_ARGS:-}
}

# long_term DATA SEQ_LEN BATCH D_MODEL D_FF EPOCHS "pred_len:learning_rate:lradj ..." : Time-LLM over horizons.
long_term() {
  local data=$1 seq_len=$2 batch=$3 d_model=$4 d_ff=$5 epochs=$6 settings=$7 setting pred_len learning_rate lradj
  for setting in $settings; do
    IFS=: read -r pred_len learning_rate lradj <<< "$setting"
    launch run_main.py --model TimeLLM --data "$data" --features M --seq_len "$seq_len" --label_len 48 \
      --pred_len "$pred_len" --model_id "${data}_${seq_len}_${pred_len}" --d_model "$d_model" --d_ff "$d_ff" \
      --batch_size "$batch" --learning_rate "$learning_rate" --lradj "$lradj" --train_epochs "$epochs" --patience 10 \
      "${LLM_ARGS[@]}"
  done
}
