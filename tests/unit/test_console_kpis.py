"""The console's KPIs (``bridge.console.kpis``) on a seeded scenario whose
every figure was worked out by hand (the tables below), on SQLite and
PostgreSQL: the same figures from both.

The scenario (tenant zone Europe/Moscow, UTC+3 all year): three channels
(telegram, whatsapp, webchat), two lines (sales: first response within
15 min; support: 30 min, 10 min for a ``high`` priority; both open Mon-Fri
09:00-18:00), three operators (101, 102, 103) and one unassigned session;
twenty sessions on Monday 7 and Tuesday 8 December 2026, plus one opened
on Sunday evening and still open on Monday morning (operator 101's load)
and one opened exactly at the period's end (every figure leaves it out).
The period is those two local days; "now" is Tuesday 20:00.

Session  chan  client line    owner  opened     first reply  closed  rating  SLA verdict
S1       tg    c1     sales   101    Mon 10:00  +5m          +60m    5       met
S2       tg    c2     sales   101    Mon 10:30  +20m         +90m    3       breached
S3       wa    c3     sales   102    Mon 11:00  +10m         +30m    4       met
S4       wa    c4     support 102    Mon 11:15  +40m         +120m   2       breached
S5       web   c5     support 103    Mon 12:00  +25m         +60m    5       met
S6       web   c6     support 103    Mon 12:10  +30m         +60m    4       breached (= target)
S7       tg    c7     sales   101    Mon 08:00  +70m         +120m   5       met (10 business min)
S8       tg    c8     support 102    Mon 13:00  +2m          +20m    -       none (no SLA)
S9       wa    c9     sales   103    Mon 13:00  +8m          +50m    1       met
S10      web   c10    support 101    Mon 15:00  -            +10m    -       none (10 < 30 min)
S11      tg    c1     sales   102    Tue 09:30  +12m         +40m    4       met
S12      wa    c2     support 103    Tue 10:00  +35m         +100m   3       breached
S13      web   c11    sales   101    Tue 10:05  +1m          +15m    5       met
S14      tg    c12    support 102    Tue 11:00  +18m         +70m    4       breached (high: 10m)
S15      wa    c13    sales   103    Tue 11:30  +16m         +60m    -       breached
S16      web   c14    support 101    Tue 12:00  -            open    -       breached (6 h by now)
S17      tg    c15    sales   102    Tue 13:00  -            open    -       breached
S18      wa    c16    support 103    Tue 19:50  -            open    -       none (closed since)
S19      web   c17    sales   -      Tue 09:00  -            +5m     -       none (5 < 15 min)
S20      tg    c18    support 101    Tue 16:00  +3m          +30m    2       met
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
import uuid
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from bridge.console import kpis
from bridge.console.pages import kpis as kpis_page
from bridge.rows import aware
from bridge.runtime import Runtime
from bridge.tables import (
    ChannelAccount,
    Contact,
    Conversation,
    Message,
    ServiceAction,
    ServiceSession,
    Tenant,
    TenantService,
)
from mappings.loader import parse_mapping
from tests.support.console import console_app, login, make_user

MSK = ZoneInfo("Europe/Moscow")
MON = dt.date(2026, 12, 7)
TUE = dt.date(2026, 12, 8)
#: the period's bounds: Monday 00:00 and Wednesday 00:00 in Moscow
START = dt.datetime(2026, 12, 7, tzinfo=MSK)
END = dt.datetime(2026, 12, 9, tzinfo=MSK)
NOW = dt.datetime(2026, 12, 8, 20, 0, tzinfo=MSK)

MAPPING = """\
crm: hubspot
language: en
channels:
  telegram: {object: deal}
  whatsapp: {object: deal}
  webchat: {object: deal}
service:
  defaults:
    hours:
      timezone: Europe/Moscow
      week: {mon-fri: "09:00-18:00"}
  lines:
    sales:
      title: {en: Sales, ru: Продажи}
      members: ["101", "102", "103"]
      sla:
        default: {first_response: 15m}
    support:
      title: {en: Support, ru: Поддержка}
      members: ["101", "102", "103"]
      sla:
        default: {first_response: 30m}
        high: {first_response: 10m}
  default_line: support
  menus:
    main:
      text: {en: "How can we help?", ru: "Чем помочь?"}
      options:
        - label: {en: Buy, ru: Купить}
          line: sales
        - label: {en: Order status, ru: Статус заказа}
          line: support
        - label: {en: Something else, ru: Другое}
          menu: more
    more:
      text: {en: "Choose a topic:", ru: "Выберите тему:"}
      options:
        - label: {en: Returns, ru: Возврат}
          line: support
        - label: {en: Partnership, ru: Сотрудничество}
          line: sales
  greetings:
    - {menu: main}
"""

EN = "The client chose in the menu: "
RU = "Клиент выбрал в меню: "


@dataclass(frozen=True)
class S:
    """One seeded session (times local, Moscow)."""

    name: str
    channel: str
    client: str
    line: str | None
    owner: str | None
    opened: dt.datetime
    reply_min: float | None
    close_min: float | None
    rating: int | None
    sla: bool = True
    priority: str | None = None
    menu: str | None = None


def _mon(h: int, m: int = 0) -> dt.datetime:
    return dt.datetime(2026, 12, 7, h, m, tzinfo=MSK)


def _tue(h: int, m: int = 0) -> dt.datetime:
    return dt.datetime(2026, 12, 8, h, m, tzinfo=MSK)


SESSIONS = [
    S("S1", "telegram", "c1", "sales", "101", _mon(10), 5, 60, 5, menu=EN + "Buy"),
    S("S2", "telegram", "c2", "sales", "101", _mon(10, 30), 20, 90, 3, menu=EN + "Buy"),
    S("S3", "whatsapp", "c3", "sales", "102", _mon(11), 10, 30, 4, menu=RU + "Купить"),
    S("S4", "whatsapp", "c4", "support", "102", _mon(11, 15), 40, 120, 2, menu=EN + "Order status"),
    S("S5", "webchat", "c5", "support", "103", _mon(12), 25, 60, 5, menu=EN + "Статус заказа"),
    S("S6", "webchat", "c6", "support", "103", _mon(12, 10), 30, 60, 4),
    S("S7", "telegram", "c7", "sales", "101", _mon(8), 70, 120, 5),
    S("S8", "telegram", "c8", "support", "102", _mon(13), 2, 20, None, sla=False),
    S("S9", "whatsapp", "c9", "sales", "103", _mon(13), 8, 50, 1),
    S("S10", "webchat", "c10", "support", "101", _mon(15), None, 10, None),
    S("S11", "telegram", "c1", "sales", "102", _tue(9, 30), 12, 40, 4, menu=EN + "Returns"),
    S("S12", "whatsapp", "c2", "support", "103", _tue(10), 35, 100, 3, menu=EN + "Old option"),
    S("S13", "webchat", "c11", "sales", "101", _tue(10, 5), 1, 15, 5, menu=EN + "Buy"),
    S(
        "S14",
        "telegram",
        "c12",
        "support",
        "102",
        _tue(11),
        18,
        70,
        4,
        priority="high",
        menu=RU + "Order status",
    ),  # fmt: skip
    S("S15", "whatsapp", "c13", "sales", "103", _tue(11, 30), 16, 60, None),
    S("S16", "webchat", "c14", "support", "101", _tue(12), None, None, None),
    S("S17", "telegram", "c15", "sales", "102", _tue(13), None, None, None),
    S("S18", "whatsapp", "c16", "support", "103", _tue(19, 50), None, None, None),
    S("S19", "webchat", "c17", "sales", None, _tue(9), None, 5, None),
    S("S20", "telegram", "c18", "support", "101", _tue(16), 3, 30, 2),
    # opened on Sunday 23:00, open until Monday 10:45: in 101's load, no other figure
    S(
        "B2",
        "telegram",
        "c21",
        "sales",
        "101",
        dt.datetime(2026, 12, 6, 23, tzinfo=MSK),
        None,
        705,
        None,
    ),  # fmt: skip
    # opened exactly at the period's end: in no figure
    S("B1", "telegram", "c20", "sales", "101", END, 1, 10, 1, menu=EN + "Buy"),
]


@dataclass(frozen=True)
class Seeded:
    tenant: int
    empty: int


def _utc(at: dt.datetime) -> dt.datetime:
    return at.astimezone(dt.UTC)


def seed(runtime: Runtime, mapping_name: str = "kpis.yaml") -> Seeded:
    """The scenario above in the runtime's database (and an empty tenant)."""
    (runtime.settings.mappings_dir / mapping_name).write_text(MAPPING, encoding="utf-8")
    with runtime.transaction() as session:
        tenants = []
        for slug in ("kpis", "quiet"):
            tenant = Tenant(
                slug=f"{slug}-{uuid.uuid4().hex[:6]}",
                name=slug.title(),
                crm_kind="hubspot",
                webhook_key=uuid.uuid4().hex,
                mapping=mapping_name,
                settings={},
            )
            session.add(tenant)
            session.flush()
            tenants.append(tenant.id)
        tid = tenants[0]
        accounts: dict[str, int] = {}
        for kind in ("telegram", "whatsapp", "webchat"):
            account = ChannelAccount(tenant_id=tid, kind=kind, key=uuid.uuid4().hex, settings={})
            session.add(account)
            session.flush()
            accounts[kind] = account.id
        contacts: dict[str, int] = {}
        conversations: dict[tuple[str, str], Conversation] = {}
        sequence: dict[int, int] = {}

        def conversation(kind: str, client: str) -> Conversation:
            if client not in contacts:
                contact = Contact(tenant_id=tid, display_name=client)
                session.add(contact)
                session.flush()
                contacts[client] = contact.id
            found = conversations.get((kind, client))
            if found is None:
                found = Conversation(
                    uid=str(uuid.uuid4()),
                    tenant_id=tid,
                    channel_account_id=accounts[kind],
                    contact_id=contacts[client],
                    external_thread_id=f"{kind}-{client}",
                )
                session.add(found)
                session.flush()
                conversations[(kind, client)] = found
            return found

        def message(
            kind: str, client: str, direction: str, at: dt.datetime, **payload: Any
        ) -> None:
            conv = conversation(kind, client)
            seq = sequence[conv.id] = sequence.get(conv.id, 0) + 1
            session.add(
                Message(
                    uid=str(uuid.uuid4()),
                    tenant_id=tid,
                    conversation_id=conv.id,
                    channel_account_id=accounts[kind],
                    direction=direction,
                    seq=seq,
                    dedupe_key=uuid.uuid4().hex,
                    kind="text",
                    text="hello",
                    payload=payload,
                    sent_at=_utc(at),
                )
            )

        numbers: dict[int, int] = {}
        for s in SESSIONS:
            conv = conversation(s.channel, s.client)
            number = numbers[conv.id] = numbers.get(conv.id, 0) + 1
            replied = s.opened + dt.timedelta(minutes=s.reply_min) if s.reply_min else None
            closed = s.opened + dt.timedelta(minutes=s.close_min) if s.close_min else None
            message(s.channel, s.client, "in", s.opened)
            if replied is not None:
                message(s.channel, s.client, "out", replied)
            sla = {"priority": s.priority, "phase": "client", "answered": True, "clocks": []}
            session.add(
                ServiceSession(
                    tenant_id=tid,
                    conversation_id=conv.id,
                    number=number,
                    state={},
                    line=s.line,
                    owner_id=s.owner,
                    opened_at=_utc(s.opened),
                    first_response_at=_utc(replied) if replied else None,
                    closed_at=_utc(closed) if closed else None,
                    close_reason="idle" if closed else None,
                    rating=s.rating,
                    sla=sla if s.sla else None,
                )
            )
            if s.menu is not None:
                session.add(
                    ServiceAction(
                        tenant_id=tid,
                        conversation_id=conv.id,
                        key=f"menu:{conv.uid}:{number}",
                        kind="note",
                        payload={"text": s.menu, "owner": None, "fields": {}},
                        state="done",
                    )
                )
        # E1: the business's own WhatsApp message (an echo, stored inbound): outbound
        message("whatsapp", "c2", "in", _tue(10, 40), echo=True)
        # E2, E6: c2 and c3 wrote before the period: returning clients
        message("telegram", "c2", "in", dt.datetime(2026, 12, 6, 12, tzinfo=MSK))
        message("whatsapp", "c3", "in", dt.datetime(2026, 11, 1, 12, tzinfo=MSK))
        # E3: a client's message exactly at the start: in the period (and c19 is new)
        message("webchat", "c19", "in", START)
        # E4: exactly at the end: not in it
        message("telegram", "c20", "in", END)
        # E7: an echo before the period is not c4's own message: c4 stays new
        message("whatsapp", "c4", "in", dt.datetime(2026, 12, 1, 12, tzinfo=MSK), echo=True)
        # suggestions: all-time record, and the notes of the period's suggested messages
        session.add(
            TenantService(
                tenant_id=tid,
                routing={},
                suggestions={
                    "version": 1,
                    "counts": {
                        "kb:delivery": {"shown": 6, "accepted": 3},
                        "reply:abc": {"shown": 4, "accepted": 1},
                    },
                },
            )
        )
        any_conv = conversation("telegram", "c1").id
        for n, at in enumerate(
            [START, _mon(10, 1), _tue(11), END, _mon(0) - dt.timedelta(seconds=1)]
        ):
            session.add(
                ServiceAction(
                    tenant_id=tid,
                    conversation_id=any_conv,
                    key=f"suggest:m{n}",
                    kind="note",
                    payload={"text": "Suggested replies:\n1. ..."},
                    state="done",
                    created_at=_utc(at),
                )
            )
    return Seeded(tenants[0], tenants[1])


# -- the figures, by hand -----------------------------------------------------------------------

#: (day, channel) -> (inbound, outbound)
TRAFFIC = {
    ("2026-12-07", "telegram"): (4, 4),
    ("2026-12-07", "whatsapp"): (3, 3),
    ("2026-12-07", "webchat"): (4, 2),
    ("2026-12-08", "telegram"): (4, 3),
    ("2026-12-08", "whatsapp"): (3, 3),
    ("2026-12-08", "webchat"): (3, 1),
}
NEW_CLIENTS, RETURNING_CLIENTS = 17, 2
#: key -> (sessions, answered, p50 s, p90 s, sla sessions, sla met, met %)
FRT_OVERALL = (20, 15, 960.0, 2400.0, 16, 8, 50.0)
FRT_LINES = {
    "sales": (10, 8, 600.0, 4200.0, 9, 6, 66.7),
    "support": (10, 7, 1500.0, 2400.0, 7, 2, 28.6),
}
FRT_OPERATORS = {
    "101": (7, 5, 300.0, 4200.0, 6, 4, 66.7),
    "102": (6, 5, 720.0, 2400.0, 5, 2, 40.0),
    "103": (6, 5, 1500.0, 2100.0, 5, 2, 40.0),
    "": (1, 0, None, None, 0, 0, None),
}
#: operator -> (sessions, peak open)
LOAD = {"101": (7, 3), "102": (6, 2), "103": (6, 2)}
#: key -> (ratings, average, distribution 1..5)
CSAT_OVERALL = (13, 3.62, (1, 2, 2, 4, 4))
CSAT_LINES = {"sales": (7, 3.86, (1, 0, 1, 2, 3)), "support": (6, 3.33, (0, 2, 1, 2, 1))}
CSAT_OPERATORS = {
    "101": (5, 4.0, (0, 1, 1, 0, 3)),
    "102": (4, 3.5, (0, 1, 0, 3, 0)),
    "103": (4, 3.25, (1, 0, 1, 1, 1)),
}
#: option key -> (English label, count)
MENU = {"main:1": ("Buy", 4), "main:2": ("Order status", 3), "more:1": ("Returns", 1),
        "Old option": ("Old option", 1)}  # fmt: skip
SUGGESTIONS = (10, 4, 40.0, 3)  # shown, accepted, rate %, messages in the period


def _period(bucket: str | None = "day") -> kpis.Period:
    return kpis.period_for("Europe/Moscow", NOW, "dates", MON, TUE, bucket)


def _report(runtime: Runtime, tenant: int, period: kpis.Period | None = None) -> kpis.Report:
    with runtime.read_session() as session:
        found = session.get(Tenant, tenant)
        assert found is not None
        mapping = runtime.mapping_for(found)
        return kpis.report(session, tenant, period or _period(), mapping, NOW)


def _frt(row: kpis.ResponseRow) -> tuple[Any, ...]:
    return (row.sessions, row.answered, row.p50, row.p90, row.sla_sessions, row.sla_met,
            row.sla_met_pct)  # fmt: skip


def _csat(row: kpis.CsatRow) -> tuple[Any, ...]:
    return (row.ratings, row.average, row.distribution)


# -- the tests ----------------------------------------------------------------------------------


def test_every_figure_of_the_scenario(runtime: Runtime) -> None:
    seeded = seed(runtime)
    report = _report(runtime, seeded.tenant)

    traffic = report.traffic
    assert traffic.labels == ["2026-12-07", "2026-12-08"]
    assert traffic.channels == ["telegram", "webchat", "whatsapp"]
    found = {
        (label, kind): (traffic.inbound[kind][i], traffic.outbound[kind][i])
        for i, label in enumerate(traffic.labels)
        for kind in traffic.channels
    }
    assert found == TRAFFIC

    assert (report.clients.new, report.clients.returning) == (NEW_CLIENTS, RETURNING_CLIENTS)
    assert report.clients.total == 19

    assert _frt(report.response.overall) == FRT_OVERALL
    assert {r.key: _frt(r) for r in report.response.lines} == FRT_LINES
    assert {r.key: _frt(r) for r in report.response.operators} == FRT_OPERATORS
    assert [r.key for r in report.response.operators] == ["101", "102", "103", ""]

    assert {r.operator: (r.sessions, r.peak_open) for r in report.load} == LOAD

    assert _csat(report.csat.overall) == CSAT_OVERALL
    assert {r.key: _csat(r) for r in report.csat.lines} == CSAT_LINES
    assert {r.key: _csat(r) for r in report.csat.operators} == CSAT_OPERATORS

    assert {r.key: (r.label.en, r.count) for r in report.menu} == MENU
    assert [r.key for r in report.menu][:2] == ["main:1", "main:2"]  # most chosen first
    assert next(r for r in report.menu if r.key == "main:1").label.ru == "Купить"

    s = report.suggestions
    assert (s.shown, s.accepted, s.rate_pct, s.messages) == SUGGESTIONS

    assert report.line_titles["sales"].ru == "Продажи"


def test_hour_buckets_follow_the_tenants_zone(runtime: Runtime) -> None:
    seeded = seed(runtime)
    report = _report(runtime, seeded.tenant, _period("hour"))
    traffic = report.traffic
    assert len(traffic.labels) == 48
    assert traffic.labels[0] == "2026-12-07 00:00" and traffic.labels[-1] == "2026-12-08 23:00"
    at = traffic.labels.index
    # S1 (10:00) and S2 (10:30) wrote on Telegram in Monday's 10 o'clock hour, Moscow time
    assert traffic.inbound["telegram"][at("2026-12-07 10:00")] == 2
    # S7's 08:00 message is 05:00 UTC: bucketed by the local hour
    assert traffic.inbound["telegram"][at("2026-12-07 08:00")] == 1
    assert traffic.inbound["telegram"][at("2026-12-07 05:00")] == 0
    # the message exactly at the start is in the first hour
    assert traffic.inbound["webchat"][0] == 1
    # the sums per channel are the day buckets' sums
    for kind in traffic.channels:
        ins = sum(v[0] for (_, k), v in TRAFFIC.items() if k == kind)
        outs = sum(v[1] for (_, k), v in TRAFFIC.items() if k == kind)
        assert (traffic.total(kind, "in"), traffic.total(kind, "out")) == (ins, outs)


def test_hours_of_a_zone_half_an_hour_off_utc(runtime: Runtime) -> None:
    """Kolkata (UTC+5:30): the database's slots are quarters of an hour, and
    Moscow's 10:00 and 10:30 fall in two different local hours there."""
    seeded = seed(runtime)
    period = kpis.period_for("Asia/Kolkata", NOW, "dates", MON, MON, "hour")
    with runtime.read_session() as session:
        traffic = kpis.traffic(session, seeded.tenant, period)
    got = {
        label: n for label, n in zip(traffic.labels, traffic.inbound["telegram"], strict=True) if n
    }
    assert got == {
        "2026-12-07 01:00": 1,  # B2, Sunday 23:00 in Moscow
        "2026-12-07 10:00": 1,  # S7, 08:00 in Moscow
        "2026-12-07 12:00": 1,  # S1, 10:00
        "2026-12-07 13:00": 1,  # S2, 10:30
        "2026-12-07 15:00": 1,  # S8, 13:00
    }


def test_period_boundaries(runtime: Runtime) -> None:
    """A session opened at the end belongs to the next period; one opened at
    the start to this one."""
    seeded = seed(runtime)
    # Wednesday alone: only the session opened at Tuesday's end (B1) and E4
    wed = dt.date(2026, 12, 9)
    later = kpis.period_for("Europe/Moscow", NOW, "dates", wed, wed, "day")
    report = _report(runtime, seeded.tenant, later)
    assert report.response.overall.sessions == 1
    assert _frt(report.response.overall)[:4] == (1, 1, 60.0, 60.0)
    assert _csat(report.csat.overall) == (1, 1.0, (1, 0, 0, 0, 0))
    assert {r.key: r.count for r in report.menu} == {"main:1": 1}
    assert report.traffic.total("telegram", "in") == 2  # B1's opening message and E4
    assert report.traffic.total("telegram", "out") == 1
    assert (report.clients.new, report.clients.returning) == (1, 0)
    # B1 is the day's only new session (101's); S16, S17, S18 are still open
    load = {r.operator: (r.sessions, r.peak_open) for r in report.load}
    assert load == {"101": (1, 2), "102": (0, 1), "103": (0, 1)}
    assert report.suggestions.messages == 1  # the note at its start
    # Sunday: B2 opened then; E2 and c2 wrote then
    sun = dt.date(2026, 12, 6)
    before = kpis.period_for("Europe/Moscow", NOW, "dates", sun, sun, "day")
    report = _report(runtime, seeded.tenant, before)
    assert report.response.overall.sessions == 1
    assert report.traffic.total("telegram", "in") == 2
    assert report.suggestions.messages == 1  # the one a second before Monday


def test_an_empty_tenant_gives_zeros(runtime: Runtime) -> None:
    seeded = seed(runtime)
    report = _report(runtime, seeded.empty)
    assert report.traffic.channels == [] and report.traffic.labels == ["2026-12-07", "2026-12-08"]
    assert (report.clients.new, report.clients.returning, report.clients.total) == (0, 0, 0)
    assert _frt(report.response.overall) == (0, 0, None, None, 0, 0, None)
    assert report.response.lines == [] and report.response.operators == []
    assert report.load == []
    assert _csat(report.csat.overall) == (0, None, (0, 0, 0, 0, 0))
    assert report.menu == []
    s = report.suggestions
    assert (s.shown, s.accepted, s.rate_pct, s.messages) == (0, 0, None, 0)
    data = report.to_dict()
    assert data["response"]["overall"]["sla_met_pct"] is None


def test_without_a_service_section_no_sla_figure(runtime: Runtime) -> None:
    """No readable service section: the SLA has no verdicts (the rest stands)."""
    seeded = seed(runtime)
    with runtime.read_session() as session:
        report = kpis.report(session, seeded.tenant, _period(), None, NOW)
    assert report.response.overall.sla_sessions == 0
    assert report.response.overall.p50 == 960.0
    # labels not known without the mapping: each as written
    assert {r.key: r.count for r in report.menu}["Buy"] == 3  # S1, S2, S13
    assert {r.key: r.count for r in report.menu}["Купить"] == 1


def test_the_report_as_json(runtime: Runtime) -> None:
    seeded = seed(runtime)
    data = _report(runtime, seeded.tenant).to_dict()
    assert data["period"] == {
        "start": "2026-12-06T21:00:00+00:00",
        "end": "2026-12-08T21:00:00+00:00",
        "bucket": "day",
        "zone": "Europe/Moscow",
        "preset": "dates",
    }
    lines = {r["key"]: r for r in data["response"]["lines"]}
    assert lines["sales"]["sla_met_pct"] == 66.7 and lines["support"]["p50"] == 1500.0
    assert data["clients"]["total"] == 19
    assert data["suggestions"]["rate_pct"] == 40.0
    assert data["menu"][0]["label"] == {"en": "Buy", "ru": "Купить"}


# -- the pieces ---------------------------------------------------------------------------------


def test_nearest_rank_percentile() -> None:
    # the textbook example: 15, 20, 35, 40, 50
    data = [50.0, 15.0, 40.0, 20.0, 35.0]
    assert [kpis.percentile(data, p) for p in (5, 30, 40, 50, 100)] == [15, 20, 20, 35, 50]
    ten = [float(n) for n in range(1, 11)]
    assert kpis.percentile(ten, 90) == 9.0  # 0.9 * 10 is 9 exactly: no float rounding up
    assert kpis.percentile(ten, 50) == 5.0
    assert kpis.percentile([7.0], 90) == 7.0
    assert kpis.percentile([], 50) is None
    with pytest.raises(ValueError):
        kpis.percentile(ten, 0)


def test_presets_in_the_tenants_zone() -> None:
    now = dt.datetime(2026, 12, 8, 22, 30, tzinfo=dt.UTC)  # Wednesday 01:30 in Moscow
    today = kpis.period_for("Europe/Moscow", now, "today")
    assert today.start == dt.datetime(2026, 12, 9, tzinfo=MSK)
    assert today.end == dt.datetime(2026, 12, 10, tzinfo=MSK)
    assert today.bucket == "hour" and len(today.labels()) == 24
    week = kpis.period_for("Europe/Moscow", now, "7d")
    assert week.start == dt.datetime(2026, 12, 3, tzinfo=MSK) and week.bucket == "day"
    assert week.labels()[0] == "2026-12-03" and week.labels()[-1] == "2026-12-09"
    month = kpis.period_for("UTC", now, "30d")
    assert month.start == dt.datetime(2026, 11, 9, tzinfo=dt.UTC) and len(month.labels()) == 30
    weeks = kpis.period_for("UTC", now, "30d", bucket="week")
    # Mondays: 9, 16, 23, 30 November, 7 December
    assert weeks.labels() == ["2026-11-09", "2026-11-16", "2026-11-23", "2026-11-30", "2026-12-07"]
    year = kpis.period_for("UTC", now, "dates", dt.date(2026, 1, 1), dt.date(2026, 12, 31))
    assert year.bucket == "week"
    # hours over a year would be 8,760 buckets: days instead
    coarse = kpis.period_for(
        "UTC", now, "dates", dt.date(2026, 1, 1), dt.date(2026, 12, 31), "hour"
    )
    assert coarse.bucket == "day"
    two = kpis.period_for("UTC", now, "dates", dt.date(2026, 1, 1), dt.date(2026, 3, 1), "hour")
    assert two.bucket == "day"
    assert (two.first_day, two.last_day) == (dt.date(2026, 1, 1), dt.date(2026, 3, 1))


def test_a_zone_with_a_half_hour_offset() -> None:
    """Kolkata is UTC+5:30: a local hour is two half hours of UTC."""
    now = dt.datetime(2026, 6, 1, 12, tzinfo=dt.UTC)
    period = kpis.period_for("Asia/Kolkata", now, "today")
    assert period.start == dt.datetime(2026, 5, 31, 18, 30, tzinfo=dt.UTC)
    assert period.label(dt.datetime(2026, 6, 1, 4, 29, tzinfo=dt.UTC)) == "2026-06-01 09:00"
    assert period.label(dt.datetime(2026, 6, 1, 4, 30, tzinfo=dt.UTC)) == "2026-06-01 10:00"


def test_a_daylight_saving_day_has_its_own_number_of_hours() -> None:
    now = dt.datetime(2026, 3, 29, 12, tzinfo=dt.UTC)  # Berlin springs forward today
    assert len(kpis.period_for("Europe/Berlin", now, "today").labels()) == 23


@pytest.mark.parametrize(
    ("preset", "first", "last", "bucket"),
    [
        ("dates", None, None, None),
        ("dates", dt.date(2026, 2, 1), dt.date(2026, 1, 1), None),
        ("dates", dt.date(2025, 1, 1), dt.date(2026, 1, 5), None),
        ("90d", None, None, None),
        ("7d", None, None, "minute"),
    ],
)
def test_periods_refused(
    preset: str, first: dt.date | None, last: dt.date | None, bucket: str | None
) -> None:
    with pytest.raises(kpis.PeriodError):
        kpis.period_for("UTC", NOW, preset, first, last, bucket)


def test_tenant_zone() -> None:
    assert kpis.tenant_zone(None) == "UTC"
    with_service = parse_mapping(MAPPING)
    assert kpis.tenant_zone(with_service) == "Europe/Moscow"
    plain = parse_mapping("crm: hubspot\nlanguage: ru\nchannels:\n  telegram: {object: deal}\n")
    assert kpis.tenant_zone(plain) == "Europe/Moscow"  # a Russian mapping's default
    tokyo = "crm: hubspot\ntimezone: Asia/Tokyo\nchannels:\n  telegram: {object: deal}\n"
    assert kpis.tenant_zone(parse_mapping(tokyo)) == "Asia/Tokyo"


def test_seconds_as_text() -> None:
    assert [kpis.seconds_text(v) for v in (None, 45.2, 725, 12000)] == [
        "—",
        "45s",
        "12m 05s",
        "3h 20m",
    ]
    assert kpis.seconds_text(4200, "ru") == "1 ч 10 мин"
    assert kpis.seconds_text(725, "ru") == "12 мин 05 с"


# -- the page and its CSV -----------------------------------------------------------------------

QUERY = "period=dates&from=2026-12-07&to=2026-12-08&bucket=day"


@pytest.fixture
def console(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> tuple[FlaskClient, Seeded]:
    """The scenario, and a viewer of its tenant signed in; the page's clock at NOW."""
    monkeypatch.setattr(kpis_page, "utcnow", lambda: NOW.astimezone(dt.UTC))
    seeded = seed(runtime)
    make_user(runtime, "viewer@kpis.test", role="viewer", tenant_id=seeded.tenant)
    client = console_app(runtime).test_client()
    assert login(client, "viewer@kpis.test").status_code == 302
    return client, seeded


def _cell(html: str, table: str, key: str, col: str) -> str:
    """The text of one figure cell (``<tr data-key=key>`` … ``data-col=col``)."""
    row = re.search(rf'<table class="grid" id="{table}">.*?</table>', html, re.S)
    assert row, table
    found = re.search(
        rf'<tr data-key="{re.escape(key)}"[^>]*>.*?data-col="{col}"[^>]*>([^<]*)<',
        row.group(0),
        re.S,
    )
    assert found, (table, key, col)
    return found.group(1).strip()


def test_the_page_shows_the_figures(console: tuple[FlaskClient, Seeded]) -> None:
    client, seeded = console
    page = client.get(f"/console/kpis?tenant={seeded.tenant}&{QUERY}")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "Key figures" in html
    assert "2026-12-07 – 2026-12-08 (Europe/Moscow), by day" in html
    for key, (sessions, answered, p50, p90, _, _, pct) in FRT_OPERATORS.items():
        assert _cell(html, "frt-operators", key, "sessions") == str(sessions)
        assert _cell(html, "frt-operators", key, "answered") == str(answered)
        assert _cell(html, "frt-operators", key, "p50") == kpis.seconds_text(p50)
        assert _cell(html, "frt-operators", key, "p90") == kpis.seconds_text(p90)
        assert _cell(html, "frt-operators", key, "sla") == ("—" if pct is None else f"{pct:g} %")
    assert _cell(html, "frt-lines", "sales", "sla_count") == "6 / 9"
    assert _cell(html, "frt-lines", "*", "p50") == "16m 00s"  # 960 s
    for key, (sessions, peak) in LOAD.items():
        assert _cell(html, "load-table", key, "sessions") == str(sessions)
        assert _cell(html, "load-table", key, "peak") == str(peak)
    for key, (ratings, average, spread) in CSAT_OPERATORS.items():
        assert _cell(html, "csat-operators", key, "ratings") == str(ratings)
        assert _cell(html, "csat-operators", key, "average") == str(average)
        for n, count in enumerate(spread, 1):
            assert _cell(html, "csat-operators", key, f"r{n}") == str(count)
    assert _cell(html, "csat-lines", "*", "average") == "3.62"
    for key, (_, count) in MENU.items():
        assert _cell(html, "menu-table", key, "count") == str(count)
    assert 'data-kpi="clients-new"><span class="value">17<' in html
    # the charts' figures, embedded for charts.js
    data = re.search(r'<script type="application/json" id="kpi-charts">(.*?)</script>', html, re.S)
    assert data
    charts = json.loads(data.group(1))
    assert charts["csat"]["series"][0]["values"] == list(CSAT_OVERALL[2])
    assert charts["frt"]["labels"] == ["101", "102", "103"]
    assert charts["frt"]["series"][0]["values"] == [5.0, 12.0, 25.0]  # p50 in minutes
    traffic = {s["name"]: s["values"] for s in charts["traffic"]["series"]}
    assert traffic == {
        kind: [sum(TRAFFIC[(day, kind)]) for day in ("2026-12-07", "2026-12-08")]
        for kind in ("telegram", "webchat", "whatsapp")
    }
    assert "/console/static/console/charts.js" in html


def test_the_page_in_russian(console: tuple[FlaskClient, Seeded]) -> None:
    client, seeded = console
    html = client.get(f"/console/kpis?tenant={seeded.tenant}&{QUERY}&lang=ru").get_data(
        as_text=True
    )
    assert "Ключевые показатели" in html and "Первый ответ" in html
    assert "по дням" in html
    assert '<tr data-key="main:1"><td>Купить</td>' in html
    assert '<tr data-key="sales">' in html and "Продажи" in html
    assert _cell(html, "frt-lines", "*", "p50") == "16 мин 00 с"


def test_a_refused_period_shows_the_last_seven_days(console: tuple[FlaskClient, Seeded]) -> None:
    client, seeded = console
    page = client.get(f"/console/kpis?tenant={seeded.tenant}&period=dates&from=2026-12-08&to=x")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "That period cannot be shown (a date is not one (YYYY-MM-DD))" in html
    assert "2026-12-02 – 2026-12-08" in html  # NOW's last 7 days
    ru = client.get(f"/console/kpis?tenant={seeded.tenant}&period=dates&from=2026-12-08"
                    "&to=2026-12-01&lang=ru").get_data(as_text=True)  # fmt: skip
    assert "Этот период показать нельзя (последняя дата раньше первой)" in ru
    # the CSV refuses it outright
    assert client.get(f"/console/kpis.csv?tenant={seeded.tenant}&period=90d").status_code == 400


def test_the_csv(console: tuple[FlaskClient, Seeded]) -> None:
    client, seeded = console
    got = client.get(f"/console/kpis.csv?tenant={seeded.tenant}&{QUERY}")
    assert got.status_code == 200
    assert got.headers["Content-Type"] == "text/csv; charset=utf-8"
    assert "attachment" in got.headers["Content-Disposition"]
    assert got.headers["Content-Disposition"].endswith('-2026-12-07-2026-12-08.csv"')
    raw = got.get_data()
    assert raw.startswith(b"\xef\xbb\xbf")  # the BOM
    sections = _sections(raw.decode("utf-8-sig"), ",")
    head = sections["KPIs"]
    assert head[0] == ["KPIs", "Kpis"] and ["Period", "2026-12-07", "2026-12-08"] in head
    assert ["Time zone", "Europe/Moscow"] in head
    traffic = sections["Traffic by channel"]
    assert traffic[0] == ["Period", "Channel", "Inbound", "Outbound"]
    assert {(r[0], r[1]): (int(r[2]), int(r[3])) for r in traffic[1:]} == TRAFFIC
    assert sections["Clients who wrote"] == [["New", "Returning", "Total"], ["17", "2", "19"]]
    lines = sections["First response: By line"]
    assert lines[0] == [
        "Line", "Sessions", "Answered", "Median (p50), s", "p90, s", "met / with verdict",
        "SLA met",
    ]  # fmt: skip
    assert lines[1:] == [
        ["Sales", "10", "8", "600", "4200", "6/9", "66.7"],
        ["Support", "10", "7", "1500", "2400", "2/7", "28.6"],
        ["All", "20", "15", "960", "2400", "8/16", "50"],
    ]
    operators = sections["First response: By operator"]
    assert operators[1:] == [
        ["101", "7", "5", "300", "4200", "4/6", "66.7"],
        ["102", "6", "5", "720", "2400", "2/5", "40"],
        ["103", "6", "5", "1500", "2100", "2/5", "40"],
        ["unassigned", "1", "0", "", "", "0/0", ""],
    ]
    assert sections["Operator load"][1:] == [
        ["101", "7", "3"],
        ["102", "6", "2"],
        ["103", "6", "2"],
    ]
    assert sections["Satisfaction (CSAT): By line"][1:] == [
        ["Sales", "7", "3.86", "1", "0", "1", "2", "3"],
        ["Support", "6", "3.33", "0", "2", "1", "2", "1"],
        ["All", "13", "3.62", "1", "2", "2", "4", "4"],
    ]
    assert sections["Satisfaction (CSAT): By operator"][1:] == [
        ["101", "5", "4", "0", "1", "1", "0", "3"],
        ["102", "4", "3.5", "0", "1", "0", "3", "0"],
        ["103", "4", "3.25", "1", "0", "1", "1", "1"],
    ]
    assert sections["Menu choices"][1:] == [
        ["Buy", "4"], ["Order status", "3"], ["Old option", "1"], ["Returns", "1"],
    ]  # fmt: skip
    assert sections["Suggested replies"][1] == ["10", "4", "40", "3", "0", "0", ""]


def test_the_csv_in_russian_opens_in_excel(console: tuple[FlaskClient, Seeded]) -> None:
    """Russian: ``;`` between fields and a decimal comma (a Russian Excel's
    list separator and decimal sign), UTF-8 with a BOM."""
    client, seeded = console
    raw = client.get(f"/console/kpis.csv?tenant={seeded.tenant}&{QUERY}&lang=ru").get_data()
    assert raw.startswith(b"\xef\xbb\xbf")
    sections = _sections(raw.decode("utf-8-sig"), ";")
    lines = sections["Первый ответ: По линиям"]
    assert lines[1] == ["Продажи", "10", "8", "600", "4200", "6/9", "66,7"]
    assert sections["Выбор в меню"][1] == ["Купить", "4"]
    assert sections["Удовлетворённость (CSAT): По линиям"][3][2] == "3,62"


def test_who_may_see_the_page(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    seeded = seed(runtime)
    app = console_app(runtime)
    anonymous = app.test_client()
    assert anonymous.get(f"/console/kpis?{QUERY}").status_code == 302
    assert anonymous.get(f"/console/kpis.csv?{QUERY}").status_code == 302
    make_user(runtime, "other@kpis.test", role="admin", tenant_id=seeded.empty)
    other = app.test_client()
    login(other, "other@kpis.test")
    assert other.get(f"/console/kpis?tenant={seeded.tenant}&{QUERY}").status_code == 404
    assert other.get(f"/console/kpis.csv?tenant={seeded.tenant}&{QUERY}").status_code == 404
    # its own tenant: empty, zeros, no crash
    page = other.get(f"/console/kpis?{QUERY}")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert 'data-kpi="messages-in"><span class="value">0<' in html
    assert "Nothing in this period." in html
    csv_raw = other.get(f"/console/kpis.csv?{QUERY}").get_data().decode("utf-8-sig")
    assert _sections(csv_raw, ",")["Clients who wrote"][1] == ["0", "0", "0"]


def _sections(text: str, delimiter: str) -> dict[str, list[list[str]]]:
    """The CSV's sections by their first cell (title rows have one cell; the
    head section is named by its first row's first cell)."""
    out: dict[str, list[list[str]]] = {}
    for block in text.split("\r\n\r\n"):
        rows = list(csv.reader(io.StringIO(block), delimiter=delimiter))
        rows = [r for r in rows if r]
        if len(rows[0]) == 1:
            out[rows[0][0]] = rows[1:]
        else:
            out[rows[0][0]] = rows
    return out


def test_a_menu_choice_is_counted_by_the_option_the_engine_recorded() -> None:
    """The note records ``<menu>:<number>``: a label renamed in the mapping
    since (or a note in a third language) still counts for its option; a
    note without the record is read back by its label."""
    policy = parse_mapping(MAPPING, file="kpis.yaml").service
    rows = kpis._menu_rows(
        [
            {"text": EN + "Purchase", "fields": {"choice": "main:1"}},  # renamed since
            {"text": RU + "Купить", "fields": {}},  # an older note: by its label
            {"text": EN + "Returns", "fields": {"choice": "more:1"}},
            {"text": EN + "Gone option", "fields": {"choice": "main:9"}},  # no such option
        ],
        policy,
    )
    assert {r.key: r.count for r in rows} == {"main:1": 2, "more:1": 1, "Gone option": 1}
    assert next(r for r in rows if r.key == "main:1").label.en == "Buy"


def test_suggestion_acceptance_in_the_period_per_operator(runtime: Runtime) -> None:
    """The sessions' own counts (the operators' replies to a suggested
    message, those that took one): the period's sessions only, per operator."""
    seeded = seed(runtime)
    counts = {"101": (3, 2), "102": (1, 0)}
    with runtime.transaction() as session:
        rows = session.scalars(
            select(ServiceSession).where(ServiceSession.tenant_id == seeded.tenant)
        ).all()
        inside = [r for r in rows if START <= aware(r.opened_at) < END]
        outside = [r for r in rows if not START <= aware(r.opened_at) < END]
        for owner, (answered, taken) in counts.items():
            row = next(r for r in inside if r.owner_id == owner)
            row.suggestions_answered, row.suggestions_accepted = answered, taken
        outside[0].suggestions_answered, outside[0].suggestions_accepted = 5, 5  # not counted
    s = _report(runtime, seeded.tenant).suggestions
    assert (s.answered, s.taken, s.period_rate_pct) == (4, 2, 50.0)
    assert s.operators == [("101", 3, 2), ("102", 1, 0)]
    assert (s.shown, s.accepted) == (10, 4)  # the all-time record unchanged
