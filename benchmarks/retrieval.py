"""The label retriever measured: each source alone next to TF-IDF + LR, on full test splits.

    python benchmarks/retrieval.py --datasets goemotions --threads 1
    python benchmarks/retrieval.py --datasets stackexchange3 --threads 2 --baseline-jobs 2
    python benchmarks/retrieval.py --merge benchmarks/results/retrieval_*.json --output benchmarks/results/retrieval.json

One run per dataset fits, on the same train split and embeddings:

* ``tfidf+logreg``: the project's baseline (benchmarks/baselines.py);
* ``linear (tfidf)``: the retriever's linear model on TF-IDF alone (``embedding_weight`` 0);
* ``linear (tfidf+encoder)``: the linear source, TF-IDF ⊕ sentence embedding (one-vs-rest LR up to 200
  labels, the omikuji tree above);
* ``knn``: similarity-weighted label votes of the k nearest train documents;
* ``label_text``: cosine similarity to the label's name (zero-shot, no train labels used).

Each gets one threshold tuned on dev for micro-F1 (xlgen.metrics.tune_threshold, at least one label per
document) over its top-K scores, and the project's evaluator on test: micro/macro-F1, P@1, P@5, macro-F1
per train-count bucket (0, 1, 2-5, >5). ``train_s`` is the fitting time without the embeddings,
``tag_s`` the scoring time of the test split without the embeddings (``embed_s`` of the run says how long
embedding all splits took; cached vectors make it small, see benchmarks/encoder_speed.py for speeds).

Also measured: the HNSW index's recall@k against exact search over the train documents, and labels
hidden from train then added by name only: recall@10 of the label_text ranking on their test documents.
Writes benchmarks/results/retrieval_<dataset>.json (rows) and prints markdown tables.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.baselines import tfidf_logreg  # noqa: E402
from benchmarks.data_dirs import dataset_dir  # noqa: E402
from benchmarks.provenance import stamped  # noqa: E402
from xlgen.data import Document, read_documents  # noqa: E402
from xlgen.decoding import cut  # noqa: E402
from xlgen.encoders import EmbeddingCache, EncoderConfig, LabelRetriever, RetrieverConfig, SentenceEncoder  # noqa: E402
from xlgen.encoders.candidates import merge_sources  # noqa: E402
from xlgen.encoders.encoder import BACKENDS as ENCODER_BACKENDS  # noqa: E402
from xlgen.encoders.index import ExactIndex, HnswIndex, recall_at_k  # noqa: E402
from xlgen.encoders.retriever import label_matrix  # noqa: E402
from xlgen.encoders.sources import LabelSource, LinearSource, TrainData  # noqa: E402
from xlgen.metrics import TrainCounts, evaluate_predictions, tune_threshold  # noqa: E402

COLUMNS = ("micro_f1", "macro_f1", "p_at_1", "p_at_5", "macro_f1_tail_0", "macro_f1_tail_1", "macro_f1_tail_2_5",
           "macro_f1_tail_gt5")
HIDDEN = {
    "reuters21578": ("coffee", "gold", "sugar", "cocoa", "copper", "cotton", "rubber", "livestock"),
    "stackexchange3": ("bread", "cheese", "neuroscience", "diffie-hellman", "chicken", "immunology", "sourdough", "zero-knowledge-proofs"),
    "goemotions": ("gratitude", "remorse", "fear", "pride"),
}


def markdown(rows: list[dict]) -> str:
    head = "| dataset | model | micro-F1 | macro-F1 | P@1 | P@5 | macro 0 | macro 1 | macro 2-5 | macro >5 | train s | tag s |"
    lines = [head, "|" + "---|" * 12]
    for r in rows:
        cells = " | ".join("-" if r.get(c) is None else f"{r[c]:.3f}" for c in COLUMNS)
        t = " | ".join("-" if r.get(c) is None else f"{r[c]:.0f}" for c in ("train_s", "tag_s"))
        lines.append(f"| {r['dataset']} | {r['model']} | {cells} | {t} |")
    return "\n".join(lines)


def hidden_markdown(rows: list[dict]) -> str:
    lines = ["| dataset | label hidden from train, added by name | test documents | recall@10 (label_text) |", "|---|---|---|---|"]
    lines += [f"| {r['dataset']} | {r['label']} | {r['n_test_docs']} | {r['recall_at_10']:.3f} |" for r in rows]
    return "\n".join(lines)


def index_markdown(rows: list[dict]) -> str:
    lines = ["| dataset | train vectors | k | HNSW recall@k vs exact | exact search s | HNSW search s | HNSW build s |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['dataset']} | {r['n_vectors']} | {r['k']} | {r['recall_at_k']:.4f} | {r['exact_search_s']:.1f} | "
              f"{r['hnsw_search_s']:.1f} | {r['build_s']:.1f} |" for r in rows]
    return "\n".join(lines)


def metrics_row(dataset: str, model: str, dev: list[Document], dev_scores: list[dict[str, float]], test: list[Document],
                test_scores: list[dict[str, float]], counts: dict[str, int]) -> dict:
    """Tunes one threshold on dev, cuts test, evaluates."""
    thr, dev_f1 = tune_threshold([d.labels for d in dev], dev_scores, 1)
    pred = [[x for x, _ in cut(s, thr, 1)] for s in test_scores]
    m = evaluate_predictions([d.labels for d in test], pred, test_scores, counts)
    row = {"dataset": dataset, "model": model, "threshold": thr, "dev_micro_f1": dev_f1}
    row.update({c: m.get(c) for c in COLUMNS})
    row.update({k: v for k, v in m.items() if k not in row})
    return row


def source_scores(source: LabelSource, labels: tuple[str, ...], texts: list[str], vecs: np.ndarray,
                  top: int) -> tuple[list[dict[str, float]], float]:
    """One source's top-K scores per document, and the seconds it took."""
    started = time.perf_counter()
    mats = [source.score(texts[i : i + 2048], vecs[i : i + 2048], top) for i in range(0, len(texts), 2048)]
    seconds = time.perf_counter() - started
    out: list[dict[str, float]] = []
    for m in mats:
        out.extend(merge_sources(labels, (source.name,), [m], top).source_scores(source.name))
    return out, seconds


def hidden_label_recall(dataset: str, train: list[Document], test: list[Document], encoder: SentenceEncoder,
                        cache: EmbeddingCache, labels: tuple[str, ...], k: int = 10) -> list[dict]:
    """Hides each label from train, adds it back by name only, and measures recall@k of the label_text
    ranking over its test documents (the other sources cannot know a label they never saw)."""
    rows = []
    for label in labels:
        docs = [d for d in test if label in d.labels]
        if len(docs) < 3:
            continue
        hidden = [replace(d, labels=tuple(x for x in d.labels if x != label)) for d in train]
        hidden = [d for d in hidden if d.labels]
        r = LabelRetriever.fit(hidden, config=RetrieverConfig(sources=("label_text",)), encoder=encoder, cache=cache)
        assert label not in r.labels
        r.add_label(label)
        cands = r.score([d.text for d in docs], top=k)
        found = [label in s for s in cands.source_scores("label_text")]
        rows.append({"dataset": dataset, "label": label, "n_test_docs": len(docs), f"recall_at_{k}": float(np.mean(found)),
                     "n_labels": len(r.labels)})
        print(f"  hidden label {label!r}: recall@{k} {np.mean(found):.3f} over {len(docs)} test documents", flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=["goemotions"])
    p.add_argument("--encoder", default=RetrieverConfig.encoder, help="sentence-transformers directory or hub name")
    p.add_argument("--backend", default="auto", choices=ENCODER_BACKENDS)
    p.add_argument("--top", type=int, default=RetrieverConfig.candidates, help="K: scores kept per source and document")
    p.add_argument("--k-neighbours", type=int, default=RetrieverConfig.k_neighbours)
    p.add_argument("--knn-power", type=float, default=RetrieverConfig.knn_power)
    p.add_argument("--linear-model", default="auto", choices=("auto", "ovr", "tree"))
    p.add_argument("--jobs", type=int, default=1, help="processes / threads fitting the linear models")
    p.add_argument("--no-baseline", action="store_true", help="skip TF-IDF + LR")
    p.add_argument("--baseline-jobs", type=int, default=None, help="processes fitting the baseline's per-label problems")
    p.add_argument("--no-tfidf-only", action="store_true", help="skip the linear model on TF-IDF alone")
    p.add_argument("--hidden", nargs="*", default=None, help="labels to hide and add by name (default: a set per dataset)")
    p.add_argument("--threads", type=int, default=1, help="torch / CTranslate2 threads")
    p.add_argument("--output", default=None, help="JSON path (default: benchmarks/results/retrieval_<datasets>.json)")
    p.add_argument("--merge", nargs="+", default=None, help="only merge these result files into one table")
    args = p.parse_args()
    if args.merge:
        rows, hidden, index = [], [], []
        for f in args.merge:
            data = json.loads(Path(f).read_text())
            rows += data["rows"]
            hidden += data.get("hidden_labels", [])
            index += data.get("index", [])
        out = Path(args.output or ROOT / "benchmarks" / "results" / "retrieval.json")
        out.write_text(json.dumps(stamped({"merged_from": args.merge, "rows": rows, "hidden_labels": hidden, "index": index}), indent=1))
        text = markdown(rows) + "\n\n" + hidden_markdown(hidden) + "\n\n" + index_markdown(index) + "\n"
        out.with_suffix(".md").write_text(text)
        print(text)
        return

    import torch

    torch.set_num_threads(args.threads)
    output = Path(args.output or ROOT / "benchmarks" / "results" / f"retrieval_{'_'.join(args.datasets)}.json")
    encoder = SentenceEncoder.load(EncoderConfig(name=args.encoder, backend=args.backend, threads=args.threads))
    cache = EmbeddingCache()
    config = RetrieverConfig(encoder=args.encoder, candidates=args.top, k_neighbours=args.k_neighbours,
                             knn_power=args.knn_power, linear_model=args.linear_model, jobs=args.jobs)
    rows: list[dict] = []
    hidden_rows: list[dict] = []
    index_rows: list[dict] = []
    for name in args.datasets:
        data = dataset_dir(name)
        train, dev, test = (read_documents(data / f"{s}.jsonl.gz") for s in ("train", "dev", "test"))
        print(f"== {name}: {len(train)} / {len(dev)} / {len(test)} documents; encoder {encoder.name} ({encoder.backend}, "
              f"{encoder.numerics})", flush=True)
        started = time.perf_counter()
        vecs = {s: encoder.encode([d.text for d in docs], cache=cache, progress=True)
                for s, docs in (("train", train), ("dev", dev), ("test", test))}
        embed_s = time.perf_counter() - started
        print(f"  embeddings: {embed_s:.0f}s (with the cache)", flush=True)

        def add(row: dict, embed_s: float = embed_s) -> None:
            row["embed_s"] = embed_s
            rows.append(row)
            print(markdown([row]).splitlines()[-1], flush=True)

        if not args.no_baseline:
            started = time.perf_counter()
            base = tfidf_logreg(train, dev, test, n_jobs=args.baseline_jobs)
            total = time.perf_counter() - started
            row = {"dataset": name, "model": "tfidf+logreg", "threshold": base["threshold"], "dev_micro_f1": base["dev_micro_f1"]}
            row.update({c: base["metrics"].get(c) for c in COLUMNS})
            row.update({"train_s": base["train_s"], "tag_s": None, "dev_and_test_scoring_s": total - base["train_s"]})
            add(row)

        retriever = LabelRetriever.fit(train, config=config, encoder=encoder, cache=cache)
        counts = TrainCounts(retriever.counts, len(train))  # labels from --label-file count 0
        texts = {s: [d.text for d in docs] for s, docs in (("dev", dev), ("test", test))}
        kind = retriever.sources["linear"].kind  # type: ignore[attr-defined]
        if not args.no_tfidf_only:
            started = time.perf_counter()
            lin = LinearSource(replace(config, embedding_weight=0.0))
            lin.fit(TrainData([d.text for d in train], vecs["train"], label_matrix(train, retriever.labels)), retriever.label_vectors)
            fit_s = time.perf_counter() - started
            dev_s, _ = source_scores(lin, retriever.labels, texts["dev"], vecs["dev"], args.top)
            test_s, tag_s = source_scores(lin, retriever.labels, texts["test"], vecs["test"], args.top)
            row = metrics_row(name, f"linear {kind} (tfidf)", dev, dev_s, test, test_s, counts)
            row.update({"train_s": fit_s, "tag_s": tag_s})
            add(row)
            del lin
        for source, model in (("linear", f"linear {kind} (tfidf+encoder)"), ("knn", f"knn (k={config.k_neighbours})"),
                              ("label_text", "label_text (zero-shot)")):
            dev_s, _ = source_scores(retriever.sources[source], retriever.labels, texts["dev"], vecs["dev"], args.top)
            test_s, tag_s = source_scores(retriever.sources[source], retriever.labels, texts["test"], vecs["test"], args.top)
            row = metrics_row(name, model, dev, dev_s, test, test_s, counts)
            row.update({"train_s": retriever.fit_seconds[source], "tag_s": tag_s})
            add(row)

        # HNSW against exact search over the train documents (the kNN source switches above exact_limit)
        k = config.k_neighbours
        started = time.perf_counter()
        hnsw = HnswIndex(vecs["train"], config.hnsw_m, config.hnsw_ef_construction, config.hnsw_ef_search)
        build_s = time.perf_counter() - started
        started = time.perf_counter()
        _, exact_ids = ExactIndex(vecs["train"]).search(vecs["test"], k)
        exact_s = time.perf_counter() - started
        started = time.perf_counter()
        _, hnsw_ids = hnsw.search(vecs["test"], k)
        hnsw_s = time.perf_counter() - started
        index_rows.append({"dataset": name, "n_vectors": len(train), "k": k, "recall_at_k": recall_at_k(exact_ids, hnsw_ids),
                           "hnsw_m": config.hnsw_m, "ef_construction": config.hnsw_ef_construction,
                           "ef_search": config.hnsw_ef_search, "build_s": build_s, "exact_search_s": exact_s,
                           "hnsw_search_s": hnsw_s, "n_queries": len(test)})
        print(f"  HNSW recall@{k} vs exact: {index_rows[-1]['recall_at_k']:.4f} (exact {exact_s:.1f}s, hnsw {hnsw_s:.1f}s)", flush=True)

        hidden_rows += hidden_label_recall(name, train, test, encoder, cache,
                                           tuple(args.hidden) if args.hidden is not None else HIDDEN.get(name, ()))
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(stamped({"args": vars(args), "encoder": {"name": encoder.name, "digest": encoder.digest,
                                              "backend": encoder.backend, "numerics": encoder.numerics},
                                              "rows": rows, "hidden_labels": hidden_rows, "index": index_rows}), indent=1))
    print()
    print(markdown(rows))
    print(f"\nwritten to {output}")


if __name__ == "__main__":
    main()
