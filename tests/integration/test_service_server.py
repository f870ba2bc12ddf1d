"""The service under a real uvicorn on loopback: concurrent requests are merged into batches, and
an acknowledged annotation survives a ``kill -9`` of the server a moment later."""

from __future__ import annotations

import json
import math
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.support import KEY, start_server
from xlgen.service.local import free_port


def test_batching_and_kill9_durability(tiny_model_dir: Path, tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "server.log"
    proc = start_server(tiny_model_dir, tmp_path / "svc", port, log, XLGEN_MAX_WAIT_MS="50", XLGEN_MAX_BATCH_SIZE="64",
                        XLGEN_API_KEY=KEY["X-API-Key"])
    try:
        # 16 concurrent single-text requests: the micro-batcher merges them into fewer model calls
        with ThreadPoolExecutor(16) as pool:
            replies = list(pool.map(lambda i: httpx.post(f"{base}/v1/tag", json={"texts": [f"text number {i}"]}, timeout=60), range(16)))
        assert all(r.status_code == 200 for r in replies)
        metrics = httpx.get(f"{base}/metrics").text
        calls = float(next(line.split()[1] for line in metrics.splitlines() if line.startswith("xlgen_batch_size_count")))
        texts = float(next(line.split()[1] for line in metrics.splitlines() if line.startswith("xlgen_batch_size_sum")))
        assert texts == 16 and calls < 16

        httpx.post(f"{base}/v1/pool", json={"documents": [{"id": "d1", "text": "kept through a crash"}]}, headers=KEY).raise_for_status()
        r = httpx.post(f"{base}/v1/annotations", json={"document_id": "d1", "labels": ["joy", "relief"], "annotator": "a"}, headers=KEY)
        assert r.status_code == 200
        proc.send_signal(signal.SIGKILL)  # a moment after the 2xx
        proc.wait(10)

        proc = start_server(tiny_model_dir, tmp_path / "svc", port, log, XLGEN_API_KEY=KEY["X-API-Key"])
        rows = [json.loads(line) for line in httpx.get(f"{base}/v1/annotations", headers=KEY).text.splitlines()]
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
    """Long texts with 256 full-length samples each, sized on this machine to about six timeouts of work,
    then beam 64: a one-word request sent meanwhile is answered well within the heavy request's own
    timeout, and once the heavy one times out the model thread is idle again (its remaining chunks dropped)."""
    timeout_s = 8.0
    max_texts = 4096
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = start_server(tiny_model_dir, tmp_path / "svc", port, tmp_path / "server.log", XLGEN_REQUEST_TIMEOUT_S=str(timeout_s),
                        XLGEN_MAX_REQUEST_WORK=str(10**12), XLGEN_MAX_WAIT_MS="0", XLGEN_MAX_TEXTS=str(max_texts))
    long_text = ("I can't believe how wonderful and terrible this is at the same time. " * 30)[:2_000]  # cut at 48 tokens
    # temperature 100 samples nearly uniformly, so no sample ends early: every chunk decodes the full
    # max_new_tokens whatever the tiny model learned (at temperature 1 it may emit one label and stop)
    sample_body = {"strategy": "sample", "num_samples": 256, "temperature": 100.0}
    try:
        # the work of one heavy text here, on the backend the server picked (the second call: the first loads what sampling needs)
        for _ in range(2):
            started = time.perf_counter()
            reply = httpx.post(f"{base}/v1/tag", json={"texts": [long_text] * 4, **sample_body}, timeout=120)
            per_text_s = (time.perf_counter() - started) / 4
            assert reply.status_code == 200, reply.text
        n_heavy = max(64, math.ceil(6 * timeout_s / per_text_s))
        if n_heavy > max_texts:
            pytest.skip(f"{max_texts} heavy texts take {max_texts * per_text_s:.1f} s here, too little to outlast a {timeout_s} s timeout")
        for heavy_body, n_texts in ((sample_body, n_heavy), ({"strategy": "beam", "num_beams": 64}, 64)):
            tagged_before = _metric(base, "xlgen_tagged_texts_total")
            with ThreadPoolExecutor(1) as pool:
                started = time.perf_counter()
                heavy = pool.submit(httpx.post, f"{base}/v1/tag", json={"texts": [long_text] * n_texts, **heavy_body}, timeout=120)
                assert _wait_for(lambda: _metric(base, "xlgen_batch_running") == 1, timeout_s), "the heavy request never ran"
                light_started = time.perf_counter()
                light = httpx.post(f"{base}/v1/tag", json={"texts": ["hello"]}, timeout=120)
                light_s = time.perf_counter() - light_started
                heavy_reply = heavy.result()
                heavy_s = time.perf_counter() - started
            assert light.status_code == 200, light.text
            assert light_s < timeout_s, (heavy_body, light_s)
            if heavy_body["strategy"] == "sample":  # far more work than its timeout allows
                assert heavy_reply.status_code == 504 and heavy_s >= timeout_s, (n_texts, per_text_s, heavy_s, heavy_reply.text[:300])
                # idle within a chunk's time: the work left after the timeout is dropped, not run for nobody
                assert _wait_for(lambda: _metric(base, "xlgen_batch_running") == 0 and _metric(base, "xlgen_queue_depth") == 0,
                                 timeout_s), "the model thread kept working after the timeout"
                assert _metric(base, "xlgen_cancelled_chunks_total") >= 1
                assert _metric(base, "xlgen_tagged_texts_total") - tagged_before < n_texts  # the heavy request never finished
            else:
                assert heavy_reply.status_code in (200, 504), heavy_reply.text[:300]
                assert _wait_for(lambda: _metric(base, "xlgen_batch_running") == 0, timeout_s)
    finally:
        proc.kill()
        proc.wait(10)
