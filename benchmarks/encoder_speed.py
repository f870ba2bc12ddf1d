"""Sentence-encoder speed on CPU: documents per second of each backend, and how faithful it is to torch.

    python benchmarks/encoder_speed.py --threads 1
    python benchmarks/encoder_speed.py --threads 1 2 --docs 2000 500 --repeats 3
    python benchmarks/encoder_speed.py --threads 1 2 --batch-tokens 128 512 8192   # batch caps against the default
    python benchmarks/encoder_speed.py --threads 2 --one-worker                   # workers against intra-op threads

Backends (xlgen.encoders.SentenceEncoder, same tokenizer, same length-sorted batches of at most 64 texts;
on CTranslate2 also at most 512 padded tokens per batch on CPU, other caps with ``--batch-tokens``):

* ``torch``: sentence-transformers' ``encode`` (the reference);
* ``ctranslate2 float32``: the BERT converted to CTranslate2;
* ``ctranslate2 int8``: the same with int8 weights; with several threads, as many one-thread workers that
  each take whole batches (the default);
* with ``--one-worker`` and several threads, also ``ctranslate2 int8, one encoder x N intra-op threads``:
  the former layout, one encoder whose threads share each batch of up to 512 x N padded tokens.

sentence-transformers' ONNX backend is not measured: it needs ``optimum``, whose releases pin
transformers below 4.58 and would replace the project's transformers 5.

Texts are the first N test documents of goemotions (short Reddit comments) and reuters21578 (newswire,
cut at the encoder's 256 tokens). Speed is the best of ``--repeats`` passes, backends interleaved (the machine is shared);
agreement is the cosine between each backend's vector and torch's (min / mean over the texts).
Writes benchmarks/results/encoder_speed.json and .md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.data_dirs import dataset_dir  # noqa: E402
from benchmarks.provenance import stamped  # noqa: E402
from xlgen.data import read_documents  # noqa: E402
from xlgen.encoders import EncoderConfig, SentenceEncoder  # noqa: E402
from xlgen.encoders.ct2_encoder import Ct2Encoder  # noqa: E402
from xlgen.encoders.encoder import CPU_BATCH_TOKENS  # noqa: E402

BACKENDS = (("torch", "float32"), ("ctranslate2", "float32"), ("ctranslate2", "int8"))


def markdown(rows: list[dict]) -> str:
    lines = ["| dataset | docs | tokens/doc | threads | backend | docs/s | x torch | cosine min | cosine mean |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['dataset']} | {r['n_docs']} | {r['mean_tokens']:.0f} | {r['threads']} | {r['backend']} | "
                     f"{r['docs_per_s']:.1f} | {r['speedup']:.2f} | {r['cosine_min']:.4f} | {r['cosine_mean']:.5f} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=["goemotions", "reuters21578"])
    p.add_argument("--docs", nargs="+", type=int, default=[2000, 500], help="texts per dataset (one value, or one per dataset)")
    p.add_argument("--threads", nargs="+", type=int, default=[1])
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--batch-tokens", nargs="*", type=int, default=[],
                   help="also CTranslate2 int8 with these caps on padded tokens per batch (the default on CPU: 512)")
    p.add_argument("--one-worker", action="store_true",
                   help="with several threads, also CTranslate2 int8 as one encoder whose intra-op threads share each batch")
    p.add_argument("--encoder", default=EncoderConfig.name)
    p.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "encoder_speed.json"))
    args = p.parse_args()

    import torch

    docs_per = args.docs if len(args.docs) == len(args.datasets) else args.docs[:1] * len(args.datasets)
    rows: list[dict] = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        encoders = {f"{b} {q}" if b == "ctranslate2" else b: SentenceEncoder.load(
            EncoderConfig(name=args.encoder, backend=b, quantization=q, threads=threads, batch_size=args.batch_size))
            for b, q in BACKENDS}
        for cap in args.batch_tokens:
            encoders[f"ctranslate2 int8, {cap}-token batches"] = SentenceEncoder.load(EncoderConfig(
                name=args.encoder, backend="ctranslate2", quantization="int8", threads=threads, batch_size=args.batch_size,
                batch_tokens=cap))
        if args.one_worker and threads > 1:
            enc = SentenceEncoder.load(EncoderConfig(name=args.encoder, backend="ctranslate2", quantization="int8", threads=threads,
                                                     batch_size=args.batch_size, batch_tokens=CPU_BATCH_TOKENS * threads))
            assert enc._ct2 is not None
            enc._ct2 = Ct2Encoder(enc._ct2.path, enc._ct2.pooling, "int8", threads=threads, one_worker=True)
            encoders[f"ctranslate2 int8, one encoder x {threads} intra-op threads"] = enc
        for name, n in zip(args.datasets, docs_per, strict=True):
            texts = [d.text for d in read_documents(dataset_dir(name) / "test.jsonl.gz")[:n]]
            tok = encoders["torch"].model.tokenizer
            mean_tokens = float(np.mean([len(x) for x in tok(texts, truncation=True, max_length=encoders["torch"].max_seq_length)["input_ids"]]))
            best = dict.fromkeys(encoders, float("inf"))
            vecs: dict[str, np.ndarray] = {}
            for enc in encoders.values():
                enc.encode(texts[:64])  # warm-up
            for _ in range(args.repeats):  # interleaved, so that load from other processes hits every backend alike
                for label, enc in encoders.items():
                    started = time.perf_counter()
                    vecs[label] = enc.encode(texts)
                    best[label] = min(best[label], time.perf_counter() - started)
            for label in encoders:
                cos = np.sum(vecs[label] * vecs["torch"], axis=1)
                rows.append({"dataset": name, "n_docs": len(texts), "mean_tokens": mean_tokens, "threads": threads,
                             "backend": label, "seconds": best[label], "docs_per_s": len(texts) / best[label],
                             "speedup": best["torch"] / best[label], "cosine_min": float(cos.min()),
                             "cosine_mean": float(cos.mean())})
                print(markdown([rows[-1]]).splitlines()[-1], flush=True)
    table = markdown(rows)
    print()
    print(table)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(stamped({"args": vars(args), "rows": rows}), indent=1))
    out.with_suffix(".md").write_text(table + "\n")


if __name__ == "__main__":
    main()
