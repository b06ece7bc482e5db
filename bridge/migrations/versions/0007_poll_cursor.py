"""a pulled channel account's poll cursor (``channel_accounts.poll_cursor``),
stored by its poller after what it fetched is journaled

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("channel_accounts", sa.Column("poll_cursor", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("channel_accounts") as batch:
        batch.drop_column("poll_cursor")
