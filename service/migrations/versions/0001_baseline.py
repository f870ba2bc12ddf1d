"""Baseline: the schema as the service created it before revisions existed.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from xlgen.service.migrations import table_prefix

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    p = table_prefix()
    op.create_table(
        p + "documents",
        sa.Column("id", sa.String(256), primary_key=True),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("added_at", sa.Float, nullable=False),
    )
    op.create_table(
        p + "annotations",
        sa.Column("document_id", sa.String(256), primary_key=True),
        sa.Column("round", sa.Integer, primary_key=True),
        sa.Column("labels", sa.JSON, nullable=False),
        sa.Column("annotator", sa.String(256), nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.Column("writes", sa.Integer, nullable=False),
    )
    op.create_table(
        p + "annotation_history",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("document_id", sa.String(256), nullable=False),
        sa.Column("round", sa.Integer, nullable=False),
        sa.Column("labels", sa.JSON, nullable=False),
        sa.Column("annotator", sa.String(256), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_index(f"ix_{p}annotation_history_document_id", p + "annotation_history", ["document_id"])
    op.create_table(
        p + "claims",
        sa.Column("document_id", sa.String(256), primary_key=True),
        sa.Column("claim_id", sa.String(64), nullable=False),
        sa.Column("annotator", sa.String(256), nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
    )
    op.create_table(
        p + "jobs",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.Column("params", sa.JSON, nullable=False),
        sa.Column("progress", sa.JSON, nullable=False),
        sa.Column("metrics", sa.JSON, nullable=False),
        sa.Column("model_dir", sa.Text, nullable=False),
        sa.Column("swapped", sa.Boolean, nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("owner", sa.String(64), nullable=False),
    )
    op.create_table(
        p + "meta",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.JSON, nullable=False),
    )


def downgrade() -> None:
    p = table_prefix()
    for name in ("meta", "jobs", "claims", "annotation_history", "annotations", "documents"):
        op.drop_table(p + name)
