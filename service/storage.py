"""What the service keeps: the document pool, annotations (with history), claims, jobs, and which
model is served, in SQLAlchemy Core tables.

SQLite (a file, in WAL mode with full sync, so an acknowledged write survives a ``kill -9``) is the
default; a PostgreSQL URL lets several replicas share one store. Every table name carries a prefix
so that deployments or test runs can share a database.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Engine,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    and_,
    create_engine,
    delete,
    event,
    exists,
    func,
    select,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError


@dataclass(frozen=True)
class PoolDocument:
    """A pool document.

    Attributes:
        id: Its id.
        text: Its text.
    """

    id: str
    text: str


@dataclass(frozen=True)
class Annotation:
    """The labels of a document in one round (its last write), or one write of the history.

    Attributes:
        document_id: The document.
        round: Active-learning round.
        labels: Labels.
        annotator: Who wrote them (may be empty).
        updated_at: Unix time of the write.
        writes: Writes of this (document, round) so far (1 in history rows).
        text: The document's text, where known.
    """

    document_id: str
    round: int
    labels: list[str]
    annotator: str
    updated_at: float
    writes: int = 1
    text: str | None = None


def _tables(metadata: MetaData, prefix: str) -> dict[str, Table]:
    return {
        "documents": Table(
            prefix + "documents", metadata,
            Column("id", String(256), primary_key=True),
            Column("text", Text, nullable=False),
            Column("added_at", Float, nullable=False),
        ),
        "annotations": Table(
            prefix + "annotations", metadata,
            Column("document_id", String(256), primary_key=True),
            Column("round", Integer, primary_key=True),
            Column("labels", JSON, nullable=False),
            Column("annotator", String(256), nullable=False, default=""),
            Column("updated_at", Float, nullable=False),
            Column("writes", Integer, nullable=False, default=1),
        ),
        "history": Table(
            prefix + "annotation_history", metadata,
            Column("seq", Integer, primary_key=True, autoincrement=True),
            Column("document_id", String(256), nullable=False, index=True),
            Column("round", Integer, nullable=False),
            Column("labels", JSON, nullable=False),
            Column("annotator", String(256), nullable=False, default=""),
            Column("created_at", Float, nullable=False),
        ),
        "claims": Table(
            prefix + "claims", metadata,
            Column("document_id", String(256), primary_key=True),
            Column("claim_id", String(64), nullable=False),
            Column("annotator", String(256), nullable=False, default=""),
            Column("expires_at", Float, nullable=False),
        ),
        "jobs": Table(
            prefix + "jobs", metadata,
            Column("id", String(64), primary_key=True),
            Column("status", String(32), nullable=False),
            Column("created_at", Float, nullable=False),
            Column("updated_at", Float, nullable=False),
            Column("params", JSON, nullable=False),
            Column("progress", JSON, nullable=False),
            Column("metrics", JSON, nullable=False),
            Column("model_dir", Text, nullable=False, default=""),
            Column("swapped", Boolean, nullable=False, default=False),
            Column("message", Text, nullable=False, default=""),
            Column("owner", String(64), nullable=False, default=""),
        ),
        "meta": Table(
            prefix + "meta", metadata,
            Column("key", String(64), primary_key=True),
            Column("value", JSON, nullable=False),
        ),
    }


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cur = dbapi_connection.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")  # a committed transaction is on disk before the 2xx
    cur.execute("PRAGMA busy_timeout=10000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


class Storage:
    """The service's tables behind plain methods; each call is one transaction.

    Args:
        url: SQLAlchemy URL (``sqlite:///FILE`` or ``postgresql+psycopg://...``).
        table_prefix: Prefix of every table name.
    """

    def __init__(self, url: str, table_prefix: str = "xlgen_") -> None:
        parsed = make_url(url)
        if parsed.drivername == "postgresql":  # the installed driver is psycopg 3
            parsed = parsed.set(drivername="postgresql+psycopg")
        self.dialect = parsed.get_backend_name()
        if self.dialect == "sqlite" and parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        self.engine: Engine = create_engine(parsed, pool_pre_ping=self.dialect != "sqlite")
        if self.dialect == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self.metadata = MetaData()
        self.t = _tables(self.metadata, table_prefix)
        try:
            self.metadata.create_all(self.engine)
        except DBAPIError:  # another worker or replica created them at the same moment
            self.metadata.create_all(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    def drop_all(self) -> None:
        """Drops this prefix's tables (test clean-up)."""
        self.metadata.drop_all(self.engine)
        self.engine.dispose()

    def _insert(self, table: Table) -> Any:
        """The dialect's INSERT, which has ``on_conflict_do_*`` (both SQLite and PostgreSQL spell them alike)."""
        from sqlalchemy.dialects import postgresql, sqlite

        if self.dialect not in ("postgresql", "sqlite"):
            raise RuntimeError(f"unsupported database {self.dialect!r}: use SQLite or PostgreSQL")
        return (postgresql.insert if self.dialect == "postgresql" else sqlite.insert)(table)

    # ------------------------------------------------------------------------------------- pool

    def add_documents(self, docs: Sequence[PoolDocument]) -> int:
        """Adds documents; ids already in the pool are left unchanged. Returns how many were new."""
        if not docs:
            return 0
        t = self.t["documents"]
        now = time.time()
        stmt = self._insert(t).on_conflict_do_nothing(index_elements=[t.c.id])
        added = 0
        with self.engine.begin() as conn:
            for d in docs:
                # RETURNING, not rowcount: psycopg reports no rowcount for INSERT .. ON CONFLICT here
                added += conn.execute(stmt.values(id=d.id, text=d.text, added_at=now).returning(t.c.id)).first() is not None
        return added

    def pool_size(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(self.t["documents"])).scalar_one())

    def get_documents(self, ids: Sequence[str]) -> dict[str, str]:
        t = self.t["documents"]
        with self.engine.connect() as conn:
            rows = conn.execute(select(t.c.id, t.c.text).where(t.c.id.in_(list(ids)))).all()
        return {r.id: r.text for r in rows}

    def candidates(self, limit: int, now: float | None = None) -> list[PoolDocument]:
        """Up to ``limit`` pool documents, in random order, without annotations or open claims."""
        now = time.time() if now is None else now
        d, a, c = self.t["documents"], self.t["annotations"], self.t["claims"]
        stmt = (
            select(d.c.id, d.c.text)
            .where(~exists().where(a.c.document_id == d.c.id))
            .where(~exists().where(and_(c.c.document_id == d.c.id, c.c.expires_at >= now)))
            .order_by(func.random())
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return [PoolDocument(r.id, r.text) for r in conn.execute(stmt)]

    def claim(self, ids: Sequence[str], annotator: str, ttl_s: float, limit: int) -> tuple[str, list[str]]:
        """Claims documents in the order given until ``limit`` are held; a document claimed by
        someone else and not yet expired is skipped, so no two annotators get it.

        Returns:
            ``(claim_id, claimed ids in order)``.
        """
        c = self.t["claims"]
        now = time.time()
        claim_id = uuid.uuid4().hex
        got: list[str] = []
        with self.engine.begin() as conn:
            for doc_id in ids:
                if len(got) >= limit:
                    break
                values = {"document_id": doc_id, "claim_id": claim_id, "annotator": annotator, "expires_at": now + ttl_s}
                stmt = self._insert(c).values(**values)
                stmt = stmt.on_conflict_do_update(
                    index_elements=[c.c.document_id],
                    set_={k: stmt.excluded[k] for k in ("claim_id", "annotator", "expires_at")},
                    where=c.c.expires_at < now,
                )
                if conn.execute(stmt.returning(c.c.document_id)).first() is not None:
                    got.append(doc_id)
        return claim_id, got

    def release_claims(self, claim_id: str) -> int:
        with self.engine.begin() as conn:
            return conn.execute(delete(self.t["claims"]).where(self.t["claims"].c.claim_id == claim_id)).rowcount

    # ------------------------------------------------------------------------------ annotations

    def annotate(self, document_id: str, labels: Sequence[str], round_: int, annotator: str = "", text: str | None = None) -> Annotation:
        """Stores the labels of a document for a round (the last write wins; every write goes to
        the history) and closes its claim; committed before returning.

        Args:
            document_id: The document; it must be in the pool unless ``text`` is given (then it is added).
            labels: Its labels.
            round_: Active-learning round.
            annotator: Who wrote them.
            text: The document text, for a document not in the pool.

        Raises:
            KeyError: If the document is not in the pool and no text is given.
        """
        d, a, h, c = self.t["documents"], self.t["annotations"], self.t["history"], self.t["claims"]
        now = time.time()
        labels = list(labels)
        with self.engine.begin() as conn:
            if text is not None:
                conn.execute(self._insert(d).on_conflict_do_nothing(index_elements=[d.c.id]).values(
                    id=document_id, text=text, added_at=now))
            elif conn.execute(select(d.c.id).where(d.c.id == document_id)).first() is None:
                raise KeyError(document_id)
            stmt = self._insert(a).values(
                document_id=document_id, round=round_, labels=labels, annotator=annotator, updated_at=now, writes=1)
            stmt = stmt.on_conflict_do_update(
                index_elements=[a.c.document_id, a.c.round],
                set_={"labels": stmt.excluded.labels, "annotator": stmt.excluded.annotator,
                      "updated_at": stmt.excluded.updated_at, "writes": a.c.writes + 1},
            )
            conn.execute(stmt)
            conn.execute(h.insert().values(document_id=document_id, round=round_, labels=labels, annotator=annotator, created_at=now))
            conn.execute(delete(c).where(c.c.document_id == document_id))
            writes = conn.execute(select(a.c.writes).where(a.c.document_id == document_id, a.c.round == round_)).scalar_one()
        return Annotation(document_id, round_, labels, annotator, now, int(writes))

    def annotations(self, history: bool = False, round_: int | None = None) -> Iterator[Annotation]:
        """Stored annotations (the last write per document and round), oldest first, or with
        ``history`` every write."""
        d = self.t["documents"]
        stmt: Any
        if history:
            h = self.t["history"]
            stmt = (select(h.c.document_id, h.c.round, h.c.labels, h.c.annotator, h.c.created_at.label("updated_at"),
                           d.c.text).join(d, d.c.id == h.c.document_id, isouter=True).order_by(h.c.seq))
            if round_ is not None:
                stmt = stmt.where(h.c.round == round_)
        else:
            a = self.t["annotations"]
            stmt = (select(a.c.document_id, a.c.round, a.c.labels, a.c.annotator, a.c.updated_at, a.c.writes, d.c.text)
                    .join(d, d.c.id == a.c.document_id, isouter=True).order_by(a.c.updated_at, a.c.document_id))
            if round_ is not None:
                stmt = stmt.where(a.c.round == round_)
        with self.engine.connect() as conn:
            for r in conn.execute(stmt):
                m = r._mapping
                yield Annotation(m["document_id"], m["round"], list(m["labels"]), m["annotator"], m["updated_at"],
                                 int(m.get("writes", 1)), m["text"])

    def labelled_documents(self) -> list[tuple[str, str, list[str]]]:
        """``(id, text, labels)`` of every annotated document, its latest round's labels."""
        latest: dict[str, tuple[int, str, list[str]]] = {}
        for ann in self.annotations():
            if ann.text is not None and (ann.document_id not in latest or ann.round >= latest[ann.document_id][0]):
                latest[ann.document_id] = (ann.round, ann.text, ann.labels)
        return [(k, text, labels) for k, (_, text, labels) in latest.items()]

    # ------------------------------------------------------------------------------------- jobs

    def create_job(self, params: dict, owner: str = "") -> str:
        job_id = uuid.uuid4().hex[:12]
        now = time.time()
        with self.engine.begin() as conn:
            conn.execute(self.t["jobs"].insert().values(
                id=job_id, status="queued", created_at=now, updated_at=now, params=params, progress={}, metrics={},
                model_dir="", swapped=False, message="", owner=owner))
        return job_id

    def update_job(self, job_id: str, **values: Any) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(self.t["jobs"]).where(self.t["jobs"].c.id == job_id).values(updated_at=time.time(), **values))

    def get_job(self, job_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(self.t["jobs"]).where(self.t["jobs"].c.id == job_id)).first()
        return dict(row._mapping) if row else None

    def active_jobs(self) -> list[dict[str, Any]]:
        j = self.t["jobs"]
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(select(j).where(j.c.status.in_(("queued", "running"))))]

    # ------------------------------------------------------------------------------------- meta

    def get_meta(self, key: str) -> Any:
        m = self.t["meta"]
        with self.engine.connect() as conn:
            return conn.execute(select(m.c.value).where(m.c.key == key)).scalar_one_or_none()

    def set_meta(self, key: str, value: Any) -> None:
        m = self.t["meta"]
        stmt = self._insert(m).values(key=key, value=value)
        with self.engine.begin() as conn:
            conn.execute(stmt.on_conflict_do_update(index_elements=[m.c.key], set_={"value": stmt.excluded.value}))
