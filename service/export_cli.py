"""``xlgen export``: writes a fast inference backend into a model directory.

    xlgen export --model runs/goemotions/model --backend all    # onnx/ and ct2/

Loading the model (``xlgen serve``, ``predict``, ``select``) then decodes on the fastest valid
export present: CTranslate2 for greedy and beam search, ONNX Runtime for sampling, torch for the
rest. ``xlgen serve --backend torch`` (``XLGEN_BACKEND=torch``) or ``xlgen select --backend
torch`` keep transformers' ``generate``.
"""

from __future__ import annotations

import argparse
import json
import time

from xlgen.backends.export import COMPUTE_TYPES, FOLDERS, ONNX_QUANTIZATIONS, QUANTIZATIONS


def add_export_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``xlgen export``."""
    p.add_argument("--model", required=True, help="model directory")
    p.add_argument("--backend", required=True, choices=(*FOLDERS, "all"), help="backend to export for")
    p.add_argument("--quantization", default="float32", choices=QUANTIZATIONS,
                   help="CTranslate2: how the weights are stored (the compute type may still quantize at load)")
    p.add_argument("--onnx-quantization", default="float32", choices=ONNX_QUANTIZATIONS,
                   help="ONNX Runtime: the graphs' weights, as exported or dynamically quantized to int8 (faster on a CPU, "
                        "the same best beam on 99.7%% of goemotions test documents for the sentence-encoder generator)")
    p.add_argument("--compute-type", default="auto", choices=COMPUTE_TYPES,
                   help="CTranslate2: compute type at load; auto is int8 on CPU, bfloat16 on CUDA")


def cmd_export(args: argparse.Namespace) -> int:
    """Exports, then prints each export's manifest as one JSON line."""
    from xlgen.backends.export import UnsupportedExport, read_export
    from xlgen.model import export_model

    for backend in FOLDERS if args.backend == "all" else (args.backend,):
        started = time.perf_counter()
        try:
            path = export_model(args.model, backend, quantization=args.quantization, compute_type=args.compute_type,
                                onnx_quantization=args.onnx_quantization)
        except UnsupportedExport as e:
            if args.backend != "all":
                raise
            print(json.dumps({"backend": backend, "skipped": str(e)}))  # all: every backend that can serve this model
            continue
        info = read_export(args.model, backend)
        print(json.dumps({"path": str(path), "seconds": round(time.perf_counter() - started, 1), **vars(info)}))
    return 0
