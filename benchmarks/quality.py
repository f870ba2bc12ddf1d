"""Quality of the CPU default against TF-IDF + logistic regression, measured side by side.

    python benchmarks/quality.py                       # goemotions and reuters21578
    python benchmarks/quality.py --datasets goemotions --epochs 1

Prints a table and writes benchmarks/results/quality.json.
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
from benchmarks.datasets import dataset_dir  # noqa: E402
from training.config import TrainConfig  # noqa: E402
from training.train import run  # noqa: E402
from xlgen.data import find_split, read_documents  # noqa: E402

COLUMNS = ("micro_f1", "macro_f1", "p_at_1", "macro_f1_tail_0", "macro_f1_tail_1", "macro_f1_tail_2_5")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=["goemotions", "reuters21578"])
    p.add_argument("--preset", default="cpu")
    p.add_argument("--epochs", type=float, default=TrainConfig.epochs)
    p.add_argument("--max-input-length", type=int, default=TrainConfig.max_input_length)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    p.add_argument("--runs-dir", default=str(ROOT / "runs" / "bench"))
    p.add_argument("--skip-model", action="store_true", help="only the baseline")
    p.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "quality.json"))
    args = p.parse_args()

    rows = []
    for name in args.datasets:
        d = dataset_dir(name)
        train, dev, test = (read_documents(find_split(d, s)) for s in ("train", "dev", "test"))
        base = tfidf_logreg(train, dev, test)
        rows.append({"dataset": name, "model": "tfidf+logreg", "train_s": base["train_s"], **base["metrics"]})
        print(f"{name}: tfidf+logreg micro-F1 {base['metrics']['micro_f1']:.4f} macro-F1 {base['metrics']['macro_f1']:.4f}", flush=True)
        if args.skip_model:
            continue
        cfg = TrainConfig(data=str(d), output_dir=f"{args.runs_dir}/{name}-{args.preset}", preset=args.preset,
                          epochs=args.epochs, max_input_length=args.max_input_length, threads=args.threads, overwrite=True)
        started = time.time()
        metrics = run(cfg).metrics
        elapsed = time.time() - started
        test = {k.removeprefix("test_"): v for k, v in metrics.items() if k.startswith("test_")}
        rows.append({"dataset": name, "model": f"xlgen-{args.preset} (beam 5)", "train_s": elapsed, **test})

    header = f"| dataset | model | {' | '.join(COLUMNS)} | train+eval s |"
    print(header)
    print("|" + "---|" * (len(COLUMNS) + 3))
    for r in rows:
        cells = " | ".join(f"{r[c]:.4f}" if c in r else "-" for c in COLUMNS)
        print(f"| {r['dataset']} | {r['model']} | {cells} | {r['train_s']:.0f} |")
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
