"""outbox.direction holds the follow-up directions too ("ack", "report"):
String(3) was enough for "in"/"out" only (PostgreSQL refused "report";
SQLite does not enforce the length)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.alter_column(
            "direction", existing_type=sa.String(length=3), type_=sa.String(length=8)
        )


def downgrade() -> None:
    op.execute("DELETE FROM outbox WHERE direction NOT IN ('in', 'out')")
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.alter_column(
            "direction", existing_type=sa.String(length=8), type_=sa.String(length=3)
        )
