#!/usr/bin/env bash
# One GPU session for issue 16: the LoRA DPO step's MFU in a few shapes, and the data stage's generation of the
# 1000 prompts, timed. Carries its Python packages as wheels in .whl/ (no network there):
#   pip download --no-deps --only-binary=:all: --python-version 3.12 -d .whl trl==1.16.0 datasets==5.2.0 \
#       peft==0.21.2 liger-kernel==0.8.5 dill multiprocess
# Usage (device tool): benchmarks/gpu_issue16.sh "$OUT"
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-/tmp}
python3 -m pip install -q --no-deps .whl/*.whl 2>&1 | tail -2
export PYTHONPATH="$PWD" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
run() {  # run NAME [gpu_step options...]
    local name=$1; shift
    echo "=== $name: $*"
    timeout "${STEP_TIMEOUT:-150}" python3 benchmarks/gpu_step.py --name "$name" "$@" 2>&1 \
        | grep -vE "FutureWarning|warnings.warn|could not be imported|^\s*$" | tail -n 4
    [ -f "benchmarks/results/$name.json" ] && cp "benchmarks/results/$name.json" "$OUT/"
}
run gpu_step --batch 48 --liger
run gpu_step_prefix --batch 48 --liger --attn sdpa --prefix_sharing  # effective MFU: two-row work per second
run gpu_step_sdpa --batch 48 --liger --attn sdpa  # its baseline: the same attention without sharing
run gpu_step_T1024 --batch 32 --liger --prompt_len 512 --completion_len 512
run gpu_step_T2048 --batch 16 --liger --prompt_len 1024 --completion_len 1024
run gpu_step_T2048_b32 --batch 32 --liger --prompt_len 1024 --completion_len 1024
echo "=== generation: 1000 prompts x 64 tokens"
timeout 200 python3 benchmarks/gpu_generation.py 2>&1 | grep -vE "Warning|warn" | tail -n 3
cp benchmarks/results/gpu_generation.json "$OUT/" 2>/dev/null
