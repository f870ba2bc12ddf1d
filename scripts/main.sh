#!/usr/bin/env bash
# Sets up .venv, trains the default model on the bundled GoEmotions data (CPU preset), evaluates it
# on the test split, and tags a few example texts with scores.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
RUN=${RUN:-runs/goemotions}
if [ ! -f "$RUN/model/xlgen.json" ]; then
    .venv/bin/xlgen train --data data/goemotions --output-dir "$RUN"
fi
.venv/bin/xlgen evaluate --model "$RUN/model" --data data/goemotions --split test --output "$RUN/test_metrics.json" \
    | .venv/bin/python -c "import json,sys; m=json.load(sys.stdin); print({k: round(m[k], 4) for k in ('micro_f1','macro_f1','p_at_1','threshold')})"
.venv/bin/xlgen predict --model "$RUN/model" \
    "Thank you so much, this is exactly what I needed!" \
    "I can't believe they cancelled the show, this is so annoying." \
    "Wow, I did not see that coming at all." \
    "I'm really worried about my exam tomorrow."
