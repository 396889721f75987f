#!/usr/bin/env bash
# The GPU checks of scripts/device_check.py in one run, well under 8 minutes on one GPU; prints a table.
#   bash scripts/device_check.sh prepare   # here, before sending the tree to a GPU machine: writes .device/
#   bash scripts/device_check.sh           # there (carry .device); on a CPU machine the rows are CPU-sized
# prepare copies SmolLM2's config and tokenizer (no weights: the 98 MB model does not fit a 64 MiB
# transfer, so the GPU rows use random weights of its shape) and downloads wheels of the pure-Python
# packages a bare CUDA image may lack into .device/wheels; the run installs them into /tmp/site first.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}

if [ "${1:-}" = prepare ]; then
  mkdir -p .device/smollm2-config .device/wheels
  $PYTHON - <<'PY'
import glob, os, shutil
from utils.llm_loader import default_cache_dir, load_llm
load_llm("SmolLM2", layers=1)  # converts the package's GGUF once, if not done yet
folder = glob.glob(os.path.join(default_cache_dir(), "gguf", "SmolLM2*"))[0]
for name in os.listdir(folder):
    if not name.endswith(".safetensors"):
        shutil.copy(os.path.join(folder, name), ".device/smollm2-config")
PY
  $PYTHON -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .device/wheels PyWavelets==1.9.0 ptwt==1.0.1 gguf==0.19.0
  echo "prepared .device/ ($(du -sh .device | cut -f1)); send it with carry: [\".device\"]"
  exit 0
fi

if compgen -G ".device/wheels/*.whl" > /dev/null && ! $PYTHON -c "import pywt, ptwt" 2>/dev/null; then
  $PYTHON -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .device/wheels/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export TIMELLM_CACHE=${TIMELLM_CACHE:-/tmp/timellm-cache}
timeout 470 "$PYTHON" scripts/device_check.py "$@"
