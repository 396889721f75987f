#!/usr/bin/env bash
# Shared launcher for the per-dataset scripts. Environment overrides:
#   NUM_PROCESSES (1)          processes/GPUs; >1 runs accelerate's multi-process launcher
#   MAIN_PROCESS_PORT (29500)  rendezvous port (unprivileged)
#   MIXED_PRECISION (bf16 on GPU, no on CPU)
#   LLM_MODEL (LLAMA), LLM_LAYERS (32), LLM_MODEL_PATH     the paper's LLaMA-7B by default
#   DEEPSPEED (0)              1: DeepSpeed ZeRO-2 with ds_config_zero2.json
#   EXTRA_ARGS                 appended to every command (e.g. "--max_steps 20" for a smoke run)
#   UPSTREAM_COMPAT (0)        1: also upstream's model behaviours (configs/upstream_compat.yaml: one-sentence
#                              ETT description, circular lags, no prompt mask), for an exact reproduction
#
# Learning-rate schedules: scripts that reproduce upstream's runs use upstream's *effective* schedules
# (utils/schedules.py): upstream_type1 is what upstream's type1 trains at (lr / 25, then halved),
# upstream_COS its 20-epoch cosine; TST is the same in both. The plain names (type1, COS) do what
# their names say at the given lr, which is 25x upstream's for type1.
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
COMPAT_ARGS=()
[ "${UPSTREAM_COMPAT:-0}" = 1 ] && COMPAT_ARGS=(--config configs/upstream_compat.yaml)
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

# long_term DATA PRED_LEN FLAGS...: one Time-LLM long-term run, input 512 and decoder start 48 as in
# upstream's scripts, upstream's default patience (10), then the run's own flags.
long_term() {
  local data=$1 pred_len=$2; shift 2
  launch run_main.py --model TimeLLM --data "$data" --features M --seq_len 512 --label_len 48 --pred_len "$pred_len" \
    --model_id "${data}_512_${pred_len}" --patience 10 "${COMPAT_ARGS[@]}" "${LLM_ARGS[@]}" "$@"
}
