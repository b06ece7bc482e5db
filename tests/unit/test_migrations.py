"""The migrations build exactly the schema the models declare, on SQLite and
PostgreSQL, and every value the core writes fits its column (SQLite ignores
a VARCHAR's length, PostgreSQL does not: an outbox row for the "report"
follow-up once failed there only)."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import select

from bridge import outbox
from bridge.runtime import Runtime
from bridge.tables import Base, ChannelAccount, Contact, Conversation, Outbox, Tenant


def test_the_migrations_build_the_models_schema(runtime: Runtime) -> None:
    with runtime.engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "compare_server_default": False}
        )
        drift = compare_metadata(context, Base.metadata)
    assert drift == []


def test_every_direction_fits_the_outbox(runtime: Runtime) -> None:
    with runtime.transaction() as session:
        tenant = Tenant(
            slug="t", name="t", crm_kind="hubspot", webhook_key="k" * 20, mapping="m.yaml"
        )
        session.add(tenant)
        session.flush()
        account = ChannelAccount(tenant_id=tenant.id, kind="telegram", key="a" * 20, name="a")
        contact = Contact(tenant_id=tenant.id)
        session.add_all([account, contact])
        session.flush()
        conversation = Conversation(
            contact_id=contact.id,
            uid="c-1",
            tenant_id=tenant.id,
            channel_account_id=account.id,
            external_thread_id="1",
        )
        session.add(conversation)
        session.flush()
        ids = (tenant.id, conversation.id)
    directions = (outbox.IN, outbox.OUT, outbox.ACK, outbox.REPORT)
    for direction in directions:
        with runtime.transaction() as session:
            assert outbox.bump(session, *ids, direction)
    with runtime.transaction() as session:
        stored = set(session.scalars(select(Outbox.direction)))
    assert stored == set(directions)
