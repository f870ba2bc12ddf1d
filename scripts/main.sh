#!/usr/bin/env bash
# Sets up .venv, trains the fused default on the bundled GoEmotions data (the packaged sentence encoder's
# label retriever, a cpu-preset generator that reads its candidates, a calibrator that fuses both),
# evaluates it on the test split, exports the fast inference backends, tags a few example texts with
# scores, then serves the model over HTTP. Extra training options go in XLGEN_TRAIN_ARGS and win over
# the defaults below (e.g. XLGEN_TRAIN_ARGS="--max-steps 1000", or "--variant base --max-steps 2716",
# four epochs, for the generator alone).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
RUN=${RUN:-runs/goemotions}
if [ ! -f "$RUN/model/xlgen.json" ]; then
    # int8 encoder: about 1.8x faster embedding on the CPU; 200 generator steps of 64 documents (under a
    # third of an epoch) and the test split evaluated once, below, on the exported backend keep the whole
    # job within 10 minutes on 2 cores
    # shellcheck disable=SC2086
    .venv/bin/xlgen train --data data/goemotions --data-license apache-2.0 --output-dir "$RUN" \
        --variant retrieval --encoder-quantization int8 --max-steps 200 --no-evaluate-test ${XLGEN_TRAIN_ARGS:-}
fi
# converted copies for fast decoding (CTranslate2 int8 for beam search, ONNX Runtime for sampling);
# every command below picks the fastest valid one (--backend torch forces transformers' generate)
.venv/bin/xlgen export --model "$RUN/model" --backend all
.venv/bin/xlgen evaluate --model "$RUN/model" --data data/goemotions --split test --output "$RUN/test_metrics.json" \
    | .venv/bin/python -c "import json,sys; m=json.load(sys.stdin); print({k: round(m[k], 4) for k in ('micro_f1','macro_f1','p_at_1','threshold')})"
.venv/bin/xlgen predict --model "$RUN/model" \
    "Thank you so much, this is exactly what I needed!" \
    "I can't believe they cancelled the show, this is so annoying." \
    "Wow, I did not see that coming at all." \
    "I'm really worried about my exam tomorrow."
# Finally serve the model (Ctrl-C stops it). XLGEN_NO_SERVE=1 skips this step.
if [ -z "${XLGEN_NO_SERVE:-}" ]; then
    echo "serving $RUN/model on http://127.0.0.1:${XLGEN_PORT:-8000} (try: curl -s -XPOST localhost:${XLGEN_PORT:-8000}/v1/tag -H 'content-type: application/json' -d '{\"texts\": [\"thanks so much!\"]}')"
    exec .venv/bin/xlgen serve --model "$RUN/model" --train-data data/goemotions --work-dir "$RUN/service"
fi
