"""early_statuses: a channel's report on one of our messages that came
before the send was recorded, applied when it is (``threads.apply_early``)

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "early_statuses",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("tenant_id", _ID, sa.ForeignKey("tenants.id"), nullable=False),
        sa.Column("channel_account_id", _ID, sa.ForeignKey("channel_accounts.id"), nullable=False),
        sa.Column("channel_message_id", sa.String(255), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("applied_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_early_statuses_tenant_id", "early_statuses", ["tenant_id"])
    op.create_index(
        "ix_early_statuses_lookup", "early_statuses", ["channel_account_id", "channel_message_id"]
    )


def downgrade() -> None:
    op.drop_index("ix_early_statuses_lookup", table_name="early_statuses")
    op.drop_index("ix_early_statuses_tenant_id", table_name="early_statuses")
    op.drop_table("early_statuses")
