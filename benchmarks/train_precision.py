"""Training in float32 against bf16 autocast on the CPU: the generator's training loop time and the test
quality of the same recipe, side by side in one run.

    python benchmarks/train_precision.py                       # scripts/main.sh's recipe on goemotions
    python benchmarks/train_precision.py --max-steps 400 --precisions no bf16 no bf16

Each training runs in its own process (``python -m xlgen.training.train``, accelerate's precision is fixed per
process), one after the other in the order given; the sentence encoder's embeddings are cached on disk, so
the first run's embedding makes the later ones' ``train s`` smaller. ``loop s`` is the generator's training
loop alone (``train_log.jsonl``'s ``elapsed_s`` at the last step: forward, backward and optimizer steps),
the part the precision changes. Test rows: the model as trained (fused for the retrieval variant), its
dev-tuned threshold. Writes ``benchmarks/results/train_precision_<dataset>.json`` (``--output``).

bf16 is fast where the CPU has bfloat16 instructions (AMX or AVX512-BF16; ``xlgen.devices.cpu_bf16_native``),
emulated and slower elsewhere.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.data_dirs import dataset_dir  # noqa: E402
from benchmarks.provenance import stamped  # noqa: E402

NAMES = {"no": "float32", "bf16": "bf16 autocast"}
COLUMNS = ("micro_f1", "macro_f1", "p_at_1", "macro_f1_tail_0", "macro_f1_tail_1", "macro_f1_tail_2_5", "macro_f1_tail_gt5")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="goemotions", help="goemotions, reuters21578, stackexchange3 (../shared/data) or a dataset folder")
    p.add_argument("--variant", default="retrieval", help="the model variant (retrieval: scripts/main.sh's fused default)")
    p.add_argument("--max-steps", type=int, default=200, help="generator steps of 64 documents (scripts/main.sh: 200)")
    p.add_argument("--precisions", nargs="+", default=["no", "bf16"], choices=tuple(NAMES), help="runs, in this order")
    p.add_argument("--threads", type=int, default=2, help="torch threads of each training")
    p.add_argument("--encoder-quantization", default="int8", help="the sentence encoder's CTranslate2 weights")
    p.add_argument("--runs-dir", default=str(ROOT / "runs" / "train_precision"))
    p.add_argument("--output", help="JSON file (default: benchmarks/results/train_precision_<dataset>.json)")
    args = p.parse_args()

    from xlgen.devices import cpu_bf16_native

    data = Path(args.dataset) if Path(args.dataset).is_dir() else dataset_dir(args.dataset)
    out = Path(args.output or ROOT / "benchmarks" / "results" / f"train_precision_{data.name}.json")
    rows: list[dict] = []
    for i, precision in enumerate(args.precisions):
        run_dir = Path(args.runs_dir) / f"{data.name}-{precision}-{i}"
        cmd = [sys.executable, "-m", "xlgen.training.train", "--data", str(data), "--output-dir", str(run_dir), "--overwrite",
               "--variant", args.variant, "--max-steps", str(args.max_steps), "--threads", str(args.threads),
               "--encoder-quantization", args.encoder_quantization, "--mixed-precision", precision, "--no-progress"]
        print(" ".join(cmd), flush=True)
        started = time.time()
        subprocess.run(cmd, cwd=ROOT, check=True)
        train_s = time.time() - started
        log = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
        loop_s = max(r["elapsed_s"] for r in log if "elapsed_s" in r)
        steps = max(r["step"] for r in log if "step" in r)
        metrics = json.loads((run_dir / "metrics.json").read_text())
        rows.append({"dataset": data.name, "model": f"{args.variant}, generator trained in {NAMES[precision]}",
                     "precision": precision, "steps": steps, "loop_s": loop_s, "steps_per_s": steps / loop_s,
                     "train_s": train_s, "cpu_bf16_native": cpu_bf16_native(),
                     **{k: metrics.get(f"test_{k}", float("nan")) for k in COLUMNS}})
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(stamped({"args": vars(args), "rows": rows}), indent=1))
    base = next((r for r in rows if r["precision"] == "no"), rows[0])
    print("| dataset | model | micro-F1 | macro-F1 | P@1 | macro 0 | macro 1 | macro 2-5 | macro >5 | loop s | x float32 loop | train s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        cells = " | ".join("-" if r[k] != r[k] else f"{r[k]:.3f}" for k in COLUMNS)  # nan: no label in the bucket
        print(f"| {r['dataset']} | {r['model']} | {cells} | {r['loop_s']:.1f} | {base['loop_s'] / r['loop_s']:.2f} | {r['train_s']:.0f} |")


if __name__ == "__main__":
    main()
