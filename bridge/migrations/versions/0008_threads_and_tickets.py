"""channels that thread themselves (e-mail): a conversation's channel state
(``conversations.channel_state``) and ticket number
(``conversations.ticket_number``, per tenant from ``tenants.next_ticket``)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("conversations", sa.Column("channel_state", sa.JSON(), nullable=True))
    op.add_column("conversations", sa.Column("ticket_number", sa.Integer(), nullable=True))
    op.create_index(
        "ix_conversations_ticket", "conversations", ["tenant_id", "ticket_number"], unique=True
    )
    op.add_column(
        "tenants",
        sa.Column("next_ticket", sa.Integer(), nullable=False, server_default="1001"),
    )


def downgrade() -> None:
    with op.batch_alter_table("tenants") as batch:
        batch.drop_column("next_ticket")
    op.drop_index("ix_conversations_ticket", table_name="conversations")
    with op.batch_alter_table("conversations") as batch:
        batch.drop_column("ticket_number")
        batch.drop_column("channel_state")
