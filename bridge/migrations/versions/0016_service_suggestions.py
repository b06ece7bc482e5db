"""service layer: the replies last suggested to a session's operator, and
each tenant's record of which suggestions operators accepted

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("service_sessions") as batch:
        batch.add_column(sa.Column("suggested", sa.JSON(), nullable=True))
    with op.batch_alter_table("tenant_service") as batch:
        batch.add_column(sa.Column("suggestions", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tenant_service") as batch:
        batch.drop_column("suggestions")
    with op.batch_alter_table("service_sessions") as batch:
        batch.drop_column("suggested")
