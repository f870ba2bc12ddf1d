"""A job's detail, apart from its message: the trainer's command line and the tail of its output, which name
server paths and are shown to the API key only; the message is the one line everyone may read.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from xlgen.service.migrations import table_prefix

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(table_prefix() + "jobs", sa.Column("detail", sa.Text, nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table(table_prefix() + "jobs") as batch:
        batch.drop_column("detail")
