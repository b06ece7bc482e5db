"""cascades: a message tried on a client's channels in turn, its steps (one
per channel), and tenants' tokens for the bridge's own API

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_WHEN = sa.DateTime(timezone=True)


def _fk(target: str, ondelete: str) -> sa.ForeignKey:
    """A foreign key the database follows when a tenant is deleted (its
    contacts, messages and accounts go: their cascades go or let go)."""
    return sa.ForeignKey(target, ondelete=ondelete)


def upgrade() -> None:
    op.create_table(
        "api_tokens",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("tenant_id", _ID, _fk("tenants.id", "CASCADE"), nullable=False),
        sa.Column("token_sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("created_at", _WHEN, nullable=False),
        sa.Column("revoked_at", _WHEN, nullable=True),
    )
    op.create_index("ix_api_tokens_tenant_id", "api_tokens", ["tenant_id"])
    op.create_table(
        "cascades",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("uid", sa.String(36), nullable=False, unique=True),
        sa.Column("tenant_id", _ID, _fk("tenants.id", "CASCADE"), nullable=False),
        sa.Column("contact_id", _ID, _fk("contacts.id", "CASCADE"), nullable=False),
        sa.Column("crm_contact_id", sa.String(64), nullable=False),
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("channels", sa.JSON(), nullable=False),
        sa.Column("wait_minutes", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("next_check", _WHEN, nullable=True),
        sa.Column("batch", sa.String(36), nullable=True),
        sa.Column("note_state", sa.String(16), nullable=True),
        sa.Column("note_error", sa.Text(), nullable=True),
        sa.Column("note_attempts", sa.Integer(), nullable=False),
        sa.Column("finished_at", _WHEN, nullable=True),
        sa.Column("created_at", _WHEN, nullable=False),
        sa.Column("updated_at", _WHEN, nullable=False),
        sa.UniqueConstraint("tenant_id", "key"),
    )
    op.create_index("ix_cascades_tenant_id", "cascades", ["tenant_id"])
    op.create_index("ix_cascades_contact_id", "cascades", ["contact_id"])
    op.create_index("ix_cascades_batch", "cascades", ["batch"])
    op.create_index("ix_cascades_due", "cascades", ["state", "next_check"])
    op.create_index("ix_cascades_note", "cascades", ["note_state"])
    op.create_table(
        "cascade_steps",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("tenant_id", _ID, _fk("tenants.id", "CASCADE"), nullable=False),
        sa.Column("cascade_id", _ID, _fk("cascades.id", "CASCADE"), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("channel", sa.String(32), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(64), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("channel_account_id", _ID, _fk("channel_accounts.id", "SET NULL"), nullable=True),
        sa.Column("message_id", _ID, _fk("messages.id", "SET NULL"), nullable=True),
        sa.Column("started_at", _WHEN, nullable=True),
        sa.Column("checked_at", _WHEN, nullable=True),
        sa.Column("finished_at", _WHEN, nullable=True),
        sa.UniqueConstraint("cascade_id", "channel"),
        sa.UniqueConstraint("cascade_id", "position"),
    )
    op.create_index("ix_cascade_steps_state", "cascade_steps", ["state"])
    op.create_index("ix_cascade_steps_tenant_id", "cascade_steps", ["tenant_id"])


def downgrade() -> None:
    op.drop_index("ix_cascade_steps_tenant_id", table_name="cascade_steps")
    op.drop_index("ix_cascade_steps_state", table_name="cascade_steps")
    op.drop_table("cascade_steps")
    for name in ("note", "due", "batch", "contact_id", "tenant_id"):
        op.drop_index(f"ix_cascades_{name}", table_name="cascades")
    op.drop_table("cascades")
    op.drop_index("ix_api_tokens_tenant_id", table_name="api_tokens")
    op.drop_table("api_tokens")
