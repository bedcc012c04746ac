#!/usr/bin/env bash
# Fresh machine -> the main job end to end on the embedded SmolLM2 (CPU, offline): data, train, merge,
# eval, report in runs/smollm2_cpu/. Extra args are recipe overrides (e.g. --output_dir runs/try2).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
scripts/setup_env.sh "$VENV"
export TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
"$VENV/bin/dpo-scale" run --config configs/smollm2_cpu.yaml "$@"
