"""Revisions per tenant: each tenant numbers its own writes, so no revision a tenant sees
tells it how much, or when, other tenants write. Change ids stay global (the change feed's
order); ``changes.tenant_revision`` and ``collections.tenant_revision`` are what clients see.

Existing rows keep the numbers clients were shown: a change's tenant revision is its id, a
collection's is its ``revision``, and each existing tenant's counter continues from the highest
change id handed out so far, so a revision a client remembers from before the upgrade is never
"ahead of every change" after it. New tenants count from 1.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tenant_revisions",
        sa.Column("tenant", sa.String(64), primary_key=True),
        sa.Column("revision", sa.BigInteger(), nullable=False),
    )
    for table in ("changes", "collections"):
        op.add_column(
            table,
            sa.Column("tenant_revision", sa.BigInteger(), nullable=False, server_default="0"),
        )
    op.execute("UPDATE changes SET tenant_revision = id")
    op.execute("UPDATE collections SET tenant_revision = revision")
    bind = op.get_bind()
    highest = bind.scalar(
        sa.text(
            "SELECT MAX(high) FROM (SELECT MAX(id) AS high FROM changes "
            "UNION ALL SELECT MAX(revision) FROM collections) AS highs"
        )
    )
    bind.execute(
        sa.text(
            "INSERT INTO tenant_revisions (tenant, revision) SELECT tenant, :highest FROM "
            "(SELECT tenant FROM collections UNION SELECT tenant FROM changes) AS tenants"
        ),
        {"highest": int(highest or 0)},
    )


def downgrade() -> None:
    raise NotImplementedError("the service migrates forward only")
