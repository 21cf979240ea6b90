"""Remembered query inputs, for feedback: a query sent with ``"remember": true`` keeps each
input (stage 1, as an example keeps it) and its embedding for a while, under a random id that
``POST .../feedback`` turns into a support example. Deleted with their collection.

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "remembered_inputs",
        sa.Column("id", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column(
            "collection_id",
            sa.Integer(),
            sa.ForeignKey("collections.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("pixels", sa.LargeBinary(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("channels", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=True),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("model_version", sa.String(64), nullable=False),
        sa.Column("vector", sa.LargeBinary(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
    )
    op.create_index(
        "ix_remembered_inputs_tenant_expires_at", "remembered_inputs", ["tenant", "expires_at"]
    )
    op.create_index("ix_remembered_inputs_expires_at", "remembered_inputs", ["expires_at"])
    op.create_index("ix_remembered_inputs_collection_id", "remembered_inputs", ["collection_id"])


def downgrade() -> None:
    raise NotImplementedError("the service migrates forward only")
