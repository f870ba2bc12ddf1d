"""The static encoder against the packaged MiniLM: what it costs in quality and saves in time.

    python benchmarks/static_encoder.py --datasets goemotions --threads 2
    python benchmarks/static_encoder.py --datasets reuters21578 stackexchange3 --threads 2
    python benchmarks/static_encoder.py --merge benchmarks/results/static_encoder_*.json

One run per dataset fits, for each encoder (``all-MiniLM-L6-v2`` on CTranslate2 float32, the retriever's
default, and ``static``, model2vec distilled from it), the same retriever on the same train split, and
reports on test:

* each label source alone (``knn``, ``label_text``, ``linear``), one threshold tuned on dev over its top-K
  scores (as ``benchmarks/retrieval.py``);
* the calibrated retriever stage (the fusion's retriever stage fitted on the leak-free train candidates,
  its threshold tuned on dev: the ``fused without generator`` model of ``benchmarks/quality.py``);

with micro/macro-F1, P@1 and macro-F1 per train-count bucket (0, 1, 2-5, >5), and the encoder's speed:
documents per second embedding ``--speed-docs`` test documents with no cache, on 1 and 2 threads
(the best of ``--repeats``). Writes ``benchmarks/results/static_encoder_<datasets>.json`` and prints
markdown tables.
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
from benchmarks.retrieval import COLUMNS, metrics_row, source_scores  # noqa: E402
from xlgen.data import read_documents  # noqa: E402
from xlgen.encoders import EmbeddingCache, EncoderConfig, LabelRetriever, RetrieverConfig, SentenceEncoder  # noqa: E402

ENCODERS = ("all-MiniLM-L6-v2", "static")


def markdown(rows: list[dict]) -> str:
    head = "| dataset | encoder | model | micro-F1 | macro-F1 | P@1 | P@5 | macro 0 | macro 1 | macro 2-5 | macro >5 |"
    lines = [head, "|" + "---|" * 11]
    for r in rows:
        cells = " | ".join("-" if r.get(c) is None else f"{r[c]:.3f}" for c in COLUMNS)
        lines.append(f"| {r['dataset']} | {r['encoder']} | {r['model']} | {cells} |")
    return "\n".join(lines)


def speed_markdown(rows: list[dict]) -> str:
    lines = ["| dataset | encoder | docs/s, 1 thread | docs/s, 2 threads | x MiniLM (1 / 2 threads) | train embedding s |",
             "|---|---|---|---|---|---|"]
    base = {r["dataset"]: r for r in rows if r["encoder"] == ENCODERS[0]}
    for r in rows:
        b = base.get(r["dataset"])
        ratio = f"{r['docs_per_s_1'] / b['docs_per_s_1']:.1f} / {r['docs_per_s_2'] / b['docs_per_s_2']:.1f}" if b else "-"
        lines.append(f"| {r['dataset']} | {r['encoder']} | {r['docs_per_s_1']:.0f} | {r['docs_per_s_2']:.0f} | {ratio} | "
                     f"{r['train_embed_s']:.0f} |")
    return "\n".join(lines)


def embedding_speed(name: str, texts: list[str], threads: int, repeats: int) -> float:
    """Documents per second, no cache, the best of ``repeats`` (after one warm-up call)."""
    import torch

    torch.set_num_threads(threads)
    encoder = SentenceEncoder.load(EncoderConfig(name=name, threads=threads))
    encoder.encode(texts[:64])
    best = 0.0
    for _ in range(repeats):
        started = time.perf_counter()
        encoder.encode(texts)
        best = max(best, len(texts) / (time.perf_counter() - started))
    return best


def run_dataset(name: str, args: argparse.Namespace) -> tuple[list[dict], list[dict]]:
    import torch

    from xlgen.decoding import cut
    from xlgen.fusion import Fusion, fit_retriever_stage

    data = dataset_dir(name)
    train, dev, test = (read_documents(data / f"{s}.jsonl.gz") for s in ("train", "dev", "test"))
    rows: list[dict] = []
    speeds: list[dict] = []
    cache = EmbeddingCache()
    for enc_name in args.encoders:
        speed = {"dataset": name, "encoder": enc_name, "speed_docs": args.speed_docs}
        for threads in (1, 2):
            speed[f"docs_per_s_{threads}"] = embedding_speed(enc_name, [d.text for d in test[: args.speed_docs]], threads,
                                                             args.repeats)
        torch.set_num_threads(args.threads)
        encoder = SentenceEncoder.load(EncoderConfig(name=enc_name, threads=args.threads))
        started = time.perf_counter()
        vecs = {s: encoder.encode([d.text for d in docs], cache=cache) for s, docs in (("train", train), ("dev", dev), ("test", test))}
        speed["train_embed_s"] = time.perf_counter() - started  # with the cache: a second run reads it
        speeds.append(speed)
        print(json.dumps(speed), flush=True)
        config = RetrieverConfig(encoder=enc_name, jobs=args.threads)
        started = time.perf_counter()
        retriever = LabelRetriever.fit(train, config=config, encoder=encoder, cache=cache)
        counts = retriever.counts
        texts = {s: [d.text for d in docs] for s, docs in (("dev", dev), ("test", test))}
        for source in retriever.sources:
            dev_s, _ = source_scores(retriever.sources[source], retriever.labels, texts["dev"], vecs["dev"], config.candidates)
            test_s, tag_s = source_scores(retriever.sources[source], retriever.labels, texts["test"], vecs["test"], config.candidates)
            row = metrics_row(name, source, dev, dev_s, test, test_s, counts)
            row.update(encoder=enc_name, train_s=retriever.fit_seconds[source], tag_s=tag_s)
            rows.append(row)
            print(markdown([row]).splitlines()[-1], flush=True)
        candidates = retriever.score_train(train)
        fusion = Fusion(fit_retriever_stage(candidates, [d.labels for d in train], counts), None, config.candidates)
        fit_s = time.perf_counter() - started
        dev_scores = [f.scores for f in fusion.fuse(retriever.score(texts["dev"], vectors=vecs["dev"]), counts, None)]
        test_scores = [f.scores for f in fusion.fuse(retriever.score(texts["test"], vectors=vecs["test"]), counts, None)]
        row = metrics_row(name, "calibrated retriever stage", dev, dev_scores, test, test_scores, counts)
        row.update(encoder=enc_name, train_s=fit_s, labels_per_doc=sum(len(cut(s, row["threshold"], 1)) for s in test_scores) / len(test))
        rows.append(row)
        print(markdown([row]).splitlines()[-1], flush=True)
    return rows, speeds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=["goemotions"])
    p.add_argument("--encoders", nargs="+", default=list(ENCODERS))
    p.add_argument("--threads", type=int, default=2, help="threads of the retriever fits")
    p.add_argument("--speed-docs", type=int, default=1000, help="test documents embedded for the speed rows")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--output", default=None)
    p.add_argument("--merge", nargs="+", default=None, help="only merge these result files into one table")
    args = p.parse_args()
    if args.merge:
        rows, speeds = [], []
        for f in args.merge:
            data = json.loads(Path(f).read_text())
            rows += data["rows"]
            speeds += data["speed"]
        print(markdown(rows) + "\n\n" + speed_markdown(speeds))
        return
    output = Path(args.output or ROOT / "benchmarks" / "results" / f"static_encoder_{'_'.join(args.datasets)}.json")
    rows, speeds = [], []
    for name in args.datasets:
        r, s = run_dataset(name, args)
        rows += r
        speeds += s
        output.write_text(json.dumps({"args": vars(args), "rows": rows, "speed": speeds}, indent=1) + "\n")
    print()
    print(markdown(rows) + "\n\n" + speed_markdown(speeds))
    print(f"\nwritten to {output}")


if __name__ == "__main__":
    main()
