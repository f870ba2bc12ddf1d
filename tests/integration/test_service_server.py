"""The service under a real uvicorn on loopback: concurrent requests are merged into batches, and
an acknowledged annotation survives a ``kill -9`` of the server a moment later."""

from __future__ import annotations

import json
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from service.local import free_port
from tests.support import start_server


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


def _metric(base: str, name: str) -> float:
    text = httpx.get(f"{base}/metrics", timeout=10).text
    return sum(float(line.split()[1]) for line in text.splitlines() if line.startswith(name + " ") or line.startswith(name + "{"))


def _wait_for(check, limit_s: float) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.perf_counter() + limit_s
    while time.perf_counter() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return False


def test_a_heavy_request_neither_stalls_a_light_one_nor_outlives_its_timeout(tiny_model_dir: Path, tmp_path: Path) -> None:
    """64 long texts with 256 full-length samples each (about a minute of work on the tiny model), then beam 64:
    a one-word request sent meanwhile is answered well within the heavy request's own timeout, and
    once the heavy one times out the model thread is idle again (its remaining chunks dropped)."""
    timeout_s = 8.0  # a chunk of the heavy request (one text, 256 samples) takes about 1 s here
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = start_server(tiny_model_dir, tmp_path / "svc", port, tmp_path / "server.log", XLGEN_REQUEST_TIMEOUT_S=str(timeout_s),
                        XLGEN_MAX_REQUEST_WORK="100000000", XLGEN_MAX_WAIT_MS="0")
    long_text = ("I can't believe how wonderful and terrible this is at the same time. " * 150)[:10_000]
    try:
        # temperature 100 samples nearly uniformly, so no sample ends early: every chunk decodes the full
        # max_new_tokens whatever the tiny model learned (at temperature 1 it may emit one label and stop)
        for heavy_body in ({"strategy": "sample", "num_samples": 256, "temperature": 100.0}, {"strategy": "beam", "num_beams": 64}):
            tagged_before = _metric(base, "xlgen_tagged_texts_total")
            with ThreadPoolExecutor(1) as pool:
                started = time.perf_counter()
                heavy = pool.submit(httpx.post, f"{base}/v1/tag", json={"texts": [long_text] * 64, **heavy_body}, timeout=120)
                assert _wait_for(lambda: _metric(base, "xlgen_batch_running") == 1, timeout_s), "the heavy request never ran"
                light_started = time.perf_counter()
                light = httpx.post(f"{base}/v1/tag", json={"texts": ["hello"]}, timeout=120)
                light_s = time.perf_counter() - light_started
                heavy_reply = heavy.result()
                heavy_s = time.perf_counter() - started
            assert light.status_code == 200, light.text
            assert light_s < timeout_s, (heavy_body, light_s)
            if heavy_body["strategy"] == "sample":  # far more work than its timeout allows
                assert heavy_reply.status_code == 504 and heavy_s >= timeout_s, heavy_reply.text
                # idle within a chunk's time: the work left after the timeout is dropped, not run for nobody
                assert _wait_for(lambda: _metric(base, "xlgen_batch_running") == 0 and _metric(base, "xlgen_queue_depth") == 0,
                                 timeout_s), "the model thread kept working after the timeout"
                assert _metric(base, "xlgen_cancelled_chunks_total") >= 1
                assert _metric(base, "xlgen_tagged_texts_total") - tagged_before < 64  # the heavy request never finished
            else:
                assert heavy_reply.status_code in (200, 504), heavy_reply.text
                assert _wait_for(lambda: _metric(base, "xlgen_batch_running") == 0, timeout_s)
    finally:
        proc.kill()
        proc.wait(10)
