"""What the service keeps: the document pool, annotations (with history), claims, retraining jobs
and the lock that lets one run at a time, and which model is served, in SQLAlchemy Core tables.

SQLite (a file, in WAL mode with full sync, so an acknowledged write survives a ``kill -9``) is the
default; a PostgreSQL URL lets several replicas share one store. Every table name carries a prefix
so that deployments or test runs can share a database. The schema is versioned by alembic
(:mod:`xlgen.service.migrations`); opening storage upgrades it.
"""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Connection,
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
    false,
    func,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.engine import make_url

from xlgen.service import migrations

ACTIVE = ("queued", "running")
"""Job statuses of a job that has not ended."""
FINISHED = ("succeeded", "failed", "cancelled")
"""Job statuses of a job that has ended."""
TRAINING_LOCK = "training"


class JobLocked(Exception):
    """Another retraining job holds the training lock.

    Attributes:
        job_id: The job holding it.
    """

    def __init__(self, job_id: str) -> None:
        super().__init__(f"retraining job {job_id} is running")
        self.job_id = job_id


class Conflict(Exception):
    """A write that the stored state refuses (answered 409).

    Attributes:
        key: The request field at fault (``document_id``, ``text``).
    """

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


def clean_labels(labels: Sequence[str]) -> list[str]:
    """Labels trimmed, in order, without repeats.

    Raises:
        ValueError: Naming ``labels[i]`` for a label that is empty after trimming.
    """
    out: list[str] = []
    for i, label in enumerate(labels):
        label = label.strip()
        if not label:
            raise ValueError(f"labels[{i}]: empty after trimming")
        if label not in out:
            out.append(label)
    return out


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
    """The labels of a document in one round (its last write), or one entry of the history.

    Attributes:
        document_id: The document.
        round: Active-learning round.
        labels: Labels.
        annotator: Who wrote them (may be empty).
        updated_at: Unix time of the write.
        writes: Writes of this (document, round) so far (1 in history rows).
        text: The document's text, where known.
        external_id: The annotation in the tool it came from (``labelstudio:<annotation id>``), if any.
        action: ``write``, or in the history ``delete`` (that external annotation was deleted).
        seconds: Time the annotator spent on the document, when the client measured it.
    """

    document_id: str
    round: int
    labels: list[str]
    annotator: str
    updated_at: float
    writes: int = 1
    text: str | None = None
    external_id: str | None = None
    action: str = "write"
    seconds: float | None = None


def latest_annotations(annotations: Iterable[Annotation]) -> dict[str, Annotation]:
    """Each document's annotation of its latest round (of two writes of one round, the later in ``annotations``)."""
    latest: dict[str, Annotation] = {}
    for ann in annotations:
        if ann.document_id not in latest or ann.round >= latest[ann.document_id].round:
            latest[ann.document_id] = ann
    return latest


def token_sha256(token: str) -> str:
    """What is stored of an annotator's token."""
    return hashlib.sha256(token.encode()).hexdigest()


def _tables(metadata: MetaData, prefix: str) -> dict[str, Table]:
    """The tables as the newest revision of :mod:`xlgen.service.migrations` leaves them."""
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
            Column("external_id", String(256), nullable=True),
            Column("seconds", Float, nullable=True),
        ),
        "history": Table(
            prefix + "annotation_history", metadata,
            Column("seq", Integer, primary_key=True, autoincrement=True),
            Column("document_id", String(256), nullable=False, index=True),
            Column("round", Integer, nullable=False),
            Column("labels", JSON, nullable=False),
            Column("annotator", String(256), nullable=False, default=""),
            Column("created_at", Float, nullable=False),
            Column("external_id", String(256), nullable=True, index=True),
            Column("action", String(16), nullable=False, server_default="write"),
            Column("seconds", Float, nullable=True),
        ),
        "claims": Table(
            prefix + "claims", metadata,
            Column("document_id", String(256), primary_key=True),
            Column("claim_id", String(64), nullable=False),
            Column("annotator", String(256), nullable=False, default="", index=True),
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
            Column("host", String(256), nullable=False, server_default=""),
            Column("server", String(64), nullable=False, server_default=""),
            Column("pid", Integer, nullable=True),
            Column("pgid", Integer, nullable=True),
            Column("proc_start", String(32), nullable=False, server_default=""),
            Column("started_at", Float, nullable=True),
            Column("finished_at", Float, nullable=True),
            Column("cancel_requested", Boolean, nullable=False, server_default=false()),
            Column("detail", Text, nullable=False, server_default=""),
        ),
        "locks": Table(
            prefix + "locks", metadata,
            Column("name", String(64), primary_key=True),
            Column("owner", String(64), nullable=False),
            Column("acquired_at", Float, nullable=False),
        ),
        "new_labels": Table(
            prefix + "new_labels", metadata,
            Column("name", String(256), primary_key=True),
            Column("description", Text, nullable=True),
            Column("examples", JSON, nullable=False),
            Column("annotator", String(256), nullable=False, server_default=""),
            Column("created_at", Float, nullable=False),
        ),
        "questions": Table(
            prefix + "questions", metadata,
            Column("document_id", String(256), primary_key=True),
            Column("label", String(256), primary_key=True, index=True),
            Column("rank", Integer, nullable=False),
            Column("score", Float, nullable=False),
            Column("claimed_by", String(256), nullable=True),
            Column("claimed_until", Float, nullable=True),
            Column("answer", Boolean, nullable=True),
            Column("annotator", String(256), nullable=True),
            Column("seconds", Float, nullable=True),
            Column("answered_at", Float, nullable=True),
        ),
        "annotators": Table(
            prefix + "annotators", metadata,
            Column("name", String(256), primary_key=True),
            Column("token_sha256", String(64), nullable=False, unique=True),
            Column("created_at", Float, nullable=False),
        ),
        "opinions": Table(
            prefix + "opinions", metadata,
            Column("document_id", String(256), primary_key=True),
            Column("label", String(256), primary_key=True),
            Column("relevance", Integer, nullable=False),
            Column("explanation", Text, nullable=False, server_default=""),
            Column("model", String(256), nullable=False, server_default=""),
            Column("created_at", Float, nullable=False),
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

    Attributes:
        schema_version: The alembic revision the database is at.
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
        self.prefix = table_prefix
        self.metadata = MetaData()
        self.t = _tables(self.metadata, table_prefix)
        self.schema_version = migrations.upgrade(self.engine, table_prefix)

    def close(self) -> None:
        self.engine.dispose()

    def drop_all(self) -> None:
        """Drops this prefix's tables and schema version (test clean-up)."""
        self.metadata.drop_all(self.engine)
        Table(self.prefix + migrations.VERSION_TABLE, MetaData()).drop(self.engine, checkfirst=True)
        self.engine.dispose()

    def _serialise(self, conn: Connection, name: str) -> None:
        """Makes the rest of ``conn``'s transaction exclusive among callers passing the same ``name``."""
        if self.dialect == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": zlib.crc32(f"{self.prefix}{name}".encode())})
        else:  # a write takes SQLite's one write lock until the transaction ends (a no-op delete does too)
            conn.execute(delete(self.t["locks"]).where(self.t["locks"].c.name == ""))

    def _insert(self, table: Table) -> Any:
        """The dialect's INSERT, which has ``on_conflict_do_*`` (both SQLite and PostgreSQL spell them alike)."""
        from sqlalchemy.dialects import postgresql, sqlite

        if self.dialect not in ("postgresql", "sqlite"):
            raise RuntimeError(f"unsupported database {self.dialect!r}: use SQLite or PostgreSQL")
        return (postgresql.insert if self.dialect == "postgresql" else sqlite.insert)(table)

    # ------------------------------------------------------------------------------- new labels

    def add_new_label(self, name: str, description: str | None, examples: Sequence[str], annotator: str = "") -> bool:
        """Records a label added by name; False if it was added before."""
        t = self.t["new_labels"]
        with self.engine.begin() as conn:
            stmt = self._insert(t).values(name=name, description=description, examples=list(examples), annotator=annotator,
                                          created_at=time.time()).on_conflict_do_nothing(index_elements=[t.c.name])
            return conn.execute(stmt.returning(t.c.name)).first() is not None

    def new_labels(self) -> list[dict[str, Any]]:
        """Every label added by name, oldest first, with its question counts and the texts of its positives."""
        t, q, d = self.t["new_labels"], self.t["questions"], self.t["documents"]
        with self.engine.connect() as conn:
            labels = [dict(r._mapping) for r in conn.execute(select(t).order_by(t.c.created_at, t.c.name))]
            rows = conn.execute(select(q.c.label, q.c.answer, d.c.text).select_from(q.outerjoin(d, d.c.id == q.c.document_id))).all()
        for rec in labels:
            mine = [r for r in rows if r.label == rec["name"]]
            rec["questions"] = len(mine)
            rec["answered"] = sum(r.answer is not None for r in mine)
            rec["positives"] = [r.text for r in mine if r.answer and r.text is not None]
        return labels

    def add_questions(self, label: str, ranked: Sequence[tuple[str, float]]) -> int:
        """Adds the binary questions of ``label`` for documents ``(id, score)``, best first; returns how
        many were new."""
        q = self.t["questions"]
        added = 0
        with self.engine.begin() as conn:
            for rank, (doc_id, score) in enumerate(ranked):
                stmt = self._insert(q).values(document_id=doc_id, label=label, rank=rank, score=float(score))
                stmt = stmt.on_conflict_do_nothing(index_elements=[q.c.document_id, q.c.label])
                added += conn.execute(stmt.returning(q.c.label)).first() is not None
        return added

    def claim_questions(self, annotator: str, size: int, ttl_s: float, seed: int | None = None) -> list[dict[str, Any]]:
        """Claims up to ``size`` open questions (unanswered, unclaimed or their claim expired) for
        ``annotator``, greedily: a new label drawn uniformly among those with open questions, then its
        best-ranked open question, repeated; a question claimed by someone else meanwhile is skipped.

        Returns:
            ``{document_id, label, score, text}`` per claimed question, in the order asked.
        """
        import random

        q, d = self.t["questions"], self.t["documents"]
        now = time.time()
        open_ = and_(q.c.answer.is_(None), or_(q.c.claimed_until.is_(None), q.c.claimed_until < now))
        with self.engine.connect() as conn:
            rows = conn.execute(select(q.c.document_id, q.c.label, q.c.score, d.c.text)
                                .select_from(q.join(d, d.c.id == q.c.document_id)).where(open_)
                                .order_by(q.c.label, q.c.rank)).all()
        left: dict[str, list[Any]] = {}
        for r in rows:
            left.setdefault(r.label, []).append(r)
        rng = random.Random(seed)
        got: list[dict[str, Any]] = []
        with self.engine.begin() as conn:
            while left and len(got) < size:
                label = rng.choice(sorted(left))
                r = left[label].pop(0)
                if not left[label]:
                    del left[label]
                done = conn.execute(update(q).where(q.c.document_id == r.document_id, q.c.label == r.label, open_)
                                    .values(claimed_by=annotator, claimed_until=now + ttl_s))
                if done.rowcount == 1:
                    got.append({"document_id": r.document_id, "label": r.label, "score": r.score, "text": r.text})
        return got

    def answer_question(self, document_id: str, label: str, answer: bool, annotator: str = "", seconds: float | None = None) -> bool:
        """Stores the answer to a question (a later answer replaces it) and frees its claim; False when
        there is no such question."""
        q = self.t["questions"]
        with self.engine.begin() as conn:
            done = conn.execute(update(q).where(q.c.document_id == document_id, q.c.label == label)
                                .values(answer=answer, annotator=annotator, seconds=seconds, answered_at=time.time(),
                                        claimed_by=None, claimed_until=None))
            return done.rowcount == 1

    def answers(self) -> list[dict[str, Any]]:
        """Every answered question, oldest answer first."""
        q = self.t["questions"]
        with self.engine.connect() as conn:
            rows = conn.execute(select(q.c.document_id, q.c.label, q.c.answer, q.c.annotator, q.c.seconds, q.c.answered_at)
                                .where(q.c.answer.is_not(None)).order_by(q.c.answered_at)).all()
        return [dict(r._mapping) for r in rows]

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

    def claim(self, ids: Sequence[str], annotator: str, ttl_s: float, limit: int,
              max_held: int | None = None) -> tuple[str, list[str]]:
        """Claims documents in the order given until ``limit`` are claimed; a document claimed by
        someone else and not yet expired is skipped, so no two annotators get it.

        Args:
            ids: Candidate documents, best first.
            annotator: Who claims them (``""``: anonymous).
            ttl_s: Claim lifetime.
            limit: Documents to claim at most.
            max_held: Documents this annotator may hold claimed at once, those claimed before included.

        Returns:
            ``(claim_id, claimed ids in order)``.
        """
        c = self.t["claims"]
        now = time.time()
        claim_id = uuid.uuid4().hex
        got: list[str] = []
        with self.engine.begin() as conn:
            if max_held is not None:
                self._serialise(conn, "claims:" + annotator)  # count and claim as one step per annotator
                held = conn.execute(select(func.count()).select_from(c).where(c.c.annotator == annotator,
                                                                             c.c.expires_at >= now)).scalar_one()
                limit = min(limit, max(0, max_held - int(held)))
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

    def release_claims(self, claim_id: str | None = None, *, annotator: str | None = None,
                       document_ids: Sequence[str] | None = None) -> int:
        """Releases claims: those of ``claim_id`` and/or those of ``annotator`` (both: the claim's documents
        still held by that annotator); only of ``document_ids`` when given. Returns how many were released.

        Raises:
            ValueError: If neither ``claim_id`` nor ``annotator`` is given.
        """
        c = self.t["claims"]
        conditions = ([c.c.claim_id == claim_id] if claim_id is not None else []) + ([c.c.annotator == annotator] if annotator is not None else [])
        if not conditions:
            raise ValueError("give claim_id or annotator")
        where = and_(*conditions)
        if document_ids is not None:
            where = and_(where, c.c.document_id.in_(list(document_ids)))
        with self.engine.begin() as conn:
            return int(conn.execute(delete(c).where(where)).rowcount)

    def claims_held(self, annotator: str) -> int:
        """Documents ``annotator`` holds claimed now."""
        c = self.t["claims"]
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(c).where(c.c.annotator == annotator,
                                                                               c.c.expires_at >= time.time())).scalar_one())

    # ------------------------------------------------------------------------------ annotations

    def annotate(self, document_id: str, labels: Sequence[str], round_: int, annotator: str = "", text: str | None = None,
                 external_id: str | None = None, if_changed: bool = False, seconds: float | None = None,
                 own_only: bool = False, text_key: str = "text") -> Annotation:
        """Stores the labels of a document for a round (the last write wins; every write goes to
        the history) and closes its claim; committed before returning.

        Args:
            document_id: The document; it must be in the pool unless ``text`` is given (then it is added).
            labels: Its labels; stored trimmed, without repeats.
            round_: Active-learning round.
            annotator: Who wrote them.
            text: The document text: adds a document not in the pool; for one in the pool it must be its text.
            external_id: The annotation in the tool it comes from, so that :meth:`delete_external` finds it.
            if_changed: Write nothing when the stored labels of this document and round already came from
                ``external_id`` and equal ``labels`` (a tool sending every annotation again).
            seconds: Time spent on the document (stored with the write).
            own_only: ``annotator`` writes only what is theirs to write (an annotator's token): a document
                nobody else holds claimed, whose labels of this round nobody else wrote.
            text_key: The request field that carried ``text``, named by a :class:`Conflict`.

        Raises:
            KeyError: If the document is not in the pool and no text is given.
            ValueError: Naming ``labels[i]`` for a label that is empty after trimming.
            Conflict: ``text`` differs from the stored document's, or (``own_only``) another annotator holds the
                document's claim or wrote its labels of this round.
        """
        d, a, h, c = self.t["documents"], self.t["annotations"], self.t["history"], self.t["claims"]
        now = time.time()
        labels = clean_labels(labels)
        with self.engine.begin() as conn:
            # checks and write in one step per document: two writers cannot both pass the checks
            self._serialise(conn, "annotate:" + document_id)
            stored = conn.execute(select(d.c.text).where(d.c.id == document_id)).first()
            if stored is None and text is None:
                raise KeyError(document_id)
            if stored is None:
                conn.execute(self._insert(d).on_conflict_do_nothing(index_elements=[d.c.id]).values(
                    id=document_id, text=text, added_at=now))
            elif text is not None and text != stored.text:
                raise Conflict(text_key, f"document {document_id!r} holds another text; labels are stored only with the "
                                         "text they were given for (give the document another id)")
            if own_only:
                claim = conn.execute(select(c.c.annotator).where(c.c.document_id == document_id, c.c.annotator != annotator,
                                                                 c.c.expires_at >= now)).first()
                if claim is not None:
                    raise Conflict("document_id", f"document {document_id!r} is claimed by another annotator")
                prior = conn.execute(select(a.c.annotator).where(a.c.document_id == document_id, a.c.round == round_)).first()
                if prior is not None and prior.annotator != annotator:
                    raise Conflict("document_id", f"document {document_id!r} was annotated by {prior.annotator!r}; "
                                                  "an annotator's token does not overwrite another annotator")
            if if_changed:
                row = conn.execute(select(a).where(a.c.document_id == document_id, a.c.round == round_)).first()
                if row is not None and row.external_id == external_id and list(row.labels) == labels:
                    return Annotation(document_id, round_, labels, row.annotator, row.updated_at, int(row.writes),
                                      external_id=external_id)
            stmt = self._insert(a).values(document_id=document_id, round=round_, labels=labels, annotator=annotator,
                                          updated_at=now, writes=1, external_id=external_id, seconds=seconds)
            stmt = stmt.on_conflict_do_update(
                index_elements=[a.c.document_id, a.c.round],
                set_={"labels": stmt.excluded.labels, "annotator": stmt.excluded.annotator, "external_id": stmt.excluded.external_id,
                      "updated_at": stmt.excluded.updated_at, "writes": a.c.writes + 1, "seconds": stmt.excluded.seconds},
            )
            conn.execute(stmt)
            conn.execute(h.insert().values(document_id=document_id, round=round_, labels=labels, annotator=annotator, created_at=now,
                                           external_id=external_id, action="write", seconds=seconds))
            conn.execute(delete(c).where(c.c.document_id == document_id))
            writes = conn.execute(select(a.c.writes).where(a.c.document_id == document_id, a.c.round == round_)).scalar_one()
        return Annotation(document_id, round_, labels, annotator, now, int(writes), external_id=external_id, seconds=seconds)

    def delete_external(self, external_ids: Sequence[str], annotator: str = "") -> list[tuple[str, int]]:
        """Withdraws the annotations that came from ``external_ids`` (deleted in the tool they came from).

        Where such an annotation holds the current labels of its document and round, the latest
        write not withdrawn takes its place (another annotator's annotation of the same task), or the
        document and round have no labels any more; the history records each deletion. Deleting an
        id twice, or one never seen, changes nothing.

        Returns:
            ``(document_id, round)`` of each deletion recorded now.
        """
        a, h = self.t["annotations"], self.t["history"]
        now = time.time()
        done: list[tuple[str, int]] = []
        with self.engine.begin() as conn:
            for ext in dict.fromkeys(external_ids):
                targets = conn.execute(select(h.c.document_id, h.c.round).where(h.c.external_id == ext, h.c.action == "write")
                                       .distinct()).all()
                for doc_id, round_ in targets:
                    same = (h.c.document_id == doc_id, h.c.round == round_)
                    if conn.execute(select(h.c.seq).where(*same, h.c.external_id == ext, h.c.action == "delete")).first():
                        continue
                    conn.execute(h.insert().values(document_id=doc_id, round=round_, labels=[], annotator=annotator, created_at=now,
                                                   external_id=ext, action="delete"))
                    done.append((doc_id, round_))
                    current = conn.execute(select(a.c.external_id).where(a.c.document_id == doc_id, a.c.round == round_)).first()
                    if current is None or current.external_id != ext:
                        continue
                    withdrawn = select(h.c.external_id).where(*same, h.c.action == "delete", h.c.external_id.is_not(None))
                    previous = conn.execute(
                        select(h.c.labels, h.c.annotator, h.c.external_id, h.c.created_at)
                        .where(*same, h.c.action == "write",
                               (h.c.external_id.is_(None)) | (h.c.external_id.not_in(withdrawn)))
                        .order_by(h.c.seq.desc()).limit(1)).first()
                    where = and_(a.c.document_id == doc_id, a.c.round == round_)
                    if previous is None:
                        conn.execute(delete(a).where(where))
                    else:
                        conn.execute(update(a).where(where).values(labels=previous.labels, annotator=previous.annotator,
                                                                   external_id=previous.external_id, updated_at=now))
        return done

    def annotations(self, history: bool = False, round_: int | None = None) -> Iterator[Annotation]:
        """Stored annotations (the last write per document and round), oldest first, or with
        ``history`` every write and deletion."""
        d = self.t["documents"]
        stmt: Any
        if history:
            h = self.t["history"]
            stmt = (select(h.c.document_id, h.c.round, h.c.labels, h.c.annotator, h.c.created_at.label("updated_at"),
                           d.c.text, h.c.external_id, h.c.action, h.c.seconds).join(d, d.c.id == h.c.document_id, isouter=True).order_by(h.c.seq))
            if round_ is not None:
                stmt = stmt.where(h.c.round == round_)
        else:
            a = self.t["annotations"]
            stmt = (select(a.c.document_id, a.c.round, a.c.labels, a.c.annotator, a.c.updated_at, a.c.writes, d.c.text, a.c.external_id,
                           a.c.seconds)
                    .join(d, d.c.id == a.c.document_id, isouter=True).order_by(a.c.updated_at, a.c.document_id))
            if round_ is not None:
                stmt = stmt.where(a.c.round == round_)
        with self.engine.connect() as conn:
            for r in conn.execute(stmt):
                m = r._mapping
                yield Annotation(m["document_id"], m["round"], list(m["labels"]), m["annotator"], m["updated_at"],
                                 int(m.get("writes", 1)), m["text"], m["external_id"], m.get("action", "write"), m["seconds"])

    def labelled_documents(self) -> list[tuple[str, str, list[str]]]:
        """``(id, text, labels)`` of every annotated document, its latest round's labels."""
        # a document's rounds share its text (joined from the pool): keeping those with text after or before
        # choosing the latest round is the same
        return [(k, a.text, a.labels) for k, a in latest_annotations(self.annotations()).items() if a.text is not None]

    # ------------------------------------------------------------------------------------- jobs

    def create_job(self, params: dict, owner: str = "", *, host: str = "", server: str = "", job_id: str | None = None) -> str:
        """Takes the training lock and records a ``queued`` job holding it, in one transaction, so that
        one job at a time exists across workers, replicas and restarts.

        Args:
            params: The job's options.
            owner: The job manager that runs it.
            host: Host name of the server that runs it.
            server: Identity (``pid:start time``) of the server process that runs it.
            job_id: The new job's id (default: a random one).

        Returns:
            The job id.

        Raises:
            JobLocked: If another job holds the lock (the caller may clear a stale one and retry).
        """
        job_id = job_id or uuid.uuid4().hex[:12]
        now = time.time()
        locks = self.t["locks"]
        with self.engine.begin() as conn:
            took = conn.execute(self._insert(locks).on_conflict_do_nothing(index_elements=[locks.c.name])
                                .values(name=TRAINING_LOCK, owner=job_id, acquired_at=now).returning(locks.c.name)).first()
            if took is None:
                holder = conn.execute(select(locks.c.owner).where(locks.c.name == TRAINING_LOCK)).scalar_one_or_none()
                raise JobLocked(holder or "?")
            conn.execute(self.t["jobs"].insert().values(
                id=job_id, status="queued", created_at=now, updated_at=now, params=params, progress={}, metrics={},
                model_dir="", swapped=False, message="", owner=owner, host=host, server=server))
        return job_id

    def lock_holder(self, name: str = TRAINING_LOCK) -> str | None:
        """The job holding lock ``name``, if any."""
        locks = self.t["locks"]
        with self.engine.connect() as conn:
            return conn.execute(select(locks.c.owner).where(locks.c.name == name)).scalar_one_or_none()

    def release_lock(self, job_id: str, name: str = TRAINING_LOCK) -> bool:
        """Releases lock ``name`` if ``job_id`` holds it (a stale lock of a job that ended without it)."""
        locks = self.t["locks"]
        with self.engine.begin() as conn:
            return bool(conn.execute(delete(locks).where(locks.c.name == name, locks.c.owner == job_id)).rowcount)

    def update_job(self, job_id: str, **values: Any) -> bool:
        """Sets job fields (and ``updated_at``, to now unless given); True if the job exists."""
        with self.engine.begin() as conn:
            return bool(conn.execute(update(self.t["jobs"]).where(self.t["jobs"].c.id == job_id)
                                     .values(**{"updated_at": time.time(), **values})).rowcount)

    def heartbeat(self, job_id: str, **values: Any) -> dict[str, Any] | None:
        """Sets fields of a job that has not ended (and ``updated_at``, which tells others its server lives).

        Returns:
            The job's record, or None if it has ended (another worker or a restart finished it).
        """
        j = self.t["jobs"]
        with self.engine.begin() as conn:
            if not conn.execute(update(j).where(j.c.id == job_id, j.c.status.in_(ACTIVE))
                                .values(updated_at=time.time(), **values)).rowcount:
                return None
            row = conn.execute(select(j).where(j.c.id == job_id)).first()
        return dict(row._mapping) if row else None

    def finish_job(self, job_id: str, status: str, **values: Any) -> bool:
        """Ends a job that has not ended yet (status ``succeeded``, ``failed`` or ``cancelled``) and releases
        the training lock it holds, in one transaction.

        Returns:
            Whether this call ended it (False: it had ended already).
        """
        if status not in FINISHED:
            raise ValueError(f"not a final job status: {status!r}")
        j, locks = self.t["jobs"], self.t["locks"]
        now = time.time()
        with self.engine.begin() as conn:
            ended = conn.execute(update(j).where(j.c.id == job_id, j.c.status.in_(ACTIVE))
                                 .values(status=status, updated_at=now, finished_at=now, **values)).rowcount
            conn.execute(delete(locks).where(locks.c.name == TRAINING_LOCK, locks.c.owner == job_id))
        return bool(ended)

    def request_cancel(self, job_id: str) -> bool:
        """Asks the server running a job to cancel it; False if the job has ended or does not exist."""
        j = self.t["jobs"]
        with self.engine.begin() as conn:
            return bool(conn.execute(update(j).where(j.c.id == job_id, j.c.status.in_(ACTIVE)).values(cancel_requested=True)).rowcount)

    def get_job(self, job_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(self.t["jobs"]).where(self.t["jobs"].c.id == job_id)).first()
        return dict(row._mapping) if row else None

    def active_jobs(self) -> list[dict[str, Any]]:
        """Jobs that have not ended."""
        j = self.t["jobs"]
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(select(j).where(j.c.status.in_(ACTIVE)))]

    # ------------------------------------------------------------------------ annotators, progress

    def create_annotator(self, name: str) -> str | None:
        """Gives annotator ``name`` a new random token (replacing an earlier one); only its SHA-256 is stored.

        Returns:
            The token (shown once), or None if ``name`` is empty.
        """
        if not name.strip():
            return None
        token = secrets.token_urlsafe(24)
        t = self.t["annotators"]
        stmt = self._insert(t).values(name=name, token_sha256=token_sha256(token), created_at=time.time())
        with self.engine.begin() as conn:
            conn.execute(stmt.on_conflict_do_update(index_elements=[t.c.name], set_={"token_sha256": stmt.excluded.token_sha256,
                                                                                    "created_at": stmt.excluded.created_at}))
        return token

    def annotator_of_token(self, token: str) -> str | None:
        """The annotator whose token this is, if any."""
        if not token:
            return None
        t = self.t["annotators"]
        with self.engine.connect() as conn:
            return conn.execute(select(t.c.name).where(t.c.token_sha256 == token_sha256(token))).scalar_one_or_none()

    def annotators(self) -> list[str]:
        """Annotators that have a token."""
        t = self.t["annotators"]
        with self.engine.connect() as conn:
            return [r.name for r in conn.execute(select(t.c.name).order_by(t.c.name))]

    def progress(self) -> dict[str, Any]:
        """What has been labelled: annotated documents in total and per annotator (with the median and total
        seconds spent where measured), binary questions answered per annotator, and pool size."""
        a, q = self.t["annotations"], self.t["questions"]
        with self.engine.connect() as conn:
            ann = conn.execute(select(a.c.annotator, a.c.seconds, a.c.document_id)).all()
            answered = conn.execute(select(q.c.annotator, q.c.answer, q.c.seconds).where(q.c.answer.is_not(None))).all()
            pool = int(conn.execute(select(func.count()).select_from(self.t["documents"])).scalar_one())
        per: dict[str, dict[str, Any]] = {}
        spent: dict[str, list[float]] = {}

        def row(name: str) -> dict[str, Any]:
            return per.setdefault(name, {"annotator": name, "documents": 0, "questions": 0, "positives": 0})

        for who, _ in sorted({(r.annotator, r.document_id) for r in ann}):  # a document annotated in two rounds is one
            row(who)["documents"] += 1
        for r in ann:
            if r.seconds is not None:
                spent.setdefault(r.annotator, []).append(float(r.seconds))
        for r in answered:
            rec = row(r.annotator or "")
            rec["questions"] += 1
            rec["positives"] += bool(r.answer)
        rows = []
        for rec in sorted(per.values(), key=lambda x: (-x["documents"], x["annotator"])):
            seconds = sorted(spent.get(rec["annotator"], []))
            rows.append({**rec, "median_seconds": seconds[len(seconds) // 2] if seconds else None,
                         "total_seconds": round(sum(seconds), 3)})
        return {"documents": len({r.document_id for r in ann}), "questions": len(answered), "pool_size": pool, "annotators": rows}

    def jobs(self, limit: int = 100) -> list[dict[str, Any]]:
        """The newest ``limit`` jobs, oldest first."""
        j = self.t["jobs"]
        with self.engine.connect() as conn:
            rows = conn.execute(select(j).order_by(j.c.created_at.desc()).limit(limit)).all()
        return [dict(r._mapping) for r in reversed(rows)]

    # ---------------------------------------------------------------------------------- opinions

    def save_opinions(self, document_id: str, opinions: Sequence[tuple[str, int, str]], model: str) -> None:
        """Stores a chat model's ``(label, relevance 0/1/2, explanation)`` for a document (a later one replaces it)."""
        t = self.t["opinions"]
        now = time.time()
        with self.engine.begin() as conn:
            for label, relevance, explanation in opinions:
                stmt = self._insert(t).values(document_id=document_id, label=label, relevance=int(relevance),
                                              explanation=explanation, model=model, created_at=now)
                conn.execute(stmt.on_conflict_do_update(
                    index_elements=[t.c.document_id, t.c.label],
                    set_={k: stmt.excluded[k] for k in ("relevance", "explanation", "model", "created_at")}))

    def opinions(self, document_id: str | None = None) -> list[dict[str, Any]]:
        """Stored opinions (of one document when given), by document and label."""
        t = self.t["opinions"]
        stmt = select(t).order_by(t.c.document_id, t.c.label)
        if document_id is not None:
            stmt = stmt.where(t.c.document_id == document_id)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(stmt)]

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
