"""The service under a real uvicorn on loopback: concurrent requests are merged into batches, and
an acknowledged annotation survives a ``kill -9`` of the server a moment later."""

from __future__ import annotations

import json
import signal
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from service.local import ServerError, free_port, start_local_server


def start_server(model_dir: Path, work_dir: Path, port: int, log: Path, **env: str) -> subprocess.Popen:
    """The service under uvicorn with one torch thread, once ready (else the test fails with its log)."""
    try:
        return start_local_server(model_dir, work_dir, port, log, timeout_s=90, XLGEN_THREADS="1", OMP_NUM_THREADS="1", **env)
    except ServerError as e:
        pytest.fail(str(e))


def test_batching_and_kill9_durability(tiny_model_dir: Path, tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "server.log"
    proc = start_server(tiny_model_dir, tmp_path / "svc", port, log, XLGEN_MAX_WAIT_MS="50", XLGEN_MAX_BATCH_SIZE="64")
    try:
        # 16 concurrent single-text requests: the micro-batcher merges them into fewer model calls
        with ThreadPoolExecutor(16) as pool:
            replies = list(pool.map(lambda i: httpx.post(f"{base}/v1/tag", json={"texts": [f"text number {i}"]}, timeout=60), range(16)))
        assert all(r.status_code == 200 for r in replies)
        metrics = httpx.get(f"{base}/metrics").text
        calls = float(next(line.split()[1] for line in metrics.splitlines() if line.startswith("xlgen_batch_size_count")))
        texts = float(next(line.split()[1] for line in metrics.splitlines() if line.startswith("xlgen_batch_size_sum")))
        assert texts == 16 and calls < 16

        httpx.post(f"{base}/v1/pool", json={"documents": [{"id": "d1", "text": "kept through a crash"}]}).raise_for_status()
        r = httpx.post(f"{base}/v1/annotations", json={"document_id": "d1", "labels": ["joy", "relief"], "annotator": "a"})
        assert r.status_code == 200
        proc.send_signal(signal.SIGKILL)  # a moment after the 2xx
        proc.wait(10)

        proc = start_server(tiny_model_dir, tmp_path / "svc", port, log)
        rows = [json.loads(line) for line in httpx.get(f"{base}/v1/annotations").text.splitlines()]
        assert [(x["id"], x["labels"], x["text"]) for x in rows] == [("d1", ["joy", "relief"], "kept through a crash")]
    finally:
        proc.kill()
        proc.wait(10)
