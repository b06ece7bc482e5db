"""The console's KPIs of one tenant over a period ``[start, end)``, in buckets
(hour, day, week) of the tenant's time zone.

What each figure counts (every query is scoped to the tenant):

* **traffic**: messages by ``sent_at`` in the period, per channel kind and
  direction, per bucket. A WhatsApp *echo* (the business's own message
  typed in the phone app, stored inbound) counts as outbound.
* **clients**: the contacts (``Conversation.contact_id``, which follows
  merges) who wrote in the period; *new* when their first inbound message
  ever is in the period, else *returning*. Echoes are not the client's.
* **sessions** (``ServiceSession``) belong to the period they *opened* in: a
  session opened at ``end`` is the next period's.
* **first-response time**: ``first_response_at - opened_at`` (wall-clock
  seconds) of the answered sessions; p50/p90 by the *nearest-rank* method
  (:func:`percentile`), computed in Python from the fetched durations so
  SQLite and PostgreSQL give the same figures.
* **SLA met %**: the stored SLA state drops a first-response clock once it
  is met, so the verdict is worked out again as :mod:`bridge.service.sla`
  does: the business time (the session's line hours, ``calendar.business_
  seconds``) from the opening to the first response against the line's
  ``first_response`` target for the session's priority; *met* when it is
  below the target, *breached* at or past it. A session still unanswered is
  breached once its business time passed the target (up to its close, or
  ``now``); before that it has no verdict yet and is not counted. Met % =
  met / sessions with a verdict. Needs the tenant's service section (None
  without it).
* **operator load**: sessions opened in the period per owner, and the peak
  number of that owner's sessions open at once within the period (sessions
  opened before it and still open count; an open session counts to the end).
* **CSAT**: the sessions' ratings 1..5: count, average, distribution.
* **menu choices**: the CRM notes ``menu:<conversation uid>:<session>`` the
  service layer asks for when a client picks a leaf of the greeting menu
  (the only record of the choice), mapped back to the mapping's option by
  its label in either language.
* **suggestions**: ``TenantService.suggestions`` (shown / accepted per
  suggestion, all time: the only record of acceptance) and, in the period,
  the client messages that got suggestions (notes ``suggest:<message uid>``).

Bucketing: the database groups the messages by 15-minute slot of UTC (every
zone's offset is a multiple of 15 minutes) and Python maps each slot to the
local bucket; a bucket is named by its local start (``2026-12-07 09:00``,
``2026-12-07``, a week by its Monday). Under a daylight-saving change the
repeated wall-clock hour is one bucket.
"""

from __future__ import annotations

import bisect
import datetime as dt
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, cast
from zoneinfo import ZoneInfo

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Integer,
    String,
    and_,
    case,
    extract,
    func,
    literal,
    literal_column,
    or_,
    select,
)
from sqlalchemy import cast as sql_cast
from sqlalchemy.orm import Session

from bridge import outbox
from bridge.rows import aware
from bridge.service import engine
from bridge.service.calendar import business_seconds
from bridge.tables import (
    ChannelAccount,
    Conversation,
    Message,
    ServiceAction,
    ServiceSession,
    TenantService,
)
from mappings.schema import MappingConfig
from mappings.service import Line, ServicePolicy, Texts

__all__ = [
    "BUCKETS",
    "PRESETS",
    "Bucket",
    "Clients",
    "Csat",
    "CsatRow",
    "LoadRow",
    "MenuRow",
    "Period",
    "PeriodError",
    "Report",
    "ResponseRow",
    "ResponseTimes",
    "Suggestions",
    "Traffic",
    "clients",
    "csat",
    "load",
    "menu_choices",
    "percentile",
    "period_for",
    "report",
    "response_times",
    "seconds_text",
    "sla_verdict",
    "suggestions",
    "tenant_zone",
    "traffic",
]

Bucket = Literal["hour", "day", "week"]
BUCKETS: tuple[Bucket, ...] = ("hour", "day", "week")
PRESETS = ("today", "7d", "30d", "dates")
#: the database's grouping of messages (seconds): every zone's offset is a multiple
SLOT = 900
#: more buckets than this and the next coarser bucket is used
MAX_BUCKETS = 800
#: the longest period of chosen dates (days)
MAX_DAYS = 366
_UTC = dt.UTC


# -- the period ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Period:
    """``[start, end)`` (aware, UTC) cut in ``bucket`` s of ``zone``."""

    start: dt.datetime
    end: dt.datetime
    bucket: Bucket
    zone: str
    #: the preset it came from (today, 7d, 30d, dates)
    preset: str = "dates"

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.zone)

    @property
    def first_day(self) -> dt.date:
        """The period's first local date."""
        return self.start.astimezone(self.tz).date()

    @property
    def last_day(self) -> dt.date:
        """The period's last local date (the one ``end`` closes)."""
        return (self.end.astimezone(self.tz) - dt.timedelta(microseconds=1)).date()

    def label(self, at: dt.datetime) -> str:
        """The bucket ``at`` falls in, named by its local start."""
        return _label(at.astimezone(self.tz), self.bucket)

    def labels(self) -> list[str]:
        """The period's buckets in order."""
        return [label for _, label in self.starts()]

    def starts(self) -> list[tuple[float, str]]:
        """Each bucket's first instant (Unix seconds) and name, in order."""
        return _starts(self)

    def holds(self, at: dt.datetime) -> bool:
        return self.start <= aware(at) < self.end


def _label(local: dt.datetime, bucket: Bucket) -> str:
    if bucket == "hour":
        return local.strftime("%Y-%m-%d %H:00")
    day = local.date()
    if bucket == "week":
        day -= dt.timedelta(days=day.weekday())
    return day.isoformat()


def _starts(period: Period) -> list[tuple[float, str]]:
    """Days and weeks from the local dates (a day is 23 to 25 hours long);
    hours by walking the 15-minute slots (a zone may be half an hour off
    UTC), a new bucket where the local hour's name changes."""
    tz, start, end = period.tz, period.start, period.end
    out: list[tuple[float, str]] = []
    if period.bucket == "hour":
        at, step = start, dt.timedelta(seconds=SLOT)
        while at < end:
            name = _label(at.astimezone(tz), "hour")
            if not out or out[-1][1] != name:
                out.append((at.timestamp(), name))
            at += step
        return out
    day, last = period.first_day, period.last_day
    while day <= last:
        name = _label(dt.datetime.combine(day, dt.time(12)), period.bucket)
        if not out or out[-1][1] != name:
            out.append((max(_midnight(day, tz), start).timestamp(), name))
        day += dt.timedelta(days=1)
    return out


def _bucket_count(start: dt.datetime, end: dt.datetime, bucket: Bucket) -> int:
    """About how many buckets (enough to choose a coarser bucket)."""
    seconds = (end - start).total_seconds()
    return math.ceil(seconds / {"hour": 3600, "day": 86400, "week": 7 * 86400}[bucket])


class PeriodError(ValueError):
    """A period that cannot be shown; ``code`` says why (``dates``,
    ``order``, ``length``, ``preset``, ``bucket``; the page words it)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _midnight(day: dt.date, zone: ZoneInfo) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(0), tzinfo=zone).astimezone(_UTC)


def period_for(
    zone: str,
    now: dt.datetime,
    preset: str = "7d",
    first: dt.date | None = None,
    last: dt.date | None = None,
    bucket: str | None = None,
) -> Period:
    """The period a preset names at ``now`` in ``zone``: ``today`` (hours),
    ``7d`` / ``30d`` (the last 7/30 local days, today included; days), or
    ``dates`` from ``first`` to ``last`` local dates, both included (hours
    up to 2 days, days up to 92, weeks beyond). ``bucket`` overrides the
    default unless it would give more than :data:`MAX_BUCKETS` buckets (then
    the next coarser one). :class:`PeriodError` for an unknown preset or
    bucket, or a range of dates that is missing, reversed or longer than
    :data:`MAX_DAYS`."""
    tz = ZoneInfo(zone)
    today = now.astimezone(tz).date()
    if preset == "today":
        first, last, default = today, today, "hour"
    elif preset in ("7d", "30d"):
        days = int(preset[:-1])
        first, last, default = today - dt.timedelta(days=days - 1), today, "day"
    elif preset == "dates":
        if first is None or last is None:
            raise PeriodError("dates", "a period of dates needs its first and last dates")
        if last < first:
            raise PeriodError("order", "the period ends before it starts")
        if (last - first).days + 1 > MAX_DAYS:
            raise PeriodError("length", f"a period of at most {MAX_DAYS} days")
        span = (last - first).days + 1
        default = "hour" if span <= 2 else "day" if span <= 92 else "week"
    else:
        raise PeriodError("preset", f"unknown period {preset!r}")
    if bucket is not None and bucket not in BUCKETS:
        raise PeriodError("bucket", f"unknown bucket {bucket!r}")
    start, end = _midnight(first, tz), _midnight(last + dt.timedelta(days=1), tz)
    chosen = cast(Bucket, bucket or default)
    while chosen != "week" and _bucket_count(start, end, chosen) > MAX_BUCKETS:
        chosen = BUCKETS[BUCKETS.index(chosen) + 1]
    return Period(start, end, chosen, zone, preset)


def tenant_zone(mapping: MappingConfig | None) -> str:
    """The zone the tenant's KPIs are bucketed in: its service section's
    default line's calendar zone, else the mapping's ``timezone``, else UTC
    (no readable mapping)."""
    if mapping is None:
        return "UTC"
    policy = mapping.service
    if policy is not None and policy.default_line in policy.lines:
        return policy.line(policy.default_line).hours.timezone
    return mapping.timezone or "UTC"


def percentile(values: Sequence[float], p: int) -> float | None:
    """The nearest-rank percentile (``p`` in 1..100): the smallest value
    with at least ``p`` % of the values at or below it, i.e. the
    ``ceil(p/100 * n)``-th smallest (integer arithmetic: no rounding
    surprise). Always one of the values, never interpolated; None when empty."""
    if not values:
        return None
    if not 1 <= p <= 100:
        raise ValueError("p is a whole percentage from 1 to 100")
    data = sorted(values)
    rank = -(-p * len(data) // 100)
    return float(data[rank - 1])


# -- traffic and clients ------------------------------------------------------------------------


@dataclass(frozen=True)
class Traffic:
    """Messages per bucket (:attr:`labels`), per channel kind."""

    labels: list[str]
    channels: list[str]
    inbound: dict[str, list[int]]
    outbound: dict[str, list[int]]

    def total(self, kind: str, direction: str) -> int:
        counts = self.inbound if direction == "in" else self.outbound
        return sum(counts.get(kind, []))


def _slot_size(edges: Sequence[float], end: dt.datetime) -> int:
    """The longest slot (up to a day) every bucket edge is a multiple of:
    each slot then lies in one bucket. 15 minutes for any zone; 3 hours
    for Moscow's days (midnight is 21:00 UTC), a day for UTC's."""
    return math.gcd(86400, int(end.timestamp()), *(int(edge) for edge in edges))


def _n(value: int) -> ColumnElement[Any]:
    """A number written into the SQL (PostgreSQL matches a GROUP BY
    expression to the SELECT's only without bound parameters)."""
    number: ColumnElement[Any] = literal_column(str(int(value)))
    return number


def _slot_keys(session: Session, size: int) -> list[ColumnElement[Any]]:
    """The SQL that names a message's UTC slot of ``size`` seconds.
    PostgreSQL: its Unix seconds // size. SQLite stores the time as UTC
    text (``2026-12-07 21:05:00.000000``): its hour by text (cheaper than
    ``strftime('%s')`` on every row), and the quarter of the hour when a
    bucket edge is not on the hour."""
    if session.get_bind().dialect.name != "sqlite":
        return [sql_cast(func.floor(extract("epoch", Message.sent_at) / _n(size)), BigInteger)]
    hour = func.substr(Message.sent_at, _n(1), _n(13))
    if size % 3600 == 0:
        return [hour]
    minute = sql_cast(func.substr(Message.sent_at, _n(15), _n(2)), Integer)
    return [hour, minute / _n(SLOT // 60)]


def _slot_start(key: Sequence[Any], size: int) -> float:
    """The Unix seconds a slot of :func:`_slot_keys` starts at."""
    if len(key) == 1 and not isinstance(key[0], str):
        return float(int(key[0]) * size)
    hour = dt.datetime.strptime(str(key[0]), "%Y-%m-%d %H").replace(tzinfo=_UTC).timestamp()
    return hour + (int(key[1]) * SLOT if len(key) > 1 else 0)


def _echo() -> ColumnElement[Any]:
    flag: ColumnElement[Any] = Message.payload["echo"].as_boolean()
    return flag


def traffic(session: Session, tenant_id: int, period: Period) -> Traffic:
    """Inbound and outbound messages per channel kind and bucket."""
    starts = period.starts()
    labels = [name for _, name in starts]
    edges = [at for at, _ in starts]
    size = _slot_size(edges, period.end)
    keys = _slot_keys(session, size)
    echoes = func.sum(case((_echo().is_(True), 1), else_=0))
    rows = session.execute(
        select(*keys, Message.channel_account_id, Message.direction, func.count(), echoes)
        .where(
            Message.tenant_id == tenant_id,
            Message.sent_at >= period.start,
            Message.sent_at < period.end,
        )
        .group_by(*keys, Message.channel_account_id, Message.direction)
    ).all()
    accounts = select(ChannelAccount.id, ChannelAccount.kind).where(
        ChannelAccount.tenant_id == tenant_id
    )
    kind_of = {account: kind for account, kind in session.execute(accounts)}
    width = len(keys)
    kinds = sorted({str(kind_of[row[width]]) for row in rows})
    inbound = {kind: [0] * len(labels) for kind in kinds}
    outbound = {kind: [0] * len(labels) for kind in kinds}
    starts_of: dict[tuple[Any, ...], int] = {}
    for row in rows:
        key = tuple(row[:width])
        i = starts_of.get(key)
        if i is None:
            i = starts_of[key] = bisect.bisect_right(edges, _slot_start(key, size)) - 1
        account, direction, count, echo = row[width:]
        kind = str(kind_of[account])
        echo = int(echo or 0)
        if direction == outbox.IN:
            inbound[kind][i] += int(count) - echo
            outbound[kind][i] += echo
        else:
            outbound[kind][i] += int(count)
    return Traffic(labels, kinds, inbound, outbound)


@dataclass(frozen=True)
class Clients:
    """The clients who wrote in the period."""

    new: int
    returning: int

    @property
    def total(self) -> int:
        return self.new + self.returning


def clients(session: Session, tenant_id: int, period: Period) -> Clients:
    """New (first inbound message ever in the period) and returning clients."""
    wrote = (
        select(Conversation.contact_id)
        .join(Message, Message.conversation_id == Conversation.id)
        .where(
            Message.tenant_id == tenant_id,
            Message.direction == outbox.IN,
            Message.sent_at >= period.start,
            Message.sent_at < period.end,
            _echo().is_not(True),
        )
        .distinct()
    )
    # their first message ever: read through their conversations (indexed)
    rows = session.execute(
        select(Conversation.contact_id, func.min(Message.sent_at))
        .join(Message, Message.conversation_id == Conversation.id)
        .where(
            Conversation.tenant_id == tenant_id,
            Conversation.contact_id.in_(wrote.scalar_subquery()),
            Message.direction == outbox.IN,
            Message.sent_at < period.end,
            _echo().is_not(True),
        )
        .group_by(Conversation.contact_id)
    ).all()
    new = sum(1 for _, at in rows if aware(at) >= period.start)
    return Clients(new=new, returning=len(rows) - new)


# -- sessions -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Row:
    """What the session KPIs read of one session."""

    line: str
    owner: str
    opened_at: dt.datetime
    first_response_at: dt.datetime | None
    closed_at: dt.datetime | None
    rating: int | None
    sla: Mapping[str, Any] | None


def _sessions(session: Session, tenant_id: int, period: Period) -> list[_Row]:
    # of the SLA state only whether there is one (every stored state has a
    # phase) and its priority, read by the database: no JSON decoded here
    phase = ServiceSession.sla["phase"].as_string()
    priority = ServiceSession.sla["priority"].as_string()
    rows = session.execute(
        select(
            ServiceSession.line,
            ServiceSession.owner_id,
            ServiceSession.opened_at,
            ServiceSession.first_response_at,
            ServiceSession.closed_at,
            ServiceSession.rating,
            phase,
            priority,
        ).where(
            ServiceSession.tenant_id == tenant_id,
            ServiceSession.opened_at >= period.start,
            ServiceSession.opened_at < period.end,
        )
    ).all()
    return [
        _Row(
            line or "",
            owner or "",
            aware(opened),
            aware(first) if first is not None else None,
            aware(closed) if closed is not None else None,
            rating,
            {"priority": level} if state is not None else None,
        )
        for line, owner, opened, first, closed, rating, state, level in rows
    ]


def _line_of(policy: ServicePolicy, name: str) -> Line:
    return policy.line(name if name in policy.lines else policy.default_line)


def sla_verdict(
    policy: ServicePolicy | None,
    line: str,
    sla: Mapping[str, Any] | None,
    opened_at: dt.datetime,
    first_response_at: dt.datetime | None,
    closed_at: dt.datetime | None,
    now: dt.datetime,
) -> bool | None:
    """The session's first-response SLA: True met, False breached, None no
    SLA (no service section, no SLA on the line for its priority, no
    first-response target) or no verdict yet (unanswered, within target)."""
    if policy is None or sla is None:
        return None
    found = _line_of(policy, line)
    targets = found.targets(sla.get("priority"))
    allowed = targets.first_response if targets is not None else None
    if allowed is None:
        return None
    limit = allowed.total_seconds()
    until = first_response_at or (min(closed_at, now) if closed_at is not None else now)
    # business time is never more than the wall-clock time: most sessions end here
    if (until - opened_at).total_seconds() < limit:
        return True if first_response_at is not None else None
    used = business_seconds(found.hours, opened_at, until)
    if first_response_at is not None:
        return used < limit
    return False if used >= limit else None


@dataclass(frozen=True)
class ResponseRow:
    """First-response figures of one line or operator ("" : none)."""

    key: str
    sessions: int
    answered: int
    p50: float | None
    p90: float | None
    #: sessions with an SLA verdict, and those met
    sla_sessions: int
    sla_met: int

    @property
    def sla_met_pct(self) -> float | None:
        if not self.sla_sessions:
            return None
        return round(100.0 * self.sla_met / self.sla_sessions, 1)


def _response_row(key: str, rows: Sequence[_Row], verdicts: Sequence[bool | None]) -> ResponseRow:
    waits = [
        (r.first_response_at - r.opened_at).total_seconds()
        for r in rows
        if r.first_response_at is not None
    ]
    known = [v for v in verdicts if v is not None]
    return ResponseRow(
        key=key,
        sessions=len(rows),
        answered=len(waits),
        p50=percentile(waits, 50),
        p90=percentile(waits, 90),
        sla_sessions=len(known),
        sla_met=sum(1 for v in known if v),
    )


def _grouped(rows: Sequence[_Row], verdicts: Sequence[bool | None], attr: str) -> list[ResponseRow]:
    groups: dict[str, list[int]] = defaultdict(list)
    for i, row in enumerate(rows):
        groups[getattr(row, attr)].append(i)
    return [
        _response_row(key, [rows[i] for i in idx], [verdicts[i] for i in idx])
        for key, idx in sorted(groups.items(), key=lambda kv: _order(kv[0]))
    ]


def _order(key: str) -> tuple[int, int, str]:
    """Named keys first (numeric ids by number), the empty key ("none") last."""
    return (1 if key == "" else 0, int(key) if key.isdigit() else 0, key)


@dataclass(frozen=True)
class ResponseTimes:
    overall: ResponseRow
    lines: list[ResponseRow]
    operators: list[ResponseRow]


def response_times(
    session: Session,
    tenant_id: int,
    period: Period,
    policy: ServicePolicy | None,
    now: dt.datetime,
) -> ResponseTimes:
    """First-response p50/p90 and SLA met %, overall, per line, per operator."""
    return _response_times(_sessions(session, tenant_id, period), policy, now)


def _response_times(
    rows: list[_Row], policy: ServicePolicy | None, now: dt.datetime
) -> ResponseTimes:
    verdicts = [
        sla_verdict(policy, r.line, r.sla, r.opened_at, r.first_response_at, r.closed_at, now)
        for r in rows
    ]
    return ResponseTimes(
        overall=_response_row("", rows, verdicts),
        lines=_grouped(rows, verdicts, "line"),
        operators=_grouped(rows, verdicts, "owner"),
    )


@dataclass(frozen=True)
class LoadRow:
    operator: str
    #: sessions opened in the period
    sessions: int
    #: the most of their sessions open at one moment of the period
    peak_open: int


def load(session: Session, tenant_id: int, period: Period) -> list[LoadRow]:
    """Sessions handled and peak concurrently open sessions per operator."""
    rows = session.execute(
        select(ServiceSession.owner_id, ServiceSession.opened_at, ServiceSession.closed_at).where(
            ServiceSession.tenant_id == tenant_id,
            ServiceSession.owner_id.is_not(None),
            ServiceSession.opened_at < period.end,
            or_(ServiceSession.closed_at.is_(None), ServiceSession.closed_at > period.start),
        )
    ).all()
    handled: Counter[str] = Counter()
    moments: dict[str, list[tuple[dt.datetime, int]]] = defaultdict(list)
    for owner_id, opened, closed in rows:
        owner, opened = str(owner_id), aware(opened)
        if opened >= period.start:
            handled[owner] += 1
        begin = max(opened, period.start)
        finish = min(aware(closed), period.end) if closed is not None else period.end
        if finish > begin:
            # a close sorts before an opening at the same moment: not concurrent
            moments[owner] += [(begin, 1), (finish, -1)]
    out = []
    for owner in sorted(set(handled) | set(moments), key=_order):
        peak = now_open = 0
        for _, step in sorted(moments[owner]):
            now_open += step
            peak = max(peak, now_open)
        out.append(LoadRow(owner, handled[owner], peak))
    return out


@dataclass(frozen=True)
class CsatRow:
    """The ratings of one line or operator ("" : none)."""

    key: str
    ratings: int
    average: float | None
    #: how many 1, 2, 3, 4, 5
    distribution: tuple[int, int, int, int, int]


def _csat_row(key: str, scores: Sequence[int]) -> CsatRow:
    counts = Counter(scores)
    average = round(sum(scores) / len(scores), 2) if scores else None
    spread = (counts[1], counts[2], counts[3], counts[4], counts[5])
    return CsatRow(key, len(scores), average, spread)


@dataclass(frozen=True)
class Csat:
    overall: CsatRow
    lines: list[CsatRow]
    operators: list[CsatRow]


def csat(session: Session, tenant_id: int, period: Period) -> Csat:
    """The ratings of the period's sessions, overall, per line, per operator."""
    rows = session.execute(
        select(ServiceSession.line, ServiceSession.owner_id, ServiceSession.rating).where(
            ServiceSession.tenant_id == tenant_id,
            ServiceSession.opened_at >= period.start,
            ServiceSession.opened_at < period.end,
            ServiceSession.rating.is_not(None),
        )
    ).all()
    return _csat(
        [
            _Row(line or "", owner or "", period.start, None, None, rating, None)
            for line, owner, rating in rows
        ]  # fmt: skip
    )


def _csat(rows: Sequence[_Row]) -> Csat:
    rated = [r for r in rows if r.rating is not None and 1 <= r.rating <= 5]

    def by(attr: str) -> list[CsatRow]:
        groups: dict[str, list[int]] = defaultdict(list)
        for row in rated:
            groups[getattr(row, attr)].append(int(row.rating or 0))
        return [_csat_row(k, v) for k, v in sorted(groups.items(), key=lambda kv: _order(kv[0]))]

    return Csat(_csat_row("", [int(r.rating or 0) for r in rated]), by("line"), by("owner"))


# -- the menu and the suggestions ------------------------------------------------------------


@dataclass(frozen=True)
class MenuRow:
    """How often one menu option was chosen."""

    #: ``<menu>:<option number>`` (the label itself when the mapping does not know it)
    key: str
    label: Texts
    count: int


def _chose_prefixes() -> tuple[str, ...]:
    # the note's wording is the engine's (bridge.service.engine, "chose")
    texts = engine._TEXTS
    return tuple(texts[lang]["chose"].split("{choice}")[0] for lang in texts)


def _options(policy: ServicePolicy | None) -> dict[str, tuple[str, Texts]]:
    """A leaf option's label in either language (case-folded) -> its key and labels."""
    found: dict[str, tuple[str, Texts]] = {}
    if policy is None:
        return found
    for menu in policy.menus.values():
        for number, option in enumerate(menu.options, 1):
            if option.menu is not None:
                continue
            for text in (option.label.en, option.label.ru):
                found.setdefault(text.strip().casefold(), (f"{menu.name}:{number}", option.label))
    return found


def menu_choices(
    session: Session, tenant_id: int, period: Period, policy: ServicePolicy | None
) -> list[MenuRow]:
    """The greeting menu's leaf options chosen in the period's sessions, most first."""
    key = (
        literal("menu:", String)
        + Conversation.uid
        + literal(":", String)
        + sql_cast(ServiceSession.number, String)
    )
    # from the period's sessions to their note by its key (the unique index)
    payloads = session.scalars(
        select(ServiceAction.payload)
        .select_from(ServiceSession)
        .join(Conversation, Conversation.id == ServiceSession.conversation_id)
        .join(
            ServiceAction,
            and_(ServiceAction.tenant_id == ServiceSession.tenant_id, ServiceAction.key == key),
        )
        .where(
            ServiceSession.tenant_id == tenant_id,
            ServiceSession.opened_at >= period.start,
            ServiceSession.opened_at < period.end,
        )
    ).all()
    return _menu_rows(payloads, policy)


def _menu_rows(
    payloads: Iterable[Mapping[str, Any] | None], policy: ServicePolicy | None
) -> list[MenuRow]:
    prefixes = _chose_prefixes()
    options = _options(policy)
    counts: Counter[str] = Counter()
    labels: dict[str, Texts] = {}
    by_key = {key: texts for key, texts in options.values()}
    for payload in payloads:
        # the option the engine recorded (``<menu>:<number>``); notes written
        # before it did: the label read back from the note's text
        recorded = str(((payload or {}).get("fields") or {}).get("choice") or "")
        text = str((payload or {}).get("text") or "")
        label = next((text[len(p) :] for p in prefixes if text.startswith(p)), text).strip()
        known = (
            (recorded, by_key[recorded]) if recorded in by_key else options.get(label.casefold())
        )
        key, texts = known if known is not None else (label, Texts(label, label))
        counts[key] += 1
        labels[key] = texts
    return [
        MenuRow(key, labels[key], n)
        for key, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    ]


@dataclass(frozen=True)
class Suggestions:
    """Suggested replies: acceptance (all time), use in the period, and the
    period's acceptance (the sessions opened in it): of the operators'
    replies to a message with suggestions, how many took one; per operator."""

    shown: int
    accepted: int
    #: client messages in the period that got suggestions for the operator
    messages: int
    #: the period's sessions: operator replies to a suggested message, and
    #: those that took a suggestion
    answered: int = 0
    taken: int = 0
    #: the same per operator (``(owner id, answered, taken)``, most answered first)
    operators: list[tuple[str, int, int]] = field(default_factory=list)

    @property
    def rate_pct(self) -> float | None:
        return round(100.0 * self.accepted / self.shown, 1) if self.shown else None

    @property
    def period_rate_pct(self) -> float | None:
        return round(100.0 * self.taken / self.answered, 1) if self.answered else None


def suggestions(session: Session, tenant_id: int, period: Period) -> Suggestions:
    """Accepted / shown suggestions (all time) and the period's suggested messages."""
    record = session.scalar(
        select(TenantService.suggestions).where(TenantService.tenant_id == tenant_id)
    )
    shown = accepted = 0
    for row in ((record or {}).get("counts") or {}).values():
        if isinstance(row, Mapping):
            shown += int(row.get("shown") or 0)
            accepted += int(row.get("accepted") or 0)
    messages = session.scalar(
        select(func.count())
        .select_from(ServiceAction)
        .where(
            ServiceAction.tenant_id == tenant_id,
            ServiceAction.key.like("suggest:%"),
            ServiceAction.created_at >= period.start,
            ServiceAction.created_at < period.end,
        )
    )
    per_operator = session.execute(
        select(
            ServiceSession.owner_id,
            func.sum(ServiceSession.suggestions_answered),
            func.sum(ServiceSession.suggestions_accepted),
        )
        .where(
            ServiceSession.tenant_id == tenant_id,
            ServiceSession.opened_at >= period.start,
            ServiceSession.opened_at < period.end,
            ServiceSession.suggestions_answered > 0,
        )
        .group_by(ServiceSession.owner_id)
    ).all()
    operators = sorted(
        ((owner or "", int(n or 0), int(k or 0)) for owner, n, k in per_operator),
        key=lambda row: (-row[1], row[0]),
    )
    return Suggestions(
        shown,
        accepted,
        int(messages or 0),
        answered=sum(n for _, n, _ in operators),
        taken=sum(k for _, _, k in operators),
        operators=operators,
    )


# -- all of them --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Report:
    """Every KPI of one tenant and period."""

    period: Period
    traffic: Traffic
    clients: Clients
    response: ResponseTimes
    load: list[LoadRow]
    csat: Csat
    menu: list[MenuRow]
    suggestions: Suggestions
    #: the service section's line titles (name -> en/ru)
    line_titles: dict[str, Texts] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data (the page embeds it for its charts)."""
        data = asdict(self)
        data["period"] = {
            "start": self.period.start.isoformat(),
            "end": self.period.end.isoformat(),
            "bucket": self.period.bucket,
            "zone": self.period.zone,
            "preset": self.period.preset,
        }
        data["response"]["overall"]["sla_met_pct"] = self.response.overall.sla_met_pct
        for part in ("lines", "operators"):
            rows: list[ResponseRow] = getattr(self.response, part)
            for item, row in zip(data["response"][part], rows, strict=True):
                item["sla_met_pct"] = row.sla_met_pct
        data["clients"]["total"] = self.clients.total
        data["suggestions"]["rate_pct"] = self.suggestions.rate_pct
        data["suggestions"]["period_rate_pct"] = self.suggestions.period_rate_pct
        return data


def report(
    session: Session,
    tenant_id: int,
    period: Period,
    mapping: MappingConfig | None,
    now: dt.datetime,
) -> Report:
    """Every KPI of the tenant over ``period`` (``mapping``: the tenant's, for
    its SLA targets, menu labels and line titles; None when unreadable)."""
    policy = mapping.service if mapping is not None else None
    rows = _sessions(session, tenant_id, period)
    titles = {name: line.title for name, line in policy.lines.items()} if policy else {}
    return Report(
        period=period,
        traffic=traffic(session, tenant_id, period),
        clients=clients(session, tenant_id, period),
        response=_response_times(rows, policy, now),
        load=load(session, tenant_id, period),
        csat=_csat(rows),
        menu=menu_choices(session, tenant_id, period, policy),
        suggestions=suggestions(session, tenant_id, period),
        line_titles=titles,
    )


_UNITS = {"en": ("s", "m", "h"), "ru": (" с", " мин", " ч")}


def seconds_text(value: float | None, language: str = "en") -> str:
    """A duration for people: ``45s``, ``12m 05s``, ``3h 20m`` (``45 с``,
    ``12 мин 05 с``, ``3 ч 20 мин`` in Russian); ``—`` for none."""
    if value is None:
        return "—"
    sec, mins, hrs = _UNITS.get(language, _UNITS["en"])
    total = int(math.floor(value + 0.5))
    if total < 60:
        return f"{total}{sec}"
    minutes, secs = divmod(total, 60)
    if minutes < 60:
        return f"{minutes}{mins} {secs:02d}{sec}"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}{hrs} {minutes:02d}{mins}"
