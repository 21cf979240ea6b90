"""Collections being restored from a snapshot: ``restore_heartbeat`` is the time of the
restore's latest write while it runs (the collection is invisible meanwhile), NULL once the
collection is visible (every collection made before this migration).

Revision ID: 0011
Revises: 0009 (0010 is another branch's number: point this at it when it merges)
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("collections", sa.Column("restore_heartbeat", sa.DateTime(), nullable=True))


def downgrade() -> None:
    raise NotImplementedError("the service migrates forward only")
