"""``python -m bench.kpis [--json] [--database-url URL] [--messages N]``: the
console's KPI queries (``bridge.console.kpis``, docs/console.md "KPIs") on a
seeded database.

    python -m bench.kpis [--json] [--messages 100000] [--rounds 5] [--seed 17]
                         [--database-url URL]

One tenant with the example service section (``mappings/examples/service.yaml``:
four lines, Moscow hours with Russia's production calendar, first response
within 15 min, 5 min for ``high``) and a second tenant with a tenth as much
(every query filters it out). A seeded script writes ``--messages`` messages
for the first over the 90 days before "now" (Monday 7 December 2026, 15:00
Moscow): sessions on Telegram, WhatsApp and the web chat, mostly in working
hours, of one to six client messages and up to five replies minutes apart;
most answered (a log-normal first response around 8 min), most closed; a
third rated; half with a menu choice note, a third with a suggestions note;
WhatsApp echoes. Rows are inserted in bulk (not through the pipeline).

Measured, ``--rounds`` times each, on a read session: each query of
:mod:`bridge.console.kpis` (traffic, clients, response times with the SLA
verdicts, load, CSAT, menu choices, suggestions) and the whole report (one
fetch of the sessions shared by response times and CSAT), for the periods
today, 7 days, 30 days and 90 days (hours for today, days for 7 and 30
days, weeks for 90). p50 and max ms; the rows each period holds.

On SQLite (a file with the bridge's pragmas) always and, with
``--database-url``, on PostgreSQL too (a throw-away schema). Figures are
printed, never asserted. With ``--json`` the last line on stdout is one
JSON object::

    {"bench": "kpis", "messages": int, "sessions": int, "rounds": int, "seed": int,
     "cores": int, "loadavg": [start, end], "seed_s": {"sqlite": s, ...},
     "databases": {"sqlite"|"postgresql": {PERIOD: {"messages": int, "sessions": int,
         "buckets": int, QUERY: {"p50_ms", "max_ms"}}}}}

    PERIOD: today | 7d | 30d | 90d
    QUERY: traffic | clients | response_times | load | csat | menu | suggestions | report
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import math
import os
import random
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from bench.report import emit_json, percentile, postgres_schema, rnd, table

__all__ = ["main", "run"]

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "mappings" / "examples" / "service.yaml"
MSK = ZoneInfo("Europe/Moscow")
NOW = dt.datetime(2026, 12, 7, 15, 0, tzinfo=MSK)
DAYS = 90
CHANNELS = ("telegram", "telegram", "whatsapp", "webchat")
LINES = {
    "sales": ("101", "102", "103"),
    "support": ("201", "202"),
    "support_2": ("301", "302"),
}
LABELS = ("Buy", "Купить", "Order status", "Статус заказа", "Returns", "Возврат")
CHOSE = ("The client chose in the menu: ", "Клиент выбрал в меню: ")
PERIODS = ("today", "7d", "30d", "90d")
QUERIES = ("traffic", "clients", "response_times", "load", "csat", "menu", "suggestions", "report")
BATCH = 5000


# -- the data ---------------------------------------------------------------------------------


@dataclass
class Rows:
    """What the script writes, table by table (plain dicts for bulk inserts)."""

    contacts: list[dict[str, Any]] = field(default_factory=list)
    conversations: list[dict[str, Any]] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)
    sessions: list[dict[str, Any]] = field(default_factory=list)
    actions: list[dict[str, Any]] = field(default_factory=list)


def _moment(rng: random.Random) -> dt.datetime:
    """A session's opening: any of the 90 days, three in four in working hours."""
    day = NOW.date() - dt.timedelta(days=rng.randrange(DAYS))
    if rng.random() < 0.75:
        minute = rng.randrange(9 * 60, 18 * 60)
    else:
        minute = rng.randrange(24 * 60)
    at = dt.datetime.combine(day, dt.time(0), tzinfo=MSK) + dt.timedelta(minutes=minute)
    if at >= NOW:
        at = NOW - dt.timedelta(minutes=rng.randrange(1, 600))
    return at.astimezone(dt.UTC)


def script(
    tenant: int, accounts: dict[str, int], messages: int, rng: random.Random, id_base: int
) -> Rows:
    """The tenant's rows: about ``messages`` messages in sessions. Ids are
    given here (from ``id_base``) so one bulk insert per table suffices."""
    rows = Rows()
    next_id = id_base
    written = 0
    conversations: list[tuple[int, str, str, list[int]]] = []  # id, uid, kind, [seq, number]

    def new_id() -> int:
        nonlocal next_id
        next_id += 1
        return next_id

    while written < messages:
        # a new client one time in three, else one seen before (returning)
        if not conversations or rng.random() < 0.35:
            contact = new_id()
            rows.contacts.append({"id": contact, "tenant_id": tenant, "display_name": "c"})
            kind = rng.choice(CHANNELS)
            conv = new_id()
            uid = str(uuid.UUID(int=rng.getrandbits(128)))
            rows.conversations.append(
                {
                    "id": conv,
                    "uid": uid,
                    "tenant_id": tenant,
                    "channel_account_id": accounts[kind],
                    "contact_id": contact,
                    "external_thread_id": str(conv),
                    "status": "open",
                    "next_seq": 1,
                }
            )
            conversations.append((conv, uid, kind, [0, 0]))
        conv, uid, kind, counters = rng.choice(conversations)
        counters[1] += 1
        number = counters[1]
        opened = _moment(rng)
        line = rng.choice(list(LINES))
        owner = rng.choice(LINES[line]) if rng.random() < 0.95 else None
        answered = rng.random() < 0.85
        reply = opened + dt.timedelta(minutes=rng.lognormvariate(math.log(8), 0.9))
        closed_at = opened + dt.timedelta(minutes=rng.randrange(30, 300))
        is_closed = closed_at < NOW and rng.random() < 0.95
        times: list[tuple[str, dt.datetime, bool]] = []
        t = opened
        for _ in range(rng.randint(1, 6)):
            times.append(("in", t, False))
            t += dt.timedelta(minutes=rng.randint(1, 20))
        if answered:
            replies = rng.randint(1, 5)
            r = reply
            for _ in range(replies):
                echo = kind == "whatsapp" and rng.random() < 0.05
                times.append(("in" if echo else "out", r, echo))
                r += dt.timedelta(minutes=rng.randint(1, 30))
        for direction, at, echo in sorted(times, key=lambda x: x[1]):
            counters[0] += 1
            rows.messages.append(
                {
                    "id": new_id(),
                    "uid": str(uuid.UUID(int=rng.getrandbits(128))),
                    "tenant_id": tenant,
                    "conversation_id": conv,
                    "channel_account_id": accounts[kind],
                    "direction": direction,
                    "seq": counters[0],
                    "dedupe_key": f"{conv}:{counters[0]}",
                    "kind": "text",
                    "text": "…",
                    "payload": {"echo": True} if echo else {},
                    "sent_at": at,
                    "status": "synced" if direction == "in" else "sent",
                    "attempts": 0,
                }
            )
            written += 1
        priority = "high" if rng.random() < 0.1 else None
        rows.sessions.append(
            {
                "id": new_id(),
                "tenant_id": tenant,
                "conversation_id": conv,
                "number": number,
                "state": {},
                "line": line,
                "owner_id": owner,
                "route_reason": "bench",
                "sla": {
                    "priority": priority,
                    "phase": "client",
                    "answered": answered,
                    "clocks": [],
                },
                "cursor": counters[0],
                "opened_at": opened,
                "first_response_at": reply if answered and reply < NOW else None,
                "closed_at": closed_at if is_closed else None,
                "close_reason": "idle" if is_closed else None,
                "rating": rng.randint(1, 5) if is_closed and rng.random() < 0.35 else None,
            }
        )
        if rng.random() < 0.5:
            text = rng.choice(CHOSE) + rng.choice(LABELS)
            rows.actions.append(
                _action(new_id(), tenant, conv, f"menu:{uid}:{number}", text, opened)
            )
        if rng.random() < 0.3:
            key = f"suggest:{conv}:{number}"
            rows.actions.append(_action(new_id(), tenant, conv, key, "Suggested replies", opened))
    return rows


def _action(
    id_: int, tenant: int, conv: int, key: str, text: str, at: dt.datetime
) -> dict[str, Any]:
    return {
        "id": id_,
        "tenant_id": tenant,
        "conversation_id": conv,
        "key": key,
        "kind": "note",
        "payload": {"text": text},
        "state": "done",
        "attempts": 0,
        "created_at": at + dt.timedelta(minutes=1),
    }


# -- the database -----------------------------------------------------------------------------


@contextmanager
def database(url: str | None, work: Path) -> Iterator[Any]:
    """A migrated, empty database (SQLite in ``work``, or a fresh PostgreSQL schema)."""
    from bridge.db import make_engine
    from bridge.migrate import upgrade

    with postgres_schema(url, "kpis") as schema_url:
        engine = make_engine(schema_url or f"sqlite:///{work / 'kpis.db'}")
        try:
            upgrade(engine)
            yield engine
        finally:
            engine.dispose()


def seed(engine: Any, messages: int, rng: random.Random) -> tuple[int, int, int]:
    """Two tenants and their rows; (the measured tenant's id, its messages, sessions)."""
    from sqlalchemy import insert

    from bridge import tables

    ids: list[int] = []
    totals = (0, 0)
    with engine.begin() as conn:
        base = 0
        for n, (slug, share) in enumerate((("measured", 1.0), ("other", 0.1))):
            tenant = conn.execute(
                insert(tables.Tenant).values(
                    slug=slug,
                    name=slug,
                    crm_kind="bitrix24",
                    webhook_key=uuid.uuid4().hex,
                    mapping="service.yaml",
                    settings={},
                    status="active",
                    next_ticket=1001,
                )
            ).inserted_primary_key[0]
            accounts = {}
            for kind in sorted(set(CHANNELS)):
                accounts[kind] = conn.execute(
                    insert(tables.ChannelAccount).values(
                        tenant_id=tenant, kind=kind, key=uuid.uuid4().hex, name=kind, settings={}
                    )
                ).inserted_primary_key[0]
            rows = script(tenant, accounts, int(messages * share), rng, base + 10_000)
            base += 10_000 + 20 * int(messages * share) + 100_000
            for table_, data in (
                (tables.Contact, rows.contacts),
                (tables.Conversation, rows.conversations),
                (tables.Message, rows.messages),
                (tables.ServiceSession, rows.sessions),
                (tables.ServiceAction, rows.actions),
            ):
                for i in range(0, len(data), BATCH):
                    conn.execute(insert(table_), data[i : i + BATCH])
            conn.execute(
                insert(tables.TenantService).values(
                    tenant_id=tenant,
                    routing={},
                    suggestions={
                        "version": 1,
                        "counts": {"kb:delivery": {"shown": 900, "accepted": 410}},
                    },
                )
            )
            ids.append(tenant)
            if n == 0:
                totals = (len(rows.messages), len(rows.sessions))
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            from sqlalchemy import text

            conn.execute(text("ANALYZE"))
    return ids[0], *totals


# -- the measurement --------------------------------------------------------------------------


def _period(name: str) -> Any:
    from bridge.console import kpis

    if name == "90d":
        first = NOW.date() - dt.timedelta(days=DAYS - 1)
        return kpis.period_for("Europe/Moscow", NOW, "dates", first, NOW.date(), "week")
    return kpis.period_for("Europe/Moscow", NOW, name)


def measure(engine: Any, tenant: int, rounds: int) -> dict[str, Any]:
    """Each query's p50/max per period."""
    from sqlalchemy import func, select
    from sqlalchemy.orm import Session

    from bridge import tables
    from bridge.console import kpis
    from mappings.loader import load_mapping

    mapping = load_mapping(EXAMPLE)
    policy = mapping.service
    out: dict[str, Any] = {}
    with Session(engine) as session:
        for name in PERIODS:
            period = _period(name)
            calls: dict[str, Callable[[], Any]] = {
                "traffic": lambda p=period: kpis.traffic(session, tenant, p),
                "clients": lambda p=period: kpis.clients(session, tenant, p),
                "response_times": lambda p=period: kpis.response_times(
                    session, tenant, p, policy, NOW
                ),
                "load": lambda p=period: kpis.load(session, tenant, p),
                "csat": lambda p=period: kpis.csat(session, tenant, p),
                "menu": lambda p=period: kpis.menu_choices(session, tenant, p, policy),
                "suggestions": lambda p=period: kpis.suggestions(session, tenant, p),
                "report": lambda p=period: kpis.report(session, tenant, p, mapping, NOW),
            }
            figures: dict[str, Any] = {
                "messages": session.scalar(
                    select(func.count())
                    .select_from(tables.Message)
                    .where(
                        tables.Message.tenant_id == tenant,
                        tables.Message.sent_at >= period.start,
                        tables.Message.sent_at < period.end,
                    )
                ),
                "sessions": session.scalar(
                    select(func.count())
                    .select_from(tables.ServiceSession)
                    .where(
                        tables.ServiceSession.tenant_id == tenant,
                        tables.ServiceSession.opened_at >= period.start,
                        tables.ServiceSession.opened_at < period.end,
                    )
                ),
                "buckets": len(period.labels()),
                "bucket": period.bucket,
            }
            for query, call in calls.items():
                call()  # warm the caches (the statement cache, the calendar)
                took = []
                for _ in range(rounds):
                    start = time.perf_counter()
                    call()
                    took.append((time.perf_counter() - start) * 1000)
                    session.rollback()
                figures[query] = {"p50_ms": rnd(percentile(took, 50)), "max_ms": rnd(max(took))}
            out[name] = figures
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Seed and measure on SQLite and, with ``--database-url``, PostgreSQL."""
    loads = [round(os.getloadavg()[0], 2)]
    work = Path(tempfile.mkdtemp(prefix="bench-kpis-"))
    figures: dict[str, Any] = {
        "bench": "kpis",
        "rounds": args.rounds,
        "seed": args.seed,
        "cores": os.cpu_count(),
        "seed_s": {},
        "databases": {},
    }
    try:
        targets = [("sqlite", None)] + (
            [("postgresql", args.database_url)] if args.database_url else []
        )
        for name, url in targets:
            with database(url, work) as engine:
                start = time.perf_counter()
                rng = random.Random(args.seed)  # noqa: S311 (a fixed script, not crypto)
                tenant, messages, sessions = seed(engine, args.messages, rng)
                figures["seed_s"][name] = rnd(time.perf_counter() - start, 1)
                figures["messages"], figures["sessions"] = messages, sessions
                figures["databases"][name] = measure(engine, tenant, args.rounds)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    loads.append(round(os.getloadavg()[0], 2))
    figures["loadavg"] = loads
    return figures


def render(f: dict[str, Any]) -> str:
    """The figures as one table per database."""
    out = []
    for name, periods in f["databases"].items():
        rows = [
            [query, *(periods[p][query]["p50_ms"] for p in PERIODS)]
            + [periods["90d"][query]["max_ms"]]
            for query in QUERIES
        ]
        rows.append(["messages in the period", *(periods[p]["messages"] for p in PERIODS), None])
        rows.append(["sessions opened in it", *(periods[p]["sessions"] for p in PERIODS), None])
        rows.append(["buckets", *(periods[p]["buckets"] for p in PERIODS), None])
        title = (
            f"KPI queries on {name}: {f['messages']:,} messages, {f['sessions']:,} sessions "
            f"over {DAYS} days (seeded in {f['seed_s'][name]} s), p50 of {f['rounds']} rounds, "
            f"{f['cores']} cores (load average {f['loadavg'][0]} -> {f['loadavg'][-1]})"
        )
        header = ["query (ms)", "today", "7 days", "30 days", "90 days", "90 days max"]
        out.append(table(title, header, rows))
    return "\n\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.kpis", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--json", action="store_true", help="print one JSON line of figures last")
    parser.add_argument(
        "--messages", type=int, default=100_000, help="the tenant's messages (default 100,000)"
    )
    parser.add_argument("--rounds", type=int, default=5, help="timed calls per query (default 5)")
    parser.add_argument("--seed", type=int, default=17, help="the script's seed (default 17)")
    parser.add_argument(
        "--database-url",
        default=None,
        help="PostgreSQL URL: measured there too (a fresh schema is made and dropped)",
    )
    args = parser.parse_args(argv)
    if args.messages < 10 or args.rounds < 1:
        parser.error("--messages must be at least 10 and --rounds at least 1")
    logging.basicConfig(level=logging.WARNING)
    figures = run(args)
    print(render(figures), flush=True)
    if args.json:
        emit_json(figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
