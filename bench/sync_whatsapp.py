"""``python -m bench.sync --channel whatsapp``: the WhatsApp side of the sync
bench, against one CRM (``--crm``, HubSpot by default) on its demo mapping.

    python -m bench.sync --channel whatsapp [--crm hubspot|amocrm|bitrix24]
                         [--users 100] [--live 20] [--replies-per-user 5]
                         [--workers 2] [--timeout 300] [--database-url URL]
                         [--json] [--keep]
    python -m bench.sync_whatsapp ...   (the same)

A fresh stack (``bench.stack``: redis-server, the sandboxes, gunicorn,
``bridge worker`` processes), the demo number connected as ``bridge run
--demo`` connects it and the sandbox's Meta app posting to the bridge's app
URL, signed. The sandbox CRM runs at the test suite's fast tier with the
tenant's bucket matching it (``bench.sync_worker``'s tiers: HubSpot 2,000
requests / 10 s, amoCRM 100/s, Bitrix24 100/s), so that the CRM's limit
never bounds a phase: what is measured is what WhatsApp costs the CRM and
how much of the number's own limit the bridge uses. (``python -m
bench.sync`` without ``--channel`` measures Telegram at the CRMs'
documented limits; a CRM call costs the same count at either tier.)

Phases, the customers' side posting real WhatsApp Cloud API webhook bodies
(``bench.traffic.whatsapp_message``: a text message with its contacts card)
through the WhatsApp sandbox's ``/_deliver``, which signs them like Meta:

1. open: one message from each of ``--users`` new customers; all synced.
   CRM calls per new conversation.
2. live: ``--live`` messages one at a time into those open conversations,
   each waited for until synced before the next (as ``bench.sync``'s live
   phase). CRM calls per message, and per route.
3. replies: the workers stopped, a rep answers each customer
   ``--replies-per-user`` times in the CRM (each sandbox CRM's ``/_reply``,
   which fires the CRM's real webhook at the bridge), then ``--workers``
   workers started: the backlog of replies drains through the Graph API.
   From the WhatsApp sandbox's ``/_stats`` (every Graph call, with its
   time and Meta's error code): sends per second from the first to the
   last, the most in any rolling second against the number's 80/s (Meta's
   default throughput; the sandbox enforces it with 130429), 130429 and
   131056 (pair limit; off in the sandbox by default) answers. The
   sandbox posts each send's statuses (sent, delivered, read) in order;
   once all are posted and the bridge is idle: each reply sent once, the
   bridge's rows read, the CRM calls the replies cost (their delivery
   reports) and how many replies the CRM shows read.

With ``--json`` the last line on stdout is one JSON object::

    {"bench": "sync", "channel": "whatsapp", "crm", "database", "workers",
     "tier": {sandbox CRM tier}, "mapping": "demo-<crm>.yaml",
     "number_limit_per_s": 80, "bridge_bucket": {"per_second", "capacity",
     "pair_burst", "pair_per_minute"},
     "open":    {"conversations", "seconds", "crm_calls", "calls_per_conversation", "routes"},
     "live":    {"messages", "crm_calls", "calls_per_message", "routes", "e2e_p50_ms",
                 "e2e_p99_ms"},
     "replies": {"replies", "customers", "per_customer", "ingest_seconds", "drain_seconds",
                 "sends", "send_window_seconds", "sends_per_s", "sends_per_s_99", "peak_1s",
                 "sends_by_second": [n, ...], "limit_per_s",
                 "limit_used_pct", "limit_used_pct_99", "peak_used_pct",
                 "graph_errors": {"130429": n, ...},
                 "http_429", "statuses_posted", "crm_calls", "crm_calls_per_reply",
                 "crm_routes", "check": {"sent_once", "duplicated", "missing", "read_in_bridge",
                 "read_in_crm"}}}

(``drain_seconds``: from the workers' start, process start-up included, to
the last reply marked sent; ``sends_per_s`` = (sends - 1) / the span from
the first to the last accepted send, ``sends_per_s_99`` the same over the
first 99 % of them (a send refused with 130429 comes back seconds later and
stretches the span alone); ``peak_1s``: the most accepted sends in any
rolling second. The bridge's bucket and the sandbox's are both 80 tokens
refilled at 80/s, so a drain's first second may carry up to 160 sends:
whether Meta counts a rolling second or a bucket is not documented.)
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests

from bench.report import emit_json, percentile, postgres_schema, rnd, sandbox_stats, table
from bench.stack import Stack
from bench.sync_core import BridgeDb, Failed, routes_text, wait_for
from bench.sync_worker import SETUPS
from bench.traffic import message_text, wamid, whatsapp_message

__all__ = ["FIRST_USER", "add_arguments", "main", "render", "run"]

#: the customers' wa_ids (digits of a phone number)
FIRST_USER = 79_880_000_001
#: Meta's default throughput of a business number (FACTS §2; error 130429)
NUMBER_LIMIT = 80


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("WhatsApp (--channel whatsapp)")
    group.add_argument(
        "--replies-per-user",
        type=int,
        default=5,
        help="rep replies to each customer in the reply backlog (5: the bridge's pair burst)",
    )


# -- the sides ----------------------------------------------------------------------------


class Customers:
    """WhatsApp customers writing through the sandbox's ``/_deliver``
    (signed like Meta); remembers when each message was accepted."""

    def __init__(self, sandbox_url: str, first_user: int = FIRST_USER) -> None:
        self.url = f"{sandbox_url}/whatsapp/_deliver"
        self.first_user = first_user
        self._index: Counter[int] = Counter()
        self._lock = threading.Lock()
        self._local = threading.local()
        #: wamid (the bridge's dedupe key) -> accepted at (time.time())
        self.accepted: dict[str, float] = {}

    def users(self, n: int) -> list[int]:
        return [self.first_user + i for i in range(n)]

    def _session(self) -> requests.Session:
        s = getattr(self._local, "s", None)
        if s is None:
            s = self._local.s = requests.Session()
        return s

    def send(self, user: int) -> str:
        with self._lock:
            index = self._index[user]
            self._index[user] += 1
        body = whatsapp_message(user, index, timestamp=int(time.time()))
        session = self._session()
        for attempt in range(5):
            r = session.post(self.url, json={"payload": body}, timeout=60)
            if r.ok and 200 <= int(r.json().get("status") or 0) < 300:
                break
            time.sleep(0.2 * (attempt + 1))  # Meta retries a non-2xx
        else:
            raise Failed(f"the bridge answered {r.text[:300]}")
        key = wamid(user, index)
        with self._lock:
            self.accepted[key] = time.time()
        return key

    def expected(self) -> dict[int, list[str]]:
        with self._lock:
            counts = dict(self._index)
        return {user: [message_text(user, i) for i in range(n)] for user, n in counts.items()}


class Reps:
    """A rep answering in the sandbox CRM's own conversation view (``/_reply``)."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.crm = stack.crm
        self._targets: dict[int, dict[str, Any]] = {}
        self._local = threading.local()

    def learn(self, users: list[int]) -> None:
        """What ``/_reply`` names each customer's conversation by."""
        stack, wanted = self.stack, {str(u): u for u in users}
        if self.crm == "hubspot":
            for c in stack.hubspot_state()["contacts"]:
                wa_id = c["properties"].get("bridge_whatsapp_id")
                if wa_id in wanted:
                    self._targets[wanted[wa_id]] = {"contact_id": c["id"]}
        elif self.crm == "amocrm":
            state = stack.amocrm_state()
            account = state["accounts"][0] if "accounts" in state else state
            for chat in account["chats"]:
                wa_id = (chat.get("client") or {}).get("client_id")
                if wa_id in wanted:
                    self._targets[wanted[wa_id]] = {"contact_id": chat["contact_id"]}
        else:
            for chat in stack.bitrix24_state()["chats"]:
                if chat["external_user_id"] in wanted:
                    self._targets[wanted[chat["external_user_id"]]] = {
                        "conversation": chat["external_chat_id"]
                    }
        missing = [u for u in users if u not in self._targets]
        if missing:
            raise Failed(f"no conversation in the CRM for {len(missing)} customers")

    def reply(self, user: int, text: str) -> None:
        session = getattr(self._local, "s", None)
        if session is None:
            session = self._local.s = requests.Session()
        r = session.post(
            f"{self.stack.sandbox_url}/{self.crm}/_reply",
            json={**self._targets[user], "text": text},
            timeout=60,
        )
        r.raise_for_status()
        status = (r.json().get("webhook") or {}).get("status")
        if not status or not 200 <= int(status) < 300:
            raise Failed(f"the bridge answered the CRM's reply webhook {r.json()}")

    def read_shown(self) -> int:
        """Replies the CRM shows read (HubSpot READ, amoCRM delivery status
        2, Bitrix24 read)."""
        if self.crm == "hubspot":
            return sum(
                1
                for t in self.stack.hubspot_state()["threads"]
                for m in t["messages"]
                if m["direction"] == "OUTGOING" and m.get("status") == "READ"
            )
        if self.crm == "amocrm":
            state = self.stack.amocrm_state()
            account = state["accounts"][0] if "accounts" in state else state
            return sum(
                1
                for c in account["chats"]
                for m in c["messages"]
                if m["direction"] == "out"
                and int(((m.get("delivery_statuses") or [{}])[-1]).get("status") or 0) == 2
            )
        return sum(
            1
            for c in self.stack.bitrix24_state()["chats"]
            for m in c["messages"]
            if m["direction"] == "out" and m.get("read")
        )


def _whatsapp_stats(stack: Stack, since: float) -> dict[str, Any]:
    r = requests.get(
        f"{stack.sandbox_url}/whatsapp/_stats", params={"since": repr(since)}, timeout=30
    )
    r.raise_for_status()
    return r.json()


def _sent(stack: Stack) -> list[dict[str, Any]]:
    r = requests.get(f"{stack.sandbox_url}/whatsapp/_sent", timeout=60)
    r.raise_for_status()
    return list(r.json()["sent"])


def _crm_calls(stack: Stack, start: float, end: float) -> list[list[Any]]:
    stats = sandbox_stats(stack.sandbox_url, since=start, crm=stack.crm)
    return [r for r in stats["requests"] if r[0] <= end]


def _routes(calls: list[list[Any]]) -> dict[str, int]:
    return dict(Counter(f"{r[1]} {r[2]}" for r in calls).most_common())


def _quiet(stack: Stack, seconds: float = 1.0, timeout: float = 60.0) -> float:
    """Wait until the sandbox CRM has had no request for ``seconds``; the
    time.time() it went quiet (its last request's, or now)."""
    deadline = time.monotonic() + timeout
    while True:
        now = time.time()
        calls = sandbox_stats(stack.sandbox_url, since=now - seconds, crm=stack.crm)["requests"]
        if not calls:
            return now
        if time.monotonic() > deadline:
            raise Failed("the sandbox CRM never went quiet")
        time.sleep(0.2)


def _peak_1s(times: list[float]) -> int:
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while times[lo] <= t - 1.0:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def _out_rows(db: BridgeDb) -> dict[str, int]:
    from sqlalchemy import text

    with db.engine.connect() as conn:
        rows = conn.execute(
            text("SELECT status, count(*) FROM messages WHERE direction = 'out' GROUP BY status")
        )
        return {str(s): int(n) for s, n in rows}


def _read_rows(db: BridgeDb) -> int:
    """Replies whose row says the customer read them (``payload.delivery``)."""
    from sqlalchemy import text

    with db.engine.connect() as conn:
        payloads = [
            p for (p,) in conn.execute(text("SELECT payload FROM messages WHERE direction = 'out'"))
        ]
    decoded = [json.loads(p) if isinstance(p, str) else p or {} for p in payloads]
    return sum(1 for p in decoded if p.get("delivery") == "read")


# -- the run -------------------------------------------------------------------------------


def run(crm: str, args: argparse.Namespace, log: Callable[[str], None]) -> dict[str, Any]:
    setup = SETUPS[crm]
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-sync-whatsapp-{crm}-"))
    try:
        with postgres_schema(args.database_url) as database_url:
            stack = Stack(
                workdir=workdir / "stack",
                database_url=database_url,
                workers=args.workers,
                crm=crm,
                sandbox_config={crm: setup.sandbox},
                channels=("whatsapp",),
            )
            db = None
            try:
                stack.start(seed=True)
                _tenant_settings(stack, setup.tenant)
                db = BridgeDb(stack.env()["DATABASE_URL"])
                return _phases(crm, setup.sandbox, stack, db, args, log)
            finally:
                if db is not None:
                    db.close()
                stack.close()
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            log(f"  kept {workdir}")


def _tenant_settings(stack: Stack, values: dict[str, Any]) -> None:
    from bridge.config import Settings
    from bridge.runtime import Runtime
    from bridge.tables import Tenant

    runtime = Runtime(Settings.from_env(stack.env()))
    try:
        with runtime.transaction() as session:
            tenant = session.get(Tenant, stack.seeded.tenant_id)
            assert tenant is not None
            tenant.settings = {**tenant.settings, **values}
    finally:
        runtime.close()


def _phases(
    crm: str,
    tier: dict[str, Any],
    stack: Stack,
    db: BridgeDb,
    args: argparse.Namespace,
    log: Callable[[str], None],
) -> dict[str, Any]:
    from channel_adapters.whatsapp.settings import WhatsAppSettings

    defaults = WhatsAppSettings()
    customers = Customers(stack.sandbox_url)
    users = customers.users(args.users)
    out: dict[str, Any] = {
        "bench": "sync",
        "channel": "whatsapp",
        "crm": crm,
        "mapping": f"demo-{crm}.yaml",
        "database": "postgresql"
        if args.database_url and not args.database_url.startswith("sqlite")
        else "sqlite",
        "workers": args.workers,
        "tier": tier,
        "number_limit_per_s": NUMBER_LIMIT,
        "bridge_bucket": {
            "per_second": defaults.per_second,
            "capacity": max(1, int(defaults.per_second)),
            "pair_burst": defaults.pair_burst,
            "pair_per_minute": defaults.pair_per_minute,
        },
    }

    def synced(total: int) -> Callable[[], bool]:
        def ok() -> bool:
            if db.problems():
                raise Failed(f"parked/failed work: {stack.bridge_status()}")
            return db.synced() >= total

        return ok

    # 1. open
    log(f"[whatsapp/{crm}] open: {len(users)} new conversations")
    _quiet(stack)
    t0 = time.time()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(customers.send, users))
    t1 = wait_for(synced(len(users)), args.timeout, "the new conversations to sync", 0.1)
    end = _quiet(stack)
    calls = _crm_calls(stack, t0, end)
    out["open"] = {
        "conversations": len(users),
        "seconds": rnd(t1 - t0),
        "crm_calls": len(calls),
        "calls_per_conversation": rnd(len(calls) / len(users)),
        "routes": _routes(calls),
    }

    # 2. live: one message at a time
    log(f"[whatsapp/{crm}] live: {args.live} messages one at a time")
    latencies = []
    t0 = time.time()
    for i in range(args.live):
        key = customers.send(users[i % len(users)])
        done = wait_for(
            lambda k=key: db.status_of(k) == "synced", args.timeout, f"{key} to sync", 0.01
        )
        latencies.append((done - customers.accepted[key]) * 1000.0)
    end = _quiet(stack)
    calls = _crm_calls(stack, t0, end)
    out["live"] = {
        "messages": args.live,
        "crm_calls": len(calls),
        "calls_per_message": rnd(len(calls) / args.live) if args.live else None,
        "routes": _routes(calls),
        "e2e_p50_ms": rnd(percentile(latencies, 50), 0),
        "e2e_p99_ms": rnd(percentile(latencies, 99), 0),
    }

    # 3. a backlog of replies
    per = args.replies_per_user
    total = len(users) * per
    log(f"[whatsapp/{crm}] replies: {total} ({per} to each customer), workers stopped; then run")
    reps = Reps(stack)
    reps.learn(users)
    stack.stop_workers()
    started = time.time()
    texts = [
        (u, f"Reply {n + 1} to {u}: your order is on its way") for n in range(per) for u in users
    ]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda item: reps.reply(*item), texts))
    ingested = time.time()
    t0 = time.time()
    for _ in range(args.workers):
        stack.start_worker()
    t1 = wait_for(
        lambda: _out_rows(db).get("sent", 0) >= total, args.timeout, "the replies to go out", 0.05
    )

    def statuses_done() -> bool:
        sent = _sent(stack)
        return len(sent) >= total and all(
            s.get("statuses_planned") is not None
            and len(s.get("statuses") or []) == len(s["statuses_planned"])
            for s in sent
        )

    wait_for(statuses_done, args.timeout, "the sandbox to post every status", 0.5)
    wait_for(lambda: _read_rows(db) >= total, 60, "the bridge to mark every reply read", 0.5)
    end = _quiet(stack, 2.0)
    graph = _whatsapp_stats(stack, t0)
    sends = [r for r in graph["requests"] if r[2].endswith("/messages") and r[1] == "POST"]
    accepted = sorted(r[0] for r in sends if r[3] == 200)
    span = accepted[-1] - accepted[0] if len(accepted) > 1 else 0.0
    rate = (len(accepted) - 1) / span if span > 0 else None
    # the first 99 % of them: a send refused with 130429 and retried a few
    # seconds later stretches the first..last span on its own
    bulk = accepted[: max(2, int(len(accepted) * 0.99))]
    rate_99 = (
        (len(bulk) - 1) / (bulk[-1] - bulk[0]) if len(bulk) > 1 and bulk[-1] > bulk[0] else None
    )
    peak = _peak_1s(accepted)
    calls = _crm_calls(stack, started, end)
    sent = _sent(stack)
    per_text = Counter((s["to"], (s["body"].get("text") or {}).get("body")) for s in sent)
    wanted = Counter((str(u), t) for u, t in texts)
    out["replies"] = {
        "replies": total,
        "customers": len(users),
        "per_customer": per,
        "ingest_seconds": rnd(ingested - started),
        "drain_seconds": rnd(t1 - t0),
        "sends": len(sends),
        "send_window_seconds": rnd(span),
        "sends_per_s": rnd(rate),
        "sends_per_s_99": rnd(rate_99),
        "peak_1s": peak,
        # accepted sends in each whole second from the first one
        "sends_by_second": [
            sum(1 for t in accepted if int(t - accepted[0]) == n)
            for n in range(int(span) + 1 if accepted else 0)
        ],
        "limit_per_s": NUMBER_LIMIT,
        "limit_used_pct": rnd(100 * rate / NUMBER_LIMIT, 1) if rate else None,
        "limit_used_pct_99": rnd(100 * rate_99 / NUMBER_LIMIT, 1) if rate_99 else None,
        "peak_used_pct": rnd(100 * peak / NUMBER_LIMIT, 1),
        "graph_errors": dict(Counter(str(r[4]) for r in sends if r[4] is not None)),
        "http_429": sum(1 for r in sends if r[3] == 429),
        "statuses_posted": sum(len(s.get("statuses") or []) for s in sent),
        "crm_calls": len(calls),
        "crm_calls_per_reply": rnd(len(calls) / total),
        "crm_routes": _routes(calls),
        "check": {
            "sent_once": sum(1 for k in wanted if per_text[k] == 1),
            "duplicated": sum(1 for k in wanted if per_text[k] > 1),
            "missing": sum(1 for k in wanted if per_text[k] == 0),
            "read_in_bridge": _read_rows(db),
            "read_in_crm": reps.read_shown(),
        },
    }
    return out


# -- output --------------------------------------------------------------------------------


def render(f: dict[str, Any]) -> str:
    o, lv, r = f["open"], f["live"], f["replies"]
    c = r["check"]
    rows = [
        ["new conversation: CRM calls", o["calls_per_conversation"]],
        ["live: CRM calls / message", lv["calls_per_message"]],
        ["live: e2e p50 / p99 ms", f"{lv['e2e_p50_ms']:g} / {lv['e2e_p99_ms']:g}"],
        [f"replies: backlog ({r['customers']} customers x {r['per_customer']})", r["replies"]],
        ["replies: drain s (from worker start)", r["drain_seconds"]],
        ["replies: Graph sends / s (first..last)", r["sends_per_s"]],
        ["replies: Graph sends / s (first 99 %)", r["sends_per_s_99"]],
        [
            f"replies: % of the number's {r['limit_per_s']}/s (all / first 99 %)",
            f"{r['limit_used_pct']} / {r['limit_used_pct_99']}",
        ],
        ["replies: most sends in any 1 s", r["peak_1s"]],
        ["replies: sends in each second", " ".join(str(n) for n in r["sends_by_second"])],
        ["replies: Graph errors (130429, 131056, ...)", str(r["graph_errors"] or "none")],
        ["replies: CRM calls / reply (reports)", r["crm_calls_per_reply"]],
        [
            "check: sent once / duplicated / missing",
            f"{c['sent_once']} / {c['duplicated']} / {c['missing']}",
        ],
        ["check: read in the bridge / in the CRM", f"{c['read_in_bridge']} / {c['read_in_crm']}"],
    ]
    title = (
        f"WhatsApp -> {f['crm']} ({f['mapping']}), sandbox CRM at {f['tier']}, "
        f"{f['workers']} workers, {f['database']}"
    )
    out = table(title, ["", "figure"], rows)
    out += (
        f"\ncalls per new conversation: {routes_text(o['routes'])}"
        f"\ncalls in the live phase: {routes_text(lv['routes'])}"
        f"\ncalls while the replies drained: {routes_text(r['crm_routes'])}"
    )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.sync_whatsapp", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--json", action="store_true", help="print one JSON line of figures last")
    parser.add_argument("--crm", choices=tuple(SETUPS), default="hubspot")
    parser.add_argument("--users", type=int, default=100, help="customers (default 100)")
    parser.add_argument("--live", type=int, default=20, help="live messages (default 20)")
    parser.add_argument("--workers", type=int, default=2, help="bridge workers (default 2)")
    parser.add_argument("--timeout", type=float, default=300.0, help="give up waiting after (s)")
    parser.add_argument("--database-url", default=None, help="PostgreSQL URL; default SQLite")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    add_arguments(parser)
    args = parser.parse_args(argv)
    return report(args)


def report(args: argparse.Namespace) -> int:
    """Run, print the table (and ``--json``'s line); ``bench.sync`` calls it too."""

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    figures = run(args.crm, args, log)
    print(render(figures), flush=True)
    if args.json:
        emit_json(figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
