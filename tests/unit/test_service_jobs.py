"""Job bookkeeping without trainers: stale locks and orphaned jobs are cleared, live ones are left alone
(the trainer processes themselves are in test_service_jobs_integration.py)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from xlgen.service import trainer_process
from xlgen.service.jobs import STALE_S, JobConflict, RetrainManager
from xlgen.service.storage import Storage


async def _install(path: str) -> str:
    return path


@pytest.fixture()
def storage(tmp_path: Path) -> Storage:
    return Storage(f"sqlite:///{tmp_path / 'db' / 'xlgen.db'}")


def manager(storage: Storage, tmp_path: Path, train_data: str = "data") -> RetrainManager:
    return RetrainManager(storage, tmp_path / "svc", train_data, "", serving_f1=lambda: 0.0, install=_install)


def test_a_lock_left_by_an_ended_job_is_cleared(storage: Storage, tmp_path: Path) -> None:
    job = storage.create_job({}, owner="old")
    storage.update_job(job, status="failed")  # ended without releasing its lock (a crash between the two)
    assert storage.lock_holder() == job
    assert manager(storage, tmp_path).recover() == [] and storage.lock_holder() is None


def test_orphaned_jobs_are_reaped_and_live_ones_kept(storage: Storage, tmp_path: Path) -> None:
    m = manager(storage, tmp_path)
    remote = storage.create_job({}, owner="r", host="another-host", server="1:1")
    assert m.job_view(remote)["status"] == "queued"  # type: ignore[index]  # its server may live: it beats
    storage.update_job(remote, updated_at=time.time() - STALE_S - 1)
    record = m.job_view(remote)  # no heartbeat for a minute: its server is gone
    assert record is not None and record["status"] == "failed" and storage.lock_holder() is None
    live = storage.create_job({}, owner="w", host=trainer_process.HOST, server=trainer_process.identity())
    storage.update_job(live, updated_at=time.time() - STALE_S - 1)
    assert m.recover() == [] and m.job_view(live)["status"] == "queued"  # type: ignore[index]  # this host's live server
    with pytest.raises(JobConflict) as err:
        asyncio.run(m.start({}))
    assert err.value.job_id == live
    storage.finish_job(live, "failed")
    dead = storage.create_job({}, owner="w", host=trainer_process.HOST, server="999999999:1")
    assert m.recover() == [dead] and storage.lock_holder() is None


def test_retraining_without_base_data_is_refused(storage: Storage, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="XLGEN_TRAIN_DATA"):
        asyncio.run(manager(storage, tmp_path, train_data="").start({}))
