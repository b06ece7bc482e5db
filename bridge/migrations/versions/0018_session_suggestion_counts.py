"""service layer: per session, how many operator replies answered a message
with suggested replies and how many of them took one (the KPIs' acceptance
for a period, a line, an operator)

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("service_sessions") as batch:
        batch.add_column(
            sa.Column("suggestions_answered", sa.Integer(), nullable=False, server_default="0")
        )
        batch.add_column(
            sa.Column("suggestions_accepted", sa.Integer(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("service_sessions") as batch:
        batch.drop_column("suggestions_accepted")
        batch.drop_column("suggestions_answered")
