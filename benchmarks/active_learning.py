"""Active learning: acquisition strategies against random, on a CPU budget.

    python benchmarks/active_learning.py                                   # goemotions and reuters21578
    python benchmarks/active_learning.py --datasets goemotions --seeds 0 --rounds 2
    python benchmarks/active_learning.py --merge a.json b.json      # one table and plot from earlier runs
    python benchmarks/active_learning.py --learner retriever --strategies random label_entropy --diversity --suffix " (diverse)"

Each dataset runs :func:`xlgen.training.active_learning.simulate` (a fixed 1,000-document pool, 100
random initial labels, 3 rounds of 100, continuing from the last model, 2 seeds), then prints one
table and writes benchmarks/results/active_learning.json, active_learning.md and
active_learning.png (one panel per dataset, three to a row). ``--diversity`` and ``--drop-top`` change
how every strategy of the run picks its batch, random included; ``--suffix`` keeps such runs apart when merged.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import fields, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.data_dirs import dataset_dir  # noqa: E402
from benchmarks.provenance import stamped  # noqa: E402
from xlgen.active.curves import format_selection_table, format_table, plot, summarize  # noqa: E402
from xlgen.training.active_learning import SimulationConfig, simulate  # noqa: E402


def fields_help(name: str) -> str:
    return next(f.metadata["help"] for f in fields(SimulationConfig) if f.name == name)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=["goemotions", "reuters21578"])
    p.add_argument("--strategies", nargs="+", default=["random", "margin", "vote", "beal_adapted", "beal"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    for f in fields(SimulationConfig):
        if f.name in ("rounds", "pool_size", "initial", "batch", "initial_steps", "round_steps", "dev_size", "test_size", "preset",
                      "retrain", "full_data_steps", "pool_sample", "learner", "mc_passes", "encoder_quantization", "members", "lr"):
            kind = {"str": str, "float": float}.get(str(f.type), int)  # the others are counts
            p.add_argument("--" + f.name.replace("_", "-"), dest=f.name, default=f.default, type=kind,
                           help=f.metadata["help"], choices=f.metadata.get("choices"))
    p.add_argument("--diversity", action="store_true", help=fields_help("diversity") + " (every strategy of the run, random included)")
    p.add_argument("--drop-top", type=float, default=0.0, help=fields_help("drop_top") + " (every strategy of the run)")
    p.add_argument("--runs-dir", default=str(ROOT / "runs" / "al"))
    p.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "active_learning"),
                   help="path prefix of the .json, .md and .png results")
    p.add_argument("--merge", nargs="+", help="skip running: combine the datasets of these earlier result files")
    p.add_argument("--suffix", default="", help="appended to each dataset's name in the results, to keep runs of one dataset "
                   "with other settings apart when merged (e.g. ' (300 scored per round)')")
    args = p.parse_args()

    overrides = {f.name: getattr(args, f.name) for f in fields(SimulationConfig) if hasattr(args, f.name)}
    results: dict[str, dict] = {}
    for path in args.merge or []:
        results.update({k: v for k, v in json.loads(Path(path).read_text()).items() if k != "provenance"})
    for name in [] if args.merge else args.datasets:
        cfg = replace(SimulationConfig(), **{**overrides, "data": str(dataset_dir(name)), "output_dir": f"{args.runs_dir}/{name}",
                                            "strategies": tuple(args.strategies), "seeds": tuple(args.seeds)})
        started = time.time()
        key = name + args.suffix
        results[key] = simulate(cfg)
        results[key]["wall_s"] = time.time() - started
        print(format_table(results[key], key), flush=True)
        print(f"{key}: {results[key]['wall_s']:.0f} s", flush=True)

    for result in results.values():  # recomputed, so merged results of older runs get every column
        result["summary"] = summarize(result["curves"], result["full_data"].get("micro_f1"), result["full_data"].get("macro_f1"))
    tables = [format_table(result, name) for name, result in results.items()]
    table = "\n".join([tables[0], *[t.split("\n", 2)[2] for t in tables[1:]]])
    # what each strategy selected: label coverage, overlap with the others, p-value of its AUC against random's
    table += "".join("\n\n" + format_selection_table(result, name) for name, result in results.items() if result.get("selection"))
    print(table)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(stamped(results), indent=1))
    out.with_suffix(".md").write_text(table + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(len(results), 3)  # one panel per dataset (and setting), three to a row
    rows = -(-len(results) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6 * cols, 4 * rows), squeeze=False)
    for ax, (name, result) in zip(axes.flat, results.items(), strict=False):  # the grid may have spare panels
        plot(result, out.with_suffix(".png"), title=name, ax=ax)
    for ax in list(axes.flat)[len(results):]:
        ax.set_visible(False)
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=120)


if __name__ == "__main__":
    main()
