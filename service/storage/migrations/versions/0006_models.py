"""Several models: each collection is bound to one by name; text examples keep their text;
a process may serve several model versions.

Existing collections are bound to the configured default model (``default_model``, passed in
by :func:`service.storage.migrations.upgrade_database`; ``default`` from the alembic CLI), the
one model that served them.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    default_model = context.config.attributes.get("default_model", "default")
    op.add_column(
        "collections",
        sa.Column("model", sa.String(64), nullable=False, server_default=default_model),
    )
    # Text examples: the normalized text (their pixel columns are empty); NULL for images.
    op.add_column("examples", sa.Column("text", sa.Text(), nullable=True))
    # A process lists every version it serves, comma-separated.
    with op.batch_alter_table("replicas") as batch:
        batch.alter_column(
            "model_version", type_=sa.String(1024), existing_type=sa.String(64), nullable=False
        )


def downgrade() -> None:
    raise NotImplementedError("the service migrates forward only")
