"""Tenants and channel accounts over their lifetime: list, show, disable,
enable, delete, disconnect (behind ``bridge tenant ...`` and
``bridge <channel> list | disconnect``).

Disabling keeps everything and keeps accepting what customers and the CRM
send (nothing valid is dropped); the pipelines park the tenant's
conversations until it is enabled again. Deleting removes the tenant and
every row that belongs to it. Disconnecting a channel account stops its
webhook at the provider, forgets its credentials and refuses its webhook
URL, but keeps its conversations for the record.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from bridge import outbox
from bridge.db import rowcount
from bridge.errors import BridgeError
from bridge.jobs import enqueue
from bridge.tables import (
    ChannelAccount,
    ChannelStatus,
    Contact,
    ContactIdentity,
    ContactLink,
    ContactMerge,
    Conversation,
    CrmRoute,
    IgnoredEventRow,
    Message,
    Outbox,
    OutboxState,
    Tenant,
    TenantStatus,
)

if TYPE_CHECKING:
    from bridge.runtime import Runtime

__all__ = [
    "channel_accounts",
    "delete_tenant",
    "disconnect_channel",
    "set_tenant_status",
    "tenant_detail",
    "tenants",
]

log = logging.getLogger(__name__)

#: rows that belong to a tenant, children before parents
_OWNED = (
    Message,
    Outbox,
    IgnoredEventRow,
    Conversation,
    ContactLink,
    ContactMerge,
    ContactIdentity,
    Contact,
    ChannelAccount,
    CrmRoute,
)


def _channel_counts(session: Session, tenant_ids: list[int]) -> dict[int, int]:
    if not tenant_ids:
        return {}
    rows = session.execute(
        select(ChannelAccount.tenant_id, func.count())
        .where(ChannelAccount.tenant_id.in_(tenant_ids))
        .group_by(ChannelAccount.tenant_id)
    )
    return {int(t): int(n) for t, n in rows}


def tenants(rt: Runtime) -> list[dict[str, Any]]:
    """Every tenant with its CRM, status and how many channels it has."""
    with rt.transaction() as session:
        rows = list(session.scalars(select(Tenant).order_by(Tenant.id)))
        channels = _channel_counts(session, [t.id for t in rows])
        return [
            {
                "id": t.id,
                "slug": t.slug,
                "crm": t.crm_kind,
                "account": t.crm_account_id,
                "mapping": t.mapping,
                "status": t.status,
                "reason": t.status_reason,
                "channels": channels.get(t.id, 0),
            }
            for t in rows
        ]


def channel_accounts(
    rt: Runtime, *, kind: str | None = None, tenant_id: int | None = None
) -> list[dict[str, Any]]:
    """Channel accounts (no credentials, webhook keys masked)."""
    query = select(ChannelAccount, Tenant.slug).join(Tenant, Tenant.id == ChannelAccount.tenant_id)
    if kind:
        query = query.where(ChannelAccount.kind == kind)
    if tenant_id:
        query = query.where(ChannelAccount.tenant_id == tenant_id)
    with rt.transaction() as session:
        return [
            {
                "id": account.id,
                "kind": account.kind,
                "tenant": slug,
                "name": account.name,
                "external_id": account.external_id,
                "status": account.status,
                "webhook": f"{rt.settings.public_url}/webhooks/{account.kind}/<key>",
            }
            for account, slug in session.execute(query.order_by(ChannelAccount.id))
        ]


def tenant_detail(rt: Runtime, tenant_id: int, *, reveal: bool = False) -> dict[str, Any]:
    """One tenant: settings a person needs (no credentials), its channel
    accounts, and what it holds. Webhook URLs carry a secret key: shown only
    with ``reveal``."""
    with rt.transaction() as session:
        tenant = session.get(Tenant, tenant_id)
        if tenant is None:
            raise LookupError(f"no tenant with id {tenant_id}")
        url = rt.crm_webhook_url(tenant)
        held = {
            name: session.scalar(
                select(func.count()).select_from(model).where(model.tenant_id == tenant_id)
            )
            for name, model in (
                ("contacts", Contact),
                ("conversations", Conversation),
                ("messages", Message),
            )
        }
        detail: dict[str, Any] = {
            "id": tenant.id,
            "slug": tenant.slug,
            "name": tenant.name,
            "crm": tenant.crm_kind,
            "account": tenant.crm_account_id,
            "mapping": tenant.mapping,
            "status": tenant.status,
            "reason": tenant.status_reason,
            "created": tenant.created_at,
            "crm_webhook": url if reveal else url.rsplit("/", 1)[0] + "/<key>",
            "holds": held,
        }
    detail["channels"] = channel_accounts(rt, tenant_id=tenant_id)
    if reveal:
        with rt.transaction() as session:
            keys = dict(
                session.execute(
                    select(ChannelAccount.id, ChannelAccount.key).where(
                        ChannelAccount.tenant_id == tenant_id
                    )
                ).all()
            )
        for channel in detail["channels"]:
            channel["webhook"] = channel["webhook"].replace("<key>", keys[channel["id"]])
    return detail


def set_tenant_status(
    rt: Runtime, tenant_id: int, status: TenantStatus, reason: str | None = None
) -> int:
    """``disabled`` parks the tenant's work as it comes up; ``active``
    resumes every conversation parked because of the tenant's status.
    Returns how many conversations were resumed."""
    if status not in (TenantStatus.ACTIVE, TenantStatus.DISABLED):
        raise ValueError("a tenant is active or disabled")
    jobs = []
    with rt.transaction() as session:
        tenant = session.get(Tenant, tenant_id, with_for_update=True)
        if tenant is None:
            raise LookupError(f"no tenant with id {tenant_id}")
        tenant.status, tenant.status_reason = status, reason
        if status == TenantStatus.ACTIVE:
            parked = session.scalars(
                select(Outbox).where(
                    Outbox.tenant_id == tenant_id, Outbox.state == OutboxState.PARKED
                )
            )
            for row in list(parked):
                if (row.reason or "").startswith("tenant"):
                    job = outbox.unpark(session, row.conversation_id, row.direction)
                    if job:
                        jobs.append((row.direction, row.conversation_id, job))
    for direction, conversation_id, job in jobs:
        enqueue(rt.queues, direction, conversation_id, job)
    return len(jobs)


def _stop_webhooks(
    rt: Runtime, tenant_id: int | None = None, account_id: int | None = None
) -> list[str]:
    """Ask each provider to stop posting (best effort): what failed."""
    query = select(ChannelAccount).where(ChannelAccount.status == ChannelStatus.ACTIVE)
    if tenant_id is not None:
        query = query.where(ChannelAccount.tenant_id == tenant_id)
    if account_id is not None:
        query = query.where(ChannelAccount.id == account_id)
    with rt.transaction() as session:
        adapters = [(a.id, rt.channel_adapter(a)) for a in session.scalars(query)]
    problems = []
    for account, adapter in adapters:
        try:
            adapter.remove_webhook()
        except BridgeError as exc:
            problems.append(f"channel account {account}: {exc.message or type(exc).__name__}")
    return problems


def disconnect_channel(rt: Runtime, account_id: int) -> list[str]:
    """Stop the account's webhook at the provider, drop its credentials and
    refuse its webhook URL; its conversations stay. Returns the problems met
    removing the webhook (the account is disconnected here regardless)."""
    with rt.transaction() as session:
        if session.get(ChannelAccount, account_id) is None:
            raise LookupError(f"no channel account {account_id}")
    problems = _stop_webhooks(rt, account_id=account_id)
    with rt.transaction() as session:
        session.execute(
            update(ChannelAccount)
            .where(ChannelAccount.id == account_id)
            .values(status=ChannelStatus.DISCONNECTED, credentials=None)
        )
    from bridge.webhooks import reset_cache

    reset_cache()
    return problems


def delete_tenant(rt: Runtime, tenant_id: int) -> tuple[dict[str, int], list[str]]:
    """Delete the tenant and everything that belongs to it, after asking its
    channels to stop posting. Returns rows deleted per table and the
    problems met stopping webhooks."""
    with rt.transaction() as session:
        if session.get(Tenant, tenant_id) is None:
            raise LookupError(f"no tenant with id {tenant_id}")
    problems = _stop_webhooks(rt, tenant_id=tenant_id)
    deleted: dict[str, int] = {}
    with rt.transaction() as session:
        # contacts point at each other (merges): unlink before deleting
        session.execute(
            update(Contact).where(Contact.tenant_id == tenant_id).values(merged_into_id=None)
        )
        for model in _OWNED:
            result = session.execute(delete(model).where(model.tenant_id == tenant_id))
            deleted[model.__tablename__] = rowcount(result)
        session.execute(delete(Tenant).where(Tenant.id == tenant_id))
    from bridge.webhooks import reset_cache

    reset_cache()
    return deleted, problems
