"""New labels added by name and their binary questions ("does this document carry label c?"), with
who claimed each, the answer, who gave it and how long it took.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from xlgen.service.migrations import table_prefix

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    p = table_prefix()
    op.create_table(
        p + "new_labels",
        sa.Column("name", sa.String(256), primary_key=True),
        sa.Column("description", sa.Text, nullable=True),
        sa.Column("examples", sa.JSON, nullable=False),
        sa.Column("annotator", sa.String(256), nullable=False, server_default=""),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        p + "questions",
        sa.Column("document_id", sa.String(256), primary_key=True),
        sa.Column("label", sa.String(256), primary_key=True),
        sa.Column("rank", sa.Integer, nullable=False),
        sa.Column("score", sa.Float, nullable=False),
        sa.Column("claimed_by", sa.String(256), nullable=True),
        sa.Column("claimed_until", sa.Float, nullable=True),
        sa.Column("answer", sa.Boolean, nullable=True),
        sa.Column("annotator", sa.String(256), nullable=True),
        sa.Column("seconds", sa.Float, nullable=True),
        sa.Column("answered_at", sa.Float, nullable=True),
    )
    op.create_index(f"ix_{p}questions_label", p + "questions", ["label"])


def downgrade() -> None:
    p = table_prefix()
    op.drop_index(f"ix_{p}questions_label", table_name=p + "questions")
    op.drop_table(p + "questions")
    op.drop_table(p + "new_labels")
