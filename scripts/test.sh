#!/usr/bin/env bash
# Fresh machine -> green suite: set up the venv, then run every test (unit, real SmolLM2, vLLM,
# multi-process DDP/DeepSpeed, Slurm on localhost). Extra args go to pytest (e.g. -m "not slurm").
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
scripts/setup_env.sh "$VENV"
export DPO_SCALE_CACHE=${DPO_SCALE_CACHE:-$PWD/.cache/dpo_scale}
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
"$VENV/bin/ruff" check dpo_scale tests benchmarks scripts
exec "$VENV/bin/python" -m pytest -q -ra --durations=15 "$@"
