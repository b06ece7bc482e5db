"""identity graph: verified handles with their origin and source, links for
a rep to confirm, merges with evidence that can be undone

contact_identities is rebuilt (its unique key changes from (tenant, kind,
value) to (tenant, kind, value, origin contact): an unverified handle may be
held by two clients at once). Rows written before keep their owner as their
origin and count as verified (they were merged under the old rule already).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _identities(name: str) -> None:
    op.create_table(
        name,
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("tenant_id", _ID, sa.ForeignKey("tenants.id"), nullable=False),
        sa.Column("contact_id", _ID, sa.ForeignKey("contacts.id"), nullable=False),
        sa.Column("origin_contact_id", _ID, sa.ForeignKey("contacts.id"), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("value", sa.String(320), nullable=False),
        sa.Column("verified", sa.Boolean(), nullable=False),
        sa.Column("source", sa.String(64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("tenant_id", "kind", "value", "origin_contact_id"),
    )


def upgrade() -> None:
    _identities("contact_identities_new")
    op.execute(
        "INSERT INTO contact_identities_new (id, tenant_id, contact_id, origin_contact_id,"
        " kind, value, verified, source, created_at)"
        " SELECT id, tenant_id, contact_id, contact_id, kind, value, true, NULL, created_at"
        " FROM contact_identities"
    )
    op.drop_index("ix_contact_identities_contact_id", table_name="contact_identities")
    op.drop_table("contact_identities")
    op.rename_table("contact_identities_new", "contact_identities")
    op.create_index("ix_contact_identities_contact_id", "contact_identities", ["contact_id"])
    op.create_index(
        "ix_contact_identities_lookup", "contact_identities", ["tenant_id", "kind", "value"]
    )
    if op.get_bind().dialect.name == "postgresql":
        # the copied ids came with the rows; the new table's sequence starts after them
        op.execute(
            "SELECT setval(pg_get_serial_sequence('contact_identities', 'id'),"
            " COALESCE((SELECT MAX(id) FROM contact_identities), 0) + 1, false)"
        )

    with op.batch_alter_table("conversations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("origin_contact_id", _ID, nullable=True))
        batch_op.add_column(sa.Column("crm_entity_before", sa.String(64), nullable=True))
        batch_op.create_foreign_key(
            "fk_conversations_origin_contact", "contacts", ["origin_contact_id"], ["id"]
        )
    op.execute("UPDATE conversations SET origin_contact_id = contact_id")

    with op.batch_alter_table("contact_merges", schema=None) as batch_op:
        batch_op.add_column(sa.Column("evidence", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("crm_action", sa.String(16), nullable=True))
        batch_op.add_column(sa.Column("crm_keep_id", sa.String(64), nullable=True))
        batch_op.add_column(sa.Column("crm_gone_id", sa.String(64), nullable=True))
        batch_op.add_column(sa.Column("undone_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("undone_by", sa.String(100), nullable=True))

    op.create_table(
        "contact_links",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("tenant_id", _ID, sa.ForeignKey("tenants.id"), nullable=False),
        sa.Column("contact_id", _ID, sa.ForeignKey("contacts.id"), nullable=False),
        sa.Column("other_contact_id", _ID, sa.ForeignKey("contacts.id"), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("value", sa.String(320), nullable=False),
        sa.Column("evidence", sa.JSON(), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("crm_noted", sa.Boolean(), nullable=False),
        sa.Column("merge_id", _ID, sa.ForeignKey("contact_merges.id"), nullable=True),
        sa.Column("decided_by", sa.String(100), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("tenant_id", "contact_id", "other_contact_id", "kind", "value"),
    )
    op.create_index("ix_contact_links_tenant_id", "contact_links", ["tenant_id"])


def downgrade() -> None:
    op.drop_index("ix_contact_links_tenant_id", table_name="contact_links")
    op.drop_table("contact_links")
    with op.batch_alter_table("contact_merges", schema=None) as batch_op:
        for column in (
            "undone_by",
            "undone_at",
            "crm_gone_id",
            "crm_keep_id",
            "crm_action",
            "evidence",
        ):
            batch_op.drop_column(column)
    with op.batch_alter_table("conversations", schema=None) as batch_op:
        batch_op.drop_constraint("fk_conversations_origin_contact", type_="foreignkey")
        batch_op.drop_column("crm_entity_before")
        batch_op.drop_column("origin_contact_id")
    # a handle two clients hold (unverified) cannot go back under the old
    # unique key: keep the oldest row of each (tenant, kind, value)
    op.create_table(
        "contact_identities_old",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("tenant_id", _ID, sa.ForeignKey("tenants.id"), nullable=False),
        sa.Column("contact_id", _ID, sa.ForeignKey("contacts.id"), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("value", sa.String(320), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("tenant_id", "kind", "value"),
    )
    op.execute(
        "INSERT INTO contact_identities_old (id, tenant_id, contact_id, kind, value, created_at)"
        " SELECT id, tenant_id, contact_id, kind, value, created_at FROM contact_identities"
        " WHERE id IN (SELECT MIN(id) FROM contact_identities GROUP BY tenant_id, kind, value)"
    )
    op.drop_index("ix_contact_identities_lookup", table_name="contact_identities")
    op.drop_index("ix_contact_identities_contact_id", table_name="contact_identities")
    op.drop_table("contact_identities")
    op.rename_table("contact_identities_old", "contact_identities")
    op.create_index("ix_contact_identities_contact_id", "contact_identities", ["contact_id"])
