"""Retraining jobs with real trainer processes: a ``kill -9`` of the server leaves no trainer behind and the
restarted server ends the job; a trainer that outlived its server is killed on restart; one training
runs at a time across servers; ``DELETE /v1/jobs/{id}`` cancels. Real servers and subprocesses: slow."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx

from tests.support import KEY, RETRAIN_ARGS, running, running_job, settings_for, start_server, wait_for
from xlgen.service import trainer_process
from xlgen.service.jobs import RetrainManager
from xlgen.service.local import free_port
from xlgen.service.storage import Storage

SLOW_TRAINING = {"max_steps": 100_000, "eval_every": 0, "batch_size": 16}






def test_kill9_during_retraining_leaves_no_trainer_and_the_restart_ends_the_job(
        tiny_model_dir: Path, tiny_data: Path, tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "server.log"
    env = {"XLGEN_TRAIN_DATA": str(tiny_data), "XLGEN_RETRAIN_ARGS": RETRAIN_ARGS, "XLGEN_API_KEY": KEY["X-API-Key"]}
    proc = start_server(tiny_model_dir, tmp_path / "svc", port, log, **env)
    try:
        r = httpx.post(f"{base}/v1/retrain", json=SLOW_TRAINING, headers=KEY, timeout=30)
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        job = running_job(lambda p: httpx.get(base + p, headers=KEY, timeout=10), job_id)
        pgid = job["pgid"]
        assert job["pid"] == pgid and job["host"] == trainer_process.HOST and trainer_process.group_members(pgid)
        r = httpx.post(f"{base}/v1/retrain", json={}, headers=KEY, timeout=30)
        assert r.status_code == 409 and r.json()["extra"] == [{"key": "job_id", "message": job_id}]  # never a second beside it

        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        wait_for(lambda: not trainer_process.group_members(pgid), f"trainer group {pgid} to die with its server", 30)

        proc = start_server(tiny_model_dir, tmp_path / "svc", port, log, **env)
        job = httpx.get(f"{base}/v1/jobs/{job_id}", headers=KEY, timeout=10).json()
        assert job["status"] == "failed" and "server running this job stopped" in job["message"] and job["finished_at"]

        r = httpx.post(f"{base}/v1/retrain", json=SLOW_TRAINING, headers=KEY, timeout=30)  # the lock went with the dead job
        assert r.status_code == 202, r.text
        second = running_job(lambda p: httpx.get(base + p, headers=KEY, timeout=10), r.json()["id"])
        r = httpx.delete(f"{base}/v1/jobs/{second['id']}", headers=KEY, timeout=60)
        assert r.status_code == 200 and r.json()["status"] == "cancelled", r.text
        assert not trainer_process.group_members(second["pgid"])
        assert httpx.delete(f"{base}/v1/jobs/{second['id']}", headers=KEY, timeout=60).status_code == 409  # it has ended
        assert httpx.delete(f"{base}/v1/jobs/nope", headers=KEY, timeout=60).status_code == 404
    finally:
        proc.kill()
        proc.wait(10)


def _group() -> subprocess.Popen:
    """A process group of two sleeping processes (a leader and its child), standing in for a trainer."""
    return subprocess.Popen(["sh", "-c", "sleep 300 & exec sleep 300"], process_group=0)


def test_a_trainer_that_outlived_its_server_is_killed_on_restart(tmp_path: Path) -> None:
    storage = Storage(f"sqlite:///{tmp_path / 'db' / 'xlgen.db'}")
    orphan, foreign = _group(), _group()
    try:
        wait_for(lambda: len(trainer_process.group_members(orphan.pid)) == 2, "the stand-in trainer's two processes")
        # a running job whose server (a pid that no longer runs) died without taking its trainer along
        job = storage.create_job({}, owner="dead", host=trainer_process.HOST, server="999999999:1")
        storage.heartbeat(job, status="running", pid=orphan.pid, pgid=orphan.pid,
                          proc_start=trainer_process.start_time(orphan.pid), started_at=time.time())

        async def install(path: str) -> str:
            return path

        manager = RetrainManager(storage, tmp_path / "svc", "", "", serving_f1=lambda: 0.0, install=install)
        assert manager.recover() == [job]
        assert not trainer_process.group_members(orphan.pid)
        record = storage.get_job(job)
        assert record is not None and record["status"] == "failed" and storage.lock_holder() is None

        # a record whose pid now names another process (its start time differs): that process is left alone
        other = storage.create_job({}, owner="dead", host=trainer_process.HOST, server="999999999:1")
        storage.heartbeat(other, status="running", pid=foreign.pid, pgid=foreign.pid, proc_start="1")
        assert manager.recover() == [other]
        assert len(trainer_process.group_members(foreign.pid)) == 2
        # a job of a live server (this process, another worker) is not touched
        live = storage.create_job({}, owner="alive", host=trainer_process.HOST, server=trainer_process.identity())
        assert manager.recover() == [] and storage.lock_holder() == live
    finally:
        for p in (orphan, foreign):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait(10)
        storage.close()


def test_the_trainer_dies_with_its_parent(tmp_path: Path) -> None:
    parent = subprocess.Popen([sys.executable, "-c", textwrap.dedent("""
        import subprocess, sys, time
        from xlgen.service import trainer_process
        child = subprocess.Popen(trainer_process.wrap(["sleep", "300"]), process_group=0)
        print(child.pid, flush=True)
        time.sleep(300)
    """)], stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[2])
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        # the wrapper has exec'ed the command (its own command line also names "sleep", after "--")
        wait_for(lambda: trainer_process.start_time(child) is not None
                 and Path(f"/proc/{child}/cmdline").read_text().split("\0")[0] == "sleep", "the wrapped command to run")
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        wait_for(lambda: not trainer_process.group_members(child), "the child to die with its parent", 30)
    finally:
        parent.kill()
        parent.wait(10)
    # a wrapper whose parent is not the one it was told about exits at once instead of running the command
    r = subprocess.run([sys.executable, "-m", "xlgen.service.trainer_process", "--parent", "1", "--", "/bin/echo", "ran"],
                       capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2], timeout=60)
    assert r.returncode == 1 and "ran" not in r.stdout


def test_one_training_across_servers_and_a_cancel_from_another(tiny_model_dir: Path, tiny_data: Path, tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'shared.db'}"
    with running(settings_for(tiny_model_dir, tmp_path / "a", db_url=db, train_data=str(tiny_data))) as a, \
            running(settings_for(tiny_model_dir, tmp_path / "b", db_url=db, train_data=str(tiny_data))) as b:
        r = a.post("/v1/retrain", json=SLOW_TRAINING, headers=KEY)
        assert r.status_code == 202, r.text
        job = running_job(lambda path: a.get(path, headers=KEY), r.json()["id"])
        r = b.post("/v1/retrain", json={}, headers=KEY)
        assert r.status_code == 409 and r.json()["extra"] == [{"key": "job_id", "message": job["id"]}]
        assert b.post("/train", json={}, headers=KEY).json()["job"] == job["id"]  # Label Studio gets the running job
        r = b.delete(f"/v1/jobs/{job['id']}", headers=KEY)  # cancelled by the other server
        assert r.status_code == 200 and r.json()["status"] == "cancelled", r.text
        assert not trainer_process.group_members(job["pgid"])
        assert a.get(f"/v1/jobs/{job['id']}", headers=KEY).json()["status"] == "cancelled"
        r = b.post("/v1/retrain", json=SLOW_TRAINING, headers=KEY)
        assert r.status_code == 202, r.text
        second = running_job(lambda path: b.get(path, headers=KEY), r.json()["id"])
    # leaving the servers (a shutdown) kills the trainer and ends its job
    assert not trainer_process.group_members(second["pgid"])
    final = Storage(db).get_job(second["id"])
    assert final is not None and final["status"] == "failed" and "shut down" in final["message"]
