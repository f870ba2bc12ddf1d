"""The service database's schema history: alembic revisions under ``versions/``, applied when storage opens.

Every table name carries the deployment's prefix, so the revisions read it from the alembic config
(:func:`table_prefix`) and each prefix keeps its own version table (``<prefix>alembic_version``).
:func:`upgrade` holds a lock while it migrates (a transaction-scoped advisory lock on PostgreSQL, a
file lock beside a SQLite file), so that several workers or replicas starting at once migrate once.
A database made before the first revision (the tables, no version table) is stamped with the
baseline first, then upgraded.
"""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import Connection, Engine, inspect, text

BASELINE = "0001"
VERSION_TABLE = "alembic_version"
SCRIPT_LOCATION = str(Path(__file__).resolve().parent)


def table_prefix() -> str:
    """The table prefix of the migration that runs now (for the revision scripts)."""
    from alembic import context

    return str(context.config.attributes.get("table_prefix", "xlgen_"))


def _config(connection: Connection, prefix: str):  # -> alembic.config.Config
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", SCRIPT_LOCATION)
    cfg.attributes["connection"] = connection
    cfg.attributes["table_prefix"] = prefix
    return cfg


def _lock_key(prefix: str) -> int:
    return zlib.crc32(f"xlgen-migrate:{prefix}".encode())


@contextlib.contextmanager
def _migration_lock(engine: Engine, prefix: str) -> Iterator[Connection]:
    """A connection in a transaction that holds this prefix's migration lock."""
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _lock_key(prefix)})
            yield conn  # DDL is transactional on PostgreSQL: the whole upgrade commits or none of it
        return
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:" or database.startswith("file:"):
        with engine.begin() as conn:
            yield conn
        return
    import fcntl

    with open(f"{database}.{prefix}migrate.lock", "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            with engine.begin() as conn:
                yield conn
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def current_revision(connection: Connection, prefix: str) -> str | None:
    """The revision the database is at (None before any)."""
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(connection, opts={"version_table": prefix + VERSION_TABLE}).get_current_revision()


def head_revision() -> str:
    """The newest revision of this code."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory(SCRIPT_LOCATION).get_current_head()
    assert head is not None
    return head


def upgrade(engine: Engine, prefix: str) -> str:
    """Brings this prefix's tables to the newest revision (creating them on an empty database).

    Returns:
        The revision the database is at afterwards.
    """
    from alembic import command

    with _migration_lock(engine, prefix) as conn:
        cfg = _config(conn, prefix)
        tables = set(inspect(conn).get_table_names())
        if prefix + VERSION_TABLE not in tables and prefix + "documents" in tables:
            command.stamp(cfg, BASELINE)  # made by create_all before revisions existed: that schema is the baseline
        if current_revision(conn, prefix) != head_revision():
            command.upgrade(cfg, "head")
        revision = current_revision(conn, prefix)
    assert revision is not None
    return revision
