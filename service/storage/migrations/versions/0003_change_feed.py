"""Scale-out: a change feed, embeddings keyed by model version, and live processes.

* ``collections.revision``: the id of the collection's latest change (only grows).
* ``changes``: one row per write, in the write's transaction; processes apply others' changes.
* ``embeddings``: one row per example and model version, so processes on an old and a new
  model serve side by side during an upgrade; the examples' own embedding column moves here.
* ``replicas``: live service processes and the model version each serves (heartbeats).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# SQLite autoincrements only an INTEGER PRIMARY KEY.
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.add_column(
        "collections",
        sa.Column("revision", sa.BigInteger(), nullable=False, server_default="0"),
    )
    op.create_table(
        "changes",
        sa.Column("id", BIG_ID, primary_key=True, autoincrement=True),
        sa.Column("collection_id", sa.Integer(), nullable=False),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("class_ids", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sqlite_autoincrement=True,  # ids are never reused, even after old changes are pruned
    )
    op.create_index("ix_changes_collection_id", "changes", ["collection_id", "id"])
    op.create_index("ix_changes_created_at", "changes", ["created_at"])
    op.create_table(
        "embeddings",
        sa.Column(
            "example_id",
            sa.Integer(),
            sa.ForeignKey("examples.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("model_version", sa.String(64), primary_key=True),
        sa.Column("vector", sa.LargeBinary(), nullable=False),
    )
    op.create_index("ix_embeddings_model_version", "embeddings", ["model_version"])
    op.execute(
        "INSERT INTO embeddings (example_id, model_version, vector) "
        "SELECT id, model_version, embedding FROM examples"
    )
    # IF EXISTS: the index came from the models (index=True), not every database has it.
    op.execute("DROP INDEX IF EXISTS ix_examples_model_version")
    # Databases made before revisions that lost it (hand-made copies) get it back.
    op.execute("CREATE INDEX IF NOT EXISTS ix_examples_class_id ON examples (class_id)")
    op.drop_column("examples", "embedding")
    op.drop_column("examples", "model_version")
    op.create_table(
        "replicas",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("model_version", sa.String(64), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("ready", sa.Boolean(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("seen_at", sa.DateTime(), nullable=False),
    )


def downgrade() -> None:
    raise NotImplementedError("the service migrates forward only")
