"""Service storage on SQLite (the default) and on PostgreSQL (127.0.0.1:5432, database ``test``),
each PostgreSQL test in tables of its own prefix, dropped afterwards."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import postgres_url
from xlgen.service.storage import JobLocked, PoolDocument, Storage


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
    storage.finish_job(job, "succeeded", metrics={"dev_micro_f1": 0.5}, swapped=True)
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


def test_labels_are_stored_trimmed_and_an_empty_one_is_refused(storage: Storage) -> None:
    ann = storage.annotate("d", ["  joy ", "joy", "love\n"], 0, text="a text")
    assert ann.labels == ["joy", "love"]
    assert [a.labels for a in storage.annotations()] == [["joy", "love"]]
    with pytest.raises(ValueError, match=r"labels\[1\]"):
        storage.annotate("d", ["joy", " \t"], 0)
    assert [a.labels for a in storage.annotations(history=True)] == [["joy", "love"]]  # nothing written


def test_claims_are_capped_per_annotator(storage: Storage) -> None:
    storage.add_documents([PoolDocument(str(i), f"text {i}") for i in range(10)])
    ids = [str(i) for i in range(10)]
    cid, got = storage.claim(ids, "ann", ttl_s=60, limit=1000, max_held=3)
    assert got == ["0", "1", "2"] and storage.claims_held("ann") == 3
    assert storage.claim(ids, "ann", ttl_s=60, limit=5, max_held=3)[1] == []  # the cap counts what is held already
    assert storage.claim(ids, "", ttl_s=60, limit=1000, max_held=3)[1] == ["3", "4", "5"]  # anonymous: the annotator ""
    assert storage.release_claims(annotator="ann", document_ids=["1"]) == 1
    assert storage.claim(ids, "ann", ttl_s=60, limit=5, max_held=3)[1] == ["1"]
    assert storage.release_claims(cid) == 2  # "0" and "2"; "1" was claimed again under a new claim id
    storage.annotate("1", ["x"], 0)  # annotating frees the claim
    assert storage.claims_held("ann") == 0
    with pytest.raises(ValueError):
        storage.release_claims()


def test_deleting_an_external_annotation_falls_back_and_is_recorded(storage: Storage) -> None:
    storage.annotate("d", ["a"], 0, "u1", text="one", external_id="labelstudio:1")
    storage.annotate("d", ["b"], 0, "u2", external_id="labelstudio:2")
    storage.annotate("d", ["b", "c"], 0, "u2", external_id="labelstudio:2")  # an update of annotation 2
    storage.annotate("e", ["z"], 0, "u1", text="two", external_id="labelstudio:3")
    assert storage.delete_external(["labelstudio:2"]) == [("d", 0)]
    current = {a.document_id: a for a in storage.annotations()}
    assert current["d"].labels == ["a"] and current["d"].external_id == "labelstudio:1"  # annotation 1 holds again
    assert storage.delete_external(["labelstudio:2", "labelstudio:404"]) == []  # twice, or unknown: nothing
    assert storage.delete_external(["labelstudio:1"]) == [("d", 0)]
    assert [a.document_id for a in storage.annotations()] == ["e"]
    assert sorted(storage.labelled_documents()) == [("e", "two", ["z"])]
    history = [(a.document_id, a.action, a.external_id) for a in storage.annotations(history=True)]
    assert history[-2:] == [("d", "delete", "labelstudio:2"), ("d", "delete", "labelstudio:1")]
    # the same labels again from the same annotation write nothing when asked so
    before = len(list(storage.annotations(history=True)))
    storage.annotate("e", ["z"], 0, "u1", external_id="labelstudio:3", if_changed=True)
    assert len(list(storage.annotations(history=True))) == before


def test_one_job_at_a_time_through_the_lock(storage: Storage) -> None:
    job = storage.create_job({}, owner="w1", host="h", server="1:2")
    assert storage.lock_holder() == job
    with pytest.raises(JobLocked) as err:
        storage.create_job({}, owner="w2")
    assert err.value.job_id == job and len(storage.active_jobs()) == 1
    record = storage.heartbeat(job, status="running", pid=123, pgid=123, proc_start="99")
    assert record is not None and (record["status"], record["pgid"], record["host"], record["server"]) == ("running", 123, "h", "1:2")
    assert storage.request_cancel(job) and storage.get_job(job)["cancel_requested"] is True  # type: ignore[index]
    assert storage.finish_job(job, "cancelled", message="stop")
    assert not storage.finish_job(job, "failed")  # the first end wins
    got = storage.get_job(job)
    assert got is not None and got["status"] == "cancelled" and got["finished_at"] is not None
    assert storage.lock_holder() is None and storage.heartbeat(job) is None and not storage.request_cancel(job)
    second = storage.create_job({}, owner="w2")
    assert storage.lock_holder() == second
    assert not storage.release_lock(job) and storage.release_lock(second)  # only its holder releases it
    with pytest.raises(ValueError):
        storage.finish_job(second, "running")
