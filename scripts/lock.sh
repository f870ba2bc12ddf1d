#!/usr/bin/env bash
# Regenerates constraints.txt, the versions scripts/setup.sh installs: a fresh virtual environment takes the
# newest releases the ranges in pyproject.toml admit (with every extra a test or a README command needs),
# and their exact versions are written down. Run it to move to newer releases on purpose, then run the tests;
# a fresh clone installs exactly what the file says, so a release made later cannot change a run.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=$(mktemp -d)/venv
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q "torch==2.13.0"
"$VENV/bin/python" -m pip install -q -e ".[${XLGEN_LOCK_EXTRAS:-all,dev,cpu}]"
{
    echo "# Exact versions scripts/setup.sh installs (pip -c); regenerate with bash scripts/lock.sh."
    "$VENV/bin/python" -m pip freeze --exclude-editable | sed -e 's/^torch==\(.*\)+cpu$/torch==\1/'
    # the GPU flavour of ONNX Runtime (XLGEN_EXTRAS=dev,gpu) shares the CPU flavour's release line
    "$VENV/bin/python" -m pip index versions onnxruntime-gpu 2>/dev/null | sed -n 's/^onnxruntime-gpu (\(.*\))$/onnxruntime-gpu==\1/p'
} > constraints.txt.tmp
mv constraints.txt.tmp constraints.txt
rm -rf "$(dirname "$VENV")"
echo "wrote constraints.txt ($(grep -c '==' constraints.txt) pins)"
