"""Helpers the test folders share: a service app on a tiny model, a server subprocess, PostgreSQL, waiting."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
from litestar.testing import TestClient

from xlgen.service.app import create_app
from xlgen.service.local import ServerError, start_local_server
from xlgen.service.settings import Settings

FIXTURES = Path(__file__).parent / "fixtures" / "labelstudio"


def fixture(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{name}.json").read_text())


T = TypeVar("T")


def wait_for(condition: Callable[[], T], what: str, timeout_s: float = 60.0) -> T:
    """Polls ``condition()`` until it is truthy; fails naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not (value := condition()):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.1)
    return value


def running_job(get: Callable[[str], Any], job_id: str) -> dict:
    """The job's record once it runs (``get``: a GET on the service)."""
    return wait_for(lambda: (j := get(f"/v1/jobs/{job_id}").json())["status"] == "running" and j["pgid"] and j,
                    f"job {job_id} running")


def start_server(model_dir: Path, work_dir: Path, port: int, log: Path, **env: str) -> subprocess.Popen:
    """The service under uvicorn with one torch thread, once ready (else the test fails with its log)."""
    try:
        return start_local_server(model_dir, work_dir, port, log, timeout_s=90, XLGEN_THREADS="1", OMP_NUM_THREADS="1", **env)
    except ServerError as e:
        pytest.fail(str(e))


def postgres_url() -> str:
    """A reachable PostgreSQL URL (``XLGEN_TEST_PG_URL``, else user postgres or root on loopback)."""
    import psycopg

    given = os.environ.get("XLGEN_TEST_PG_URL")
    candidates = [given] if given else [f"postgresql://{u}@127.0.0.1:5432/test" for u in ("postgres", "root")]
    errors = []
    for url in candidates:
        try:
            psycopg.connect(url, connect_timeout=3).close()
            return url
        except psycopg.Error as e:
            errors.append(f"{url}: {e}")
    pytest.fail("PostgreSQL is needed for the service tests: " + "; ".join(errors))


KEY = {"X-API-Key": "k"}


RETRAIN_ARGS = "--preset tiny --max-target-length 16 --max-input-length 48 --threads 1"


@contextmanager
def running(settings: Settings) -> Iterator[TestClient]:
    """A test client of an app with ``settings``, once its model is loaded."""
    with TestClient(create_app(settings), timeout=60) as client:
        deadline = time.time() + 60
        while client.get("/health/ready").status_code != 200:
            assert time.time() < deadline, client.get("/health/ready").json()
            time.sleep(0.05)
        yield client


def settings_for(model_dir: Path, work_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"model": str(model_dir), "work_dir": str(work_dir), "threads": 1, "api_key": "k", "model_poll_s": 0,
                              "max_texts": 8, "max_chars": 500, "max_body_bytes": 20_000, "retrain_args": RETRAIN_ARGS}
    values.update(overrides)
    return Settings.from_env({}, **values)


def pool_docs(tiny_data: Path, n: int = 12) -> list[dict[str, str]]:
    lines = (tiny_data / "test.jsonl").read_text().splitlines()[:n]
    return [{"id": f"p{i}", "text": json.loads(line)["text"]} for i, line in enumerate(lines)]
