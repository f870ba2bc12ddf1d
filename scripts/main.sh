#!/usr/bin/env bash
# Sets up .venv, trains the fused default on the bundled GoEmotions data (the packaged sentence encoder's
# label retriever, a generator that reads that encoder's token states and the retriever's candidates, a
# calibrator that fuses both),
# evaluates it on the test split, exports the fast inference backends, tags a few example texts with
# scores, then serves the model over HTTP. Extra training options go in XLGEN_TRAIN_ARGS and win over
# the defaults below (e.g. MAX_STEPS=679 for one epoch, or XLGEN_TRAIN_ARGS="--backbone t5" for the
# cpu-preset generator from scratch).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
RUN=${RUN:-runs/goemotions}
if [ ! -f "$RUN/model/xlgen.json" ]; then
    # the generator on the sentence encoder: one pass of the packaged MiniLM (CTranslate2 int8) gives the
    # retriever its vectors and the generator its token states; MAX_STEPS generator steps of 64 documents and
    # the test split evaluated once, below, keep the whole job within 10 minutes on 2 cores; the dev gate
    # (--generator auto) serves the retriever stage alone if the generator does not beat it
    # shellcheck disable=SC2086
    .venv/bin/xlgen train --data data/goemotions --data-license apache-2.0 --output-dir "$RUN" \
        --variant retrieval --backbone sentence-encoder --encoder-quantization int8 --max-steps "${MAX_STEPS:-400}" \
        --no-evaluate-test ${XLGEN_TRAIN_ARGS:-}
fi
# converted copies for fast decoding: ONNX Runtime int8 decodes the sentence-encoder generator from the encoder's
# states (CTranslate2, which encodes ids itself, is skipped for it); every command below picks the fastest valid
# one (--backend torch forces transformers' generate)
.venv/bin/xlgen export --model "$RUN/model" --backend all --onnx-quantization int8
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
