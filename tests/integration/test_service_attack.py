"""The service under a real server on loopback against what an outside client may do without credentials:
hold idle or slow-header connections, open more connections than the process may hold files, and leave a
large Label Studio ``/predict`` call early. Each ends within the server's timeouts and leaves it answering."""

from __future__ import annotations

import contextlib
import resource
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.support import start_server, wait_for
from xlgen.service.local import free_port


def _metric(base: str, name: str) -> float:
    text = httpx.get(f"{base}/metrics", timeout=10).text
    return sum(float(line.split()[1]) for line in text.splitlines() if line.startswith(name + " ") or line.startswith(name + "{"))


def _open(port: int, n: int, first_bytes: bytes = b"") -> list[socket.socket]:
    out = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        if first_bytes:
            s.sendall(first_bytes)
        out.append(s)
    return out


def _closed_by_server(s: socket.socket) -> bool:
    """Whether the server has closed ``s`` (EOF, possibly after a final response such as a 408 or a 503)."""
    s.settimeout(0.01)
    try:
        while data := s.recv(65536):
            del data
        return True
    except (TimeoutError, BlockingIOError):
        return False
    except OSError:
        return True


def test_idle_and_slow_header_connections_are_closed(tiny_model_dir: Path, tmp_path: Path) -> None:
    port = free_port()
    proc = start_server(tiny_model_dir, tmp_path / "svc", port, tmp_path / "server.log", XLGEN_HEADER_TIMEOUT_S="2",
                        XLGEN_KEEP_ALIVE_S="1")
    try:
        idle = _open(port, 50)
        slow = _open(port, 50, b"GET /health/live HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        for i in range(6):  # a header line every half second: slow, never done
            time.sleep(0.5)
            for s in slow:
                with contextlib.suppress(OSError):  # closed by the server already
                    s.sendall(f"X-Slow-{i}: 1\r\n".encode())
        wait_for(lambda: all(_closed_by_server(s) for s in idle + slow), "the server to close idle and slow-header connections", 15)
        assert time.monotonic() - started < 10
        # a kept-alive connection that sends nothing after its response goes too
        kept = socket.create_connection(("127.0.0.1", port), timeout=5)
        kept.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        assert kept.recv(4096).startswith(b"HTTP/1.1 200")
        wait_for(lambda: _closed_by_server(kept), "the keep-alive timeout", 10)
        assert httpx.get(f"http://127.0.0.1:{port}/health/live", timeout=5).status_code == 200
    finally:
        proc.kill()
        proc.wait(10)


def test_more_connections_than_open_files_leave_the_server_answering(tiny_model_dir: Path, tmp_path: Path) -> None:
    """The server's open-file limit lowered to 256, then 400 idle connections: the ones beyond the connection
    cap (below that limit) are answered 503 and closed at once, the health check is answered at once all along
    (a 503 or a closed connection while at the cap, never a hang), the idle ones go after the header timeout,
    and the log stays small (no ``Too many open files`` flood)."""
    port = free_port()
    log = tmp_path / "server.log"
    proc = start_server(tiny_model_dir, tmp_path / "svc", port, log, XLGEN_HEADER_TIMEOUT_S="3")
    base = f"http://127.0.0.1:{port}"
    try:
        resource.prlimit(proc.pid, resource.RLIMIT_NOFILE, (256, 256))
        before = log.stat().st_size
        socks = _open(port, 400)
        time.sleep(0.5)
        answered = []
        for _ in range(5):
            started = time.monotonic()
            try:  # over the cap a 503 or a closed connection at once, never a hang
                answered.append(httpx.get(f"{base}/health/live", timeout=3).status_code)
            except httpx.TimeoutException as e:
                answered.append(type(e).__name__)
            except httpx.TransportError:  # closed at once: while many are refused, some go without their 503
                answered.append("closed")
            assert time.monotonic() - started < 2, answered
            time.sleep(0.2)
        assert set(answered) <= {200, 503, "closed"}, answered
        refused = sum(_closed_by_server(s) for s in socks)
        assert refused >= 400 - 256, refused
        wait_for(lambda: httpx.get(f"{base}/health/live", timeout=3).status_code == 200, "the health check once the idle ones went", 15)
        assert httpx.post(f"{base}/v1/tag", json={"texts": ["hello"]}, timeout=30).status_code == 200
        assert log.stat().st_size - before < 100_000, log.read_text()[-2000:]
        for s in socks:
            s.close()
    finally:
        proc.kill()
        proc.wait(10)


@pytest.mark.parametrize("path", ["/predict", "/v1/tag"])
def test_work_stops_when_the_client_leaves(tiny_model_dir: Path, tmp_path: Path, path: str) -> None:
    """A call of 3,000 texts, its client gone after 1 s: the model thread is idle again soon after, with
    most of the texts never tagged."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = start_server(tiny_model_dir, tmp_path / "svc", port, tmp_path / "server.log", XLGEN_MAX_REQUEST_WORK=str(10**9),
                        XLGEN_MAX_QUEUE="100000", XLGEN_MAX_TEXTS="5000", XLGEN_REQUEST_TIMEOUT_S="300", XLGEN_MAX_WAIT_MS="0")
    texts = [f"this is task number {i}, a text to tag" for i in range(3000)]
    body = {"tasks": [{"id": i, "data": {"text": t}} for i, t in enumerate(texts)]} if path == "/predict" else {"texts": texts}
    try:
        def leave_early() -> None:
            with contextlib.suppress(httpx.TimeoutException):  # the client gives up and closes its connection
                httpx.post(base + path, json=body, timeout=1.0)

        t = threading.Thread(target=leave_early)
        t.start()
        t.join()
        wait_for(lambda: _metric(base, "xlgen_batch_running") == 0 and _metric(base, "xlgen_queue_depth") == 0,
                 "the model thread to go idle after the client left", 10)
        tagged = _metric(base, "xlgen_tagged_texts_total")
        time.sleep(1.0)
        assert _metric(base, "xlgen_tagged_texts_total") == tagged < len(texts)
        assert _metric(base, "xlgen_cancelled_chunks_total") >= 1
    finally:
        proc.kill()
        proc.wait(10)
