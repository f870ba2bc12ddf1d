"""The service against what an outside client may send without credentials, on loopback: what a one-word tag
request costs meanwhile, and whether the tag requests beside the attack fail.

Three phases against one server (``python -m xlgen.service.serve``, as ``xlgen serve`` runs it, default
settings but ``--threads``), each bounded in time:

* **idle**: ``--idle`` connections opened and held for ``--hold-s`` seconds (each reopened as soon as the server
  closes it, so that the server always has about that many), while ``--tags`` one-text tag requests are sent
  from 8 clients: their errors and latency.
* **sampling**: for ``--flood-s`` seconds, 4 clients send the sampling request of the issue (64 texts ``"a"``,
  256 samples at temperature 100) and 2 send the largest sampling request the work budget lets through, back to
  back; one client sends a one-word tag request every 50 ms: its p50, p99 and max latency.
* **predict**: the same with Label Studio ``/predict`` calls: 2 clients send 5,000 short tasks, 2 the most tasks
  the budget lets through, each giving up after 5 s (the client leaves; the server must stop that work).

Before the phases the one-word request is timed alone. The table says the open-file limit (``ulimit -n``) of
this process and of the server (the server raises its soft limit to its hard one)::

    python -m benchmarks.service_attack --model runs/goemotions/model --json benchmarks/results/service_attack_goemotions.json
"""

from __future__ import annotations

import argparse
import json
import resource
import selectors
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.provenance import stamped  # noqa: E402
from xlgen.service.local import ServerError, free_port, start_local_server  # noqa: E402

ATTACK = {"texts": ["a"] * 64, "strategy": "sample", "num_samples": 256, "temperature": 100}
LIGHT = {"texts": ["hello"]}
KEY = "attack-bench-key"


def percentiles(latencies: list[float]) -> dict[str, float]:
    """p50, p99 and max in ms (NaN without samples)."""
    if not latencies:
        return {"p50_ms": float("nan"), "p99_ms": float("nan"), "max_ms": float("nan")}
    ms = np.array(latencies) * 1000
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)), "max_ms": float(ms.max())}


def light_probe(base: str, stop: threading.Event, every_s: float = 0.05) -> dict[str, Any]:
    """One-word tag requests every ``every_s`` until ``stop``: latencies and statuses."""
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    with httpx.Client(base_url=base, timeout=30) as c:
        while not stop.is_set():
            started = time.perf_counter()
            try:
                status = str(c.post("/v1/tag", json=LIGHT).status_code)
            except httpx.HTTPError as e:
                status = type(e).__name__
            if status == "200":
                latencies.append(time.perf_counter() - started)
            statuses[status] = statuses.get(status, 0) + 1
            time.sleep(every_s)
    return {"requests": sum(statuses.values()), "errors": sum(n for s, n in statuses.items() if s != "200"), "statuses": statuses,
            **percentiles(latencies)}


def flood(base: str, stop: threading.Event, path: str, body: dict[str, Any], timeout_s: float, counts: dict[str, int],
          lock: threading.Lock) -> None:
    """Sends ``body`` to ``path`` back to back until ``stop``; a client that waits ``timeout_s`` gives up (leaves)."""
    while not stop.is_set():
        try:
            with httpx.Client(base_url=base, timeout=timeout_s) as c:
                status = str(c.post(path, json=body).status_code)
        except httpx.TimeoutException:
            status = "left"
        except httpx.HTTPError as e:
            status = type(e).__name__
        with lock:
            counts[status] = counts.get(status, 0) + 1


def largest_allowed(base: str, make: Callable[[int], tuple[str, dict[str, Any]]], start: int) -> int:
    """The largest ``n`` (halving from ``start``) whose request ``make(n)`` the work budget does not refuse (400)."""
    n = start
    with httpx.Client(base_url=base, timeout=600) as c:
        while n > 1:
            path, body = make(n)
            if c.post(path, json=body).status_code != 400:
                return n
            n //= 2
    return 1


def flood_phase(base: str, seconds: float, clients: list[tuple[str, dict[str, Any], float]]) -> dict[str, Any]:
    stop = threading.Event()
    counts: dict[str, int] = {}
    lock = threading.Lock()
    threads = [threading.Thread(target=flood, args=(base, stop, path, body, timeout_s, counts, lock), daemon=True)
               for path, body, timeout_s in clients]
    for t in threads:
        t.start()
    time.sleep(0.5)  # the flood is on
    probe: dict[str, Any] = {}
    probe_stop = threading.Event()
    prober = threading.Thread(target=lambda: probe.update(light_probe(base, probe_stop)))
    prober.start()
    time.sleep(seconds)
    probe_stop.set()
    stop.set()
    prober.join()
    for t in threads:
        t.join(60)
    return {"light": probe, "flood": counts}


class IdleHolder:
    """Holds ``n`` idle connections to ``port``, reopening each one the server closes, until stopped."""

    def __init__(self, port: int, n: int) -> None:
        self.port, self.n = port, n
        self.selector = selectors.DefaultSelector()
        self.reopened = 0
        self.failed = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _open(self) -> None:
        try:
            s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        except OSError:
            self.failed += 1
            return
        s.setblocking(False)
        self.selector.register(s, selectors.EVENT_READ)

    def _run(self) -> None:
        for _ in range(self.n):
            self._open()
        while not self.stop.is_set():
            for key, _ in self.selector.select(timeout=0.2):
                s = key.fileobj
                try:
                    data = s.recv(65536)  # type: ignore[union-attr]
                except OSError:
                    data = b""
                if not data:  # closed by the server (its head timeout, or the cap): open another
                    self.selector.unregister(s)
                    s.close()  # type: ignore[union-attr]
                    self.reopened += 1
                    self._open()
        for key in list(self.selector.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]

    @property
    def held(self) -> int:
        return len(self.selector.get_map())


def idle_phase(base: str, port: int, n_idle: int, hold_s: float, n_tags: int) -> dict[str, Any]:
    holder = IdleHolder(port, n_idle)
    holder.thread.start()
    deadline = time.monotonic() + 30
    while holder.held < n_idle * 0.95 and time.monotonic() < deadline:
        time.sleep(0.1)
    held_at_start = holder.held
    started = time.monotonic()
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    lock = threading.Lock()
    sent = 0

    def client() -> None:
        nonlocal sent
        with httpx.Client(base_url=base, timeout=30) as c:
            while True:
                with lock:
                    if sent >= n_tags:
                        return
                    sent += 1
                t0 = time.perf_counter()
                try:
                    status = str(c.post("/v1/tag", json=LIGHT).status_code)
                except httpx.HTTPError as e:
                    status = type(e).__name__
                with lock:
                    statuses[status] = statuses.get(status, 0) + 1
                    if status == "200":
                        latencies.append(time.perf_counter() - t0)
                time.sleep(max(0.0, hold_s / n_tags * 8 - (time.perf_counter() - t0)))  # spread over the hold

    threads = [threading.Thread(target=client) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    time.sleep(max(0.0, hold_s - (time.monotonic() - started)))
    held_at_end = holder.held
    holder.stop.set()
    holder.thread.join(30)
    return {"idle_connections": n_idle, "held_at_start": held_at_start, "held_at_end": held_at_end, "reopened": holder.reopened,
            "open_failures": holder.failed, "hold_s": round(time.monotonic() - started, 1), "tags": sum(statuses.values()),
            "errors": sum(n for s, n in statuses.items() if s != "200"), "statuses": statuses, **percentiles(latencies)}


def metric(base: str, name: str) -> float:
    text = httpx.get(f"{base}/metrics", timeout=30).text
    return sum(float(line.split()[1]) for line in text.splitlines() if line.startswith(name + " ") or line.startswith(name + "{"))


def server_nofile(pid: int) -> str:
    try:
        soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    except (OSError, AttributeError):
        return "?"
    return f"{soft}/{hard}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="model directory")
    p.add_argument("--idle", type=int, default=1000, help="idle connections held in the first phase")
    p.add_argument("--hold-s", type=float, default=30.0, help="seconds they are held")
    p.add_argument("--tags", type=int, default=200, help="tag requests sent meanwhile")
    p.add_argument("--flood-s", type=float, default=20.0, help="seconds of each flood")
    p.add_argument("--threads", type=int, default=1, help="torch threads of the server")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = Path(tempfile.gettempdir()) / "xlgen-attack-server.log"
    env = {"XLGEN_THREADS": str(args.threads), "OMP_NUM_THREADS": str(args.threads), "XLGEN_API_KEY": KEY}
    try:
        proc = start_local_server(args.model, tempfile.mkdtemp(prefix="xlgen-attack-"), port, log, **env)
    except ServerError as e:
        raise SystemExit(str(e)) from None
    results: dict[str, Any] = {"model": args.model, "threads": args.threads,
                               "client_nofile": "/".join(map(str, resource.getrlimit(resource.RLIMIT_NOFILE))),
                               "server_nofile": server_nofile(proc.pid)}
    try:
        with httpx.Client(base_url=base, timeout=60) as c:
            for _ in range(3):
                c.post("/v1/tag", json=LIGHT)  # warm-up
            results["settings"] = {k: c.get("/v1/model").json()["decoding"][k] for k in ("strategy", "num_beams", "max_new_tokens")}
        stop = threading.Event()
        timer = threading.Timer(5.0, stop.set)
        timer.start()
        results["alone"] = light_probe(base, stop)

        results["idle"] = idle_phase(base, port, args.idle, args.hold_s, args.tags)

        n_sample = largest_allowed(base, lambda n: ("/v1/tag", {**ATTACK, "texts": ["a"] * n}), 64)
        results["sampling_allowed_texts"] = n_sample
        cancelled = metric(base, "xlgen_cancelled_chunks_total")
        results["sampling"] = flood_phase(base, args.flood_s, [("/v1/tag", ATTACK, 60.0)] * 4
                                          + [("/v1/tag", {**ATTACK, "texts": ["a"] * n_sample}, 60.0)] * 2)
        results["sampling"]["cancelled_chunks"] = metric(base, "xlgen_cancelled_chunks_total") - cancelled

        def predict(n: int) -> tuple[str, dict[str, Any]]:
            return "/predict", {"tasks": [{"id": i, "data": {"text": f"short task {i}"}} for i in range(n)]}

        n_tasks = largest_allowed(base, predict, 4096)
        results["predict_allowed_tasks"] = n_tasks
        cancelled = metric(base, "xlgen_cancelled_chunks_total")
        results["predict"] = flood_phase(base, args.flood_s, [(*predict(5000), 5.0)] * 2 + [(*predict(n_tasks), 5.0)] * 2)
        results["predict"]["cancelled_chunks"] = metric(base, "xlgen_cancelled_chunks_total") - cancelled
        results["log_bytes"] = log.stat().st_size
    finally:
        proc.terminate()
        proc.wait(30)

    idle = results["idle"]
    print(f"\nmodel {args.model} ({results['settings']}), server torch threads {args.threads}; open-file limit (ulimit -n) "
          f"soft/hard: client {results['client_nofile']}, server {results['server_nofile']}\n")
    print("| phase | what the attacker does | one-word tags | errors | p50 ms | p99 ms | max ms |")
    print("|---|---|---|---|---|---|---|")
    a = results["alone"]
    print(f"| alone | nothing | {a['requests']} | {a['errors']} | {a['p50_ms']:.0f} | {a['p99_ms']:.0f} | {a['max_ms']:.0f} |")
    print(f"| idle | {idle['idle_connections']} idle connections held {idle['hold_s']} s ({idle['held_at_start']} open at start, "
          f"{idle['held_at_end']} at the end, {idle['reopened']} reopened after the server closed them) | {idle['tags']} | "
          f"{idle['errors']} | {idle['p50_ms']:.0f} | {idle['p99_ms']:.0f} | {idle['max_ms']:.0f} |")
    for name, what in (("sampling", f"64 x 'a' sampled 256 times at temperature 100 (4 clients) and the largest allowed "
                                    f"({results['sampling_allowed_texts']} texts, 2 clients)"),
                       ("predict", f"/predict of 5,000 tasks (2 clients) and of the most allowed ({results['predict_allowed_tasks']} "
                                   "tasks, 2 clients), each leaving after 5 s")):
        r = results[name]
        light = r["light"]
        print(f"| {name} | {what}; answers {r['flood']}, chunks stopped {r['cancelled_chunks']:.0f} | {light['requests']} | "
              f"{light['errors']} | {light['p50_ms']:.0f} | {light['p99_ms']:.0f} | {light['max_ms']:.0f} |")
    print(f"\nserver log: {results['log_bytes']:,} bytes")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(stamped(results, [__file__, *(sys.argv[1:] if argv is None else argv)]), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
