"""contacts: the CRM contact fields the bridge keeps current (a template
using ``{client.reachable}``): what was last written there, and when they
are to be looked at again (a reply window closing, a send failing)

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("contacts") as batch:
        batch.add_column(sa.Column("crm_live", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("crm_live_due", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_contacts_crm_live_due", "contacts", ["crm_live_due"])


def downgrade() -> None:
    op.drop_index("ix_contacts_crm_live_due", table_name="contacts")
    with op.batch_alter_table("contacts") as batch:
        batch.drop_column("crm_live_due")
        batch.drop_column("crm_live")
