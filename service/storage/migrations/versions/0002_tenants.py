"""Tenants: collections gain ``tenant`` (existing ones: ``default``, where requests act when
auth is off); names become unique per tenant instead of globally.

SQLite cannot drop a constraint in place, so the table is rebuilt (foreign keys are off during
migrations, so dropping the old table neither cascades to the classes nor breaks them).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def tenant_column() -> sa.Column[str]:
    return sa.Column("tenant", sa.String(64), nullable=False, server_default="default")


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        op.add_column("collections", tenant_column())
        op.drop_constraint("collections_name_key", "collections", type_="unique")
        op.create_unique_constraint("uq_collections_tenant_name", "collections", ["tenant", "name"])
        return
    op.create_table(
        "collections_migrating",
        sa.Column("id", sa.Integer(), primary_key=True),
        tenant_column(),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("tenant", "name", name="uq_collections_tenant_name"),
    )
    op.execute(
        "INSERT INTO collections_migrating (id, tenant, name, created_at) "
        "SELECT id, 'default', name, created_at FROM collections"
    )
    op.drop_table("collections")
    op.rename_table("collections_migrating", "collections")


def downgrade() -> None:
    raise NotImplementedError("the service migrates forward only")
