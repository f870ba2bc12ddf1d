"""The service started the way README.md and ``scripts/main.sh`` start it (``xlgen serve`` with relative
``--model``, ``--train-data`` and ``--work-dir``, the repository root as working directory) retrains to
``succeeded``, from the REST route and from Label Studio's ``/train``. A real server: slow."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.support import RETRAIN_ARGS, fixture, wait_for
from xlgen.service.local import ROOT, free_port


def test_retraining_succeeds_on_a_server_started_as_the_readme_says(tiny_model_dir: Path, tiny_data: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"  # laid out like the repository: runs/goemotions/model, data/goemotions
    shutil.copytree(tiny_model_dir, repo / "runs" / "goemotions" / "model")
    shutil.copytree(tiny_data, repo / "data" / "goemotions")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "XLGEN_RETRAIN_ARGS": RETRAIN_ARGS, "XLGEN_THREADS": "1", "OMP_NUM_THREADS": "1",
           "XLGEN_MODEL_POLL_S": "0", "XLGEN_LOG_LEVEL": "WARNING"}
    env.pop("XLGEN_WORK_DIR", None)
    cmd = [sys.executable, "-m", "xlgen.service.cli", "serve", "--model", "runs/goemotions/model", "--train-data", "data/goemotions",
           "--work-dir", "runs/goemotions/service", "--api-key", "KEY", "--port", str(port)]
    with open(tmp_path / "server.log", "wb") as log:
        server = subprocess.Popen(cmd, cwd=repo, env=env, stdout=log, stderr=subprocess.STDOUT)
    key = {"X-API-Key": "KEY"}
    try:
        def ready() -> bool:
            if server.poll() is not None:
                pytest.fail(f"server exited: {(tmp_path / 'server.log').read_text()[-2000:]}")
            try:
                return httpx.get(f"{base}/health/ready", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(ready, "the server to be ready", 120)
        r = httpx.post(f"{base}/v1/annotations", json={"document_id": "n1", "labels": ["joy"], "text": "what a happy day"}, headers=key)
        assert r.status_code == 200, r.text
        r = httpx.post(f"{base}/v1/retrain", json={"max_steps": 2, "eval_every": 2, "batch_size": 16, "force": True}, headers=key)
        assert r.status_code == 202, r.text

        def ended(job_id: str) -> dict | None:
            job = httpx.get(f"{base}/v1/jobs/{job_id}", headers=key, timeout=10).json()
            return job if job["status"] not in ("queued", "running") else None

        job = wait_for(lambda: ended(r.json()["id"]), "the retraining to end", 300)
        assert job["status"] == "succeeded", job["message"]
        assert job["swapped"] is True and job["progress"]["train_docs"] == {"base": 400, "annotated": 1, "positives": 0, "total": 401}
        work = (repo / "runs" / "goemotions" / "service").resolve()
        assert Path(job["model_dir"]).is_absolute() and Path(job["model_dir"]).is_relative_to(work)
        assert "what a happy day" in (work / "jobs" / job["id"] / "train.jsonl").read_text()
        assert httpx.get(f"{base}/v1/model", headers=key).json()["path"] == job["model_dir"]

        # Label Studio's "start training" (POST /train with its annotations) runs the same way
        r = httpx.post(f"{base}/train", json=fixture("train"), headers=key, timeout=30)
        assert r.status_code == 200 and r.json()["job_status"] == "started" and r.json()["stored"] == 2, r.text
        job = wait_for(lambda: ended(r.json()["job"]), "Label Studio's retraining to end", 300)
        assert job["status"] == "succeeded", job["message"]
        assert json.loads((Path(job["model_dir"]) / "xlgen.json").read_text())["metrics"]["dev_micro_f1"] == job["metrics"]["dev_micro_f1"]
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(10)
