"""Collections choose their rejection of unknown inputs: none, default, or an acceptance.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "collections",
        sa.Column("rejection", sa.String(32), nullable=False, server_default="none"),
    )


def downgrade() -> None:
    raise NotImplementedError("the service migrates forward only")
