"""the ingest journal: every verified delivery stored raw before it is
parsed (``deliveries``), normalised by a worker

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "deliveries",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("tenant_id", _ID, sa.ForeignKey("tenants.id"), nullable=False),
        sa.Column("channel_account_id", _ID, sa.ForeignKey("channel_accounts.id"), nullable=False),
        sa.Column("delivery_key", sa.String(length=255), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=True),
        sa.Column("facts", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=64), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("normalised_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("channel_account_id", "delivery_key"),
    )
    op.create_index("ix_deliveries_tenant_id", "deliveries", ["tenant_id"])
    op.create_index(
        "ix_deliveries_account_state", "deliveries", ["channel_account_id", "state", "id"]
    )
    op.create_index("ix_deliveries_state_received", "deliveries", ["state", "received_at"])


def downgrade() -> None:
    op.drop_table("deliveries")
