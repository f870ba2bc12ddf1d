"""Durable retraining jobs: the trainer's process group and the server that runs it, a cancel request,
and a lock row that lets one training run at a time across workers and restarts; claims indexed by
annotator for the per-annotator cap.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from xlgen.service.migrations import table_prefix

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def job_columns() -> list[sa.Column]:
    return [
        sa.Column("host", sa.String(256), nullable=False, server_default=""),
        sa.Column("server", sa.String(64), nullable=False, server_default=""),
        sa.Column("pid", sa.Integer, nullable=True),
        sa.Column("pgid", sa.Integer, nullable=True),
        sa.Column("proc_start", sa.String(32), nullable=False, server_default=""),
        sa.Column("started_at", sa.Float, nullable=True),
        sa.Column("finished_at", sa.Float, nullable=True),
        sa.Column("cancel_requested", sa.Boolean, nullable=False, server_default=sa.false()),
    ]


def upgrade() -> None:
    p = table_prefix()
    for column in job_columns():
        op.add_column(p + "jobs", column)
    op.create_table(
        p + "locks",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("owner", sa.String(64), nullable=False),
        sa.Column("acquired_at", sa.Float, nullable=False),
    )
    op.create_index(f"ix_{p}claims_annotator", p + "claims", ["annotator"])


def downgrade() -> None:
    p = table_prefix()
    op.drop_index(f"ix_{p}claims_annotator", table_name=p + "claims")
    op.drop_table(p + "locks")
    with op.batch_alter_table(p + "jobs") as batch:
        for column in reversed(job_columns()):
            batch.drop_column(column.name)
