"""The CRM-independent part of ``python -m bench.sync``: the customers'
side (real Telegram updates posted to the bridge's webhook), read-only
queries of the bridge's database, the sandbox's request windows, one stack
per mapping variant and the four phases (open, live, steady, backlog).

What differs per CRM (the sandbox's limits, its statistics endpoint, the
backlog's limit figures, end-to-end times, the check, the table) is a
:class:`CrmBench` (``bench.sync_hubspot``, ``bench.sync_amocrm``).
"""

from __future__ import annotations

import argparse
import random
import shutil
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

from bench.report import percentile, postgres_schema, rnd, sandbox_stats
from bench.stack import Stack
from bench.traffic import message_text, telegram_update

__all__ = [
    "MAPPINGS",
    "BridgeDb",
    "Run",
    "CrmBench",
    "Customers",
    "Failed",
    "Variant",
    "Window",
    "latencies",
    "peak_rolling",
    "phase_429s",
    "routes_text",
    "run_variant",
    "wait_for",
]

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

    def expected(self) -> dict[int, list[str]]:
        """Telegram user id -> the texts they sent, in their own order
        (what ``bench.traffic``'s checkers compare the CRM with)."""
        with self._lock:
            counts = dict(self._index)
        return {user: [message_text(user, i) for i in range(n)] for user, n in counts.items()}


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

    def journaled(self) -> int:
        """Deliveries the webhook committed (the ingest journal): with the
        workers stopped, nothing is parsed into ``messages`` yet."""
        return int(self._scalar("SELECT count(*) FROM deliveries") or 0)

    def last_id(self) -> int:
        return int(self._scalar("SELECT max(id) FROM messages") or 0)

    def synced_after(self, floor: int) -> list[str]:
        """Dedupe keys of the inbound messages synced whose row id > ``floor``."""
        from sqlalchemy import text

        with self.engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT dedupe_key FROM messages WHERE id > :floor "
                    "AND direction = 'in' AND status = 'synced'"
                ),
                {"floor": floor},
            )
            return [str(k) for (k,) in rows]

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
    def fetch(
        cls, sandbox_url: str, start: float, end: float | None = None, *, crm: str = "hubspot"
    ) -> Window:
        stats = sandbox_stats(sandbox_url, since=start, crm=crm)
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

    def only(self, keep: Callable[[tuple[float, str, str, int]], bool]) -> Window:
        return Window([r for r in self.requests if keep(r)])


def peak_rolling(times: list[float], span: float = 10.0) -> int:
    """The most requests inside any (t - span, t] (the sandbox's window)."""
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while times[lo] <= t - span:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def latencies(
    customers: Customers, keys: list[str], uids: dict[str, str], times: dict[str, float]
) -> list[float]:
    """ms from each message's 2xx to ``times[uid]`` (those that have one)."""
    out = []
    for key in keys:
        uid = uids.get(key)
        if uid in times:
            out.append((times[uid] - customers.accepted[key][2]) * 1000.0)
    return out


# -- what differs per CRM ---------------------------------------------------------------


@dataclass
class Run:
    """One variant's run, handed to the CRM's hooks."""

    stack: Stack
    db: BridgeDb
    variant: Variant
    args: argparse.Namespace
    customers: Customers
    #: time.time() before the first message of the run
    begin: float = 0.0
    #: phase -> (start, end)
    phases: dict[str, tuple[float, float]] = field(default_factory=dict)
    live_keys: list[str] = field(default_factory=list)
    steady_keys: list[str] = field(default_factory=list)


class CrmBench:
    """Hooks of the phase driver; one subclass per CRM."""

    crm: str = ""
    variants: dict[str, Variant] = {}  # noqa: RUF012 (class-level table, never mutated)

    def configure(self, args: argparse.Namespace) -> dict[str, Any]:
        """Reads the documented limits into ``args``; returns the figures'
        CRM-specific top-level keys (``sandbox_limit``, ``bridge_bucket``, ...)."""
        raise NotImplementedError

    def check_sandbox(self, stack: Stack, args: argparse.Namespace) -> None:
        """Refuse to measure a sandbox not at its documented default limit."""
        raise NotImplementedError

    def quiet(self, stack: Stack, *, full: bool) -> None:
        """Wait until the sandbox's rate window is empty (``full``) or has
        room for a phase that stays below the limit."""
        raise NotImplementedError

    def window(self, stack: Stack, start: float, end: float | None = None) -> Window:
        return Window.fetch(stack.sandbox_url, start, end, crm=self.crm)

    def stats(self, stack: Stack, since: float | None = None) -> dict[str, Any]:
        return sandbox_stats(stack.sandbox_url, since=since, crm=self.crm)

    def phase_extra(self, phase: str, w: Window, n: int, seconds: float) -> dict[str, Any]:
        """More figures for ``open``/``live``/``steady`` (``n`` conversations /
        messages, the phase's ``seconds``)."""
        return {}

    def watch(self, run: Run) -> Any:
        """Started before the live phase, ``stop()``-ed after the steady one (or None)."""
        return None

    def backlog(self, run: Run, w: Window, t0: float, t1: float) -> dict[str, Any]:
        """The backlog's limit figures (requests/s, share of the limit, peaks)."""
        raise NotImplementedError

    def errors(self, run: Run) -> dict[str, Any]:
        """The variant's 429 figures over the whole run."""
        raise NotImplementedError

    def finish(self, run: Run, out: dict[str, Any], watcher: Any) -> None:
        """End-to-end latencies into ``out["live"]``/``out["steady"]`` and ``out["check"]``."""
        raise NotImplementedError

    def render(self, figures: dict[str, Any]) -> str:
        raise NotImplementedError


# -- one variant ------------------------------------------------------------------------


def run_variant(
    bench: CrmBench, variant: Variant, args: argparse.Namespace, log: Callable[[str], None]
) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-sync-{bench.crm}-{variant.key}-"))
    try:
        with postgres_schema(args.database_url) as database_url:
            stack = Stack(
                workdir=workdir / "stack",
                database_url=database_url,
                workers=args.workers,
                crm=bench.crm,
                mapping=variant.file,
                mappings_dir=MAPPINGS,
            )
            db = None
            try:
                stack.start(seed=True)
                bench.check_sandbox(stack, args)
                db = BridgeDb(stack.env()["DATABASE_URL"])
                return _phases(bench, stack, db, variant, args, log)
            finally:
                if db is not None:
                    db.close()
                stack.close()
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            log(f"  kept {workdir}")


def _phases(
    bench: CrmBench,
    stack: Stack,
    db: BridgeDb,
    variant: Variant,
    args: argparse.Namespace,
    log: Callable[[str], None],
) -> dict[str, Any]:
    url, secret = stack.telegram_webhook()
    customers = Customers(url, secret)
    run = Run(stack, db, variant, args, customers)
    users = customers.users(args.users)
    rng = random.Random(7)  # noqa: S311 (a fixed traffic pattern, not crypto)
    out: dict[str, Any] = {"mapping": variant.label}
    run.begin = time.time()
    time.sleep(0.05)
    if getattr(args, "only_new_customers", False):
        from bench.sync_burst import run_new_customers

        return {**out, "new_customers": run_new_customers(bench, run, log)}

    def no_problems() -> None:
        if db.problems():
            raise Failed(f"parked/failed work: {stack.bridge_status()}")

    def all_synced(total: int) -> Callable[[], bool]:
        def ok() -> bool:
            no_problems()
            return db.synced() >= total

        return ok

    # 1. open: a new conversation per user (after the install's setup calls
    # have left the sandbox's rate window)
    log(f"[{variant.key}] open: {len(users)} new conversations")
    bench.quiet(stack, full=True)
    t0 = time.time()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(customers.send, users))
    t1 = wait_for(all_synced(len(users)), args.timeout, "the new conversations to sync", 0.1)
    time.sleep(0.3)
    w = bench.window(stack, t0, t1)
    run.phases["open"] = (t0, t1)
    out["open"] = {
        "conversations": len(users),
        "api_requests": w.count,
        "calls_per_conversation": rnd(w.count / len(users)),
        "seconds": rnd(t1 - t0),
        "routes": w.routes(),
        **bench.phase_extra("open", w, len(users), t1 - t0),
    }

    # 2. live: one message at a time into an open conversation
    log(f"[{variant.key}] live: {args.live} messages one at a time")
    bench.quiet(stack, full=False)
    watcher = bench.watch(run)
    try:
        t0 = time.time()
        for i in range(args.live):
            key = customers.send(users[i % len(users)])
            run.live_keys.append(key)

            def synced(k: str = key) -> bool:
                return db.status_of(k) == "synced"

            wait_for(synced, args.timeout, f"message {key} to sync", 0.01)
        t1 = time.time()
        time.sleep(0.3)
        w = bench.window(stack, t0, t1)
        # the wait from the 2xx to the message's first CRM call: queue, work-horse, DB reads
        first_call = []
        for key in run.live_keys:
            accepted = customers.accepted[key][2]
            after = [r[0] for r in w.requests if r[0] >= accepted]
            if after:
                first_call.append((after[0] - accepted) * 1000.0)
        run.phases["live"] = (t0, t1)
        out["live"] = {
            "messages": args.live,
            "api_requests": w.count,
            "calls_per_message": rnd(w.count / args.live) if args.live else None,
            "first_call_p50_ms": rnd(percentile(first_call, 50), 0),
            "routes": w.routes(),
            **bench.phase_extra("live", w, args.live, t1 - t0),
        }

        # 3. steady: a moderate rate to random open conversations
        n = max(1, round(args.steady_rate * args.steady_seconds))
        log(f"[{variant.key}] steady: {n} messages at {args.steady_rate}/s")
        bench.quiet(stack, full=False)
        t0 = time.time()
        with ThreadPoolExecutor(8) as pool:
            futures = []
            for i in range(n):
                delay = t0 + i / args.steady_rate - time.time()
                if delay > 0:
                    time.sleep(delay)
                futures.append(pool.submit(customers.send, rng.choice(users)))
            run.steady_keys = [f.result() for f in futures]
        expected = len(users) + args.live + n
        t1 = wait_for(all_synced(expected), args.timeout, "the steady messages to sync", 0.1)
    finally:
        if watcher is not None:
            watcher.stop()
    time.sleep(0.3)
    w = bench.window(stack, t0, t1)
    run.phases["steady"] = (t0, t1)
    out["steady"] = {
        "messages": n,
        "rate_msgs_per_s": args.steady_rate,
        "seconds": rnd(t1 - t0),
        "api_requests": w.count,
        "api_rps": rnd(w.count / (t1 - t0)),
        "calls_per_message": rnd(w.count / n),
        "http_429": w.status(429),
        **bench.phase_extra("steady", w, n, t1 - t0),
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
    if db.journaled() != expected:
        raise Failed(f"expected {expected} journaled deliveries, found {db.journaled()}")
    bench.quiet(stack, full=True)
    t0 = time.time()
    for _ in range(args.workers):
        stack.start_worker()
    t1 = wait_for(all_synced(expected), args.timeout, "the backlog to drain", 0.1)
    time.sleep(0.3)
    w = bench.window(stack, t0, t1)
    run.phases["backlog"] = (t0, t1)
    out["backlog"] = {
        "messages": backlog,
        "conversations": len(users),
        "drain_seconds": rnd(t1 - t0),
        "messages_per_s": rnd(backlog / (t1 - t0)),
        "api_requests": w.count,
        "calls_per_message": rnd(w.count / backlog),
        "http_429": w.status(429),
        "routes": w.routes(),
        **bench.backlog(run, w, t0, t1),
    }
    if getattr(args, "new_customers", 0):
        from bench.sync_burst import run_new_customers  # its own phase (bench.sync_burst)

        out["new_customers"] = run_new_customers(bench, run, log)
    out.update(bench.errors(run))
    # end-to-end latency and the check, from the CRM's records
    bench.finish(run, out, watcher)
    return out


def phase_429s(
    requests_: list[list[Any]], phases: dict[str, tuple[float, float]]
) -> dict[str, int]:
    """429s by the phase they fell in (up to 1 s after its end; else "between")."""
    out = {name: 0 for name in phases}
    for t, _, _, status in requests_:
        if status == 429:
            name = next((n for n, (a, b) in phases.items() if a <= t <= b + 1.0), "between")
            out[name] = out.get(name, 0) + 1
    return out


def routes_text(routes: dict[str, int]) -> str:
    return ", ".join(f"{n}x {r}" for r, n in routes.items()) or "none"
