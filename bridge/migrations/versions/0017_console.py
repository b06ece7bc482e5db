"""admin console: its users (owner, tenant admins, viewers) and the audit
log of the changes made through it

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_WHEN = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "console_users",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("email", sa.String(320), nullable=False, unique=True),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("tenant_id", _ID, sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=True),
        sa.Column("totp_secret", sa.Text(), nullable=True),
        sa.Column("language", sa.String(8), nullable=False),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", _WHEN, nullable=False),
        sa.Column("last_login_at", _WHEN, nullable=True),
    )
    op.create_index("ix_console_users_tenant_id", "console_users", ["tenant_id"])
    op.create_table(
        "console_audit",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column(
            "user_id", _ID, sa.ForeignKey("console_users.id", ondelete="SET NULL"), nullable=True
        ),
        sa.Column("user_email", sa.String(320), nullable=False),
        sa.Column("tenant_id", _ID, sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=True),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target", sa.String(200), nullable=False),
        sa.Column("before", sa.JSON(), nullable=True),
        sa.Column("after", sa.JSON(), nullable=True),
        sa.Column("at", _WHEN, nullable=False),
        sa.Column("remote_addr", sa.String(64), nullable=True),
    )
    op.create_index("ix_console_audit_tenant", "console_audit", ["tenant_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_console_audit_tenant", table_name="console_audit")
    op.drop_table("console_audit")
    op.drop_index("ix_console_users_tenant_id", table_name="console_users")
    op.drop_table("console_users")
