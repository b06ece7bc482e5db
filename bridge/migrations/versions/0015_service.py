"""service layer: sessions (the KPIs' record, the greeting menu, the SLA
clocks), the CRM writes it asks for, and each tenant's routing memory

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_WHEN = sa.DateTime(timezone=True)


def _fk(target: str) -> sa.ForeignKey:
    return sa.ForeignKey(target, ondelete="CASCADE")


def upgrade() -> None:
    op.create_table(
        "service_sessions",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("tenant_id", _ID, _fk("tenants.id"), nullable=False),
        sa.Column("conversation_id", _ID, _fk("conversations.id"), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("state", sa.JSON(), nullable=False),
        sa.Column("line", sa.String(100), nullable=True),
        sa.Column("owner_id", sa.String(64), nullable=True),
        sa.Column("route_reason", sa.String(200), nullable=True),
        sa.Column("menu", sa.JSON(), nullable=True),
        sa.Column("sla", sa.JSON(), nullable=True),
        sa.Column("cursor", sa.Integer(), nullable=False),
        sa.Column("opened_at", _WHEN, nullable=False),
        sa.Column("first_response_at", _WHEN, nullable=True),
        sa.Column("closed_at", _WHEN, nullable=True),
        sa.Column("close_reason", sa.String(16), nullable=True),
        sa.Column("rating", sa.Integer(), nullable=True),
        sa.Column("next_check", _WHEN, nullable=True),
        sa.Column("updated_at", _WHEN, nullable=False),
        sa.UniqueConstraint("conversation_id", "number"),
    )
    op.create_index("ix_service_sessions_tenant_id", "service_sessions", ["tenant_id"])
    op.create_index("ix_service_sessions_conversation_id", "service_sessions", ["conversation_id"])
    op.create_index("ix_service_sessions_due", "service_sessions", ["next_check"])
    op.create_table(
        "service_actions",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("tenant_id", _ID, _fk("tenants.id"), nullable=False),
        sa.Column("conversation_id", _ID, _fk("conversations.id"), nullable=False),
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("next_check", _WHEN, nullable=True),
        sa.Column("created_at", _WHEN, nullable=False),
        sa.Column("done_at", _WHEN, nullable=True),
        sa.UniqueConstraint("tenant_id", "key"),
    )
    op.create_index("ix_service_actions_tenant_id", "service_actions", ["tenant_id"])
    op.create_index("ix_service_actions_conversation_id", "service_actions", ["conversation_id"])
    op.create_index("ix_service_actions_due", "service_actions", ["state", "next_check"])
    op.create_table(
        "tenant_service",
        sa.Column("tenant_id", _ID, _fk("tenants.id"), primary_key=True),
        sa.Column("routing", sa.JSON(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("tenant_service")
    op.drop_table("service_actions")
    op.drop_table("service_sessions")
