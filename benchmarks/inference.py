"""Inference speed of every backend against torch's ``generate``, in the same run, on the same weights.

For each model directory (exported first where the exports are missing or stale), each backend and
each batch size: documents per second for beam-5 tagging (``XLGenModel.predict``) and for ensemble
decoding (``decode_ensemble`` with the members of the ``vote`` strategy, ``--members``: ``fast``, the
default, is beam-5 plus two one-sample members drawn in one call, ``wide`` beam-5 plus two sampling
members of 5 samples; no embeddings, which ``vote`` does not read), the ratio to torch, and the
ensemble's cost in beam-5 passes: its time over that of beam-5 tagging of the same documents on the
same backends, timed beside it. CTranslate2 int8 ensemble rows come for every member set of
``--members``; ``--samples 5 2 1`` gives each of them rows whose sampling members draw that many samples.
Then quality on the test split: micro-F1 at the model's
threshold per backend, the share of documents whose best beam equals torch's, and the largest
label-score gap::

    python benchmarks/inference.py --models runs/inference-bench/cpu/model runs/inference-bench/small/model \
        --names "cpu preset (5.9M)" "small preset (65M)" --scale 1 0.25 --quality-docs 0 300
    # longer inputs (reuters texts, cut at the model's 128 tokens), speed only:
    python benchmarks/inference.py --models ... --names ... --data reuters21578 --scale 0.5 0.25 \
        --quality-docs -1 --output benchmarks/results/inference_long.json

Every library runs on ``--threads`` threads (default 1). Prints Markdown tables and writes
benchmarks/results/inference.json and inference.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.data_dirs import dataset_dir  # noqa: E402
from benchmarks.provenance import stamped  # noqa: E402
from xlgen.active.ensemble import MEMBER_SETS, EnsembleConfig, decode_ensemble  # noqa: E402
from xlgen.backends import Backend, Backends, StaleExport, read_export, weights_stamp  # noqa: E402
from xlgen.backends.ct2_backend import CT2Backend  # noqa: E402
from xlgen.backends.export import export_dir  # noqa: E402
from xlgen.backends.onnx_backend import OnnxBackend  # noqa: E402
from xlgen.data import Document, find_split, read_documents  # noqa: E402
from xlgen.decoding import DecodingConfig  # noqa: E402
from xlgen.metrics import micro_f1  # noqa: E402
from xlgen.model import XLGenModel, export_model  # noqa: E402


@dataclass(frozen=True)
class Setup:
    """One way to decode: a label and the backends, fastest first (empty: torch alone); for ensemble
    setups, the member set (:data:`xlgen.active.ensemble.MEMBER_SETS`) and how many samples each of its
    sampling members draws (None: the set's own)."""

    label: str
    backends: tuple[Backend, ...]
    member_set: str = "fast"
    samples: int | None = None

    def members(self) -> tuple[DecodingConfig, ...]:
        return tuple(replace(m, num_samples=self.samples) if m.strategy == "sample" and self.samples else m
                     for m in MEMBER_SETS[self.member_set])


def ensure_exports(path: Path) -> None:
    for name in ("onnxruntime", "ctranslate2"):
        try:
            read_export(path, name)
        except (FileNotFoundError, StaleExport):
            started = time.perf_counter()
            export_model(path, name)
            print(f"exported {name} in {time.perf_counter() - started:.1f} s", flush=True)


def quantized_onnx(onnx_dir: Path) -> Path:
    """The ONNX export with ONNX Runtime's dynamic int8 quantization of its weights (``quantize_dynamic``),
    written beside it in ``<export>-int8/`` (kept, rebuilt when the export is newer)."""
    import shutil

    from onnxruntime.quantization import QuantType, quantize_dynamic

    from xlgen.files import atomic_dir

    out = onnx_dir.with_name(onnx_dir.name + "-int8")
    graphs = sorted(onnx_dir.glob("*.onnx"))
    if out.is_dir() and all((out / g.name).is_file() and (out / g.name).stat().st_mtime >= g.stat().st_mtime for g in graphs):
        return out
    with atomic_dir(out) as tmp:  # whole or absent
        shutil.copytree(onnx_dir, tmp, ignore=shutil.ignore_patterns("*.onnx"), dirs_exist_ok=True)
        for g in graphs:
            quantize_dynamic(g, tmp / g.name, weight_type=QuantType.QInt8)
    return out


def setups(path: Path, xm: XLGenModel, threads: int, members: Sequence[str], samples: Sequence[int] | None,
           ort_int8: bool = False, chunks: Sequence[int] = (), one_sampler: bool = False) -> tuple[list[Setup], list[Setup]]:
    """(tagging setups, ensemble setups) over the exports of ``path``; ``members``: the member sets of the
    CTranslate2 int8 ensemble setups (the other ensemble setups decode the first); ``samples``: samples per
    sampling member of those setups, one setup per count (None: the sets' own); ``one_sampler``: each of them
    again with one sampling translator (the default has one per thread); ``ort_int8``: ONNX Runtime
    rows over its dynamically quantized export too; ``chunks``: CTranslate2 int8 rows decoding each batch
    in chunks of that many documents too (``chunk_docs``; 0: the whole batch in one forward pass)."""
    t5, tok = xm.t5, xm.tokenizer
    cfg = t5.config
    ort = OnnxBackend(export_dir(path, "onnxruntime"), len(t5.get_decoder().block), cfg.num_heads, cfg.d_kv,
                      tok.pad_id, tok.eos_id, threads=threads)
    ort_q = [Setup("onnxruntime int8 (dynamic quantization)",
                   (OnnxBackend(quantized_onnx(export_dir(path, "onnxruntime")), len(t5.get_decoder().block), cfg.num_heads, cfg.d_kv,
                                tok.pad_id, tok.eos_id, threads=threads),))] if ort_int8 else []
    def ct2_backend(compute_type: str, **options: int) -> CT2Backend:
        return CT2Backend(export_dir(path, "ctranslate2"), tok.eos_id, compute_type=compute_type, threads=threads,
                          encoder=lambda ids, mask: t5.get_encoder()(input_ids=ids, attention_mask=mask).last_hidden_state, **options)

    ct2 = {ct: ct2_backend(ct) for ct in ("float32", "int8")}
    # CTranslate2 int8 decoding each batch in chunks of n documents per forward pass (0: the whole batch at once)
    # with one worker of `threads` intra-op threads (on one thread the default's own worker)
    worker = f", one {threads}-thread worker" if threads > 1 else ""
    chunk_rows = [Setup(f"ctranslate2 int8, unchunked{worker}" if n == 0 else f"ctranslate2 int8, chunks of {n}{worker}",
                       (ct2_backend("int8", chunk_docs=n, workers=1),), members[0])
                 for n in chunks]
    tagging = [Setup("torch (generate)", ()), Setup("onnxruntime", (ort,)), Setup("ctranslate2 float32", (ct2["float32"],)),
               Setup("ctranslate2 int8 (CPU default)", (ct2["int8"],)), *chunk_rows, *ort_q]
    ensemble = [Setup("torch (generate)", (), members[0]), Setup("onnxruntime", (ort,), members[0]),
                *[replace(s, member_set=members[0]) for s in ort_q], *chunk_rows]
    one = ct2_backend("int8", sampling_workers=1) if one_sampler and threads > 1 else None
    for ms in members:
        for k in samples or [None]:
            more = f", {k} samples per member" if k else ""
            # every member on CTranslate2 (seeded sampling), as the default routing puts them beside an ONNX export too
            ensemble.append(Setup(f"ctranslate2 int8, {ms} members{more}", (ct2["int8"],), ms, k))
            if one is not None:
                ensemble.append(Setup(f"ctranslate2 int8, {ms} members{more}, one sampling translator", (one,), ms, k))
    return tagging, ensemble


def use(xm: XLGenModel, setup: Setup) -> XLGenModel:
    xm.backend = Backends(setup.backends, weights_stamp(xm.model)) if setup.backends else None
    return xm


def best_rate(fn, n_docs: int, repeats: int) -> float:  # type: ignore[no-untyped-def]
    """Documents per second of the fastest of ``repeats`` runs (the machine is shared)."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return n_docs / best


def speed(xm: XLGenModel, texts: list[str], batch: int, tag_setups: list[Setup], ens_setups: list[Setup],
          n_tag: int, n_ens: int, repeats: int) -> list[dict]:
    rows = []
    beam = replace(xm.decoding, strategy="beam", num_beams=5, batch_size=batch)
    for kind, group, n in (("tagging", tag_setups, n_tag), ("ensemble", ens_setups, n_ens)):
        docs = texts[:n]
        ref = None
        for setup in group:
            use(xm, setup)
            warm = docs[: max(2, batch)]
            xm.predict(warm, beam)
            row: dict = {}
            if kind == "ensemble":
                ens = EnsembleConfig(members=setup.members(), batch_size=batch)
                decode_ensemble(xm, warm, ens, embeddings=False)
                beam_rate = best_rate(lambda d=docs: xm.predict(d, beam), len(docs), repeats)
                rate = best_rate(lambda d=docs, e=ens: decode_ensemble(xm, d, e, embeddings=False), len(docs), repeats)
                row = {"beam_docs_per_s": beam_rate, "x_beam": beam_rate / rate}  # the ensemble's time in beam-5 passes
            else:
                rate = best_rate(lambda d=docs: xm.predict(d, beam), len(docs), repeats)
            ref = rate if ref is None else ref
            rows.append({"kind": kind, "backend": setup.label, "batch": batch, "docs": len(docs), "docs_per_s": rate, "x_torch": rate / ref,
                         **row})
            cost = f"  = {row['x_beam']:.2f} beam-5 passes ({row['beam_docs_per_s']:.1f} docs/s)" if row else ""
            print(f"  {kind:8s} batch {batch:2d} {setup.label:64s} {rate:8.1f} docs/s  x{rate / ref:.2f}{cost}", flush=True)
    use(xm, Setup("torch", ()))
    return rows


def quality(xm: XLGenModel, docs: list[Document], tag_setups: list[Setup]) -> list[dict]:
    rows = []
    texts, gold = [d.text for d in docs], [d.labels for d in docs]
    cfg = replace(xm.decoding, strategy="beam", num_beams=5, batch_size=32)
    ref = None
    for setup in tag_setups:
        preds = use(xm, setup).predict(texts, cfg)
        f1 = micro_f1(gold, [p.labels for p in preds])
        if ref is None:
            ref = preds
        top1 = np.mean([p.candidates[0].labels == r.candidates[0].labels for p, r in zip(preds, ref, strict=True)])
        gap = max(abs(p.all_scores.get(x, 0.0) - r.all_scores.get(x, 0.0))
                  for p, r in zip(preds, ref, strict=True) for x in set(p.all_scores) | set(r.all_scores))
        rows.append({"backend": setup.label, "docs": len(docs), "micro_f1": f1, "top1_same": float(top1), "max_score_gap": gap})
        print(f"  quality {setup.label:48s} micro-F1 {f1:.4f}  top-1 as torch {top1:.4f}  max |score gap| {gap:.2e}", flush=True)
    use(xm, Setup("torch", ()))
    return rows


def markdown(results: list[dict], args: argparse.Namespace) -> str:
    sets = getattr(args, "members", None)
    said = ("vote's members: beam-5 + 2 sampling members of 5 samples unless said" if sets is None else
            f"vote's members: the {sets[0]} set unless said; fast = beam-5 + 2 one-sample members drawn in one call, "
            "wide = beam-5 + 2 sampling members of 5 samples")
    out = [f"Beam-5 tagging and ensemble decoding ({said}), "
           f"documents per second, {args.threads} thread(s) for every library, {args.data} test texts; x = speed over "
           f"transformers' generate in the same run; beam passes = the ensemble's time over beam-5 tagging of the same "
           f"documents on the same backends, timed beside it (best of {args.repeats}).", ""]
    heads = [f"tagging b={b} | x" for b in args.batch_sizes] + [f"ensemble b={b} | x | beam passes" for b in args.batch_sizes]
    out.append("| model | input tokens | backend | " + " | ".join(heads) + " |")
    out.append("|---|---|---|" + "---|---|" * len(args.batch_sizes) + "---|---|---|" * len(args.batch_sizes))
    for res in results:
        by = {(r["kind"], r["backend"], r["batch"]): r for r in res["speed"]}
        labels = list(dict.fromkeys(r["backend"] for r in res["speed"]))
        for label in labels:
            cells = []
            for kind in ("tagging", "ensemble"):
                for b in args.batch_sizes:
                    r = by.get((kind, label, b))
                    cells += [f"{r['docs_per_s']:.1f}", f"{r['x_torch']:.2f}"] if r else ["-", "-"]
                    if kind == "ensemble":
                        cells.append(f"{r['x_beam']:.2f}" if r and "x_beam" in r else "-")
            out.append(f"| {res['model']} | {res['mean_input_tokens']:.0f} | {label} | " + " | ".join(cells) + " |")
    if not any(res["quality"] for res in results):
        return "\n".join(out) + "\n"
    out += ["", f"Quality on {args.data} test (beam 5, the model's threshold): micro-F1, best beam equal to torch's, largest label-score gap.", ""]
    out.append("| model | backend | docs | micro-F1 | delta vs torch | top-1 as torch | max score gap |")
    out.append("|---|---|---|---|---|---|---|")
    for res in results:
        ref = res["quality"][0]["micro_f1"] if res["quality"] else 0.0
        for q in res["quality"]:
            out.append(f"| {res['model']} | {q['backend']} | {q['docs']} | {q['micro_f1']:.4f} | {q['micro_f1'] - ref:+.4f} | "
                       f"{q['top1_same']:.3f} | {q['max_score_gap']:.1e} |")
    return "\n".join(out) + "\n"


def render(path: Path) -> None:
    """Rewrites ``path``'s Markdown table from its JSON (filling in input lengths a run did not record)."""
    saved = json.loads(path.read_text())
    args = argparse.Namespace(**saved["args"])
    texts = [d.text for d in read_documents(find_split(dataset_dir(args.data), "test"))[:512]]
    for res in saved["results"]:
        if "mean_input_tokens" not in res:
            xm = XLGenModel.load(res["path"], backend="torch")
            res["mean_input_tokens"] = float(np.mean([len(x) for x in xm.encode_inputs(texts)]))
    path.write_text(json.dumps(saved, indent=1))
    table = markdown(saved["results"], args)
    path.with_suffix(".md").write_text(table)
    print(table)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=[], help="model directories (exported in place when needed)")
    p.add_argument("--names", nargs="+", help="a name per model for the table (default: the folder above model/)")
    p.add_argument("--data", default="goemotions", help="dataset whose test texts are decoded")
    p.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 32])
    p.add_argument("--tag-docs", nargs="+", type=int, default=[64, 512], help="documents per tagging run, per batch size")
    p.add_argument("--ensemble-docs", nargs="+", type=int, default=[32, 256], help="documents per ensemble run, per batch size")
    p.add_argument("--scale", nargs="+", type=float, default=[1.0], help="document-count factor per model (slower models: < 1)")
    p.add_argument("--quality-docs", nargs="+", type=int, default=[2000], help="test documents for quality, per model (0: all, -1: none)")
    p.add_argument("--members", nargs="+", default=["fast"], choices=tuple(MEMBER_SETS),
                   help="member sets of the CTranslate2 int8 ensemble rows (the other ensemble rows decode the first)")
    p.add_argument("--samples", nargs="+", type=int,
                   help="CTranslate2 int8 ensemble rows whose sampling members draw this many samples each (default: the sets' own)")
    p.add_argument("--one-sampler", action="store_true",
                   help="on several threads, also CTranslate2 int8 ensemble rows sampling on one one-thread translator")
    p.add_argument("--ort-int8", action="store_true",
                   help="also ONNX Runtime over its export quantized to int8 (quantize_dynamic, written beside the export)")
    p.add_argument("--unchunked", action="store_true",
                   help="also CTranslate2 int8 decoding each batch in one forward pass (the same as --chunks 0)")
    p.add_argument("--chunks", nargs="*", type=int, default=[],
                   help="also CTranslate2 int8 decoding each batch in chunks of these many documents (0: the whole batch); "
                        "these rows run one worker of --threads threads; the default is chunks of CHUNK_DOCS shared out to --threads one-thread workers")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "inference.json"))
    p.add_argument("--render", action="store_true", help="only rewrite the Markdown table of the --output JSON")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.render:
        render(Path(args.output))
        return
    if not args.models:
        p.error("give --models DIR [DIR ...]")

    test = read_documents(find_split(dataset_dir(args.data), "test"))
    texts = [d.text for d in test]
    results = []
    for k, model in enumerate(args.models):
        path = Path(model)
        name = args.names[k] if args.names else path.resolve().parent.name
        scale = args.scale[min(k, len(args.scale) - 1)]
        n_quality = args.quality_docs[min(k, len(args.quality_docs) - 1)] or len(test)
        ensure_exports(path)
        xm = XLGenModel.load(path, backend="torch")
        tag_setups, ens_setups = setups(path, xm, args.threads, args.members, args.samples, args.ort_int8,
                                        list(dict.fromkeys([0] * args.unchunked + args.chunks)), args.one_sampler)
        mean_tokens = float(np.mean([len(x) for x in xm.encode_inputs(texts[:512])]))
        print(f"{name}: {sum(p.numel() for p in xm.t5.parameters()) / 1e6:.1f}M parameters, {mean_tokens:.0f} input tokens on average",
              flush=True)
        rows = []
        for b, n_tag, n_ens in zip(args.batch_sizes, args.tag_docs, args.ensemble_docs, strict=True):
            rows += speed(xm, texts, b, tag_setups, ens_setups, max(4, int(n_tag * scale)), max(4, int(n_ens * scale)), args.repeats)
        results.append({"model": name, "path": str(path), "params_m": sum(p.numel() for p in xm.t5.parameters()) / 1e6,
                        "mean_input_tokens": mean_tokens,
                        "speed": rows, "quality": quality(xm, test[:n_quality], tag_setups) if n_quality > 0 else []})

    import ctranslate2
    import onnxruntime

    meta = {"args": vars(args), "machine": platform.processor() or platform.machine(), "python": platform.python_version(),
            "torch": torch.__version__, "onnxruntime": onnxruntime.__version__, "ctranslate2": ctranslate2.__version__}
    table = markdown(results, args)
    print(table)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(stamped({**meta, "results": results}), indent=1))
    out.with_suffix(".md").write_text(table)


if __name__ == "__main__":
    main()
