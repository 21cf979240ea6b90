"""Adapting a collection to its own domain: background jobs and the adopted adapters.

* ``adaptation_jobs``: one row per adaptation (its status, progress and held-out figures); its
  id is the version of the adapter it adopts.
* ``adapters``: each collection's adopted adapter, at most one (a map on its embeddings), with
  the collection state it was trained on.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

# SQLite autoincrements only an INTEGER PRIMARY KEY.
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def collection_id(primary_key: bool = False) -> sa.Column[int]:
    return sa.Column(
        "collection_id",
        sa.Integer(),
        sa.ForeignKey("collections.id", ondelete="CASCADE"),
        nullable=False,
        primary_key=primary_key,
    )


def upgrade() -> None:
    op.create_table(
        "adaptation_jobs",
        sa.Column("id", BIG_ID, primary_key=True, autoincrement=True),
        collection_id(),
        sa.Column("replica_id", sa.String(36), nullable=False),
        sa.Column("model_version", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("decision", sa.String(16), nullable=True),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("trained_change_id", sa.BigInteger(), nullable=False),
        sa.Column("trained_revision", sa.BigInteger(), nullable=False),
        sa.Column("n_examples", sa.Integer(), nullable=False),
        sa.Column("n_classes", sa.Integer(), nullable=False),
        sa.Column("progress", sa.Float(), nullable=False),
        sa.Column("examples_per_second", sa.Float(), nullable=False),
        sa.Column("result", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("revision", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sqlite_autoincrement=True,  # ids are adapter versions: never reused
    )
    op.create_index("ix_adaptation_jobs_collection_id", "adaptation_jobs", ["collection_id"])
    op.create_table(
        "adapters",
        collection_id(primary_key=True),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("model_version", sa.String(64), nullable=False),
        sa.Column("trained_change_id", sa.BigInteger(), nullable=False),
        sa.Column("trained_revision", sa.BigInteger(), nullable=False),
        sa.Column("stale", sa.Boolean(), nullable=False),
        sa.Column("dim", sa.Integer(), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("down", sa.LargeBinary(), nullable=False),
        sa.Column("up", sa.LargeBinary(), nullable=False),
        sa.Column("scores", sa.LargeBinary(), nullable=False),
        sa.Column("shots", sa.LargeBinary(), nullable=False),
        sa.Column("result", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
    )


def downgrade() -> None:
    raise NotImplementedError("the service migrates forward only")
