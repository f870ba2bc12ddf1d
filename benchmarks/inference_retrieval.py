"""Tagging speed of a ``retrieval`` model with the encoder pass included, against transformers' ``generate`` alone.

    python benchmarks/inference_retrieval.py --model runs/quality/reuters21578-retrieval/model --data reuters21578 --docs 300

Rows, on the same documents and weights, one thread for every library:

* ``generate alone``: the guided inputs prepared beforehand (not timed), then transformers' ``generate``
  with beam 5 (the torch backend) and the generator's own scores: the reference;
* ``full pipeline, torch``: ``XLGenModel.predict`` as served, everything timed: the sentence encoder
  (CTranslate2, no embedding cache), the retriever's sources, the candidates in the input, beam 5 on torch,
  the fusion;
* ``full pipeline, CTranslate2 int8``: the same with the exported CTranslate2 generator (``xlgen export``);
* two parts of that pipeline alone, for where the time goes: ``sentence encoder alone`` (the retriever's
  encoder pass over the texts, as the pipeline runs it) and ``generator alone, CTranslate2 int8`` (the
  exported generator's beam 5 on the prepared inputs, as the reference runs; no retriever, no fusion).
  The pipeline runs both, so its ratio stays below the ratio of either alone.

Documents per second and the ratio to the reference. Writes benchmarks/results/inference_retrieval.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

os.environ["XLGEN_EMBEDDING_CACHE"] = "0"  # every document is embedded, as a served request is

import torch  # noqa: E402

from benchmarks.data_dirs import dataset_dir  # noqa: E402
from benchmarks.provenance import stamped  # noqa: E402
from xlgen.backends import StaleExport, read_export  # noqa: E402
from xlgen.data import find_split, read_documents  # noqa: E402
from xlgen.decoding import DecodingConfig  # noqa: E402
from xlgen.model import XLGenModel, export_model  # noqa: E402


def timed(fn, repeats: int) -> float:  # type: ignore[no-untyped-def]
    """Best wall time of ``repeats`` calls."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="a retrieval-variant model directory")
    p.add_argument("--data", default="reuters21578", help="dataset name (../shared/data) or folder; its test split is tagged")
    p.add_argument("--docs", type=int, default=300, help="test documents tagged")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "inference_retrieval.json"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    model_dir = Path(args.model)
    try:
        read_export(model_dir, "ctranslate2")
    except (FileNotFoundError, StaleExport):
        export_model(model_dir, "ctranslate2")
    texts = [d.text for d in read_documents(find_split(dataset_dir(args.data), "test"))[: args.docs]]
    beam = DecodingConfig(strategy="beam", num_beams=5)
    torch_model = XLGenModel.load(model_dir, backend="torch")
    if torch_model.settings.variant != "retrieval":
        raise SystemExit(f"{model_dir} is a {torch_model.settings.variant} model, not a retrieval one")
    ct2_model = XLGenModel.load(model_dir, backend="ctranslate2")
    torch_model.predict(texts[:8], beam)  # warm-up: loads, converts the encoder once
    ct2_model.predict(texts[:8], beam)
    plan = torch_model.plan(texts)
    rows = []
    reference = timed(lambda: torch_model.predict(texts, beam, plan=plan, scoring="generator"), args.repeats)
    encoder = torch_model.guidance.retriever  # type: ignore[union-attr]
    for name, fn in [("generate alone (torch, inputs prepared)", None),
                     ("full pipeline, torch", lambda: torch_model.predict(texts, beam)),
                     ("full pipeline, CTranslate2 int8", lambda: ct2_model.predict(texts, beam)),
                     ("sentence encoder alone", lambda: encoder.embed(texts)),
                     ("generator alone, CTranslate2 int8 (inputs prepared)",
                      lambda: ct2_model.predict(texts, beam, plan=plan, scoring="generator"))]:
        seconds = reference if fn is None else timed(fn, args.repeats)
        rows.append({"setup": name, "docs_per_s": len(texts) / seconds, "ratio_to_generate": reference / seconds})
    print("| setup | docs/s | x generate alone |\n|---|---|---|")
    for r in rows:
        print(f"| {r['setup']} | {r['docs_per_s']:.1f} | {r['ratio_to_generate']:.2f} |")
    out = {"model": str(model_dir), "data": args.data, "docs": len(texts), "threads": args.threads, "beams": 5,
           "machine": platform.machine(), "torch": torch.__version__, "rows": rows}
    Path(args.output).write_text(json.dumps(stamped(out, [__file__, *(sys.argv[1:] if argv is None else argv)]), indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
