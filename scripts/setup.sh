#!/usr/bin/env bash
# Creates .venv (Python 3.11+) and installs xlgen with every extra, ONNX Runtime for the CPU, the test tools and
# the docs builder: what the README's two commands need. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
# pip's status is kept (pipefail), only its notes on the install location are dropped
quiet() { "$@" 2>&1 | { grep -v "^WARNING: Location" || true; }; }
quiet .venv/bin/python -m pip install -q --upgrade pip
# torch first and pinned: the CPU build, not several GB of CUDA packages
quiet .venv/bin/python -m pip install -q -c constraints.txt "torch==2.13.0"
# XLGEN_EXTRAS=all,gpu,dev,docs (in a fresh .venv) for onnxruntime-gpu instead of onnxruntime: the two must not be
# installed together
# PYTHONWARNINGS: setuptools' notes on editable installs (printed by its build backend) are not for users
# constraints.txt: the exact versions every dependency is installed at (bash scripts/lock.sh moves them), so a
# fresh clone tests what was tested, whatever has been released since
PYTHONWARNINGS=ignore quiet .venv/bin/python -m pip install -q -c constraints.txt -e ".[${XLGEN_EXTRAS:-all,cpu,dev,docs}]"
.venv/bin/python -c "import xlgen, xlgen.training, xlgen.service, torch, transformers, litestar" 
