"""Schema migrations of the service database, on SQLite and on PostgreSQL (127.0.0.1:5432, database
``test``, tables of a per-test prefix): a database made before revisions existed upgrades with its
rows intact; the newest revision matches the tables the code queries; several workers opening one
database at once migrate it once."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    inspect,
    select,
)

from tests.support import postgres_url
from xlgen.service import migrations
from xlgen.service.storage import Storage


def legacy_tables(metadata: MetaData, prefix: str) -> dict[str, Table]:
    """The tables as ``service/storage.py`` created them (``metadata.create_all``) before revisions existed."""
    return {
        "documents": Table(prefix + "documents", metadata, Column("id", String(256), primary_key=True),
                           Column("text", Text, nullable=False), Column("added_at", Float, nullable=False)),
        "annotations": Table(prefix + "annotations", metadata, Column("document_id", String(256), primary_key=True),
                             Column("round", Integer, primary_key=True), Column("labels", JSON, nullable=False),
                             Column("annotator", String(256), nullable=False, default=""), Column("updated_at", Float, nullable=False),
                             Column("writes", Integer, nullable=False, default=1)),
        "history": Table(prefix + "annotation_history", metadata, Column("seq", Integer, primary_key=True, autoincrement=True),
                         Column("document_id", String(256), nullable=False, index=True), Column("round", Integer, nullable=False),
                         Column("labels", JSON, nullable=False), Column("annotator", String(256), nullable=False, default=""),
                         Column("created_at", Float, nullable=False)),
        "claims": Table(prefix + "claims", metadata, Column("document_id", String(256), primary_key=True),
                        Column("claim_id", String(64), nullable=False), Column("annotator", String(256), nullable=False, default=""),
                        Column("expires_at", Float, nullable=False)),
        "jobs": Table(prefix + "jobs", metadata, Column("id", String(64), primary_key=True), Column("status", String(32), nullable=False),
                      Column("created_at", Float, nullable=False), Column("updated_at", Float, nullable=False),
                      Column("params", JSON, nullable=False), Column("progress", JSON, nullable=False),
                      Column("metrics", JSON, nullable=False), Column("model_dir", Text, nullable=False, default=""),
                      Column("swapped", Boolean, nullable=False, default=False), Column("message", Text, nullable=False, default=""),
                      Column("owner", String(64), nullable=False, default="")),
        "meta": Table(prefix + "meta", metadata, Column("key", String(64), primary_key=True), Column("value", JSON, nullable=False)),
    }


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """``(url, table prefix)``; the prefix's tables are dropped afterwards."""
    if request.param == "sqlite":
        url, prefix = f"sqlite:///{tmp_path / 'xlgen.db'}", "xlgen_"
    else:
        url, prefix = postgres_url().replace("postgresql://", "postgresql+psycopg://"), f"t{uuid.uuid4().hex[:10]}_"
    yield url, prefix
    engine = create_engine(url)
    meta = MetaData()
    meta.reflect(engine)
    meta.drop_all(engine, tables=[t for name, t in meta.tables.items() if name.startswith(prefix)])
    engine.dispose()


def test_upgrade_keeps_the_rows_of_a_database_made_before_revisions(database: tuple[str, str]) -> None:
    url, prefix = database
    engine = create_engine(url)
    meta = MetaData()
    old = legacy_tables(meta, prefix)
    meta.create_all(engine)
    now = time.time()
    with engine.begin() as conn:
        conn.execute(old["documents"].insert(), [{"id": "d1", "text": "kept", "added_at": now}, {"id": "d2", "text": "pool", "added_at": now}])
        conn.execute(old["annotations"].insert().values(document_id="d1", round=0, labels=["joy"], annotator="a", updated_at=now, writes=2))
        conn.execute(old["history"].insert(), [{"document_id": "d1", "round": 0, "labels": ["joy", "love"], "annotator": "a", "created_at": now},
                                               {"document_id": "d1", "round": 0, "labels": ["joy"], "annotator": "a", "created_at": now}])
        conn.execute(old["claims"].insert().values(document_id="d2", claim_id="c1", annotator="b", expires_at=now + 600))
        conn.execute(old["jobs"].insert().values(id="j1", status="succeeded", created_at=now, updated_at=now, params={"max_steps": 2},
                                                 progress={}, metrics={"dev_micro_f1": 0.5}, model_dir="/m", swapped=True, message="ok",
                                                 owner="w"))
        conn.execute(old["meta"].insert().values(key="serving_model", value={"path": "/m", "version": "v1"}))
    engine.dispose()

    storage = Storage(url, prefix)
    try:
        assert storage.schema_version == migrations.head_revision() == "0006"
        (ann,) = storage.annotations()
        assert (ann.document_id, ann.labels, ann.annotator, ann.writes, ann.text, ann.external_id) == ("d1", ["joy"], "a", 2, "kept", None)
        assert [(a.labels, a.action) for a in storage.annotations(history=True)] == [(["joy", "love"], "write"), (["joy"], "write")]
        assert storage.claims_held("b") == 1 and storage.get_meta("serving_model") == {"path": "/m", "version": "v1"}
        job = storage.get_job("j1")
        assert job is not None and (job["status"], job["metrics"], job["swapped"], job["host"], job["pid"], job["cancel_requested"]) == \
            ("succeeded", {"dev_micro_f1": 0.5}, True, "", None, False)
        # the new columns and table work on the upgraded database
        storage.annotate("d2", ["anger"], 0, "b", external_id="labelstudio:7")
        assert storage.delete_external(["labelstudio:7"]) == [("d2", 0)]
        new = storage.create_job({}, owner="w2", host="h", server="1:2")
        assert storage.lock_holder() == new and storage.finish_job(new, "cancelled")
        assert Storage(url, prefix).schema_version == "0006"  # opening again changes nothing
    finally:
        storage.drop_all()


def test_the_newest_revision_matches_the_tables_the_code_queries(database: tuple[str, str]) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    url, prefix = database
    storage = Storage(url, prefix)
    try:
        with storage.engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"version_table": prefix + migrations.VERSION_TABLE})
            diffs = [d for d in compare_metadata(context, storage.metadata)
                     if not (isinstance(d, tuple) and d[0] == "remove_table" and not d[1].name.startswith(prefix))]
        assert diffs == []
        tables = set(inspect(storage.engine).get_table_names())
        assert {prefix + n for n in ("documents", "annotations", "annotation_history", "claims", "jobs", "meta", "locks",
                                     "alembic_version")} <= tables
    finally:
        storage.drop_all()


def test_workers_opening_a_new_database_at_once_migrate_it_once(database: tuple[str, str]) -> None:
    url, prefix = database
    with ThreadPoolExecutor(4) as pool:
        opened = list(pool.map(lambda _: Storage(url, prefix), range(4)))
    try:
        assert {s.schema_version for s in opened} == {"0006"}
        with opened[0].engine.connect() as conn:
            version = Table(prefix + migrations.VERSION_TABLE, MetaData(), autoload_with=conn)
            assert conn.execute(select(version)).all() == [("0006",)]
    finally:
        for s in opened[1:]:
            s.close()
        opened[0].drop_all()
