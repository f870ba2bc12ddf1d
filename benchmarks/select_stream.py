"""``xlgen select`` on a pool of a million documents: streamed, sub-sampled, narrowed by the retriever, scored.

    python benchmarks/select_stream.py --model runs/goemotions/model --docs 1000000 --sample 20000 --narrow 50

Builds the pool once (``--pool``, default ``runs/pool_pairs_<docs>.jsonl``: pairs of GoEmotions train texts, one
``{"id", "text"}`` per line), then runs the real command with an empty embedding cache, ``xlgen select`` in a subprocess (``--processes
2``: under ``torch.distributed.run`` with two CPU processes), and reports its wall time, peak memory and the
stages it printed. Writes ``benchmarks/results/select_stream.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.provenance import stamped  # noqa: E402
from xlgen.data import find_split, read_documents  # noqa: E402
from xlgen.encoders.cache import cache_root  # noqa: E402


def build_pool(path: Path, n: int, source: Path) -> None:
    """``n`` lines of ``{"id", "text"}``, each text two of ``source``'s train texts joined (distinct pairs for
    a million lines of GoEmotions, so no embedding is computed once for several documents)."""
    texts = [d.text for d in read_documents(find_split(source, "train"))]
    m = len(texts)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for i in range(n):
            text = f"{texts[i % m]} {texts[(i // m * 7919 + i * 31 + 17) % m]}"
            fh.write(json.dumps({"id": f"p{i}", "text": text}, ensure_ascii=False) + "\n")
    tmp.replace(path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="a retrieval model directory (narrowing needs its retriever)")
    p.add_argument("--docs", type=int, default=1_000_000, help="pool size")
    p.add_argument("--pool", help="pool file (built when missing)")
    p.add_argument("--source", default=str(ROOT / "data" / "goemotions"), help="dataset whose train texts fill the pool")
    p.add_argument("--sample", type=int, default=20_000, help="--pool-sample of xlgen select")
    p.add_argument("--narrow", type=int, default=50, help="--narrow of xlgen select (documents kept per label)")
    p.add_argument("--strategy", default="margin")
    p.add_argument("--batch-size", type=int, default=200)
    p.add_argument("--processes", type=int, default=1, help="processes scoring the pool (torch.distributed.run above 1)")
    p.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of each process")
    p.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "select_stream.json"))
    args = p.parse_args()

    pool = Path(args.pool or ROOT / "runs" / f"pool_pairs_{args.docs}.jsonl")
    if not pool.is_file():
        started = time.perf_counter()
        pool.parent.mkdir(parents=True, exist_ok=True)
        build_pool(pool, args.docs, Path(args.source))
        print(f"built {pool} ({args.docs:,} documents) in {time.perf_counter() - started:.0f} s", flush=True)
    out = ROOT / "runs" / "select_stream_out.jsonl"
    cmd = ["-m", "xlgen.service.cli", "select", "--model", args.model, "--pool", str(pool), "--strategy", args.strategy,
           "--batch-size", str(args.batch_size), "--pool-sample", str(args.sample), "--narrow", str(args.narrow),
           "--output", str(out)]
    launcher = [sys.executable] if args.processes == 1 else \
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(args.processes), "--master_port", "29541"]
    # a fresh embedding cache, so that no document's vector comes from an earlier run (the encoder's one-time
    # CTranslate2 conversion is shared)
    cache = Path(tempfile.mkdtemp(prefix="xlgen-select-cache-"))
    shared = cache_root() / "encoders"
    if shared.is_dir():
        (cache / "encoders").symlink_to(shared)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "XLGEN_CACHE_DIR": str(cache)}
    started = time.perf_counter()
    proc = subprocess.run([*launcher, *cmd], cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    shutil.rmtree(cache, ignore_errors=True)
    if proc.returncode != 0:
        sys.exit(proc.stderr[-3000:])
    summary = [line for line in proc.stderr.splitlines() if "documents ranked by" in line][-1]
    stages = {k: float(v) for k, v in re.findall(r"(\w+_s) ([0-9.]+) s", summary)}
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    row = {"pool": args.docs, "sample": args.sample, "narrow": args.narrow, "strategy": args.strategy,
           "batch_size": args.batch_size, "processes": args.processes, "threads": args.threads, "wall_s": round(wall, 1),
           "peak_rss_mb": round(peak_mb), "selected": len(out.read_text(encoding="utf-8").splitlines()), **stages, "summary": summary,
           "command": " ".join(["xlgen", *cmd[2:]])}
    print(json.dumps(row, indent=1))
    Path(args.output).write_text(json.dumps(stamped({"rows": [row]}), indent=1) + "\n")


if __name__ == "__main__":
    main()
