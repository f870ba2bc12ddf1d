"""Load on the tagging endpoint, with micro-batching on and off: throughput and p50/p99 latency.

Starts the service (``uvicorn --factory xlgen.service.app:create_app``) on loopback for each setting,
sends a fixed number of requests from a fixed number of concurrent clients (stopping early at a
fixed duration), and prints a Markdown table::

    python -m benchmarks.service_load --model runs/goemotions/model --requests 400 --concurrency 16

Loopback only; the server is a child process and is stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.provenance import stamped  # noqa: E402
from xlgen.service.local import ServerError, free_port, start_local_server  # noqa: E402

TEXTS = [
    "Thank you so much, this made my day!",
    "I can't believe they did that, it's outrageous.",
    "Not sure what to think about this one.",
    "That is hilarious, I laughed so hard.",
    "I'm worried this will not end well.",
    "Wow, I did not expect that at all!",
    "Sorry for your loss, that is really sad.",
    "Great job everyone, proud of this team.",
]


def start(model: str, port: int, env: dict[str, str], log_path: Path) -> subprocess.Popen:
    try:
        return start_local_server(model, tempfile.mkdtemp(prefix="xlgen-load-"), port, log_path, **env)
    except ServerError as e:
        raise SystemExit(str(e)) from None


async def load(base: str, n_requests: int, concurrency: int, texts_per_request: int, duration: float) -> dict[str, float]:
    latencies: list[float] = []
    errors = 0
    sent = 0
    deadline = time.perf_counter() + duration

    async def client(c: httpx.AsyncClient, k: int) -> None:
        nonlocal errors, sent
        while sent < n_requests and time.perf_counter() < deadline:
            i = sent
            sent += 1
            body = {"texts": [TEXTS[(i + j) % len(TEXTS)] for j in range(texts_per_request)]}
            t0 = time.perf_counter()
            r = await c.post(f"{base}/v1/tag", json=body)
            if r.status_code == 200:
                latencies.append(time.perf_counter() - t0)
            else:
                errors += 1

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=120, limits=limits) as c:
        await c.post(f"{base}/v1/tag", json={"texts": TEXTS[:2]})  # warm-up
        started = time.perf_counter()
        await asyncio.gather(*(client(c, k) for k in range(concurrency)))
        elapsed = time.perf_counter() - started
    lat = np.array(latencies) * 1000
    return {"requests": len(latencies), "errors": errors, "seconds": elapsed, "rps": len(latencies) / elapsed,
            "texts_per_s": len(latencies) * texts_per_request / elapsed,
            "p50_ms": float(np.percentile(lat, 50)) if len(lat) else float("nan"),
            "p99_ms": float(np.percentile(lat, 99)) if len(lat) else float("nan")}


def batch_stats(base: str) -> float:
    """Mean texts per model call, from the server's metrics."""
    lines = httpx.get(f"{base}/metrics").text.splitlines()
    value = {name: float(line.split()[1]) for line in lines for name in ("xlgen_batch_size_sum", "xlgen_batch_size_count")
             if line.startswith(name + " ")}
    return value["xlgen_batch_size_sum"] / max(value["xlgen_batch_size_count"], 1)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="model directory")
    p.add_argument("--requests", type=int, default=400, help="requests per setting")
    p.add_argument("--concurrency", type=int, default=16, help="concurrent clients")
    p.add_argument("--texts-per-request", type=int, default=1)
    p.add_argument("--duration", type=float, default=120.0, help="stop a setting after this many seconds")
    p.add_argument("--threads", type=int, default=1, help="torch threads of the server")
    p.add_argument("--max-batch-size", type=int, default=32)
    p.add_argument("--max-wait-ms", type=float, default=5.0)
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)
    settings = {
        "on": {"XLGEN_MAX_BATCH_SIZE": str(args.max_batch_size), "XLGEN_MAX_WAIT_MS": str(args.max_wait_ms)},
        "off": {"XLGEN_MAX_BATCH_SIZE": "1", "XLGEN_MAX_WAIT_MS": "0"},
    }
    rows = []
    for name, env in settings.items():
        port = free_port()
        env = {**env, "XLGEN_THREADS": str(args.threads), "OMP_NUM_THREADS": str(args.threads), "XLGEN_MAX_QUEUE": "100000"}
        proc = start(args.model, port, env, Path(tempfile.gettempdir()) / "xlgen-load-server.log")
        try:
            base = f"http://127.0.0.1:{port}"
            res = asyncio.run(load(base, args.requests, args.concurrency, args.texts_per_request, args.duration))
            res["mean_batch"] = batch_stats(base)
        finally:
            proc.terminate()
            proc.wait(30)
        rows.append({"batching": name, **res})
    print(f"\n{args.requests} requests x {args.texts_per_request} text(s), {args.concurrency} concurrent clients, "
          f"server torch threads {args.threads}, model {args.model}\n")
    print("| batching | requests | errors | req/s | texts/s | p50 ms | p99 ms | mean texts per model call |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['batching']} | {r['requests']} | {r['errors']} | {r['rps']:.1f} | {r['texts_per_s']:.1f} | "
              f"{r['p50_ms']:.0f} | {r['p99_ms']:.0f} | {r['mean_batch']:.1f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(stamped(rows, [__file__, *(sys.argv[1:] if argv is None else argv)]), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
