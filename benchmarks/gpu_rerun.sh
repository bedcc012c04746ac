#!/usr/bin/env bash
# Second GPU session of issue 16: the training-step shapes again after the autocast fix. Usage: benchmarks/gpu_rerun.sh "$OUT"
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-/tmp}
python3 -m pip install -q --no-deps .whl/*.whl 2>&1 | tail -2
export PYTHONPATH="$PWD" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
for spec in "h200_b48 --batch 48" "h200_b64 --batch 64" "h200_T2048 --batch 16 --prompt_len 1024 --completion_len 1024"; do
    set -- $spec; name=gpu_step_$1; shift
    echo "=== $name: $* --liger"
    timeout 100 python3 benchmarks/gpu_step.py --name "$name" --liger "$@" 2>&1 | grep -E "s/step|lora_layers|written" | tail -n 3
    [ -f "benchmarks/results/$name.json" ] && cp "benchmarks/results/$name.json" "$OUT/"
done
