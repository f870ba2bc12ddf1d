"""Schema-driven fuzzing of the real service: schemathesis generates requests for every operation of
``/schema/openapi.json`` (examples, coverage, fuzzing and stateful phases, deterministic, so a
failure reproduces) and runs every one of its checks on the answers, against a uvicorn server on
loopback with the API key. It must find no failure at all: no 5xx, no undocumented status, no
answer off its schema, no schema-valid request refused and no schema-invalid one accepted, except
the refusals listed in :data:`CONFIG` that no schema can state.

Retraining cannot start (the server has no training data: 409), and ``PUT /v1/model`` cannot swap
in anything (no generated string names a model directory); the test checks the served model is
the same at the end.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from xlgen.service.local import ServerError, free_port, start_local_server

KEY = "fuzz-key"
MAX_EXAMPLES = 20  # per operation and phase: about a thousand requests, under a minute here

# Refusals a schema cannot state, accepted from schema-valid requests (every other check stays as is):
CONFIG = """
[[operations]]
# what a webhook event must carry depends on its action (annotation ids for ANNOTATIONS_DELETED, an
# annotation and its task for ANNOTATION_CREATED): an event without them is a 400 naming the field
include-path = "/webhook"
checks.positive_data_acceptance.expected-statuses = ["2XX", "400", "401", "409"]

[[operations]]
# model_dir must name a model directory on this server: any other string is a 400 naming it
include-path = "/v1/model"
include-method = "PUT"
checks.positive_data_acceptance.expected-statuses = ["2XX", "400", "401", "404", "409"]

[[operations]]
# the strategy must suit the served model (cluster needs a model with label clusters)
include-path = "/v1/al/next-batch"
checks.positive_data_acceptance.expected-statuses = ["2XX", "400", "401", "409"]
"""


def _metric_lines(text: str, name: str) -> list[tuple[str, float]]:
    return [(line.split(" ")[0], float(line.split(" ")[1])) for line in text.splitlines() if line.startswith(name + "{")]


def test_fuzz_finds_no_failure(tiny_model_dir: Path, tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    try:
        proc = start_local_server(tiny_model_dir, tmp_path / "svc", port, tmp_path / "server.log", timeout_s=90,
                                  XLGEN_API_KEY=KEY, XLGEN_THREADS="1", OMP_NUM_THREADS="1", XLGEN_TRAIN_DATA="",
                                  XLGEN_POOL_SCAN="16", XLGEN_MAX_WAIT_MS="0")
    except ServerError as e:
        pytest.fail(str(e))
    try:
        version = httpx.get(f"{base}/v1/model").json()["version"]
        before = dict(_metric_lines(httpx.get(f"{base}/metrics").text, "xlgen_http_requests_total"))  # the readiness polls
        (tmp_path / "schemathesis.toml").write_text(CONFIG)
        started = time.perf_counter()
        run = subprocess.run(
            [sys.executable, "-m", "schemathesis.cli", "--config-file", str(tmp_path / "schemathesis.toml"), "--no-color", "run",
             f"{base}/schema/openapi.json", "--header", f"X-API-Key: {KEY}", "--checks", "all", "--max-examples", str(MAX_EXAMPLES),
             "--generation-deterministic", "--generation-allow-x00", "false", "--workers", "1", "--request-timeout", "60",
             "--report", "json,ndjson", "--report-dir", str(tmp_path / "report")],
            capture_output=True, text=True, timeout=600, cwd=tmp_path)  # its cache folder lands there
        seconds = time.perf_counter() - started
        metrics = httpx.get(f"{base}/metrics").text
        assert httpx.get(f"{base}/v1/model").json()["version"] == version  # nothing was swapped in
    finally:
        proc.kill()
        proc.wait(10)

    report = json.loads(next((tmp_path / "report").glob("*.json")).read_text())
    checks: Counter[str] = Counter()
    for line in next((tmp_path / "report").glob("*.ndjson")).read_text().splitlines():
        event = json.loads(line)
        for results in event.get("ScenarioFinished", {}).get("recorder", {}).get("checks", {}).values():
            checks.update(r["name"] for r in results)
    requests = [(labels, n - before.get(labels, 0)) for labels, n in _metric_lines(metrics, "xlgen_http_requests_total")]
    requests = [(labels, n) for labels, n in requests if n > 0]
    statuses: Counter[str] = Counter()
    for labels, n in requests:
        statuses[labels.split('status="')[1].split('"')[0]] += int(n)
    ops = report["operations"]
    print(f"\nschemathesis {report['schemathesis_version']} in {seconds:.0f} s: {ops['tested']} of {ops['total']} operations, "
          f"{report['test_cases']['generated']} test cases, {sum(statuses.values())} HTTP requests answered "
          f"({', '.join(f'{k}: {v}' for k, v in sorted(statuses.items()))})")
    print(f"{len(checks)} checks, {sum(checks.values())} runs: {', '.join(f'{k} {v}' for k, v in sorted(checks.items()))}")
    phases = ", ".join(f"{name} {phase['status']}" for name, phase in report["phases"].items())
    print(f"phases: {phases}")
    assert report["complete"] and not report["errors"], run.stdout[-4000:]
    assert ops["tested"] == ops["total"] >= 16
    assert not any(s.startswith("5") for s in statuses), [x for x in requests if 'status="5' in x[0]]
    assert report["failures"] == [], run.stdout[-6000:]
    assert run.returncode == 0, run.stdout[-4000:]
    assert len(checks) >= 14 and checks["not_a_server_error"] >= 500
