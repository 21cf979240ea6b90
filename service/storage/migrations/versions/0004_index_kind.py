"""Collections choose their search index: exact, ivf (FAISS, approximate) or auto.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "collections",
        sa.Column("index_kind", sa.String(8), nullable=False, server_default="auto"),
    )


def downgrade() -> None:
    raise NotImplementedError("the service migrates forward only")
