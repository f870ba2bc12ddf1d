"""Service storage on SQLite (the default) and on PostgreSQL (127.0.0.1:5432, database ``test``),
each PostgreSQL test in tables of its own prefix, dropped afterwards."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.storage import PoolDocument, Storage


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


@pytest.fixture(params=["sqlite", "postgresql"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    if request.param == "sqlite":
        s = Storage(f"sqlite:///{tmp_path / 'db' / 'xlgen.db'}")
    else:
        s = Storage(postgres_url(), table_prefix=f"t{uuid.uuid4().hex[:10]}_")
    try:
        yield s
    finally:
        s.drop_all()


def test_pool_is_idempotent_by_id(storage: Storage) -> None:
    assert storage.add_documents([PoolDocument("a", "first"), PoolDocument("b", "second")]) == 2
    assert storage.add_documents([PoolDocument("a", "changed"), PoolDocument("c", "third")]) == 1
    assert storage.pool_size() == 3
    assert storage.get_documents(["a", "c", "zz"]) == {"a": "first", "c": "third"}


def test_claims_are_exclusive_until_they_expire(storage: Storage) -> None:
    storage.add_documents([PoolDocument(str(i), f"text {i}") for i in range(5)])
    cid1, got1 = storage.claim(["0", "1", "2"], "ann1", ttl_s=60, limit=2)
    assert got1 == ["0", "1"]
    cid2, got2 = storage.claim(["0", "1", "2", "3"], "ann2", ttl_s=0.05, limit=3)
    assert got2 == ["2", "3"]  # the open claims of ann1 are skipped
    assert {d.id for d in storage.candidates(10)} == {"4"}
    time.sleep(0.1)  # ann2's claims expire
    assert {d.id for d in storage.candidates(10)} == {"2", "3", "4"}
    _, got3 = storage.claim(["2", "3"], "ann3", ttl_s=60, limit=5)
    assert got3 == ["2", "3"]
    assert storage.release_claims(cid1) == 2
    assert {d.id for d in storage.candidates(10)} == {"0", "1", "4"}
    assert cid1 != cid2


def test_annotations_last_write_wins_and_history_keeps_all(storage: Storage) -> None:
    storage.add_documents([PoolDocument("d1", "one"), PoolDocument("d2", "two")])
    storage.claim(["d1"], "ann", ttl_s=60, limit=1)
    storage.annotate("d1", ["x", "y"], 0, "ann")
    second = storage.annotate("d1", ["x"], 0, "ann")
    assert second.writes == 2
    storage.annotate("d1", ["z"], 1, "ann")
    storage.annotate("new", ["q"], 0, "", text="a document not in the pool")
    with pytest.raises(KeyError):
        storage.annotate("missing", ["q"], 0)
    latest = {(a.document_id, a.round): a for a in storage.annotations()}
    assert latest[("d1", 0)].labels == ["x"] and latest[("d1", 0)].text == "one"
    assert latest[("d1", 1)].labels == ["z"]
    assert latest[("new", 0)].text == "a document not in the pool"
    history = [(a.document_id, a.round, a.labels) for a in storage.annotations(history=True)]
    assert history == [("d1", 0, ["x", "y"]), ("d1", 0, ["x"]), ("d1", 1, ["z"]), ("new", 0, ["q"])]
    assert [a.labels for a in storage.annotations(round_=1)] == [["z"]]
    # annotated documents leave the candidates; the claim on d1 was closed by the annotation
    assert {d.id for d in storage.candidates(10)} == {"d2"}
    assert sorted(storage.labelled_documents()) == [("d1", "one", ["z"]), ("new", "a document not in the pool", ["q"])]


def test_jobs_and_meta(storage: Storage) -> None:
    job = storage.create_job({"max_steps": 3}, owner="w1")
    assert storage.get_job(job)["status"] == "queued"  # type: ignore[index]
    storage.update_job(job, status="running", progress={"step": 2})
    assert [j["id"] for j in storage.active_jobs()] == [job]
    storage.update_job(job, status="succeeded", metrics={"dev_micro_f1": 0.5}, swapped=True)
    got = storage.get_job(job)
    assert got is not None and got["metrics"] == {"dev_micro_f1": 0.5} and got["swapped"] is True
    assert storage.active_jobs() == [] and storage.get_job("nope") is None
    assert storage.get_meta("serving_model") is None
    storage.set_meta("serving_model", {"path": "/a", "version": "1"})
    storage.set_meta("serving_model", {"path": "/b", "version": "2"})
    assert storage.get_meta("serving_model") == {"path": "/b", "version": "2"}


def test_sqlite_runs_in_wal_mode(tmp_path: Path) -> None:
    s = Storage(f"sqlite:///{tmp_path / 'x.db'}")
    try:
        with s.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
    finally:
        s.close()
