"""Admin operations behind the CLI, the OAuth install and the status API:
tenants, channel accounts, CRM setup, status, replay, re-authorisation.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bridge import consent, outbox
from bridge.jobs import enqueue
from bridge.model import ChannelLink, Installed, utcnow
from bridge.registry import channel_class, crm_class
from bridge.schema import check, load, public, secret_names
from bridge.tables import (
    SETUP_PENDING,
    ChannelAccount,
    Conversation,
    CrmRoute,
    FollowupStatus,
    IgnoredEventRow,
    Message,
    MessageStatus,
    Outbox,
    OutboxState,
    Tenant,
    TenantStatus,
)

if TYPE_CHECKING:
    from bridge.runtime import Runtime

__all__ = [
    "add_channel_account",
    "create_tenant",
    "reauthorize",
    "replay",
    "setup_crm",
    "status",
    "upsert_oauth_tenant",
]

log = logging.getLogger(__name__)


def new_key() -> str:
    """A URL path secret: 192 bits from the CSPRNG (ASVS 11.5.1: not uuid4)."""
    return secrets.token_urlsafe(24)


def create_tenant(
    rt: Runtime,
    *,
    slug: str,
    crm_kind: str,
    mapping: str,
    credentials: Mapping[str, Any] | None = None,
    account_id: str | None = None,
    name: str | None = None,
    settings: Mapping[str, Any] | None = None,
) -> int:
    cls = crm_class(crm_kind)  # fail early on an unknown CRM
    rt.mappings.get(mapping)  # and on a missing/invalid mapping file
    public, secret = split_settings(cls.Settings, {}, settings or {}, where=f"{crm_kind} settings")
    with rt.transaction() as session:
        tenant = Tenant(
            slug=slug,
            name=name or slug,
            crm_kind=crm_kind,
            crm_account_id=account_id,
            webhook_key=new_key(),
            settings=public,
            mapping=mapping,
            status=TenantStatus.ACTIVE,
        )
        session.add(tenant)
        session.flush()
        if credentials or secret:
            tenant.credentials = rt.encrypt_tenant_credentials(
                tenant.id, credentials or {}, secret_settings=secret
            )
        return tenant.id


def split_settings(
    schema: type[Any],
    stored: Mapping[str, Any],
    updates: Mapping[str, Any],
    *,
    where: str,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``stored`` settings with ``updates`` applied, checked against the
    adapter's schema (every update must be one of its fields, of its type),
    as (public, secret) parts: secret fields are kept encrypted."""
    merged = {**stored, **check(schema, updates, where=where)}
    hidden = secret_names(schema)
    return (
        {k: v for k, v in merged.items() if k not in hidden},
        {k: v for k, v in merged.items() if k in hidden},
    )


def store_settings(rt: Runtime, tenant: Tenant, updates: Mapping[str, Any]) -> None:
    """Apply ``updates`` (fields of the tenant's adapter's ``Settings``) to
    the tenant row, secret ones encrypted with its credentials."""
    cls = crm_class(tenant.crm_kind)
    stored = rt.tenant_settings(tenant)
    public, secret = split_settings(
        cls.Settings, stored, updates, where=f"{tenant.crm_kind} settings"
    )
    tenant.settings = public
    if secret or rt.tenant_secret_settings(tenant):
        tenant.credentials = rt.encrypt_tenant_credentials(
            tenant.id, rt.decrypt_tenant_credentials(tenant), secret_settings=secret
        )


def check_mapping(rt: Runtime, name: str) -> str | None:
    """Why ``name`` cannot be a tenant's mapping (None when it can): the
    name comes from an install link or event, so it must be a valid mapping
    file in the mappings directory."""
    from mappings import MappingError

    try:
        rt.mappings.get(name)
    except MappingError as exc:
        return str(exc)
    return None


def upsert_oauth_tenant(
    rt: Runtime,
    *,
    crm_kind: str,
    installed: Installed,
    mapping: str,
    slug: str | None = None,
) -> tuple[int, bool]:
    """Install or re-install through OAuth or an install event: the CRM
    account id decides whether this is a new tenant. Returns (tenant id,
    created)."""
    credentials = dict(installed.credentials)
    extra = dict(installed.settings)
    account_id = str(installed.account_id or "")
    if not account_id:
        raise ValueError("the CRM did not say which account was connected")
    with rt.transaction() as session:
        tenant = session.scalars(
            select(Tenant).where(Tenant.crm_kind == crm_kind, Tenant.crm_account_id == account_id)
        ).first()
        if tenant is not None:
            tenant_id = tenant.id
    if tenant is None:
        tenant_id = create_tenant(
            rt,
            slug=slug or f"{crm_kind}-{account_id}",
            crm_kind=crm_kind,
            mapping=mapping,
            credentials=credentials,
            account_id=account_id,
            settings=extra,
        )
        return tenant_id, True
    reauthorize(rt, tenant_id, credentials, settings=extra)
    return tenant_id, False


def after_install(rt: Runtime, tenant_id: int) -> dict[str, Any] | None:
    """Re-run the CRM setup after an install or re-install when the tenant
    already has channels: a CRM may drop what the app registered when it is
    installed again (Bitrix24 removes event bindings on every install,
    event-bind.md), and replies must keep coming back. A first install has
    no channel yet; connecting one runs the setup."""
    with rt.read_engine.connect() as conn:
        has_channels = conn.scalar(
            select(ChannelAccount.id).where(ChannelAccount.tenant_id == tenant_id).limit(1)
        )
    if has_channels is None:
        return None
    return setup_crm(rt, tenant_id)


def add_channel_account(
    rt: Runtime,
    tenant_id: int,
    *,
    kind: str,
    credentials: Mapping[str, str],
    name: str = "",
    external_id: str | None = None,
    settings: Mapping[str, Any] | None = None,
    awaiting_setup: bool = False,
) -> int:
    """Store a channel account. ``awaiting_setup``: its messages wait until
    the next ``setup_crm`` has covered it (``awaiting_crm_setup``)."""
    channel_class(kind)
    if awaiting_setup:
        settings = {**(settings or {}), SETUP_PENDING: True}
    with rt.transaction() as session:
        account = ChannelAccount(
            tenant_id=tenant_id,
            kind=kind,
            key=new_key(),
            external_id=external_id,
            name=name,
            settings=dict(settings or {}),
        )
        session.add(account)
        session.flush()
        account.credentials = rt.encrypt_channel_credentials(tenant_id, account.id, credentials)
        return account.id


def setup_crm(rt: Runtime, tenant_id: int) -> dict[str, Any]:
    """Run the CRM adapter's idempotent setup for the tenant's channels and
    mapping, and keep what it created in the tenant's settings."""
    with rt.transaction() as session:
        tenant = session.get(Tenant, tenant_id)
        assert tenant is not None
        mapping = rt.mapping_for(tenant)
        accounts = list(
            session.scalars(select(ChannelAccount).where(ChannelAccount.tenant_id == tenant_id))
        )
        links = [
            ChannelLink(
                id=str(a.id),
                kind=a.kind,
                name=a.name or channel_class(a.kind).title,
                identifier=a.external_id or str(a.id),
                title=channel_class(a.kind).title,
            )
            for a in accounts
        ]
        adapter = rt.crm_adapter(tenant)
    result = adapter.setup(links, mapping.custom_properties())
    routes = [str(r) for r in result.routes]
    jobs: list[tuple[str, int, str]] = []
    with rt.transaction() as session:
        tenant = session.get(Tenant, tenant_id)
        assert tenant is not None
        store_settings(rt, tenant, result.settings)
        for account in session.scalars(
            select(ChannelAccount).where(ChannelAccount.tenant_id == tenant_id)
        ):
            if str(account.id) in {link.id for link in links}:
                account.settings = {
                    k: v for k, v in (account.settings or {}).items() if k != SETUP_PENDING
                }
        # conversations that waited for this setup (or backed off for any
        # reason) go now rather than at the end of their backoff
        for direction, conversation_id in outbox.waiting(session, tenant_id):
            job = outbox.unpark(session, conversation_id, direction)
            if job:
                jobs.append((direction, conversation_id, job))
        for key in routes:
            owner = session.scalar(
                select(CrmRoute.tenant_id).where(
                    CrmRoute.crm_kind == tenant.crm_kind, CrmRoute.route_key == key
                )
            )
            if owner is None:
                session.add(CrmRoute(crm_kind=tenant.crm_kind, route_key=key, tenant_id=tenant_id))
            elif owner != tenant_id:
                raise ValueError(f"{tenant.crm_kind} route {key!r} belongs to another tenant")
        settings = public(load(crm_class(tenant.crm_kind).Settings, rt.tenant_settings(tenant)))
    for direction, conversation_id, job in jobs:
        enqueue(rt.queues, direction, conversation_id, job)
    return settings


def reauthorize(
    rt: Runtime,
    tenant_id: int,
    credentials: Mapping[str, Any],
    *,
    settings: Mapping[str, Any] | None = None,
) -> int:
    """Store fresh credentials, reactivate the tenant and resume every
    conversation that was parked waiting for them. Returns how many resumed."""
    jobs = []
    with rt.transaction() as session:
        tenant = session.get(Tenant, tenant_id, with_for_update=True)
        assert tenant is not None
        rt.replace_tenant_credentials(tenant, credentials)
        tenant.status, tenant.status_reason = TenantStatus.ACTIVE, None
        if settings:
            store_settings(rt, tenant, settings)
        parked = list(
            session.scalars(
                select(Outbox).where(
                    Outbox.tenant_id == tenant_id, Outbox.state == OutboxState.PARKED
                )
            )
        )
        for row in parked:
            if (row.reason or "").startswith(("auth", "tenant")):
                job = outbox.unpark(session, row.conversation_id, row.direction)
                if job:
                    jobs.append((row.direction, row.conversation_id, job))
    for direction, conversation_id, job in jobs:
        enqueue(rt.queues, direction, conversation_id, job)
    return len(jobs)


def replay(
    rt: Runtime,
    *,
    message_uid: str | None = None,
    conversation_id: int | None = None,
    tenant_id: int | None = None,
    record: Callable[[Session, int], None] | None = None,
) -> int:
    """Put failed messages back to pending and resume their conversations;
    failed follow-ups (a delivery report, an acknowledgement) are due again.

    Scope: one message, one conversation, or every failed message (of one
    tenant). Returns how many messages and follow-ups were requeued.
    ``record(session, requeued)`` runs in the same transaction, after the
    change (the console's audit row: both are committed, or neither).
    """
    jobs: dict[tuple[str, int], str] = {}
    with rt.transaction() as session:
        scope = []
        if message_uid:
            scope.append(Message.uid == message_uid)
        if conversation_id:
            scope.append(Message.conversation_id == conversation_id)
        if tenant_id:
            scope.append(Message.tenant_id == tenant_id)
        failed = list(
            session.scalars(select(Message).where(Message.status == MessageStatus.FAILED, *scope))
        )
        followups = list(
            session.scalars(
                select(Message).where(Message.followup_status == FollowupStatus.FAILED, *scope)
            )
        )
        for message in followups:
            message.followup_status, message.followup_error = FollowupStatus.PENDING, None
        for message in failed:
            # An inbound message claimed before may have been written by an
            # attempt whose answer never came (a crash, a timeout) before the
            # CRM refused a later one: it goes back as in_flight, so the next
            # attempt looks it up before writing (found by the outbox state
            # machine test: replay after crash + refusal wrote it twice).
            maybe_written = message.direction == outbox.IN and (message.attempts or 0) > 0
            message.status = MessageStatus.IN_FLIGHT if maybe_written else MessageStatus.PENDING
            message.attempts, message.last_error = 0, None
            if maybe_written:
                message.claimed_at = None
        touched = {(m.direction, m.conversation_id) for m in failed}
        touched |= {(_FOLLOWUP[m.direction], m.conversation_id) for m in followups}
        if conversation_id and not failed:
            # Nothing failed there: resume the conversation itself (parked for
            # another reason) -- only if it is the tenant's the caller named.
            owner = session.scalar(
                select(Conversation.tenant_id).where(Conversation.id == conversation_id)
            )
            if owner is not None and (not tenant_id or owner == tenant_id):
                touched = {(d, conversation_id) for d in (*_FOLLOWUP, *_FOLLOWUP.values())}
        for direction, conv_id in touched:
            job = outbox.unpark(session, conv_id, direction)
            if job:
                jobs[(direction, conv_id)] = job
        requeued = len(failed) + len(followups)
        if record is not None:
            session.flush()
            record(session, requeued)
    for (direction, conv_id), job in jobs.items():
        enqueue(rt.queues, direction, conv_id, job)
    return requeued


#: a message's direction -> the direction of its follow-up work
_FOLLOWUP = {outbox.IN: outbox.ACK, outbox.OUT: outbox.REPORT}


def status(rt: Runtime, tenant_id: int | None = None) -> dict[str, Any]:
    """Counts per status (the ingest journal's too), parked conversations
    with their reason, and the failed messages (ids and reasons, no
    message text)."""
    with rt.transaction() as session:
        scope = [Message.tenant_id == tenant_id] if tenant_id else []
        counts: dict[str, dict[str, int]] = {"in": {}, "out": {}}
        for direction, state, n in session.execute(
            select(Message.direction, Message.status, func.count())
            .where(*scope)
            .group_by(Message.direction, Message.status)
        ):
            counts[direction][state] = n
        followups: dict[str, dict[str, int]] = {outbox.ACK: {}, outbox.REPORT: {}}
        for direction, followup_state, n in session.execute(
            select(Message.direction, Message.followup_status, func.count())
            .where(Message.followup_status.is_not(None), *scope)
            .group_by(Message.direction, Message.followup_status)
        ):
            assert followup_state is not None  # selected only where it is set
            followups[_FOLLOWUP[direction]][followup_state] = n
        followup_failed = [
            {
                "message": m.uid,
                "conversation": m.conversation_id,
                "direction": _FOLLOWUP[m.direction],
                "error": m.followup_error,
            }
            for m in session.scalars(
                select(Message)
                .where(Message.followup_status == FollowupStatus.FAILED, *scope)
                .order_by(Message.id)
                .limit(100)
            )
        ]
        outbox_scope = [Outbox.tenant_id == tenant_id] if tenant_id else []
        parked = [
            {
                "conversation": row.conversation_id,
                "direction": row.direction,
                "reason": row.reason,
            }
            for row in session.scalars(
                select(Outbox)
                .where(Outbox.state == OutboxState.PARKED, *outbox_scope)
                .order_by(Outbox.id)
            )
        ]
        waiting = [
            {
                "conversation": row.conversation_id,
                "direction": row.direction,
                "reason": row.reason,
                "until": row.not_before,
            }
            for row in session.scalars(
                select(Outbox)
                .where(
                    Outbox.state == OutboxState.PENDING,
                    Outbox.not_before.is_not(None),
                    *outbox_scope,
                )
                .order_by(Outbox.id)
                .limit(100)
            )
        ]
        backing_off = session.scalar(
            select(func.count())
            .select_from(Outbox)
            .where(
                Outbox.state == OutboxState.PENDING, Outbox.not_before.is_not(None), *outbox_scope
            )
        )
        failed = [
            {
                "message": m.uid,
                "conversation": m.conversation_id,
                "direction": m.direction,
                "seq": m.seq,
                "attempts": m.attempts,
                "error": m.last_error,
            }
            for m in session.scalars(
                select(Message)
                .where(Message.status == MessageStatus.FAILED, *scope)
                .order_by(Message.id)
                .limit(100)
            )
        ]
        tenants = [
            {
                "id": t.id,
                "slug": t.slug,
                "crm": t.crm_kind,
                "status": t.status,
                "reason": t.status_reason,
            }
            for t in session.scalars(
                select(Tenant)
                .where(*([Tenant.id == tenant_id] if tenant_id else []))
                .order_by(Tenant.id)
            )
        ]
        conversations = session.scalar(
            select(func.count())
            .select_from(Conversation)
            .where(*([Conversation.tenant_id == tenant_id] if tenant_id else []))
        )
        # customers who withdrew consent on their channel (bridge.consent)
        withdrawn = session.scalar(
            select(func.count())
            .select_from(Conversation)
            .where(
                Conversation.consent == consent.WITHDRAWN,
                *([Conversation.tenant_id == tenant_id] if tenant_id else []),
            )
        )
    from bridge.pipeline.inbound.journal import counts as journal_counts
    from bridge.pollers import report as pollers_report
    from bridge.service import runner as service

    return {
        "sessions_at_risk": service.at_risk(rt, tenant_id),
        "service_failed": service.failed_actions(rt, tenant_id),
        "channel_problems": channel_problems(rt, tenant_id),
        "tenants": tenants,
        "conversations": conversations,
        "consent_withdrawn": withdrawn,
        "journal": journal_counts(rt, tenant_id),
        "pollers": pollers_report(rt, tenant_id),
        "messages": counts,
        "parked": parked,
        "backing_off": backing_off,
        "waiting": waiting,
        "followups": followups,
        "followup_failed": followup_failed,
        "failed": failed,
    }


def channel_problems(rt: Runtime, tenant_id: int | None = None) -> list[dict[str, Any]]:
    """What channels said in the last 7 days about an account itself (its
    adapter's ``problem_events``: a number disabled, a template rejected),
    per account and event, newest first."""
    since = utcnow() - dt.timedelta(days=7)
    scope = [IgnoredEventRow.tenant_id == tenant_id] if tenant_id else []
    with rt.read_session() as session:
        rows = session.execute(
            select(
                ChannelAccount.id,
                ChannelAccount.kind,
                IgnoredEventRow.event_type,
                func.count(),
                func.max(IgnoredEventRow.created_at),
            )
            .join(ChannelAccount, ChannelAccount.id == IgnoredEventRow.channel_account_id)
            .where(IgnoredEventRow.created_at >= since, *scope)
            .group_by(ChannelAccount.id, ChannelAccount.kind, IgnoredEventRow.event_type)
        ).all()
    out = []
    for account_id, kind, event_type, n, last in rows:
        problems = channel_class(kind).problem_events
        what = next((v for k, v in problems.items() if str(event_type).startswith(k)), None)
        if what is not None:
            out.append(
                {
                    "account": account_id,
                    "kind": kind,
                    "event": event_type,
                    "what": what,
                    "count": n,
                    "last": last,
                }  # fmt: skip
            )
    return sorted(out, key=lambda p: str(p["last"]), reverse=True)


def set_channel_settings(rt: Runtime, account_id: int, **values: Any) -> None:
    with rt.transaction() as session:
        account = session.get(ChannelAccount, account_id)
        assert account is not None
        account.settings = {**(account.settings or {}), **values}


def tenant_by_slug(rt: Runtime, slug: str) -> int | None:
    with rt.transaction() as session:
        return session.scalar(select(Tenant.id).where(Tenant.slug == slug))
