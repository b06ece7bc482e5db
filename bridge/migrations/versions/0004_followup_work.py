"""follow-up work per message: the channel's acknowledgement of an inbound
event, the delivery report of an outbound reply (their own outbox work,
retried until done)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("followup_status", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("followup_error", sa.Text(), nullable=True))
        batch_op.add_column(
            sa.Column("followup_attempts", sa.Integer(), nullable=False, server_default="0")
        )
    # what the old flag said was reported is done; the rest was never retried
    op.execute("UPDATE messages SET followup_status = 'done' WHERE delivery_reported")
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_column("delivery_reported")


def downgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("delivery_reported", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    op.execute("UPDATE messages SET delivery_reported = true WHERE followup_status = 'done'")
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_column("followup_attempts")
        batch_op.drop_column("followup_error")
        batch_op.drop_column("followup_status")
