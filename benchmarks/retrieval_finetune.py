"""The retriever's optional trained parts measured: a fine-tuned bi-encoder and a cross-encoder re-ranker.

    python benchmarks/retrieval_finetune.py --dataset reuters21578 --threads 2
    python benchmarks/retrieval.py --merge benchmarks/results/retrieval_*.json   # one table with the other rows

* ``label_text (bi-encoder)`` / ``knn (bi-encoder)``: the packaged encoder fine-tuned on the train
  split's (document, label name) pairs with MultipleNegativesRankingLoss and the no-duplicates batch
  sampler (xlgen.training.retriever.fine_tune_bi_encoder), then the label-text and kNN sources over it.
* ``cross-encoder (top R)``: a cross-encoder initialised from the encoder's BERT, trained on gold pairs
  and negatives from the retriever's leak-free candidates (xlgen.training.retriever.train_cross_encoder),
  scoring each test document's R best retriever candidates.

Thresholds tuned on dev, metrics on the full test split, as in benchmarks/retrieval.py. ``train_s`` is
the fine-tuning time (plus, for the bi-encoder rows, nothing else: the sources over it fit in seconds);
``tag_s`` the test split's scoring time including the embedding with the new encoder (bi-encoder) or
the cross-encoder passes. Writes benchmarks/results/retrieval_finetune_<dataset>.json.
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
from benchmarks.retrieval import markdown, metrics_row  # noqa: E402
from xlgen.data import read_documents  # noqa: E402
from xlgen.encoders import EmbeddingCache, EncoderConfig, LabelRetriever, RetrieverConfig, SentenceEncoder  # noqa: E402
from xlgen.encoders.reranker import CrossEncoderReranker  # noqa: E402
from xlgen.training.retriever import BiEncoderConfig, CrossEncoderConfig, fine_tune_bi_encoder, train_cross_encoder  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="reuters21578")
    p.add_argument("--encoder", default=RetrieverConfig.encoder)
    p.add_argument("--top", type=int, default=RetrieverConfig.candidates)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--bi-epochs", type=float, default=1.0)
    p.add_argument("--bi-batch-size", type=int, default=64)
    p.add_argument("--bi-max-seq-length", type=int, default=128)
    p.add_argument("--ce-epochs", type=float, default=1.0)
    p.add_argument("--ce-docs", type=int, default=2000, help="train documents the cross-encoder learns from")
    p.add_argument("--ce-negatives", type=int, default=4)
    p.add_argument("--ce-max-length", type=int, default=192)
    p.add_argument("--rerank-top", type=int, default=10, help="R: candidates per document the cross-encoder scores")
    p.add_argument("--skip", nargs="*", default=[], choices=("bi-encoder", "cross-encoder"))
    p.add_argument("--runs-dir", default=str(ROOT / "runs" / "retrieval-finetune"))
    p.add_argument("--output", default=None)
    args = p.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    name = args.dataset
    output = Path(args.output or ROOT / "benchmarks" / "results" / f"retrieval_finetune_{name}.json")
    runs = Path(args.runs_dir) / name
    data = dataset_dir(name)
    train, dev, test = (read_documents(data / f"{s}.jsonl.gz") for s in ("train", "dev", "test"))
    cache = EmbeddingCache()
    rows: list[dict] = []

    def add(row: dict) -> None:
        rows.append(row)
        print(markdown([row]).splitlines()[-1], flush=True)
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(stamped({"args": vars(args), "rows": rows}), indent=1))

    if "bi-encoder" not in args.skip:
        started = time.perf_counter()
        tuned_dir = fine_tune_bi_encoder(args.encoder, train, BiEncoderConfig(
            output_dir=str(runs / "bi-encoder"), epochs=args.bi_epochs, batch_size=args.bi_batch_size,
            max_seq_length=args.bi_max_seq_length))
        fit_s = time.perf_counter() - started
        print(f"  bi-encoder fine-tuned in {fit_s:.0f}s", flush=True)
        tuned = SentenceEncoder.load(EncoderConfig(name=str(tuned_dir), threads=args.threads))
        retriever = LabelRetriever.fit(train, config=RetrieverConfig(sources=("knn", "label_text"), candidates=args.top),
                                       encoder=tuned, cache=cache, progress=True)
        dev_c = retriever.score([d.text for d in dev])
        started = time.perf_counter()
        test_c = retriever.score([d.text for d in test], progress=True)
        tag_s = time.perf_counter() - started
        for source in ("label_text", "knn"):
            row = metrics_row(name, f"{source} (bi-encoder)", dev, dev_c.source_scores(source), test,
                              test_c.source_scores(source), retriever.counts)
            row.update({"train_s": fit_s + retriever.fit_seconds["embed"] + retriever.fit_seconds[source], "tag_s": tag_s})
            add(row)

    if "cross-encoder" not in args.skip:
        base_encoder = SentenceEncoder.load(EncoderConfig(name=args.encoder, threads=args.threads))
        started = time.perf_counter()
        base = LabelRetriever.fit(train, config=RetrieverConfig(encoder=args.encoder, candidates=args.top), encoder=base_encoder,
                                  cache=cache)
        ce_dir = train_cross_encoder(args.encoder, base, train, CrossEncoderConfig(
            output_dir=str(runs / "cross-encoder"), epochs=args.ce_epochs, max_docs=args.ce_docs,
            negatives=args.ce_negatives, max_length=args.ce_max_length))
        fit_s = time.perf_counter() - started
        print(f"  cross-encoder trained in {fit_s:.0f}s (retriever and its leak-free candidates included)", flush=True)
        reranker = CrossEncoderReranker(ce_dir)
        dev_texts, test_texts = [d.text for d in dev], [d.text for d in test]
        dev_c = reranker.rerank(dev_texts, base.score(dev_texts), base.label_texts, args.rerank_top)
        started = time.perf_counter()
        test_c = reranker.rerank(test_texts, base.score(test_texts), base.label_texts, args.rerank_top, progress=True)
        tag_s = time.perf_counter() - started
        row = metrics_row(name, f"cross-encoder (top {args.rerank_top})", dev, dev_c.source_scores("cross_encoder"), test,
                          test_c.source_scores("cross_encoder"), base.counts)
        row.update({"train_s": fit_s, "tag_s": tag_s})
        add(row)
    print()
    print(markdown(rows))


if __name__ == "__main__":
    main()
