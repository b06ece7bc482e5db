"""What the console's overview shows of one tenant: the health of its CRM
and of each channel account, and what waits or failed.

Most of it is what ``bridge status`` reads (:func:`bridge.admin.status`:
the tenant's CRM state, the ingest journal, the pollers, what channels said
about an account, parked conversations, failed messages and follow-ups,
SLA sessions at risk, the service layer's failed CRM work), the moving
parts' health is ``/healthz``'s (:func:`bridge.health.check`), and the
silence of each account is the silence alarm's (:func:`bridge.silence.check`).
Added here: each account's latest inbound message, the failed messages and
follow-ups counted by reason (``bridge status`` lists the first hundred),
the RQ queues' depth (every tenant's work: the queues are shared).

A reason that names a message (``reply <uid> failed: …``) is counted
without its id (:func:`reason_kind`), so a hundred replies refused for the
same cause are one line with a count of a hundred.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

import redis
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bridge import admin, health, oauth, silence
from bridge.errors import BridgeError, ConfigError
from bridge.model import ReceiveMode, utcnow
from bridge.registry import UnknownAdapter, channel_class, crm_class
from bridge.runtime import Runtime
from bridge.tables import (
    ChannelAccount,
    ChannelStatus,
    CrmRoute,
    FollowupStatus,
    Message,
    MessageStatus,
    Tenant,
    TenantStatus,
)
from mappings import MappingError
from mappings.schema import MappingConfig

__all__ = [
    "AccountHealth",
    "CrmHealth",
    "Overview",
    "QueueDepth",
    "ReasonCount",
    "build",
    "failed_by_reason",
    "queue_depths",
    "reason_kind",
]

_UID = re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b\s?", re.I)
_BEFORE_COLON = re.compile(r"\s+([:;,])")
#: a follow-up's direction -> the direction of its message (``admin._FOLLOWUP`` reversed)
_FOLLOWUP = {"in": "ack", "out": "report"}


@dataclasses.dataclass(frozen=True)
class ReasonCount:
    """How many of one kind of work (``direction``) wait or failed for one reason."""

    direction: str
    reason: str
    count: int


@dataclasses.dataclass(frozen=True)
class CrmHealth:
    kind: str
    title: str
    #: the CRM's account id (a portal, a subdomain)
    account: str | None
    #: active | needs_reauth | disabled
    status: str
    reason: str | None
    #: app-level webhook routes naming the tenant
    routes: int
    #: the deployment can send a CRM admin through the OAuth install again
    reinstall: bool

    @property
    def needs_reauth(self) -> bool:
        return self.status == TenantStatus.NEEDS_REAUTH


@dataclasses.dataclass(frozen=True)
class AccountHealth:
    id: int
    kind: str
    name: str
    #: active | disconnected
    status: str
    #: ok | disconnected | setup_pending | failing | attention
    auth: str
    #: why, when not ok (a poller's error, what the channel said)
    detail: str | None
    #: webhook | polling | unknown (an adapter this deployment lacks)
    receive: str
    #: the poller's report (``bridge.pollers.report``) of a pulled account
    poller: Mapping[str, Any] | None
    #: what the channel said about the account in the last 7 days
    problems: tuple[Mapping[str, Any], ...]
    last_inbound: dt.datetime | None
    #: the silence alarm's view (None: not judged: disconnected, mapping unreadable)
    silence: silence.AccountSilence | None
    #: the state of the current silence's alert, when one was asked for
    alert: str | None

    @property
    def silent(self) -> bool:
        return self.silence is not None and self.silence.silent


@dataclasses.dataclass(frozen=True)
class QueueDepth:
    name: str
    queued: int
    started: int
    failed: int


@dataclasses.dataclass(frozen=True)
class Overview:
    tenant_id: int
    now: dt.datetime
    #: the tenant's mapping (None: it cannot be read; ``mapping_error`` says why)
    mapping: MappingConfig | None
    mapping_error: str | None
    crm: CrmHealth
    accounts: tuple[AccountHealth, ...]
    #: the moving parts (database, Redis, workers), as ``/healthz`` sees them
    health: health.Health
    #: None when Redis does not answer
    queues: tuple[QueueDepth, ...] | None
    #: journal rows by state, the rejected ones by reason, the oldest new one's age
    journal: Mapping[str, Any]
    #: message counts per direction and status
    messages: Mapping[str, Mapping[str, int]]
    parked: tuple[ReasonCount, ...]
    failed: tuple[ReasonCount, ...]
    backing_off: int
    at_risk: tuple[Mapping[str, Any], ...]
    service_failed: tuple[ReasonCount, ...]
    consent_withdrawn: int

    @property
    def journal_lag(self) -> float | None:
        """Seconds the oldest delivery not yet parsed has waited (None: none waits)."""
        age = self.journal.get("oldest_new_age_s")
        return None if age is None else float(age)

    @property
    def parked_total(self) -> int:
        return sum(r.count for r in self.parked)

    @property
    def failed_total(self) -> int:
        return sum(r.count for r in self.failed)

    @property
    def silent_accounts(self) -> tuple[AccountHealth, ...]:
        return tuple(a for a in self.accounts if a.silent)


def reason_kind(reason: str | None) -> str:
    """A reason without the message ids in it (``reply <uid> failed: X`` ->
    ``reply failed: X``, ``reply <uid>: X`` -> ``reply: X``), whitespace
    collapsed; ``-`` for none."""
    text = " ".join(_UID.sub("", reason or "").split())
    return _BEFORE_COLON.sub(r"\1", text)[:300] or "-"


def _grouped(rows: Iterable[tuple[str, str | None, int]]) -> tuple[ReasonCount, ...]:
    counts: Counter[tuple[str, str]] = Counter()
    for direction, reason, n in rows:
        counts[(str(direction), reason_kind(reason))] += int(n)
    ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return tuple(ReasonCount(direction, reason, n) for (direction, reason), n in ordered)


def failed_by_reason(session: Session, tenant_id: int) -> tuple[ReasonCount, ...]:
    """The tenant's failed messages (``in``/``out``) and failed follow-ups
    (``ack``/``report``), counted by reason, the most first."""
    messages = session.execute(
        select(Message.direction, Message.last_error, func.count())
        .where(Message.tenant_id == tenant_id, Message.status == MessageStatus.FAILED)
        .group_by(Message.direction, Message.last_error)
    ).all()
    followups = session.execute(
        select(Message.direction, Message.followup_error, func.count())
        .where(Message.tenant_id == tenant_id, Message.followup_status == FollowupStatus.FAILED)
        .group_by(Message.direction, Message.followup_error)
    ).all()
    rows = [(str(d), e, int(n)) for d, e, n in messages]
    rows += [(_FOLLOWUP.get(str(d), str(d)), e, int(n)) for d, e, n in followups]
    return _grouped(rows)


def queue_depths(runtime: Runtime) -> tuple[QueueDepth, ...] | None:
    """Jobs per RQ queue: waiting, running (or abandoned until RQ cleans
    up) and in RQ's failed registry; None when Redis does not answer."""
    try:
        return tuple(
            QueueDepth(
                name=name,
                queued=queue.count,
                started=queue.started_job_registry.count,
                failed=queue.failed_job_registry.count,
            )
            for name, queue in runtime.queues.items()
        )
    except (redis.RedisError, OSError):
        return None


def _can_link(runtime: Runtime, tenant: Tenant) -> bool:
    """Whether this deployment can make the tenant's re-authorise link: its
    OAuth app may not be configured here, or not make a link alone
    (Bitrix24 without BITRIX24_PORTAL: its app is installed from the portal)."""
    try:
        oauth.install_url(runtime, tenant.crm_kind, tenant.mapping)
    except (BridgeError, ConfigError):
        return False
    return True


def _crm(runtime: Runtime, session: Session, tenant: Tenant, row: Mapping[str, Any]) -> CrmHealth:
    try:
        cls = crm_class(tenant.crm_kind)
    except UnknownAdapter:
        title, reinstall = tenant.crm_kind, False
    else:
        title, reinstall = cls.title, cls.has_oauth_app and _can_link(runtime, tenant)
    routes = session.scalar(
        select(func.count()).select_from(CrmRoute).where(CrmRoute.tenant_id == tenant.id)
    )
    return CrmHealth(
        kind=tenant.crm_kind,
        title=title,
        account=tenant.crm_account_id,
        status=str(row.get("status") or tenant.status),
        reason=row.get("reason"),
        routes=int(routes or 0),
        reinstall=reinstall,
    )


def _receive(account: ChannelAccount) -> str:
    try:
        mode = channel_class(account.kind).receive_mode(account.settings or {})
    except UnknownAdapter:
        return "unknown"
    return "polling" if mode is ReceiveMode.POLLING else "webhook"


def _auth(
    account: ChannelAccount,
    poller: Mapping[str, Any] | None,
    problems: tuple[Mapping[str, Any], ...],
) -> tuple[str, str | None]:
    """The account's state and why: disconnected, waiting for the CRM
    setup, its poller refused (a revoked token), the channel complaining
    (a number disabled), else ok."""
    if account.status != ChannelStatus.ACTIVE:
        return "disconnected", None
    if account.awaiting_crm_setup:
        return "setup_pending", None
    if poller is not None and poller.get("state") == "failing":
        return "failing", str(poller.get("error") or "")
    if problems:
        return "attention", "; ".join(str(p["what"]) for p in problems)
    return "ok", None


def build(runtime: Runtime, tenant_id: int, *, now: dt.datetime | None = None) -> Overview:
    """The overview of one tenant at ``now``."""
    now = now or utcnow()
    status = admin.status(runtime, tenant_id)
    judged = {s.account_id: s for s in silence.check(runtime, tenant_id, now=now)}
    pollers = {int(p["account"]): p for p in status["pollers"]}
    problems: dict[int, list[Mapping[str, Any]]] = {}
    for p in status["channel_problems"]:
        problems.setdefault(int(p["account"]), []).append(p)
    with runtime.read_session() as session:
        tenant = session.get(Tenant, tenant_id)
        if tenant is None:
            raise LookupError(f"no tenant {tenant_id}")
        mapping, mapping_error = _mapping(runtime, tenant)
        tenant_row: Mapping[str, Any] = next(
            (t for t in status["tenants"] if t["id"] == tenant_id), {}
        )
        crm = _crm(runtime, session, tenant, tenant_row)
        rows = list(
            session.scalars(
                select(ChannelAccount)
                .where(ChannelAccount.tenant_id == tenant_id)
                .order_by(ChannelAccount.id)
            )
        )
        last = silence.last_inbound(session, (a.id for a in rows))
        keys = [s.key for s in judged.values() if s.key]
        alerts = silence.alert_states(session, tenant_id, keys)
        accounts = []
        for account in rows:
            own = tuple(problems.get(account.id, ()))
            auth, detail = _auth(account, pollers.get(account.id), own)
            judgement = judged.get(account.id)
            found = last.get(account.id)
            accounts.append(
                AccountHealth(
                    id=account.id,
                    kind=account.kind,
                    name=account.name or "",
                    status=account.status,
                    auth=auth,
                    detail=detail,
                    receive=_receive(account),
                    poller=pollers.get(account.id),
                    problems=own,
                    last_inbound=found.at if found else None,
                    silence=judgement,
                    alert=alerts.get(judgement.key) if judgement and judgement.key else None,
                )
            )
        failed = failed_by_reason(session, tenant_id)
    parked = _grouped((p["direction"], p["reason"], 1) for p in status["parked"])
    service_failed = _grouped((f["kind"], f["error"], 1) for f in status["service_failed"])
    return Overview(
        tenant_id=tenant_id,
        now=now,
        mapping=mapping,
        mapping_error=mapping_error,
        crm=crm,
        accounts=tuple(accounts),
        health=health.check(runtime),
        queues=queue_depths(runtime),
        journal=status["journal"],
        messages=status["messages"],
        parked=parked,
        failed=failed,
        backing_off=int(status["backing_off"] or 0),
        at_risk=tuple(status["sessions_at_risk"]),
        service_failed=service_failed,
        consent_withdrawn=int(status["consent_withdrawn"] or 0),
    )


def _mapping(runtime: Runtime, tenant: Tenant) -> tuple[MappingConfig | None, str | None]:
    try:
        return runtime.mapping_for(tenant), None
    except MappingError as exc:
        return None, str(exc)
