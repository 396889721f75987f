#!/usr/bin/env bash
# Enhanced Time-LLM (TAPR + GRA-M) on ETTh1, one run driven by variables, for ablations by hand:
#   USE_TAPR=0 USE_GRAM=1 scripts/TimeLLM_ETTh1_enhanced.sh
#   N_SCALES=4 TOP_K=10 LAMBDA_TREND=0.7 scripts/TimeLLM_ETTh1_enhanced.sh
#   RESUME_FROM=checkpoints/<run folder> BUILD_MEMORY=0 scripts/TimeLLM_ETTh1_enhanced.sh
# Whole grids and sweeps with a comparison table: scripts/ablation.py. Launch options (processes,
# precision, DeepSpeed, LLM) as in scripts/common.sh. The defaults below are the specification's
# shapes (input 512, batch 32, d_model 64, d_ff 128) with common.sh's LLM, the paper's LLaMA-7B with all
# 32 layers: multi-GPU, far beyond 15 GB (its float32 weights alone are about 27 GB). For the 15 GB preset
# (SmolLM2, 12 layers, bf16): LLM_MODEL=SmolLM2 LLM_LAYERS=12 MIXED_PRECISION=bf16 scripts/TimeLLM_ETTh1_enhanced.sh,
# or python run_main_enhanced.py --config configs/memory_15gb.yaml; README "Memory" lists what to cut first.
# Schedule: the fork's type1 at the given rate (LR_SCHEDULE=upstream_type1 for upstream's effective one).
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

USE_TAPR=${USE_TAPR:-1}
USE_GRAM=${USE_GRAM:-1}
N_SCALES=${N_SCALES:-3}
TOP_K=${TOP_K:-5}
D_REPR=${D_REPR:-128}
LAMBDA_TREND=${LAMBDA_TREND:-0.5}
LAMBDA_RETRIEVAL=${LAMBDA_RETRIEVAL:-0.3}
BUILD_MEMORY=${BUILD_MEMORY:-1}
SEQ_LEN=${SEQ_LEN:-512}
PRED_LEN=${PRED_LEN:-96}
BATCH=${BATCH:-32}
D_MODEL=${D_MODEL:-64}
D_FF=${D_FF:-128}
LEARNING_RATE=${LEARNING_RATE:-0.0005}
DROPOUT=${DROPOUT:-0.15}
EPOCHS=${EPOCHS:-100}
PATIENCE=${PATIENCE:-15}
SAVE_STEPS=${SAVE_STEPS:-0}
SAVE_TOTAL_LIMIT=${SAVE_TOTAL_LIMIT:-3}
RESUME_ARGS=()
[ -n "${RESUME_FROM:-}" ] && RESUME_ARGS=(--resume_from_checkpoint "$RESUME_FROM")
[ -n "${RESUME_COUNTER:-}" ] && RESUME_ARGS+=(--resume_counter "$RESUME_COUNTER")

launch run_main_enhanced.py --data ETTh1 --features M --seq_len "$SEQ_LEN" --label_len 48 --pred_len "$PRED_LEN" \
  --model_id "ETTh1_${SEQ_LEN}_${PRED_LEN}_tapr${USE_TAPR}_gram${USE_GRAM}" \
  --d_model "$D_MODEL" --d_ff "$D_FF" --batch_size "$BATCH" --learning_rate "$LEARNING_RATE" --lradj "${LR_SCHEDULE:-type1}" --dropout "$DROPOUT" \
  --train_epochs "$EPOCHS" --patience "$PATIENCE" \
  --use_tapr "$USE_TAPR" --use_gram "$USE_GRAM" --n_scales "$N_SCALES" --top_k "$TOP_K" --d_repr "$D_REPR" \
  --lambda_trend "$LAMBDA_TREND" --lambda_retrieval "$LAMBDA_RETRIEVAL" --build_memory "$BUILD_MEMORY" \
  --save_steps "$SAVE_STEPS" --save_total_limit "$SAVE_TOTAL_LIMIT" "${RESUME_ARGS[@]}" "${LLM_ARGS[@]}"
