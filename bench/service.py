"""``python -m bench.service [--json] [--database-url URL] [--messages N]``:
what the service layer (``bridge/service``, docs/service.md "In the
pipeline") adds per inbound client message.

    python -m bench.service [--json] [--messages 1000] [--warmup 20] [--seed 17]
                            [--database-url URL] [--keep]

The tenant has the example service section (``mappings/examples/service.yaml``
with its knowledge base ``mappings/examples/kb/acme.yaml``) on the fake CRM
the unit tests use (``tests.support.fakes:FakeCrm``: no CRM call is made on
this path; the CRM work is stored as action rows). A seeded script gives
``--messages`` client messages in conversations on Telegram and WhatsApp
spread over a week (Monday 7 - Sunday 13 December 2026, Moscow time; one
conversation in four starts out of hours): the first message opens a
session and gets the greeting menu (and the out-of-hours notice at night),
then the menu answer (a choice, the nested menu's, a label typed out, or
"a person"), one to three follow-ups minutes apart; an operator answers
most conversations after the first follow-up (the CRM's reply, through
``accept_crm_events``), the CRM closes most answered deals afterwards and
some clients answer the rating prompt (a score, a comment after a low
one). The clock passes through the messages' own times; every half hour of
that clock the due sessions are ticked (idle close, SLA alerts) as the
sweeper would. Replies, closings and ticks are not measured. No sync runs:
the clients are not in the CRM, so no routing rule reads a CRM field.

Measured per inbound message, in this order:

* **engine**: ``engine.on_client_message`` + ``engine.with_due`` alone,
  the whole script replayed in memory (tickets, the tenant's routing memory
  and the members' loads kept in dicts): no database, no Redis.
* **ingest**: ``bridge.pipeline.inbound.accept`` of the message for the
  tenant with the service section and, alternately before or after it, of
  the same message for a tenant whose mapping is the same without
  ``service:`` (each stored message is then not the service layer's work:
  one outbox row fewer bumped and one job fewer enqueued).
* **job**: ``bridge.service.runner.run_service`` for the message's
  conversation, right after its accept: the conversation's lease in Redis,
  the transaction (session rows, the automatic messages, the CRM action
  rows, the cursor), the outbound jobs and CRM actions enqueued, the
  outbox row marked idle. SQL statements per job are counted.

On SQLite (a file with the bridge's WAL + ``synchronous=FULL``) always and,
with ``--database-url``, on PostgreSQL too (a throw-away schema). Redis is a
redis-server of the bench's own (AOF, ``appendfsync everysec``, as
``bench.stack``); no worker runs, so the enqueued jobs only queue. One
process, one message at a time: messages/s is 1 / the mean.

With ``--json`` the last line on stdout is one JSON object::

    {"bench": "service", "messages": int, "conversations": int, "warmup": int,
     "seed": int, "cores": int,
     "loadavg": [the 1-minute load average at the start, at the end],
     "mix": {"new", "menu", "follow_up", "rating", "comment": messages of each kind,
             "out_of_hours": messages sent while the default line is closed,
             "channels": {kind: messages}},
     "knowledge_base_load_ms": p50 of reading and checking the knowledge base
                               (the job reads it on each pass),
     "engine": STATS + {"says_per_message", "works_per_message"},
     "databases": {"sqlite"|"postgresql": {
         "job": STATS + {"statements_per_job", "auto_messages_per_message",
                         "actions_per_message"},
         "ingest_off": STATS, "ingest_on": STATS,
         "ingest_added_ms": {"p50", "p99", "mean", "cpu_mean"}: on minus off}}}

    STATS = {"n", "p50_ms", "p99_ms", "max_ms", "mean_ms", "per_s",
             "cpu_mean_ms": this process's CPU per call, mean}

About a minute with the defaults on SQLite, as much again on
PostgreSQL. Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import logging
import os
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import yaml

from bench.report import emit_json, percentile, postgres_schema, rnd, table
from bench.stack import ROOT, RedisServer

__all__ = ["main", "run", "script"]

EXAMPLE = ROOT / "mappings" / "examples" / "service.yaml"
KNOWLEDGE = ROOT / "mappings" / "examples" / "kb" / "acme.yaml"
MSK = ZoneInfo("Europe/Moscow")
#: Monday 7 December 2026, 00:00 in Moscow: the script's week starts here
WEEK = dt.datetime(2026, 12, 7, tzinfo=MSK)
CHANNELS = ("telegram", "telegram", "whatsapp")
#: every how often (the script's clock) the due sessions are ticked
TICK_EVERY = dt.timedelta(minutes=30)
#: the example mapping on the fake CRM, and the same without ``service:``
SERVICE_MAPPING, PLAIN_MAPPING = "service.yaml", "plain.yaml"

# What clients write (made up; no one's data). The menu's entries are the
# example's: 1 Buy, 2 Order status, 3 Something else (1 Returns,
# 2 Partnership), 0 a person.
OPENERS = (
    "Здравствуйте! Где мой заказ?",
    "Добрый день, хочу оформить покупку",
    "Хочу вернуть товар, как это сделать?",
    "Подскажите, пожалуйста, по доставке",
    "Hi, where is my parcel?",
    "Hello, I would like to return an item",
)
MENU_PATHS: tuple[tuple[str, ...], ...] = (
    ("2",),
    ("2",),
    ("1",),
    ("3", "1"),
    ("3", "2"),
    ("Статус заказа",),
    ("0",),
)
FOLLOW_UPS = (
    "Спасибо!",
    "А когда привезут?",
    "Номер заказа 10452",
    "Можно поменять адрес доставки?",
    "Есть кто-нибудь?",
    "Thanks, and how long does a refund take?",
    "Хорошо, жду ответа",
)
RATINGS = ("5", "5", "4", "3", "2", "1")
COMMENT = "Долго ждал ответа"


# -- the script ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Inbound:
    """A client's message."""

    conversation: int
    channel: str
    #: new | menu | follow_up | rating | comment
    kind: str
    text: str
    at: dt.datetime
    number: int = 0


@dataclass(frozen=True)
class Replied:
    """An operator answers in the CRM (not measured)."""

    conversation: int
    at: dt.datetime
    text: str = "Здравствуйте! Сейчас проверим и ответим."


@dataclass(frozen=True)
class Closed:
    """The CRM closes the conversation's deal (not measured)."""

    conversation: int
    at: dt.datetime


Event = Inbound | Replied | Closed


def _start(
    rng: random.Random, open_hours: Callable[[dt.datetime], bool], night: bool
) -> dt.datetime:
    """A moment of the week, during the default line's hours or (``night``) not."""
    while True:
        at = WEEK + dt.timedelta(minutes=rng.randrange(7 * 24 * 60))
        if open_hours(at) != night:
            return at


def _conversation(rng: random.Random, index: int, start: dt.datetime) -> list[Event]:
    """One client's messages, an operator's reply after the first follow-up
    (four in five), the CRM closing the deal (four in five answered) and
    the client's rating (three in five asked)."""
    channel = CHANNELS[index % len(CHANNELS)]
    at = start
    events: list[Event] = [Inbound(index, channel, "new", rng.choice(OPENERS), at)]
    for answer in rng.choice(MENU_PATHS):
        at += dt.timedelta(seconds=rng.randint(15, 90))
        events.append(Inbound(index, channel, "menu", answer, at))
    replied = rng.random() < 0.8
    for n in range(rng.randint(1, 3)):
        at += dt.timedelta(minutes=rng.randint(1, 10))
        events.append(Inbound(index, channel, "follow_up", rng.choice(FOLLOW_UPS), at))
        if n == 0 and replied:
            at += dt.timedelta(minutes=rng.randint(1, 10))
            events.append(Replied(index, at))
    if replied and rng.random() < 0.8:
        at += dt.timedelta(minutes=rng.randint(5, 30))
        events.append(Closed(index, at))
        if rng.random() < 0.6:
            at += dt.timedelta(minutes=rng.randint(1, 5))
            score = rng.choice(RATINGS)
            events.append(Inbound(index, channel, "rating", score, at))
            if int(score) <= 2 and rng.random() < 0.5:
                at += dt.timedelta(minutes=1)
                events.append(Inbound(index, channel, "comment", COMMENT, at))
    return events


def script(messages: int, seed: int, open_hours: Callable[[dt.datetime], bool]) -> list[Event]:
    """``messages`` client messages, with the operators' replies and the
    CRM's closings among them, in time order; the messages numbered."""
    rng = random.Random(seed)  # noqa: S311 (a fixed script, not crypto)
    events: list[Event] = []
    count = index = 0
    while count < messages:
        own = _conversation(rng, index, _start(rng, open_hours, night=index % 4 == 3))
        for event in own:
            if isinstance(event, Inbound):
                if count == messages:
                    break
                count += 1
            events.append(event)
        index += 1
    events.sort(key=lambda e: (e.at, e.conversation))
    numbers = iter(range(messages))
    return [
        dataclasses.replace(e, number=next(numbers)) if isinstance(e, Inbound) else e
        for e in events
    ]


def _mix(events: Sequence[Event], open_hours: Callable[[dt.datetime], bool]) -> dict[str, Any]:
    inbound = [e for e in events if isinstance(e, Inbound)]
    kinds = Counter(e.kind for e in inbound)
    return {
        **{k: kinds.get(k, 0) for k in ("new", "menu", "follow_up", "rating", "comment")},
        "out_of_hours": sum(not open_hours(e.at) for e in inbound),
        "channels": dict(sorted(Counter(e.channel for e in inbound).items())),
    }


# -- figures ---------------------------------------------------------------------------------------


@dataclass
class Timings:
    """Milliseconds per call: wall clock, and this process's CPU."""

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    @contextmanager
    def timed(self) -> Iterator[None]:
        wall, cpu = time.perf_counter(), time.process_time()
        yield
        self.cpu.append((time.process_time() - cpu) * 1000)
        self.wall.append((time.perf_counter() - wall) * 1000)


def stats(t: Timings) -> dict[str, Any]:
    """p50/p99/max/mean in ms and messages/s (one at a time: 1 / mean),
    and the mean CPU time of this process (not the database server's or
    Redis's: what other processes on the machine take from it shows in the
    wall clock, far less here)."""
    spent = t.wall
    mean = sum(spent) / len(spent) if spent else None
    return {
        "n": len(spent),
        "p50_ms": rnd(percentile(spent, 50), 3),
        "p99_ms": rnd(percentile(spent, 99), 3),
        "max_ms": rnd(max(spent), 3) if spent else None,
        "mean_ms": rnd(mean, 3),
        "per_s": rnd(1000 / mean, 1) if mean else None,
        "cpu_mean_ms": rnd(sum(t.cpu) / len(t.cpu), 3) if t.cpu else None,
    }


# -- the mapping -----------------------------------------------------------------------------------


def mappings(directory: Path) -> None:
    """The example mapping on the fake CRM (``service.yaml``) and the same
    without its service section (``plain.yaml``), with the knowledge base
    beside them."""
    data = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    data["crm"] = "fake"
    # the fake CRM keeps deals and tickets (FakeCrm.entity_types), not leads
    data["channels"] = {kind: {"object": "deal", "timeline": "note"} for kind in data["channels"]}
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "kb").mkdir(exist_ok=True)
    shutil.copyfile(KNOWLEDGE, directory / "kb" / KNOWLEDGE.name)
    plain = {k: v for k, v in data.items() if k != "service"}
    for name, content in ((SERVICE_MAPPING, data), (PLAIN_MAPPING, plain)):
        text = yaml.safe_dump(content, allow_unicode=True, sort_keys=False)
        (directory / name).write_text(text, encoding="utf-8")


def _register_fake_crm() -> None:
    import crm_adapters

    crm_adapters.REGISTRY.setdefault("fake", "tests.support.fakes:FakeCrm")


def _mapping(directory: Path) -> Any:
    """The service tenant's mapping, as the runtime reads it."""
    from mappings.loader import load_mapping

    mapping = load_mapping(directory / SERVICE_MAPPING)
    assert mapping.service is not None
    return mapping


def knowledge_load_ms(rounds: int = 30) -> float | None:
    """Reading and checking the knowledge base once (p50)."""
    from bridge.service.knowledge import load

    spent = Timings()
    for _ in range(rounds):
        with spent.timed():
            load(KNOWLEDGE)
    return rnd(percentile(spent.wall, 50), 3)


# -- the engine alone ------------------------------------------------------------------------------


@dataclass
class _Memory:
    """What the database keeps, in dicts: each conversation's ticket, the
    tenant's routing memory, the members' last assignment."""

    policy: Any
    knowledge: Any
    language: str
    tickets: dict[int, Any] = field(default_factory=dict)
    routing: Any = None
    last: dict[str, dt.datetime] = field(default_factory=dict)

    def staff(self, now: dt.datetime) -> Callable[[Any], dict[str, Any]]:
        from bridge.service import routing
        from bridge.service.calendar import is_open

        loads = Counter(
            t.owner
            for t in self.tickets.values()
            if t.owner is not None and t.session is not None and t.session.is_open
        )

        def members(line: Any) -> dict[str, Any]:
            on_shift = is_open(line.hours, now)
            return {
                m: routing.Member(on_shift=on_shift, load=loads[m], last_assigned=self.last.get(m))
                for m in line.members
            }

        return members

    def context(self, conversation: int, channel: str, now: dt.datetime) -> Any:
        from bridge.service.engine import Context

        return Context(
            policy=self.policy,
            key=f"c{conversation}",
            channel=channel,
            language=self.language,
            now=now,
            routing_state=self.routing,
            staff=self.staff(now),
            knowledge=self.knowledge,
            crm_language=self.language,
        )

    def keep(self, conversation: int, outcome: Any) -> None:
        ticket = outcome.ticket
        self.tickets[conversation] = ticket
        if outcome.routing is not None:
            self.routing = outcome.routing
        if ticket.owner is not None and ticket.session is not None:
            opened = ticket.session.opened_at
            if ticket.owner not in self.last or self.last[ticket.owner] < opened:
                self.last[ticket.owner] = opened


def engine_alone(events: Sequence[Event], directory: Path) -> dict[str, Any]:
    """The script replayed on the engine alone; ms per client message."""
    from bridge.service import engine, routing
    from bridge.service.engine import Ticket
    from bridge.service.knowledge import load

    mapping = _mapping(directory)
    policy = mapping.service
    memory = _Memory(policy, load(directory / policy.knowledge_base), mapping.language)
    memory.routing = routing.RoutingState()
    channels: dict[int, str] = {}
    spent = Timings()
    says = works = 0
    for at, event in _with_ticks(events):
        if event is None:
            _tick_memory(memory, channels, at)
            continue
        ticket = memory.tickets.get(event.conversation, Ticket())
        ctx = memory.context(event.conversation, _channel(event, channels), event.at)
        if isinstance(event, Replied):
            outcome = engine.on_operator_reply(ctx, ticket, event.text)
            memory.keep(event.conversation, engine.with_due(ctx, ticket, outcome))
            continue
        if isinstance(event, Closed):
            if ticket.session is not None:
                memory.keep(event.conversation, engine.crm_closed(ctx, ticket))
            continue
        with spent.timed():
            outcome = engine.with_due(
                ctx, ticket, engine.on_client_message(ctx, ticket, event.text)
            )
        says += len(outcome.say)
        works += len(outcome.work)
        memory.keep(event.conversation, outcome)
    figures = stats(spent)
    n = len(spent.wall)
    figures["says_per_message"] = rnd(says / n, 3) if n else None
    figures["works_per_message"] = rnd(works / n, 3) if n else None
    return figures


def _channel(event: Event, channels: dict[int, str]) -> str:
    if isinstance(event, Inbound):
        channels[event.conversation] = event.channel
    return channels[event.conversation]


def _tick_memory(memory: _Memory, channels: dict[int, str], now: dt.datetime) -> None:
    """What :func:`bridge.service.runner.sweep` does to due sessions."""
    from bridge.service import engine

    for conversation, ticket in list(memory.tickets.items()):
        due = engine.next_check(memory.policy, ticket)
        if due is not None and due <= now:
            ctx = memory.context(conversation, channels[conversation], now)
            memory.keep(conversation, engine.on_tick(ctx, ticket))


def _with_ticks(events: Sequence[Event]) -> Iterator[tuple[dt.datetime, Event | None]]:
    """The events, with ``(moment, None)`` every :data:`TICK_EVERY` of the
    script's clock between them."""
    if not events:
        return
    tick = events[0].at + TICK_EVERY
    for event in events:
        while tick <= event.at:
            yield tick, None
            tick += TICK_EVERY
        yield event.at, event


# -- the job and ingest, on a database -------------------------------------------------------------


@dataclass
class _Tenant:
    id: int
    accounts: dict[str, Any]


@dataclass
class _World:
    runtime: Any
    on: _Tenant
    off: _Tenant
    #: (tenant id, the script's prefix, conversation index) -> the conversation's id
    conversations: dict[tuple[int, str, int], int] = field(default_factory=dict)
    statements: int = 0


def _settings(database_url: str, redis_url: str, work: Path, directory: Path) -> Any:
    from bridge.config import Settings

    return Settings.from_env(
        env={
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "BRIDGE_VAR_DIR": str(work / "var"),
            "BRIDGE_MAPPINGS_DIR": str(directory),
            "BRIDGE_PUBLIC_URL": "http://bridge.test",
        }
    )


def _tenant(runtime: Any, slug: str, mapping: str) -> _Tenant:
    from bridge import admin
    from bridge.pipeline.inbound import AccountRef

    tenant = admin.create_tenant(runtime, slug=slug, crm_kind="fake", mapping=mapping)
    accounts = {}
    for kind in sorted(set(CHANNELS)):
        account = admin.add_channel_account(
            runtime, tenant, kind=kind, credentials={"token": "bench"}, external_id=f"{slug}-{kind}"
        )
        accounts[kind] = AccountRef(account, tenant, kind, *runtime.ingest_view(tenant))
    return _Tenant(tenant, accounts)


@contextmanager
def world(database_url: str, redis_url: str, work: Path, directory: Path) -> Iterator[_World]:
    """A migrated database with the two tenants; SQL statements counted."""
    from sqlalchemy import event

    from bridge.migrate import upgrade
    from bridge.runtime import Runtime

    runtime = Runtime(_settings(database_url, redis_url, work, directory))
    try:
        upgrade(runtime.engine)
        on = _tenant(runtime, "service-on", SERVICE_MAPPING)
        off = _tenant(runtime, "service-off", PLAIN_MAPPING)
        assert all(a.service for a in on.accounts.values())
        assert not any(a.service for a in off.accounts.values())
        w = _World(runtime, on, off)

        def count(*_: Any) -> None:
            w.statements += 1

        event.listen(runtime.engine, "before_cursor_execute", count)
        yield w
    finally:
        runtime.close()


def _message(event: Inbound, prefix: str) -> Any:
    from bridge.model import InboundMessage, MessageKind, SenderProfile

    return InboundMessage(
        channel_kind=event.channel,
        external_id=f"{prefix}{event.number}",
        external_user_id=f"{prefix}u{event.conversation}",
        external_thread_id=f"{prefix}u{event.conversation}",
        kind=MessageKind.TEXT,
        sent_at=event.at.astimezone(dt.UTC),  # channels give UTC (SQLite keeps no offset)
        text=event.text,
        profile=SenderProfile(first_name="Client"),
    )


def _accept(w: _World, tenant: _Tenant, event: Inbound, prefix: str, into: Timings) -> None:
    from bridge.pipeline.inbound import accept

    message = _message(event, prefix)
    with into.timed():
        result = accept(w.runtime, tenant.accounts[event.channel], [message])
    assert result.stored == 1, result


def _conversation_id(w: _World, tenant: _Tenant, index: int, prefix: str) -> int:
    from sqlalchemy import select

    from bridge.tables import Conversation

    key = (tenant.id, prefix, index)
    if key not in w.conversations:
        with w.runtime.read_session() as session:
            w.conversations[key] = session.scalars(
                select(Conversation.id).where(
                    Conversation.tenant_id == tenant.id,
                    Conversation.external_thread_id == f"{prefix}u{index}",
                )
            ).one()
    return w.conversations[key]


def _reply(w: _World, conversation_id: int, event: Replied) -> None:
    """The operator's reply as the CRM's webhook brings it (the thread is
    the conversation's uid; the author one of the line's members)."""
    from bridge.model import CrmEvent, CrmEventKind
    from bridge.pipeline.outbound.accept import accept_crm_events
    from bridge.tables import Conversation

    with w.runtime.read_session() as session:
        conversation = session.get(Conversation, conversation_id)
        assert conversation is not None
        thread = conversation.uid
    reply = CrmEvent(
        kind=CrmEventKind.REPLY,
        external_id=f"r{conversation_id}-{event.at.timestamp():.0f}",
        occurred_at=event.at.astimezone(dt.UTC),
        thread_key=thread,
        text=event.text,
        author_id="201",
    )
    accept_crm_events(w.runtime, w.on.id, [reply])


def _close(w: _World, conversation_id: int, at: dt.datetime) -> None:
    from bridge.service import runner

    with w.runtime.transaction() as session:
        after = runner.crm_closed(w.runtime, session, conversation_id, at.astimezone(dt.UTC))
    runner.enqueue_after(w.runtime, after)


def _tick(w: _World, now: dt.datetime) -> None:
    """The session half of :func:`bridge.service.runner.sweep` (its CRM
    action half would enqueue every pending action again on each pass: no
    worker runs them here)."""
    from sqlalchemy import select

    from bridge.service import runner
    from bridge.tables import ServiceSession

    now = now.astimezone(dt.UTC)
    with w.runtime.read_session() as session:
        due = list(
            session.scalars(select(ServiceSession.id).where(ServiceSession.next_check <= now))
        )
    for session_id in due:
        runner.tick(w.runtime, session_id, now=now)


@dataclass
class _Spent:
    job: Timings = field(default_factory=Timings)
    on: Timings = field(default_factory=Timings)
    off: Timings = field(default_factory=Timings)
    statements: list[int] = field(default_factory=list)
    #: what the jobs stored: automatic messages, CRM action rows
    auto_messages: int = 0
    actions: int = 0


def _play(w: _World, events: Sequence[Event], prefix: str, spent: _Spent | None) -> None:
    """The script on the database: each message accepted for both tenants
    (in turn first), then the service job for it."""
    from bridge.service import runner

    spent = spent if spent is not None else _Spent()
    for at, event in _with_ticks(events):
        if event is None:
            _tick(w, at)
            continue
        if isinstance(event, Replied):
            _reply(w, _conversation_id(w, w.on, event.conversation, prefix), event)
            continue
        if isinstance(event, Closed):
            _close(w, _conversation_id(w, w.on, event.conversation, prefix), event.at)
            continue
        first, second = (w.on, w.off) if event.number % 2 else (w.off, w.on)
        for tenant in (first, second):
            _accept(w, tenant, event, prefix, spent.on if tenant is w.on else spent.off)
        conversation_id = _conversation_id(w, w.on, event.conversation, prefix)
        stored = _stored(w)
        before = w.statements
        with spent.job.timed():
            outcome = runner.run_service(w.runtime, conversation_id)
        spent.statements.append(w.statements - before)
        assert outcome == "idle", outcome
        auto, actions = _stored(w)
        spent.auto_messages += auto - stored[0]
        spent.actions += actions - stored[1]


def _stored(w: _World) -> tuple[int, int]:
    """How many automatic messages (``runner._say``'s dedupe keys) and CRM
    action rows the service tenant has."""
    from sqlalchemy import func, select

    from bridge.tables import Message, ServiceAction

    with w.runtime.read_session() as session:
        auto = session.scalar(
            select(func.count(Message.id)).where(
                Message.tenant_id == w.on.id, Message.dedupe_key.like("service:%")
            )
        )
        actions = session.scalar(
            select(func.count(ServiceAction.id)).where(ServiceAction.tenant_id == w.on.id)
        )
    return int(auto or 0), int(actions or 0)


def on_database(
    database_url: str,
    redis_url: str,
    work: Path,
    directory: Path,
    events: Sequence[Event],
    warmup: Sequence[Event],
) -> dict[str, Any]:
    """The job and ingest figures on one database."""
    with world(database_url, redis_url, work, directory) as w:
        _play(w, warmup, "w", None)
        spent = _Spent()
        _play(w, events, "b", spent)
    n = len(spent.job.wall)
    job = stats(spent.job)
    job["statements_per_job"] = rnd(sum(spent.statements) / n, 2) if n else None
    job["auto_messages_per_message"] = rnd(spent.auto_messages / n, 3) if n else None
    job["actions_per_message"] = rnd(spent.actions / n, 3) if n else None
    on, off = stats(spent.on), stats(spent.off)
    return {
        "job": job,
        "ingest_off": off,
        "ingest_on": on,
        "ingest_added_ms": {
            k: rnd(on[f"{k}_ms"] - off[f"{k}_ms"], 3) if n else None
            for k in ("p50", "p99", "mean", "cpu_mean")
        },
    }


# -- the run ---------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    from bridge.service.calendar import is_open

    _register_fake_crm()
    work = Path(tempfile.mkdtemp(prefix="bench-service-"))
    try:
        directory = work / "mappings"
        mappings(directory)
        mapping = _mapping(directory)
        hours = mapping.service.line(mapping.service.default_line).hours

        def open_hours(at: dt.datetime) -> bool:
            return is_open(hours, at)

        events = script(args.messages, args.seed, open_hours)
        warmup = script(args.warmup, args.seed + 1, open_hours) if args.warmup else []
        figures: dict[str, Any] = {
            "bench": "service",
            "messages": sum(isinstance(e, Inbound) for e in events),
            "conversations": len({e.conversation for e in events}),
            "warmup": args.warmup,
            "seed": args.seed,
            "cores": os.cpu_count(),
            "loadavg": [rnd(os.getloadavg()[0], 2)],
            "mix": _mix(events, open_hours),
            "knowledge_base_load_ms": knowledge_load_ms(),
            "engine": engine_alone(events, directory),
            "databases": {},
        }
        redis_server = RedisServer(work / "redis")
        redis_server.start()
        try:
            targets = [("sqlite", f"sqlite:///{work / 'bridge.db'}")]
            if args.database_url:
                targets.append(("postgresql", args.database_url))
            for name, url in targets:
                with postgres_schema(url, prefix="bench_service") as database_url:
                    assert database_url is not None
                    figures["databases"][name] = on_database(
                        database_url, redis_server.url, work / name, directory, events, warmup
                    )
                _flush(redis_server.url)
        finally:
            redis_server.stop()
        figures["loadavg"].append(rnd(os.getloadavg()[0], 2))
    finally:
        if args.keep:
            print(f"work directory kept: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    return figures


def _flush(url: str) -> None:
    import redis

    redis.Redis.from_url(url).flushdb()


def render(f: dict[str, Any]) -> str:
    def row(label: str, database: str, s: dict[str, Any]) -> list[Any]:
        return [
            label,
            database,
            s["p50_ms"],
            s["p99_ms"],
            s["max_ms"],
            s["mean_ms"],
            s["per_s"],
            s["cpu_mean_ms"],
        ]

    rows = [row("engine alone (in memory)", "-", f["engine"])]
    for name, d in f["databases"].items():
        rows.append(row("service job (run_service)", name, d["job"]))
        rows.append(row("ingest accept, service off", name, d["ingest_off"]))
        rows.append(row("ingest accept, service on", name, d["ingest_on"]))
    mix = f["mix"]
    title = (
        f"Service layer per inbound message — {f['messages']} messages in "
        f"{f['conversations']} conversations (new {mix['new']}, menu {mix['menu']}, "
        f"follow-up {mix['follow_up']}, rating {mix['rating']}, comment {mix['comment']}; "
        f"{mix['out_of_hours']} out of hours), {f['cores']} cores (load average "
        f"{f['loadavg'][0]} -> {f['loadavg'][-1]}), one message at a time"
    )
    out = table(
        title,
        ["what", "database", "p50 ms", "p99 ms", "max ms", "mean ms", "msg/s", "CPU ms"],
        rows,
    )
    d = f["engine"]
    out += (
        f"\nengine: {d['says_per_message']} messages to the client and "
        f"{d['works_per_message']} CRM works per client message"
        f"\nknowledge base read and checked: p50 {f['knowledge_base_load_ms']} ms "
        "(the job reads it on each pass)"
    )
    for name, db in f["databases"].items():
        j, added = db["job"], db["ingest_added_ms"]
        out += (
            f"\n{name}: the job runs {j['statements_per_job']} SQL statements per message, "
            f"stores {j['auto_messages_per_message']} automatic messages and "
            f"{j['actions_per_message']} CRM action rows per message; "
            f"service on adds to accept p50 {added['p50']} ms, p99 {added['p99']} ms, "
            f"mean {added['mean']} ms, CPU {added['cpu_mean']} ms"
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.service", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--json", action="store_true", help="print one JSON line of figures last")
    parser.add_argument(
        "--messages", type=int, default=1000, help="client messages measured (default 1000)"
    )
    parser.add_argument(
        "--warmup", type=int, default=20, help="client messages before measuring (default 20)"
    )
    parser.add_argument("--seed", type=int, default=17, help="the script's seed (default 17)")
    parser.add_argument(
        "--database-url",
        default=None,
        help="PostgreSQL URL: measured there too (a fresh schema is made and dropped)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    if args.messages < 1:
        parser.error("--messages must be at least 1")
    logging.basicConfig(level=logging.WARNING)
    figures = run(args)
    print(render(figures), flush=True)
    if args.json:
        emit_json(figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
