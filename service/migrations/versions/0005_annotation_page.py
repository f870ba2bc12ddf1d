"""What the annotation page needs: seconds spent per annotation (current and history), per-annotator
tokens (stored as SHA-256 digests), and second opinions of a chat model on suggested labels.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from xlgen.service.migrations import table_prefix

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    p = table_prefix()
    op.add_column(p + "annotations", sa.Column("seconds", sa.Float, nullable=True))
    op.add_column(p + "annotation_history", sa.Column("seconds", sa.Float, nullable=True))
    op.create_table(
        p + "annotators",
        sa.Column("name", sa.String(256), primary_key=True),
        sa.Column("token_sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        p + "opinions",
        sa.Column("document_id", sa.String(256), primary_key=True),
        sa.Column("label", sa.String(256), primary_key=True),
        sa.Column("relevance", sa.Integer, nullable=False),
        sa.Column("explanation", sa.Text, nullable=False, server_default=""),
        sa.Column("model", sa.String(256), nullable=False, server_default=""),
        sa.Column("created_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    p = table_prefix()
    op.drop_table(p + "opinions")
    op.drop_table(p + "annotators")
    with op.batch_alter_table(p + "annotation_history") as batch:
        batch.drop_column("seconds")
    with op.batch_alter_table(p + "annotations") as batch:
        batch.drop_column("seconds")
