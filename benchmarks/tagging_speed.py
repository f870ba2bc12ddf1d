"""Tagging speed of a ``sentence-encoder`` model as served, against the naive pipeline doing the same work.

    python benchmarks/tagging_speed.py --model runs/goemotions/model --dataset goemotions --threads 1 --batch 32
    python benchmarks/tagging_speed.py --model runs/quality/reuters21578-encoder-generator/model --dataset reuters21578 \\
        --threads 2 --batch 1 --docs 200

Rows, each tagging the same test documents in calls of ``--batch`` texts, on ``--threads`` CPU threads:

* ``naive``: the libraries' defaults for the same work: sentence-transformers ``encode`` in torch float32
  (``output_value="token_embeddings"``: the token states, whose mean pooled is the retriever's vector, one call), the retriever's
  sources on the vectors, transformers' ``generate`` (beam 5, all five beams returned with their scores), the
  fusion; no export, no quantisation.
* ``served, generator on``: ``XLGenModel.predict`` as the service calls it (CTranslate2 int8 encoder when the
  model was trained so, ONNX Runtime decoding when exported, the fused scores).
* ``served, retriever stage``: the same model with the generator off (as the dev gate serves it).
* ``served encoder pass``: the sentence encoder alone (what both served rows pay first).

Columns: seconds per 1,000 documents and the speed-up over ``naive``; with ``--check`` the served fused labels are
compared with the naive ones (same labels on how many documents). Writes JSON with ``--json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.data_dirs import dataset_dir  # noqa: E402
from benchmarks.provenance import stamped  # noqa: E402


def naive_predict(xm, texts: list[str], st) -> list[dict[str, float]]:  # type: ignore[no-untyped-def]
    """The naive pipeline: ST encode (torch float32) -> retriever -> transformers generate, beam 5 -> fusion."""
    import numpy as np
    import torch

    from xlgen.backbone import TEXT, text_input
    from xlgen.decoding import Candidate, label_scores
    from xlgen.tokenizer import split_generated

    g, tok, cfg = xm.guidance, xm.tokenizer, xm.decoding
    # one call: the token states, whose mean is all-MiniLM-L6-v2's pooled vector (its Pooling is a mean, then Normalize)
    outs = [{"token_embeddings": t} for t in st.encode(texts, output_value="token_embeddings", batch_size=32, show_progress_bar=False)]
    vectors = np.stack([o["token_embeddings"].float().mean(dim=0).numpy() for o in outs])
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    candidates = g.retriever.score(texts, vectors=vectors)
    suffixes = [g.suffix(xm, c) for c in g.ordered(candidates)]
    text_id = tok.token_id(TEXT)
    rows = [text_input(tok, len(o["token_embeddings"]), s, xm.settings.max_input_length) for o, s in zip(outs, suffixes, strict=True)]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), tok.pad_id)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
    mask = (torch.arange(width)[None, :] < torch.tensor([len(r) for r in rows])[:, None]).long()
    t5 = xm.t5
    with torch.no_grad():
        embeds = t5.get_input_embeddings()(ids)
        for i, (o, r) in enumerate(zip(outs, rows, strict=True)):
            n = r.count(text_id)
            embeds[i, :n] = o["token_embeddings"][:n]
        from transformers.cache_utils import DynamicCache, EncoderDecoderCache

        out = t5.generate(inputs_embeds=embeds, attention_mask=mask, num_beams=cfg.num_beams, num_return_sequences=cfg.num_beams,
                          max_new_tokens=cfg.max_new_tokens, output_scores=True, return_dict_in_generate=True,
                          cache=EncoderDecoderCache(DynamicCache(), DynamicCache()))
    n = cfg.num_beams
    generated = []
    for i in range(len(texts)):
        cands = [Candidate(tuple(xm.canonical(x) for x in split_generated(tok, out.sequences[k].tolist()[1:])),
                           float(out.sequences_scores[k]) * max(1, int((out.sequences[k] != tok.pad_id).sum())), 1)
                 for k in range(i * n, (i + 1) * n)]
        generated.append(label_scores(cands, "beam"))
    return [f.scores for f in g.fusion.fuse(candidates, g.counts, generated)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="a sentence-encoder model directory (xlgen export --backend onnxruntime for ONNX)")
    p.add_argument("--dataset", default="goemotions", help="its test split's texts are tagged")
    p.add_argument("--docs", type=int, default=640, help="test documents tagged per row")
    p.add_argument("--batch", type=int, default=32, help="texts per call")
    p.add_argument("--threads", type=int, default=1, help="CPU threads")
    p.add_argument("--repeats", type=int, default=2, help="passes per row, the fastest kept")
    p.add_argument("--check", action="store_true", help="compare the served labels with the naive pipeline's")
    p.add_argument("--json", help="write the rows here")
    args = p.parse_args()

    import os

    import torch
    from sentence_transformers import SentenceTransformer

    from xlgen.guidance.retrieval import CACHE_ENV

    os.environ[CACHE_ENV] = "0"  # as the service runs: no query embedding read from or written to the on-disk cache

    from xlgen.data import find_split, read_documents
    from xlgen.encoders.packaged import is_packaged, packaged_model_dir
    from xlgen.model import XLGenModel

    torch.set_num_threads(args.threads)
    texts = [d.text for d in read_documents(find_split(dataset_dir(args.dataset), "test"))[: args.docs]]
    xm = XLGenModel.load(args.model)
    naive_model = XLGenModel.load(args.model, backend="torch")
    name = xm.guidance.retriever.encoder.name
    st = SentenceTransformer(str(packaged_model_dir()) if is_packaged(name) else name, device="cpu")
    batches = [texts[i : i + args.batch] for i in range(0, len(texts), args.batch)]

    def timed(fn) -> tuple[float, list]:  # type: ignore[no-untyped-def]
        best, out = float("inf"), []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            out = [r for b in batches for r in fn(b)]
            best = min(best, time.perf_counter() - t0)
        return 1000 * best / len(texts), out

    encoder = xm.guidance.retriever.encoder
    rows = []
    naive_s, naive_out = timed(lambda b: naive_predict(naive_model, b, st))
    rows.append({"row": "naive (ST encode float32 + generate beam 5 + fusion)", "s_per_1k": naive_s})
    served_s, served_out = timed(lambda b: [p.all_scores for p in xm.predict(b, scoring="fused" if xm.serves_generator else "generator")])
    if not xm.serves_generator:
        served_s, served_out = timed(lambda b: [f.scores for f in xm.guidance.rescore(xm, xm.plan(b), [p.all_scores for p in xm.predict(b, scoring="generator")])])
    rows.append({"row": f"served, generator on ({xm.backend.describe() if xm.backend else 'torch'}, encoder {encoder.backend} {encoder.numerics})",
                 "s_per_1k": served_s})
    stage_s, _ = timed(lambda b: xm.predict(b, scoring="retriever"))
    rows.append({"row": "served, retriever stage (generator off)", "s_per_1k": stage_s})
    enc_s, _ = timed(lambda b: encoder.encode(b))
    rows.append({"row": "served encoder pass alone", "s_per_1k": enc_s})
    for r in rows:
        r.update(dataset=args.dataset, threads=args.threads, batch=args.batch, docs=len(texts), speedup=naive_s / r["s_per_1k"])
    if args.check:
        top = sum(max(a, key=a.get, default=None) == max(b, key=b.get, default=None) for a, b in zip(served_out, naive_out, strict=True))
        rows[1]["same_top_label_as_naive"] = top / len(texts)
    rows.append({"row": "generator on / retriever stage (time per document)", "dataset": args.dataset, "threads": args.threads,
                 "batch": args.batch, "ratio": served_s / stage_s})
    print(f"| {args.dataset} | threads {args.threads} | batch {args.batch} | s / 1k docs | x naive |\n|---|---|---|---|---|")
    for r in rows:
        if "s_per_1k" in r:
            print(f"| | {r['row']} | | {r['s_per_1k']:.2f} | {r['speedup']:.2f} |")
    print(f"generator on costs {served_s / stage_s:.2f}x the retriever stage per document")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(stamped({"args": vars(args), "rows": rows}), indent=1))


if __name__ == "__main__":
    main()
