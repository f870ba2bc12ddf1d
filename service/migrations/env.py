"""Alembic environment: runs on the connection and table prefix that :func:`xlgen.service.migrations.upgrade` passes.

From the command line (``alembic -c /dev/null -x db_url=URL -x table_prefix=xlgen_ ...`` with
``script_location`` set to this folder) it opens ``db_url`` itself.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

config = context.config
prefix = config.attributes.setdefault("table_prefix", context.get_x_argument(as_dictionary=True).get("table_prefix", "xlgen_"))


def run(connection) -> None:
    context.configure(connection=connection, version_table=prefix + "alembic_version", render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("offline (SQL script) migrations are not supported: run against a database")
if (conn := config.attributes.get("connection")) is not None:
    run(conn)
else:
    engine = create_engine(context.get_x_argument(as_dictionary=True)["db_url"])
    with engine.begin() as connection:
        run(connection)
