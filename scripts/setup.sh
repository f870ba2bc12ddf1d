#!/usr/bin/env bash
# Creates .venv (Python 3.11+) and installs xlgen with its test tools and ONNX Runtime (CPU). Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
# torch first and pinned: the CPU build, not several GB of CUDA packages
.venv/bin/python -m pip install -q "torch==2.13.0" 2>&1 | grep -v "^WARNING: Location" || true
# XLGEN_EXTRAS=dev,gpu (in a fresh .venv) for onnxruntime-gpu instead of onnxruntime: the two must not be installed together
# PYTHONWARNINGS: setuptools' notes on editable installs (printed by its build backend) are not for users
PYTHONWARNINGS=ignore .venv/bin/python -m pip install -q -e ".[${XLGEN_EXTRAS:-dev,cpu}]" 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -c "import xlgen, training, service, torch, transformers, litestar" 
