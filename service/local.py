"""Running the service as a child process on loopback (benchmarks and end-to-end tests)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


class ServerError(RuntimeError):
    """The child server exited or did not become ready; the message ends with its log."""


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_local_server(model_dir: str | Path, work_dir: str | Path, port: int, log: Path, timeout_s: float = 180,
                       **env: str) -> subprocess.Popen:
    """The service as ``xlgen serve`` runs it (``python -m xlgen.service.serve``: uvicorn with the connection
    guards of :mod:`xlgen.service.connections`) on 127.0.0.1:``port``, returned once ``/health/ready``.

    Settings come from the environment (``XLGEN_*``, overridable through ``env``); output goes to ``log``.

    Raises:
        ServerError: If the server exits or is not ready within ``timeout_s``.
    """
    environ = {**os.environ, "XLGEN_MODEL": str(model_dir), "XLGEN_WORK_DIR": str(work_dir), "XLGEN_MODEL_POLL_S": "0",
               "XLGEN_LOG_LEVEL": "WARNING", **env}
    proc = subprocess.Popen(
        [sys.executable, "-m", "xlgen.service.serve", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT, env=environ, stdout=open(log, "ab"), stderr=subprocess.STDOUT,  # noqa: SIM115 - the child owns it
    )
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if proc.poll() is not None:
            raise ServerError(f"server exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise ServerError(f"server not ready within {timeout_s:.0f} s: {log.read_text()[-2000:]}")
