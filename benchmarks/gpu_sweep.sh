#!/usr/bin/env bash
# The GPU training-step sweep that benchmarks/RESULTS.md reports: gpu_step.py in a few configurations, each in
# its own process (a failing variant, e.g. a missing kernel package, does not stop the rest).
# Usage: benchmarks/gpu_sweep.sh [OUT_DIR]   (result JSONs are copied there too; default: only benchmarks/results)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
run() {  # run NAME [gpu_step options...]
    local name=$1; shift
    echo "=== $name: $*"
    timeout "${STEP_TIMEOUT:-240}" python3 benchmarks/gpu_step.py --name "$name" "$@" 2>&1 \
        | grep -vE "FutureWarning|warnings.warn|could not be imported|^\s*$" | tail -n 6
    [ -n "$OUT" ] && [ -f "benchmarks/results/$name.json" ] && cp "benchmarks/results/$name.json" "$OUT/"
}
# headline: batch 48 pairs x 512 tokens, Liger layer kernels, peft's input cast skipped (dpo_scale.lora_speed)
run gpu_step --batch 48 --liger
run gpu_step_peft_cast --batch 48 --liger --peft_input_cast   # baseline for dpo_scale.lora_speed
run gpu_step_no_liger --batch 48                               # what Liger's kernels add
run gpu_step_b8 --batch 8                                      # the script's default batch
run gpu_step_b64 --batch 64 --liger
run gpu_step_T2048 --batch 16 --liger --prompt_len 1024 --completion_len 1024
