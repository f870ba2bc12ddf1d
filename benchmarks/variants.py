"""Cluster guidance measured: XLGen base vs BCL vs MCG (and MCG with gold clusters, the oracle),
next to TF-IDF + one-vs-rest logistic regression, on the same splits in the same run.

    python benchmarks/variants.py                                   # reuters21578 and stackexchange3
    python benchmarks/variants.py --datasets reuters21578 --epochs 3 --threads 1
    python benchmarks/variants.py --merge A.json B.json --output variants.json   # one table from split runs

Every model is the CPU default preset trained by ``xlgen.training.train.run`` with the same budget; the
test metrics come from the one evaluator (threshold tuned on dev). Columns: micro/macro-F1, macro-F1
over the test labels seen 0, 1 and 2-5 times in train (the tail), cluster micro-F1 (bcl: its head;
mcg: its first stage). Prints a markdown table and writes benchmarks/results/variants_<datasets>.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.baselines import tfidf_logreg  # noqa: E402
from benchmarks.data_dirs import dataset_dir  # noqa: E402
from benchmarks.provenance import stamped  # noqa: E402
from xlgen.data import find_split, read_documents, write_jsonl  # noqa: E402
from xlgen.evaluation import Evaluator  # noqa: E402
from xlgen.model import XLGenModel  # noqa: E402
from xlgen.training.config import TrainConfig  # noqa: E402
from xlgen.training.train import run  # noqa: E402

COLUMNS = ("micro_f1", "macro_f1", "p_at_1", "macro_f1_tail_0", "macro_f1_tail_1", "macro_f1_tail_2_5", "cluster_micro_f1")
VARIANTS = ("base", "bcl", "mcg")


def markdown(rows: list[dict]) -> str:
    lines = [f"| dataset | model | {' | '.join(COLUMNS)} | train+eval s |", "|" + "---|" * (len(COLUMNS) + 3)]
    for r in rows:
        cells = " | ".join(f"{r[c]:.4f}" if c in r else "-" for c in COLUMNS)
        lines.append(f"| {r['dataset']} | {r['model']} | {cells} | {r['seconds']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=["reuters21578", "stackexchange3"])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    p.add_argument("--preset", default="cpu")
    p.add_argument("--epochs", type=float, default=3.0)
    p.add_argument("--max-input-length", type=int, default=TrainConfig.max_input_length)
    p.add_argument("--n-clusters", type=int, default=None, help="clusters (default: about sqrt of the label count)")
    p.add_argument("--bcl-lambda", type=float, default=TrainConfig.bcl_lambda)
    p.add_argument("--test-limit", type=int, default=None, help="evaluate on the first N test documents (all models alike)")
    p.add_argument("--dev-limit", type=int, default=None, help="tune thresholds on the first N dev documents (all models alike)")
    p.add_argument("--deficit-rate", type=float, default=0.0, help="positive-unlabeled setting: drop this share of train labels")
    p.add_argument("--no-baseline", action="store_true", help="skip TF-IDF + LR (when another process of the same benchmark runs it)")
    p.add_argument("--baseline-only", action="store_true", help="only TF-IDF + LR (when other processes run the variants)")
    p.add_argument("--baseline-jobs", type=int, default=None, help="processes fitting the baseline's per-label problems")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    p.add_argument("--runs-dir", default=str(ROOT / "runs" / "variants"))
    p.add_argument("--output", default=None, help="JSON path (default: benchmarks/results/variants_<datasets>.json)")
    p.add_argument("--merge", nargs="+", default=None, help="only merge the rows of these result files into one table")
    args = p.parse_args()
    if args.merge:
        rows_by_key = {}  # the first row of each (dataset, model): split runs may each repeat the baseline
        for f in args.merge:
            for row in json.loads(Path(f).read_text())["rows"]:
                rows_by_key.setdefault((row["dataset"], row["model"]), row)
        merged = list(rows_by_key.values())
        order = {"tfidf+logreg": 0, "base": 1, "bcl": 2, "mcg": 3, "oracle": 4}
        merged.sort(key=lambda r: (r["dataset"], next((v for k, v in order.items() if r["model"].endswith(k) or k in r["model"]), 9)))
        print(markdown(merged))
        Path(args.output or ROOT / "benchmarks" / "results" / "variants.json").write_text(
            json.dumps(stamped({"merged_from": args.merge, "rows": merged}), indent=1))
        return
    output = Path(args.output or ROOT / "benchmarks" / "results" / f"variants_{'_'.join(args.datasets)}.json")

    rows: list[dict] = []
    for name in args.datasets:
        d = dataset_dir(name)
        train, dev, test = (read_documents(find_split(d, s)) for s in ("train", "dev", "test"))
        test, dev = test[: args.test_limit], dev[: args.dev_limit]
        test_file, dev_file = Path(args.runs_dir) / f"{name}-test.jsonl", Path(args.runs_dir) / f"{name}-dev.jsonl"
        test_file.parent.mkdir(parents=True, exist_ok=True)
        write_jsonl(test, test_file)
        write_jsonl(dev, dev_file)
        if not args.no_baseline:
            started = time.time()
            base = tfidf_logreg(train, dev, test, n_jobs=args.baseline_jobs)
            rows.append({"dataset": name, "model": "tfidf+logreg", "seconds": time.time() - started, **base["metrics"]})
            print(markdown(rows[-1:]), flush=True)
        for variant in [] if args.baseline_only else args.variants:
            cfg = TrainConfig(data=str(d), dev_file=str(dev_file), test_file=str(test_file), output_dir=f"{args.runs_dir}/{name}-{args.preset}-{variant}",
                              preset=args.preset, epochs=args.epochs, max_input_length=args.max_input_length, threads=args.threads,
                              variant=variant, n_clusters=args.n_clusters, bcl_lambda=args.bcl_lambda, deficit_rate=args.deficit_rate,
                              overwrite=True)
            started = time.time()
            metrics = run(cfg).metrics
            row = {k.removeprefix("test_"): v for k, v in metrics.items() if k.startswith("test_")}
            rows.append({"dataset": name, "model": f"xlgen-{args.preset} {variant}", "seconds": time.time() - started, **row})
            print(markdown(rows[-1:]), flush=True)
            if variant == "mcg":
                started = time.time()
                model = XLGenModel.load(Path(cfg.output_dir) / "model")
                oracle = Evaluator(test, oracle_clusters=True)(model)
                rows.append({"dataset": name, "model": f"xlgen-{args.preset} mcg, gold clusters (oracle)",
                             "seconds": time.time() - started, **oracle})
                print(markdown(rows[-1:]), flush=True)
            output.parent.mkdir(parents=True, exist_ok=True)
            output.write_text(json.dumps(stamped({"args": vars(args), "rows": rows}), indent=1))
    print(markdown(rows))
    output.write_text(json.dumps(stamped({"args": vars(args), "rows": rows}), indent=1))


if __name__ == "__main__":
    main()
