#!/usr/bin/env bash
# Regenerates constraints.txt, the versions scripts/setup.sh installs: a fresh virtual environment installs
# xlgen with every extra (all, cpu, dev, docs) and their exact versions are written down, so a fresh clone
# installs exactly what the file says and a release made later cannot change a run. The versions already
# pinned are kept (a new or moved dependency takes the newest release its range admits);
# XLGEN_LOCK_UPGRADE=1 takes the newest releases of everything instead: run the tests after it.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=$(mktemp -d)/venv
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q "torch==2.13.0"
keep=()
if [ -z "${XLGEN_LOCK_UPGRADE:-}" ] && [ -f constraints.txt ]; then
    # the GPU flavour is pinned for setup.sh's XLGEN_EXTRAS=all,gpu,...; it is not installed here
    grep -v '^onnxruntime-gpu==' constraints.txt > "$(dirname "$VENV")/keep.txt"
    keep=(-c "$(dirname "$VENV")/keep.txt")
fi
"$VENV/bin/python" -m pip install -q "${keep[@]}" -e ".[${XLGEN_LOCK_EXTRAS:-all,cpu,dev,docs}]"
{
    echo "# Exact versions scripts/setup.sh installs (pip -c); regenerate with bash scripts/lock.sh."
    "$VENV/bin/python" -m pip freeze --exclude-editable | sed -e 's/^torch==\(.*\)+cpu$/torch==\1/'
    # the GPU flavour of ONNX Runtime (XLGEN_EXTRAS=dev,gpu) shares the CPU flavour's release line
    "$VENV/bin/python" -m pip index versions onnxruntime-gpu 2>/dev/null | sed -n 's/^onnxruntime-gpu (\(.*\))$/onnxruntime-gpu==\1/p'
} > constraints.txt.tmp
mv constraints.txt.tmp constraints.txt
rm -rf "$(dirname "$VENV")"
echo "wrote constraints.txt ($(grep -c '==' constraints.txt) pins)"
