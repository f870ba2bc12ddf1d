"""Where an annotation came from (a Label Studio annotation id), so that a deletion there finds it; history
rows record deletions as well as writes.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from xlgen.service.migrations import table_prefix

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    p = table_prefix()
    op.add_column(p + "annotations", sa.Column("external_id", sa.String(256), nullable=True))
    op.add_column(p + "annotation_history", sa.Column("external_id", sa.String(256), nullable=True))
    op.add_column(p + "annotation_history", sa.Column("action", sa.String(16), nullable=False, server_default="write"))
    op.create_index(f"ix_{p}annotation_history_external_id", p + "annotation_history", ["external_id"])


def downgrade() -> None:
    p = table_prefix()
    op.drop_index(f"ix_{p}annotation_history_external_id", table_name=p + "annotation_history")
    with op.batch_alter_table(p + "annotation_history") as batch:
        batch.drop_column("action")
        batch.drop_column("external_id")
    with op.batch_alter_table(p + "annotations") as batch:
        batch.drop_column("external_id")
