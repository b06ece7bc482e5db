"""Telegram -> HubSpot sync against the sandbox HubSpot at its documented
default limit (100 requests per rolling 10 s, search 5/s) with the bridge's
default token bucket (``rate_per_10s`` unset: 5 burst + 9.5/s).

    python -m bench.sync [--json] [--crm hubspot] [--variants a,b,c]
                         [--users 20] [--backlog-per-user 25] [--live 20]
                         [--steady-rate 2.5] [--steady-seconds 20] [--workers 2]
                         [--database-url URL] [--keep]

About 5-6 minutes for the three variants on a 2-core machine (``--variants b``:
about 2). Not part of ``make test``: figures are printed, never asserted.

Each mapping variant (``bench/mappings``) gets a fresh stack (``bench.stack``:
redis-server, the sandbox, gunicorn, ``bridge worker`` processes; SQLite by
default, ``--database-url`` for PostgreSQL in a throw-away schema):

* a: ``timeline: note, inbox: false``  (``bench-note-only.yaml``)
* b: ``timeline: note, inbox: true``   (``bench-note-inbox.yaml``; the demo's)
* c: ``timeline: none, inbox: true``   (``bench-inbox-only.yaml``)

and runs four phases, posting real Telegram updates to the bridge's webhook
(unique ``update_id``, the bot's secret header). The phases that fill the
rate limit (open, backlog) start once the sandbox's 10 s window holds none
of the earlier calls (the install's setup calls included); live and steady
once it has 60 requests free:

1. open: one message from each of ``--users`` new customers; wait until all
   are synced (contact, deal, task, first entry). Calls per new conversation.
2. live: ``--live`` messages one at a time into those open conversations,
   each waited for until synced before the next. CRM calls per message.
3. steady: ``--steady-rate`` messages/s for ``--steady-seconds`` to random
   open conversations (below the rate limit); end-to-end latency from the
   webhook's 2xx (the bench's clock when the answer arrived) to the moment
   the last CRM record the mapping asks for existed (the sandbox's
   ``createdAt`` of the note and/or inbox message; same machine clock).
4. backlog: workers stopped, ``--users`` x ``--backlog-per-user`` messages
   ingested, then ``--workers`` workers started; drain time, messages/s,
   API requests/s vs the limit, peak requests in any rolling 10 s, 429s.

The CRM calls are counted by the sandbox itself (``GET /_stats``: every API
request it received, with its time and status), so every call counts,
whoever made it: retries and 429s included.

With ``--json`` the last line on stdout is one JSON object::

    {"bench": "sync", "crm": "hubspot", "database": "sqlite"|"postgresql",
     "sandbox_limit": {"per_10s": 100, "search_per_s": 5},
     "bridge_bucket": {"capacity": 5.0, "per_second": 9.5},
     "workers": 2, "users": 20, "steady_rate": 2.5,
     "targets": {"calls_per_message_open": 1.1, "limit_used_pct_backlog": 90.0, "http_429": 0},
     "variants": {"a"|"b"|"c": {
        "mapping": "timeline: note, inbox: false",
        "open":    {"conversations", "api_requests", "calls_per_conversation", "seconds",
                    "routes": {"POST /crm/...": n}},
        "live":    {"messages", "api_requests", "calls_per_message", "e2e_p50_ms", "e2e_p99_ms",
                    "first_call_p50_ms": from the 2xx to the message's first CRM request,
                    "routes": {...}},
        "steady":  {"messages", "rate_msgs_per_s", "seconds", "api_requests", "api_rps",
                    "calls_per_message", "e2e_p50_ms", "e2e_p99_ms", "e2e_max_ms", "http_429"},
        "backlog": {"messages", "conversations", "drain_seconds", "messages_per_s",
                    "api_requests", "calls_per_message", "api_window_seconds", "api_rps",
                    "limit_rps", "limit_used_pct", "peak_10s", "http_429", "api_bound",
                    "routes": {...}},
        "http_429_total": 429s over all four phases,
        "http_429_routes": {"POST /crm/...": n}, "http_429_phases": {"open": n, ...},
        "http_429_policy": {"search_per_s": n, "ten_secondly": n, "ten_secondly_with_searches": n,
                            "other": n} (which of the sandbox's windows was full when it answered
                            429; "_with_searches": full only because the sandbox counts CRM
                            searches in the 10 s window, which the bridge's bucket does not),
        "check": {"messages", "synced", "missing", "duplicated", "unexpected"}}}}

(``routes``: the sandbox's API requests of the phase by method and route.)

``api_rps`` in the backlog is requests / (last - first request of the
drain); ``limit_used_pct`` = api_rps / (per_10s / 10) x 100; ``api_bound``
says whether the drain needed more calls than one window's budget (if not,
the limit cannot have been what bounded it). ``drain_seconds`` runs from
the workers' start (process start-up included) to all messages synced.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from bench.report import (
    emit_json,
    parse_iso,
    percentile,
    postgres_schema,
    rnd,
    sandbox_stats,
    table,
)
from bench.stack import Stack
from bench.traffic import telegram_update

__all__ = ["VARIANTS", "main"]

ROOT = Path(__file__).resolve().parent.parent
MAPPINGS = ROOT / "bench" / "mappings"


@dataclass(frozen=True)
class Variant:
    key: str
    file: str
    timeline: str
    inbox: bool

    @property
    def label(self) -> str:
        return f"timeline: {self.timeline}, inbox: {str(self.inbox).lower()}"


VARIANTS = {
    "a": Variant("a", "bench-note-only.yaml", "note", False),
    "b": Variant("b", "bench-note-inbox.yaml", "note", True),
    "c": Variant("c", "bench-inbox-only.yaml", "none", True),
}

TARGETS = {"calls_per_message_open": 1.1, "limit_used_pct_backlog": 90.0, "http_429": 0}


class Failed(RuntimeError):
    pass


# -- the customers' side ------------------------------------------------------------


class Customers:
    """Posts Telegram updates to the bridge's webhook like Telegram does and
    remembers when each one was accepted (2xx received)."""

    def __init__(self, url: str, secret: str, first_user: int = 8_000_001) -> None:
        self.url = url
        self.headers = {
            "Content-Type": "application/json",
            "X-Telegram-Bot-Api-Secret-Token": secret,
        }
        self.first_user = first_user
        self._next_id = 1_000_000
        self._index: Counter[int] = Counter()
        self._lock = threading.Lock()
        self._local = threading.local()
        #: update_id (the bridge's dedupe key) -> (user, index, accepted at)
        self.accepted: dict[str, tuple[int, int, float]] = {}

    def users(self, n: int) -> list[int]:
        return [self.first_user + i for i in range(n)]

    def _session(self) -> requests.Session:
        s = getattr(self._local, "s", None)
        if s is None:
            s = self._local.s = requests.Session()
        return s

    def send(self, user: int) -> str:
        """One message from ``user`` (the next in their own order); returns its dedupe key."""
        with self._lock:
            self._next_id += 1
            update_id = self._next_id
            index = self._index[user]
            self._index[user] += 1
        update = telegram_update(user, index, update_id=update_id)
        for attempt in range(5):
            r = self._session().post(self.url, json=update, headers=self.headers, timeout=60)
            if 200 <= r.status_code < 300:
                break
            time.sleep(0.2 * (attempt + 1))  # Telegram retries a non-2xx
        else:
            raise Failed(f"webhook answered {r.status_code}: {r.text[:200]}")
        key = str(update_id)
        with self._lock:
            self.accepted[key] = (user, index, time.time())
        return key


# -- the bridge's side (read-only) -------------------------------------------------------


class BridgeDb:
    """Plain read-only queries (no BEGIN IMMEDIATE: the bench must not take
    SQLite's write lock from the workers)."""

    def __init__(self, url: str) -> None:
        from sqlalchemy import create_engine

        self.engine = create_engine(url)

    def _scalar(self, sql: str, **params: Any) -> Any:
        from sqlalchemy import text

        with self.engine.connect() as conn:
            return conn.execute(text(sql), params).scalar()

    def synced(self) -> int:
        return int(
            self._scalar(
                "SELECT count(*) FROM messages WHERE direction = 'in' AND status = 'synced'"
            )
            or 0
        )

    def total(self) -> int:
        return int(self._scalar("SELECT count(*) FROM messages WHERE direction = 'in'") or 0)

    def status_of(self, key: str) -> str | None:
        return self._scalar(
            "SELECT status FROM messages WHERE direction = 'in' AND dedupe_key = :k", k=key
        )

    def problems(self) -> int:
        """Messages failed or conversations parked (a backoff is not one)."""
        failed = self._scalar("SELECT count(*) FROM messages WHERE status = 'failed'") or 0
        parked = self._scalar("SELECT count(*) FROM outbox WHERE state = 'parked'") or 0
        return int(failed) + int(parked)

    def uids(self) -> dict[str, str]:
        from sqlalchemy import text

        with self.engine.connect() as conn:
            rows = conn.execute(text("SELECT dedupe_key, uid FROM messages WHERE direction = 'in'"))
            return {str(k): str(u) for k, u in rows}

    def close(self) -> None:
        self.engine.dispose()


def wait_for(
    predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.05
) -> float:
    """Poll until true; returns the time.time() it was seen true."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return time.time()
        if time.monotonic() > deadline:
            raise Failed(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


# -- figures -------------------------------------------------------------------------


@dataclass
class Window:
    """The sandbox's API requests in [start, end]."""

    requests: list[tuple[float, str, str, int]] = field(default_factory=list)

    @classmethod
    def fetch(cls, sandbox_url: str, start: float, end: float | None = None) -> Window:
        stats = sandbox_stats(sandbox_url, since=start)
        items = [tuple(r) for r in stats["requests"]]
        if end is not None:
            items = [r for r in items if r[0] <= end]
        return cls(items)  # type: ignore[arg-type]

    @property
    def count(self) -> int:
        return len(self.requests)

    def status(self, code: int) -> int:
        return sum(1 for r in self.requests if r[3] == code)

    def routes(self) -> dict[str, int]:
        return dict(Counter(f"{m} {p}" for _, m, p, _ in self.requests).most_common())

    def span(self) -> float:
        if len(self.requests) < 2:
            return 0.0
        return self.requests[-1][0] - self.requests[0][0]


def peak_rolling(times: list[float], span: float = 10.0) -> int:
    """The most requests inside any (t - span, t] (the sandbox's window)."""
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while times[lo] <= t - span:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def crm_times(state: dict[str, Any], variant: Variant) -> dict[str, float]:
    """bridge message uid -> when its last CRM record (note / inbox message) was created."""
    notes: dict[str, float] = {}
    for note in state.get("notes", []):
        uid = note["properties"].get("bridge_message_id")
        if uid:
            notes[uid] = parse_iso(note["createdAt"])
    inbox: dict[str, float] = {}
    for thread in state.get("threads", []):
        for m in thread.get("messages", []):
            if m.get("direction") == "INCOMING" and m.get("integrationIdempotencyId"):
                inbox[m["integrationIdempotencyId"]] = parse_iso(m["createdAt"])
    parts = ([notes] if variant.timeline != "none" else []) + ([inbox] if variant.inbox else [])
    keys = set.intersection(*(set(p) for p in parts)) if parts else set()
    return {k: max(p[k] for p in parts) for k in keys}


def check(state: dict[str, Any], uids: dict[str, str], variant: Variant) -> dict[str, int]:
    expected = set(uids.values())
    counts: Counter[str] = Counter()
    if variant.timeline != "none":
        counts.update(n["properties"].get("bridge_message_id") for n in state.get("notes", []))
    if variant.inbox:
        counts.update(
            m.get("integrationIdempotencyId")
            for t in state.get("threads", [])
            for m in t.get("messages", [])
            if m.get("direction") == "INCOMING"
        )
    per = 2 if variant.timeline != "none" and variant.inbox else 1
    return {
        "messages": len(expected),
        "missing": sum(1 for u in expected if counts[u] < per),
        "duplicated": sum(1 for u in expected if counts[u] > per),
        "unexpected": sum(1 for u in counts if u not in expected),
    }


def latencies(
    customers: Customers, keys: list[str], uids: dict[str, str], times: dict[str, float]
) -> list[float]:
    out = []
    for key in keys:
        uid = uids.get(key)
        if uid in times:
            out.append((times[uid] - customers.accepted[key][2]) * 1000.0)
    return out


# -- one variant ------------------------------------------------------------------------


def run_variant(
    variant: Variant, args: argparse.Namespace, log: Callable[[str], None]
) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-sync-{variant.key}-"))
    try:
        with postgres_schema(args.database_url) as database_url:
            stack = Stack(
                workdir=workdir / "stack",
                database_url=database_url,
                workers=args.workers,
                mapping=variant.file,
                mappings_dir=MAPPINGS,
            )
            db = None
            try:
                stack.start(seed=True)
                _check_sandbox_limit(stack.sandbox_url, args.sandbox_limit)
                db = BridgeDb(stack.env()["DATABASE_URL"])
                return _phases(stack, db, variant, args, log)
            finally:
                if db is not None:
                    db.close()
                stack.close()
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            log(f"  kept {workdir}")


def quiet(sandbox_url: str, room: int | None = None, limit: int = 100, span: float = 10.5) -> None:
    """Wait until the sandbox's rolling window has ``room`` requests free
    (default: all of them, i.e. none of the earlier calls is left in it)."""
    allowed = limit - (limit if room is None else room)
    last = sandbox_stats(sandbox_url, since=time.time() - span)["requests"]
    if len(last) > allowed:
        time.sleep(max(0.0, last[len(last) - allowed - 1][0] + span - time.time()))


def _check_sandbox_limit(sandbox_url: str, limit: dict[str, int]) -> None:
    cfg = requests.get(f"{sandbox_url}/hubspot/_config", timeout=10).json()
    running = {
        "per_10s": cfg["per_10s_oauth"] or cfg["per_10s"],
        "search_per_s": cfg["search_per_s"],
    }
    if running != limit or cfg["rate_interval_ms"] != 10000:
        raise Failed(f"the sandbox runs at {running}, not the documented default {limit}")


def _phases(
    stack: Stack,
    db: BridgeDb,
    variant: Variant,
    args: argparse.Namespace,
    log: Callable[[str], None],
) -> dict[str, Any]:
    url, secret = stack.telegram_webhook()
    customers = Customers(url, secret)
    users = customers.users(args.users)
    rng = random.Random(7)  # noqa: S311 (a fixed traffic pattern, not crypto)
    out: dict[str, Any] = {"mapping": variant.label}
    begin = time.time()
    time.sleep(0.05)

    def no_problems() -> None:
        if db.problems():
            raise Failed(f"parked/failed work: {stack.bridge_status()}")

    def all_synced(total: int) -> Callable[[], bool]:
        def ok() -> bool:
            no_problems()
            return db.synced() >= total

        return ok

    # 1. open: a new conversation per user (after the install's setup calls
    # have left the sandbox's 10 s window)
    log(f"[{variant.key}] open: {len(users)} new conversations")
    quiet(stack.sandbox_url)
    t0 = time.time()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(customers.send, users))
    t1 = wait_for(all_synced(len(users)), args.timeout, "the new conversations to sync", 0.1)
    time.sleep(0.3)
    w = Window.fetch(stack.sandbox_url, t0, t1)
    phases: dict[str, tuple[float, float]] = {"open": (t0, t1)}
    out["open"] = {
        "conversations": len(users),
        "api_requests": w.count,
        "calls_per_conversation": rnd(w.count / len(users)),
        "seconds": rnd(t1 - t0),
        "routes": w.routes(),
    }

    # 2. live: one message at a time into an open conversation
    log(f"[{variant.key}] live: {args.live} messages one at a time")
    quiet(stack.sandbox_url, room=60)
    t0 = time.time()
    live_keys = []
    for i in range(args.live):
        key = customers.send(users[i % len(users)])
        live_keys.append(key)
        wait_for(
            lambda k=key: db.status_of(k) == "synced", args.timeout, f"message {key} to sync", 0.01
        )
    t1 = time.time()
    time.sleep(0.3)
    w = Window.fetch(stack.sandbox_url, t0, t1)
    # the wait from the 2xx to the message's first CRM call: queue, work-horse, DB reads
    first_call = []
    for key in live_keys:
        accepted = customers.accepted[key][2]
        after = [r[0] for r in w.requests if r[0] >= accepted]
        if after:
            first_call.append((after[0] - accepted) * 1000.0)
    phases["live"] = (t0, t1)
    out["live"] = {
        "messages": args.live,
        "api_requests": w.count,
        "calls_per_message": rnd(w.count / args.live) if args.live else None,
        "first_call_p50_ms": rnd(percentile(first_call, 50), 0),
        "routes": w.routes(),
    }

    # 3. steady: a moderate rate to random open conversations
    n = max(1, round(args.steady_rate * args.steady_seconds))
    log(f"[{variant.key}] steady: {n} messages at {args.steady_rate}/s")
    quiet(stack.sandbox_url, room=60)
    t0 = time.time()
    steady_keys: list[str] = []
    with ThreadPoolExecutor(8) as pool:
        futures = []
        for i in range(n):
            delay = t0 + i / args.steady_rate - time.time()
            if delay > 0:
                time.sleep(delay)
            futures.append(pool.submit(customers.send, rng.choice(users)))
        steady_keys = [f.result() for f in futures]
    expected = len(users) + args.live + n
    t1 = wait_for(all_synced(expected), args.timeout, "the steady messages to sync", 0.1)
    time.sleep(0.3)
    w = Window.fetch(stack.sandbox_url, t0, t1)
    phases["steady"] = (t0, t1)
    out["steady"] = {
        "messages": n,
        "rate_msgs_per_s": args.steady_rate,
        "seconds": rnd(t1 - t0),
        "api_requests": w.count,
        "api_rps": rnd(w.count / (t1 - t0)),
        "calls_per_message": rnd(w.count / n),
        "http_429": w.status(429),
    }

    # 4. backlog: ingest with the workers stopped, then drain
    backlog = len(users) * args.backlog_per_user
    log(f"[{variant.key}] backlog: {backlog} messages, workers stopped; then {args.workers}")
    stack.stop_workers()

    def burst(user: int) -> None:
        for _ in range(args.backlog_per_user):
            customers.send(user)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(burst, users))
    expected += backlog
    if db.total() != expected:
        raise Failed(f"expected {expected} stored messages, found {db.total()}")
    quiet(stack.sandbox_url)
    t0 = time.time()
    for _ in range(args.workers):
        stack.start_worker()
    t1 = wait_for(all_synced(expected), args.timeout, "the backlog to drain", 0.1)
    time.sleep(0.3)
    w = Window.fetch(stack.sandbox_url, t0, t1)
    stats = sandbox_stats(stack.sandbox_url, since=begin)
    accepted_times = [r[0] for r in stats["requests"] if r[3] != 429]
    span = w.span()
    per_10s = args.sandbox_limit["per_10s"]
    api_rps = (w.count - 1) / span if span > 0 else None
    phases["backlog"] = (t0, t1)
    out["backlog"] = {
        "messages": backlog,
        "conversations": len(users),
        "drain_seconds": rnd(t1 - t0),
        "messages_per_s": rnd(backlog / (t1 - t0)),
        "api_requests": w.count,
        "calls_per_message": rnd(w.count / backlog),
        "api_window_seconds": rnd(span),
        "api_rps": rnd(api_rps),
        "limit_rps": per_10s / 10,
        "limit_used_pct": rnd(100 * api_rps / (per_10s / 10), 1) if api_rps else None,
        "peak_10s": peak_rolling([t for t in accepted_times if t >= t0]),
        "http_429": w.status(429),
        "api_bound": w.count > per_10s,
        "routes": w.routes(),
    }
    out["http_429_total"] = int(stats["by_status"].get("429", 0))
    out["http_429_routes"] = dict(
        Counter(f"{m} {p}" for _, m, p, st in stats["requests"] if st == 429)
    )
    out["http_429_phases"] = _phase_429s(stats["requests"], phases)
    everything = sandbox_stats(stack.sandbox_url)["requests"]  # the install's calls included
    out["http_429_policy"] = _policy_429s(everything, args.sandbox_limit)

    # end-to-end latency and the check, from the CRM's records
    state = stack.hubspot_state()
    uids = db.uids()
    times = crm_times(state, variant)
    live_lat = latencies(customers, live_keys, uids, times)
    steady_lat = latencies(customers, steady_keys, uids, times)
    out["live"].update(
        {
            "e2e_p50_ms": rnd(percentile(live_lat, 50), 0),
            "e2e_p99_ms": rnd(percentile(live_lat, 99), 0),
        }
    )
    out["steady"].update(
        {
            "e2e_p50_ms": rnd(percentile(steady_lat, 50), 0),
            "e2e_p99_ms": rnd(percentile(steady_lat, 99), 0),
            "e2e_max_ms": rnd(max(steady_lat) if steady_lat else None, 0),
        }
    )
    out["check"] = {**check(state, uids, variant), "synced": db.synced()}
    return out


def _phase_429s(
    requests_: list[list[Any]], phases: dict[str, tuple[float, float]]
) -> dict[str, int]:
    out = {name: 0 for name in phases}
    for t, _, _, status in requests_:
        if status == 429:
            name = next((n for n, (a, b) in phases.items() if a <= t <= b + 1.0), "between")
            out[name] = out.get(name, 0) + 1
    return out


def _policy_429s(requests_: list[list[Any]], limit: dict[str, int]) -> dict[str, int]:
    """Which sandbox window refused each 429: the search endpoints' 1 s
    window (full with ``search_per_s`` accepted searches) or the 10 s one
    (``per_10s`` accepted requests, searches included: the sandbox counts
    them there too)."""
    ok = [(r[0], "/search" in r[2]) for r in requests_ if r[3] != 429]
    out = {"search_per_s": 0, "ten_secondly": 0, "ten_secondly_with_searches": 0, "other": 0}
    for t, _, route, status in requests_:
        if status != 429:
            continue
        # answers are stamped when they leave: look a little past t
        searches = sum(1 for u, s in ok if s and t - 1.0 < u <= t + 0.05)
        window = [s for u, s in ok if t - 10.0 < u <= t + 0.05]
        if "/search" in route and searches >= limit["search_per_s"]:
            out["search_per_s"] += 1
        elif len(window) >= limit["per_10s"]:
            # full only because searches count there too?
            plain = sum(1 for s in window if not s)
            out["ten_secondly" if plain >= limit["per_10s"] else "ten_secondly_with_searches"] += 1
        else:
            out["other"] += 1
    return out


# -- output ------------------------------------------------------------------------------


def render(f: dict[str, Any]) -> str:
    vs = f["variants"]
    keys = list(vs)
    head = ["", *[f"{k}: {vs[k]['mapping']}" for k in keys]]

    def row(label: str, get: Callable[[dict[str, Any]], Any]) -> list[Any]:
        return [label, *[get(vs[k]) for k in keys]]

    rows = [
        row("new conversation: CRM calls", lambda v: v["open"]["calls_per_conversation"]),
        row("live: CRM calls / message", lambda v: v["live"]["calls_per_message"]),
        row("live: e2e p50 ms", lambda v: v["live"]["e2e_p50_ms"]),
        row("live: e2e p99 ms", lambda v: v["live"]["e2e_p99_ms"]),
        row("live: 2xx -> first CRM call p50 ms", lambda v: v["live"]["first_call_p50_ms"]),
        row(
            f"steady {f['steady_rate']}/s: CRM calls / message",
            lambda v: v["steady"]["calls_per_message"],
        ),
        row("steady: API req/s", lambda v: v["steady"]["api_rps"]),
        row("steady: e2e p50 ms", lambda v: v["steady"]["e2e_p50_ms"]),
        row("steady: e2e p99 ms", lambda v: v["steady"]["e2e_p99_ms"]),
        row("backlog: messages", lambda v: v["backlog"]["messages"]),
        row("backlog: drain s (from worker start)", lambda v: v["backlog"]["drain_seconds"]),
        row("backlog: messages/s", lambda v: v["backlog"]["messages_per_s"]),
        row("backlog: CRM calls / message", lambda v: v["backlog"]["calls_per_message"]),
        row("backlog: API req/s (first..last call)", lambda v: v["backlog"]["api_rps"]),
        row(
            f"backlog: % of limit ({f['sandbox_limit']['per_10s'] / 10:g} req/s)",
            lambda v: v["backlog"]["limit_used_pct"],
        ),
        row("backlog: peak requests in 10 s", lambda v: v["backlog"]["peak_10s"]),
        row(
            "backlog: rate-limited by HubSpot?",
            lambda v: "yes" if v["backlog"]["api_bound"] else "no (too few calls)",
        ),
        row("429s from the sandbox (all phases)", lambda v: v["http_429_total"]),
        row(
            "check: missing / duplicated",
            lambda v: f"{v['check']['missing']} / {v['check']['duplicated']}",
        ),
    ]
    title = (
        f"Telegram -> HubSpot sync — sandbox limit {f['sandbox_limit']['per_10s']}/10 s "
        f"(search {f['sandbox_limit']['search_per_s']}/s), bridge bucket "
        f"{f['bridge_bucket']['capacity']:g} + {f['bridge_bucket']['per_second']:g}/s, "
        f"{f['workers']} workers, {f['users']} conversations, {f['database']}"
    )
    out = table(title, head, rows)
    out += (
        f"\ntargets: <= {TARGETS['calls_per_message_open']} CRM calls/message once a "
        f"conversation is open; >= {TARGETS['limit_used_pct_backlog']:g}% of the limit while "
        "an API-bound backlog drains; ~0 429s"
    )
    for k in keys:
        v = vs[k]
        if v["http_429_total"]:
            out += (
                f"\n{k}: 429s by phase: {v['http_429_phases']}; "
                f"by route: {_routes(v['http_429_routes'])}; full window: {v['http_429_policy']}"
            )
        out += (
            f"\n{k}: calls per new conversation: {_routes(v['open']['routes'])}"
            f"\n{k}: calls in the live phase: {_routes(v['live']['routes'])}"
            f"\n{k}: calls while draining: {_routes(v['backlog']['routes'])}"
        )
    return out


def _routes(routes: dict[str, int]) -> str:
    return ", ".join(f"{n}x {r}" for r, n in routes.items()) or "none"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.sync", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--json", action="store_true", help="print one JSON line of figures last")
    parser.add_argument("--crm", choices=("hubspot",), default="hubspot")
    parser.add_argument(
        "--variants", default="a,b,c", help="mapping variants to run (default a,b,c)"
    )
    parser.add_argument("--users", type=int, default=20, help="open conversations (default 20)")
    parser.add_argument(
        "--backlog-per-user", type=int, default=25, help="backlog messages per conversation (25)"
    )
    parser.add_argument(
        "--live", type=int, default=20, help="messages sent one at a time (default 20)"
    )
    parser.add_argument(
        "--steady-rate", type=float, default=2.5, help="steady messages/s (default 2.5)"
    )
    parser.add_argument(
        "--steady-seconds", type=float, default=20.0, help="steady phase length (default 20)"
    )
    parser.add_argument(
        "--workers", type=int, default=2, help="bridge worker processes (default 2)"
    )
    parser.add_argument("--timeout", type=float, default=300.0, help="give up waiting after (s)")
    parser.add_argument(
        "--database-url",
        default=None,
        help="PostgreSQL URL (a fresh schema is made and dropped); default SQLite",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directories (logs)")
    args = parser.parse_args(argv)
    from crm_adapters.hubspot.adapter import api_rate
    from sandbox.hubspot.config import DEFAULTS

    args.sandbox_limit = {
        "per_10s": DEFAULTS["per_10s_oauth"] or DEFAULTS["per_10s"],
        "search_per_s": DEFAULTS["search_per_s"],
    }
    bucket = api_rate({})
    keys = [k.strip() for k in args.variants.split(",") if k.strip()]
    unknown = [k for k in keys if k not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}: choose from {sorted(VARIANTS)}")

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    figures: dict[str, Any] = {
        "bench": "sync",
        "crm": args.crm,
        "database": "postgresql"
        if args.database_url and not args.database_url.startswith("sqlite")
        else "sqlite",
        "sandbox_limit": args.sandbox_limit,
        "bridge_bucket": {"capacity": bucket.capacity, "per_second": bucket.per_second},
        "workers": args.workers,
        "users": args.users,
        "steady_rate": args.steady_rate,
        "targets": TARGETS,
        "variants": {},
    }
    for key in keys:
        started = time.monotonic()
        figures["variants"][key] = run_variant(VARIANTS[key], args, log)
        log(f"[{key}] done in {time.monotonic() - started:.0f} s")
    print(render(figures), flush=True)
    if args.json:
        emit_json(figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
