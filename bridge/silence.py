"""The silence alarm: a channel account that normally has traffic and has
gone quiet in working hours (a webhook lost at the provider, a bot token
revoked, a number banned: nothing arrives, so nothing fails either).

* **Normally has traffic**: the median of the account's inbound messages
  per working hour over the last :data:`HISTORY` (14 days, from the
  account's creation if it is younger; at least :data:`MIN_HOURS` working
  hours of it) is at least :data:`NORMAL_PER_HOUR`. A working hour is a UTC
  hour at least half of which is working time.
* **Silent**: it normally has traffic, it is working time now, and no
  inbound message came for ``silence_after`` of working time (the line's
  own ``silence_after`` where the mapping gives one, else
  ``BRIDGE_SILENCE_AFTER``: 2 h). A message counts when the bridge stored it
  (``created_at``); a WhatsApp echo too: it proves the channel delivers.
* **Working time**: the hours of the tenant's ``service:`` lines that serve
  the account's channel kind (those naming it, else those naming no
  channel, else the default line; :mod:`bridge.service.calendar`); without
  a service section every hour is working time. With several lines, the
  quiet time is the longest any of them was open.

An *episode* of silence starts with the account's last inbound message and
ends with the next one. Each episode alerts the supervisor once, the way an
SLA breach does: the service layer's CRM work (``ServiceAction``: a task for
the supervisor of the account's line, a message to each of its
``supervisor.alerts``), done and retried by
:func:`bridge.service.runner.run_action`. The work is keyed
``silence:<account id>:<last message id>``: the table's unique key on it
makes the alert once per episode whichever process sweeps, and the key
being there is what "alerted" means. A CRM task hangs on a record: the
conversation of the account's last message (its client's contact and deal).

:func:`check` says where each account stands (the console's overview);
:func:`sweep` (the sweeper, at most once a minute) raises the alerts.
Every function takes the moment it is asked about (``now``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import statistics
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import redis
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bridge.model import utcnow
from bridge.rows import aware
from bridge.service.calendar import Hours, business_seconds, is_open
from bridge.tables import (
    ChannelAccount,
    ChannelStatus,
    Message,
    ServiceAction,
    Tenant,
    TenantStatus,
)
from mappings import MappingError

if TYPE_CHECKING:
    from bridge.runtime import Runtime
    from mappings.service import Line, ServicePolicy

__all__ = [
    "CHECK_EVERY",
    "HISTORY",
    "MIN_HOURS",
    "NORMAL_PER_HOUR",
    "AccountSilence",
    "LastMessage",
    "alert_key",
    "alert_states",
    "alert_text",
    "check",
    "duration_text",
    "last_inbound",
    "lines_for",
    "per_working_hour",
    "sweep",
]

log = logging.getLogger(__name__)

#: how far back "normally has traffic" looks
HISTORY = dt.timedelta(days=14)
#: the median inbound messages per working hour from which an account
#: normally has traffic
NORMAL_PER_HOUR = 1.0
#: working hours of history needed before an account is judged at all
MIN_HOURS = 8
#: seconds between two sweeps that look (the sweeper runs every few seconds)
CHECK_EVERY = 60
_HOUR = dt.timedelta(hours=1)
_PREFIX = "bridge:silence:"
_KEY = "silence"


@dataclasses.dataclass(frozen=True)
class LastMessage:
    """An account's latest inbound message."""

    id: int
    conversation_id: int
    at: dt.datetime


@dataclasses.dataclass(frozen=True)
class AccountSilence:
    """Where one channel account stands."""

    account_id: int
    tenant_id: int
    kind: str
    name: str
    last: LastMessage | None
    #: median inbound messages per working hour (None: too little history)
    per_hour: float | None
    #: working time now
    working: bool
    #: seconds of working time since the last inbound message
    quiet: float
    #: seconds of working time that make a silence
    after: float

    @property
    def normal(self) -> bool:
        """It normally has traffic."""
        return self.per_hour is not None and self.per_hour >= NORMAL_PER_HOUR

    @property
    def silent(self) -> bool:
        """Flagged: normally busy, working time, quiet for too long."""
        return self.normal and self.working and self.last is not None and self.quiet >= self.after

    @property
    def key(self) -> str | None:
        """The current episode's alert key (None while not silent)."""
        if not self.silent or self.last is None:
            return None
        return alert_key(self.account_id, self.last.id)


def alert_key(account_id: int, message_id: int) -> str:
    """The key of the alert of the silence after message ``message_id``."""
    return f"{_KEY}:{account_id}:{message_id}"


# -- what the database says -----------------------------------------------------------------


def last_inbound(session: Session, account_ids: Iterable[int]) -> dict[int, LastMessage]:
    """Each account's latest inbound message by the time the bridge stored
    it (the highest id among equals); accounts with none are left out."""
    ids = sorted(set(account_ids))
    if not ids:
        return {}
    newest = (
        select(Message.channel_account_id, func.max(Message.created_at).label("at"))
        .where(Message.channel_account_id.in_(ids), Message.direction == "in")
        .group_by(Message.channel_account_id)
        .subquery()
    )
    rows = session.execute(
        select(Message.channel_account_id, Message.id, Message.conversation_id, Message.created_at)
        .join(
            newest,
            (newest.c.channel_account_id == Message.channel_account_id)
            & (newest.c.at == Message.created_at),
        )
        .where(Message.direction == "in")
        .order_by(Message.id)
    ).all()
    # ordered by id: the last of equals wins
    return {
        int(account): LastMessage(int(mid), int(conv), aware(at)) for account, mid, conv, at in rows
    }


def lines_for(policy: ServicePolicy, kind: str) -> list[Line]:
    """The lines that serve channel ``kind``: those naming it, else those
    naming no channel, else the default line; higher priority first."""
    lines = list(policy.lines.values())
    serving = [line for line in lines if kind in line.channels]
    serving = serving or [line for line in lines if not line.channels]
    serving = serving or [policy.line(policy.default_line)]
    return sorted(serving, key=lambda line: -line.priority)


def _open(hours: Sequence[Hours] | None, at: dt.datetime) -> bool:
    return hours is None or any(is_open(h, at) for h in hours)


def _working_seconds(hours: Sequence[Hours] | None, start: dt.datetime, end: dt.datetime) -> float:
    if hours is None:
        return max(0.0, (end - start).total_seconds())
    return max((business_seconds(h, start, end) for h in hours), default=0.0)


def _hour(at: dt.datetime) -> dt.datetime:
    return at.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)


def per_working_hour(
    session: Session,
    account_id: int,
    hours: Sequence[Hours] | None,
    now: dt.datetime,
    *,
    since: dt.datetime | None = None,
) -> float | None:
    """The median of the account's inbound messages per working hour over
    the whole UTC hours of :data:`HISTORY` before ``now`` (from ``since``,
    the account's creation, when later); None with fewer than
    :data:`MIN_HOURS` working hours."""
    end = _hour(now)
    start = end - HISTORY
    if since is not None:
        first = _hour(aware(since))
        # the first whole hour the account existed
        start = max(start, first if first == aware(since) else first + _HOUR)
    slots = []
    at = start
    while at < end:
        if _working_seconds(hours, at, at + _HOUR) >= _HOUR.total_seconds() / 2:
            slots.append(at)
        at += _HOUR
    if len(slots) < MIN_HOURS:
        return None
    counts: Counter[dt.datetime] = Counter(
        _hour(aware(created))
        for created in session.scalars(
            select(Message.created_at).where(
                Message.channel_account_id == account_id,
                Message.direction == "in",
                Message.created_at >= start,
                Message.created_at < end,
            )
        )
    )
    return float(statistics.median(counts[slot] for slot in slots))


def alert_states(session: Session, tenant_id: int, keys: Iterable[str]) -> dict[str, str]:
    """The state (``pending``, ``done``, ``failed``) of each key's alert task
    that exists."""
    wanted = sorted(set(keys))
    if not wanted:
        return {}
    rows = session.execute(
        select(ServiceAction.key, ServiceAction.state).where(
            ServiceAction.tenant_id == tenant_id, ServiceAction.key.in_(wanted)
        )
    ).all()
    return {str(key): str(state) for key, state in rows}


# -- where each account stands ----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Policy:
    """A tenant's service section as the alarm reads it (None: no section)."""

    service: ServicePolicy | None
    language: str


def _policy(runtime: Runtime, tenant: Tenant) -> _Policy | None:
    """None when the mapping cannot be read (no judgement then: its own
    problem shows elsewhere)."""
    try:
        mapping = runtime.mapping_for(tenant)
    except MappingError:
        return None
    return _Policy(mapping.service, mapping.language)


def _after(runtime: Runtime, lines: Sequence[Line]) -> float:
    for line in lines:
        if line.silence_after is not None:
            return line.silence_after.total_seconds()
    return float(runtime.settings.silence_after)


def _cached_rate(
    runtime: Runtime,
    session: Session,
    account: ChannelAccount,
    hours: Sequence[Hours] | None,
    now: dt.datetime,
) -> float | None:
    """:func:`per_working_hour`, worked out once per account and UTC hour
    (kept in Redis; worked out again when Redis does not answer)."""
    hour = int(_hour(now).timestamp())
    key = f"{_PREFIX}rate:{account.id}"
    try:
        raw = runtime.redis.get(key)
        if raw:
            stored = json.loads(raw)
            if stored.get("hour") == hour:
                value = stored.get("value")
                return None if value is None else float(value)
    except (redis.RedisError, OSError, ValueError):
        pass
    rate = per_working_hour(session, account.id, hours, now, since=account.created_at)
    try:
        runtime.redis.set(key, json.dumps({"hour": hour, "value": rate}), ex=2 * 3600)
    except (redis.RedisError, OSError):
        pass
    return rate


def check(
    runtime: Runtime, tenant_id: int | None = None, *, now: dt.datetime | None = None
) -> list[AccountSilence]:
    """Every active channel account (of one tenant) and whether it is
    silent; the accounts of disabled tenants and of tenants whose mapping
    cannot be read are left out."""
    now = now or utcnow()
    found: list[AccountSilence] = []
    with runtime.read_session() as session:
        for accounts, policy in _accounts(runtime, session, tenant_id):
            last = last_inbound(session, (a.id for a in accounts))
            for account in accounts:
                found.append(_one(runtime, session, account, policy, last.get(account.id), now))
    return found


def _accounts(
    runtime: Runtime, session: Session, tenant_id: int | None
) -> list[tuple[list[ChannelAccount], _Policy]]:
    scope = [Tenant.id == tenant_id] if tenant_id else []
    tenants = session.scalars(
        select(Tenant).where(Tenant.status != TenantStatus.DISABLED, *scope).order_by(Tenant.id)
    ).all()
    out = []
    for tenant in tenants:
        accounts = list(
            session.scalars(
                select(ChannelAccount)
                .where(
                    ChannelAccount.tenant_id == tenant.id,
                    ChannelAccount.status == ChannelStatus.ACTIVE,
                )
                .order_by(ChannelAccount.id)
            )
        )
        policy = _policy(runtime, tenant) if accounts else None
        if policy is not None:
            out.append((accounts, policy))
    return out


def _one(
    runtime: Runtime,
    session: Session,
    account: ChannelAccount,
    policy: _Policy,
    last: LastMessage | None,
    now: dt.datetime,
) -> AccountSilence:
    lines = lines_for(policy.service, account.kind) if policy.service is not None else []
    hours = [line.hours for line in lines] if policy.service is not None else None
    quiet = _working_seconds(hours, last.at, now) if last is not None else 0.0
    return AccountSilence(
        account_id=account.id,
        tenant_id=account.tenant_id,
        kind=account.kind,
        name=account.name or "",
        last=last,
        per_hour=_cached_rate(runtime, session, account, hours, now),
        working=_open(hours, now),
        quiet=quiet,
        after=_after(runtime, lines),
    )


# -- the alert ------------------------------------------------------------------------------


def sweep(runtime: Runtime, *, now: dt.datetime | None = None) -> int:
    """One look (at most one per :data:`CHECK_EVERY` seconds of ``now``,
    across processes): each silent account's supervisor alerted, once per
    episode. Returns how many alerts were raised."""
    now = now or utcnow()
    try:
        turn = int(now.timestamp()) // CHECK_EVERY
        if not runtime.redis.set(f"{_PREFIX}pass:{turn}", "1", nx=True, ex=2 * CHECK_EVERY):
            return 0
    except (redis.RedisError, OSError):
        return 0  # the sweeper's own lease needs Redis too: nothing runs now
    raised = 0
    for silence in check(runtime, now=now):
        if silence.silent and _alert(runtime, silence, now):
            raised += 1
    return raised


def _alert(runtime: Runtime, silence: AccountSilence, now: dt.datetime) -> bool:
    """Ask for the episode's alert (the CRM task and the supervisor's
    messages) unless it was asked for; True when it was asked now."""
    key = silence.key
    if key is None or silence.last is None:
        return False
    ids: list[int] = []
    try:
        with runtime.transaction() as session:
            if alert_states(session, silence.tenant_id, [key]):
                return False
            tenant = session.get(Tenant, silence.tenant_id)
            if tenant is None:
                return False
            policy = _policy(runtime, tenant)
            if policy is None:
                return False
            for kind, work_key, payload in _works(policy, silence, key, now):
                action = ServiceAction(
                    tenant_id=silence.tenant_id,
                    conversation_id=silence.last.conversation_id,
                    key=work_key[:200],
                    kind=kind,
                    payload=payload,
                    state="pending",
                    attempts=0,
                    next_check=now,
                )
                session.add(action)
                session.flush()
                ids.append(action.id)
    except IntegrityError:
        return False  # another sweeper asked for it first
    log.warning(
        "channel account %s (%s) silent for %.0f min of working time: supervisor alerted (%s)",
        silence.account_id,
        silence.kind,
        silence.quiet / 60,
        key,
    )
    _enqueue(runtime, ids)
    return True


def _works(
    policy: _Policy, silence: AccountSilence, key: str, now: dt.datetime
) -> list[tuple[str, str, dict[str, Any]]]:
    """``(kind, key, payload)`` of each ``ServiceAction`` the alert asks for:
    a task for the supervisor (as :func:`bridge.service.engine._alerts`
    asks for an SLA breach) and a message per alert route."""
    lines = lines_for(policy.service, silence.kind) if policy.service is not None else []
    supervisor = next((line.supervisor for line in lines if line.supervisor is not None), None)
    text = alert_text(silence, policy.language)
    works: list[tuple[str, str, dict[str, Any]]] = [
        (
            "task",
            key,
            {
                "text": text,
                "owner": supervisor.user if supervisor else None,
                "fields": {},
                "due": now.isoformat(),
            },
        )
    ]
    for route in supervisor.alerts if supervisor else ():
        works.append(
            (
                "notify",
                f"{key}:{route.channel}:{route.to}",
                {"text": text, "owner": None, "fields": {"channel": route.channel, "to": route.to}},
            )
        )
    return works


def _enqueue(runtime: Runtime, ids: Sequence[int]) -> None:
    """Start the actions now (the service layer's sweep would, a pass later)."""
    from bridge.jobs import enqueue_task
    from bridge.service.runner import run_action_job

    for action_id in ids:
        enqueue_task(
            runtime.queues,
            run_action_job,
            action_id,
            "service-action",
            timeout=runtime.settings.job_timeout,
        )


_TEXTS: Mapping[str, Mapping[str, str]] = {
    "en": {
        "alert": "Channel silent: no message from clients through {channel} for {quiet} of"
        " working time (usually {rate} an hour); the last one came {last}. Check the channel's"
        " connection.",
        "account": "{kind} account {id}",
        "named": '{kind} account {id} "{name}"',
    },
    "ru": {
        "alert": "Канал молчит: через {channel} нет сообщений клиентов уже {quiet} рабочего"
        " времени (обычно {rate} в час); последнее пришло {last}. Проверьте подключение канала.",
        "account": "{kind}, аккаунт {id}",
        "named": "{kind}, аккаунт {id} «{name}»",
    },
}


def duration_text(seconds: float, language: str = "en") -> str:
    """``3 h 05 min`` / ``3 ч 05 мин`` (minutes only under an hour)."""
    minutes = int(seconds // 60)
    h, m = divmod(minutes, 60)
    hour, minute = ("ч", "мин") if language == "ru" else ("h", "min")
    return f"{h} {hour} {m:02d} {minute}" if h else f"{m} {minute}"


def alert_text(silence: AccountSilence, language: str) -> str:
    """The alert's words in the CRM's language (English unless Russian)."""
    lang = "ru" if language.lower().startswith("ru") else "en"
    words = _TEXTS[lang]
    channel = (words["named"] if silence.name else words["account"]).format(
        kind=silence.kind, id=silence.account_id, name=silence.name
    )
    last = silence.last.at.strftime("%Y-%m-%d %H:%M UTC") if silence.last else "-"
    rate = f"{silence.per_hour:g}" if silence.per_hour is not None else "-"
    return words["alert"].format(
        channel=channel, quiet=duration_text(silence.quiet, lang), rate=rate, last=last
    )
