"""``python -m bench.sync --crm bitrix24``: Telegram -> Bitrix24 sync against
the sandbox Bitrix24's leaky bucket at its documented default (the portal on
the basic plan: a counter per portal that every HTTP request raises by one
and that drains by 2 per second; above 50 the request is refused with 503
``QUERY_LIMIT_EXCEEDED``, FACTS 2.3) with the bridge's default bucket for
such a portal (the tenant's ``rate_per_second``/``burst`` unset: a token
bucket of 50 refilled at 2/s, shared by every worker through Redis).

    python -m bench.sync --crm bitrix24 [--json] [--variants a,b]
                         [--users 10] [--backlog-per-user 500] [--live 20]
                         [--steady-rate 1] [--steady-seconds 8] [--workers 2]
                         [--database-url URL] [--keep]

About 5-6 minutes for the two variants on a 2-core machine (the bucket is
slow: 2 requests/s). ``bench.sync``'s defaults are HubSpot's; with ``--crm
bitrix24`` a flag left at that generic default takes this bench's default
instead (``DEFAULTS``: 10 conversations, a 500-message backlog per
conversation, steady 1 message/s for 8 s, variants ``a,b``). A flag given
with exactly the generic default's value cannot be told from an absent one
(``bench.sync`` has no per-CRM defaults yet).

The mapping variants are the demo's rule (``mappings/demo-bitrix24.yaml``: a
lead per customer, a to-do for the owner, a timeline comment per message)
with Open Lines off or on (``bench/mappings/bench-bitrix24-*.yaml``: only
the ``inbox:`` line differs):

* a: ``timeline: note, inbox: false``  (comments only)
* b: ``timeline: note, inbox: true``   (comments + Open Lines; the demo's)

Phases (``bench.sync_core``'s four, then two of this bench's, all against
the same stack; the stack installs the app through the sandbox's
ONAPPINSTALL):

1. open: one message from each of ``--users`` new customers (contact, lead,
   to-do, first comment [+ Open Lines message]); starts with the portal's
   counter at 0.
2. live: ``--live`` messages one at a time into the open conversations, each
   waited for until synced before the next: a message that arrives alone
   (starts with ``LIVE_ROOM`` requests free in the portal's bucket, so the
   bridge never waits for a token; so do 3, 5 and 6).
3. steady: ``--steady-rate`` messages/s to random open conversations.
4. backlog: workers stopped, ``--users`` x ``--backlog-per-user`` messages
   ingested (an outage), the counter left to drain to 0 (the portal was idle
   meanwhile), ``--workers`` workers started. The default size needs about
   two bursts' worth of requests with comments only (~100 at 50 messages a
   batch): the burst alone cannot absorb the drain and the 2/s drain paces
   its end.
5. live burst: each open conversation's customer posts 2 or 3 messages
   back-to-back (an album, a forward of several messages, a long text the
   client split, a client flushing its queue after a reconnect), waited for
   until synced before the next customer.
6. live typed: ``TYPED_USERS`` customers each type 3 messages ``TYPED_GAP_S``
   apart (how people type), waited for before the next customer.

Phases 5-6 run from ``finish()``: ``bench.sync_core``'s driver has no hook
for more phases (the figures of the four core phases are unaffected).

Counting. The sandbox logs every HTTP request it answered (``GET
/bitrix24/_stats``: time, REST method, status, and for a ``batch`` the
methods inside it). **Requests** are HTTP requests to the portal's REST API
(a ``batch`` is one: that is what the bucket charges); **calls** are the
REST methods executed (a batch's commands, or the one method of a plain
request). OAuth token-endpoint requests go to the OAuth server, not the
portal, and are not in the windows (``oauth_token_requests`` counts them).

Bucket figures (backlog). The portal's counter is replayed from the log
(+1 per request the bucket admitted, -2/s; the sandbox's own rule; requests
are stamped when their answer left, so the replay errs low by a few
hundredths). ``window_*``: first..last request of the drain, burst
included; ``sustained_*``: from the first request that found the counter
full (within 1.25 of the burst, or of the bridge's bucket if smaller) to
the last one, i.e. once the burst was spent and the
2/s drain was all the bucket gave; ``bucket_used_pct`` = sustained
requests/s / 2 x 100 (the target's figure); ``bucket_bound``: the counter
did fill (else the workers, not the bucket, paced the drain and there is no
sustained figure). ``peak_level``: the counter's highest value (<= 50 or
the portal refuses). ``messages_per_s_sustained``: the comments written per
second in the sustained part.

With ``--json`` the last line on stdout is one JSON object::

    {"bench": "sync", "crm": "bitrix24", "database": "sqlite"|"postgresql",
     "sandbox_limit": {"plan": "basic", "burst": 50, "drain_per_s": 2.0},
     "bridge_bucket": {"capacity": 50.0, "per_second": 2.0},
     "defaults_applied": {"users": 10, ...}, "workers": 2, "users": 10,
     "steady_rate": 1.0,
     "sizes": {"live", "steady_seconds", "backlog_per_user", "burst_sizes",
               "typed_users", "typed_size", "typed_gap_s"},
     "targets": {"requests_per_message_live": 0.5, "bucket_used_pct_backlog": 90.0,
                 "http_503": 0},
     "variants": {"a"|"b": {
        "mapping": "timeline: note, inbox: false",
        "open":    {"conversations", "api_requests", "requests_per_conversation",
                    "calls_per_conversation", "seconds", "routes", "calls", "http_503"},
        "live":    {"messages", "api_requests", "requests_per_message", "calls_per_message",
                    "first_call_p50_ms", "e2e_p50_ms", "e2e_p99_ms", "routes", "calls",
                    "http_503"},
        "steady":  {"messages", "rate_msgs_per_s", "seconds", "api_requests", "api_rps",
                    "requests_per_message", "calls_per_message", "e2e_p50_ms", "e2e_p99_ms",
                    "e2e_max_ms", "http_429", "http_503", "calls"},
        "backlog": {"messages", "conversations", "drain_seconds", "messages_per_s",
                    "api_requests", "requests_per_message", "calls_per_message",
                    "messages_per_request", "http_429", "http_503", "routes", "calls",
                    "drain_per_s", "burst", "window_seconds", "window_rps",
                    "window_pct_of_drain", "peak_1s", "peak_10s", "peak_10s_pct_of_drain",
                    "peak_level", "bucket_bound", "sustained_seconds", "sustained_requests",
                    "sustained_rps", "bucket_used_pct", "messages_per_s_sustained"},
        "live_burst"|"live_typed": {"bursts", "messages", "gap_s", "sizes", "api_requests",
                    "requests_per_message", "calls_per_message", "requests_per_burst": {n: bursts},
                    "bursts_in_one_request", "e2e_p50_ms", "e2e_p99_ms", "e2e_max_ms", "routes",
                    "calls", "http_503"},
        "http_503_total", "http_429_total", "http_503_phases", "http_429_phases",
        "http_503_context": [{"phase", "method", "counter_before": the portal's counter
                              replayed just before the 503, "ms_after_previous"}],
        "oauth_token_requests",
        "check": {"messages", "synced", "missing", "duplicated", "unexpected",
                  "out_of_order", "reports": {"comments"|"openlines": bench.traffic
                  .check_bitrix24's Report.summary()}}}}}

(``routes``: requests by REST method, ``batch`` as one; ``calls``: the
methods executed, inside batches or not. ``requests_per_burst``: how many
bursts cost 1, 2, ... requests.)
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import cycle, islice
from pathlib import Path
from typing import Any

import requests

from bench.report import percentile, rnd, table
from bench.stack import Stack
from bench.sync_amocrm import SyncWatcher
from bench.sync_core import CrmBench, Failed, Run, Variant, Window, peak_rolling, wait_for
from bench.traffic import check_bitrix24

__all__ = ["DEFAULTS", "TARGETS", "Bitrix24Bench", "bucket_levels"]

ROOT = Path(__file__).resolve().parent.parent

#: key -> (file name, timeline, inbox)
VARIANT_SPECS = {
    "a": ("bench-bitrix24-comments.yaml", "note", False),
    "b": ("bench-bitrix24-comments-openlines.yaml", "note", True),
}

TARGETS = {"requests_per_message_live": 0.5, "bucket_used_pct_backlog": 90.0, "http_503": 0}

#: bench.sync's parser defaults (HubSpot's) ...
GENERIC_DEFAULTS: dict[str, Any] = {
    "users": 20,
    "backlog_per_user": 25,
    "steady_rate": 2.5,
    "steady_seconds": 20.0,
    "variants": "a,b,c",
}
#: ... and this bench's, for the flags left at them (2 requests/s: ~6 minutes)
DEFAULTS: dict[str, Any] = {
    "users": 10,
    "backlog_per_user": 500,
    "steady_rate": 1.0,
    "steady_seconds": 8.0,
    "variants": "a,b",
}
#: requests free in the portal's bucket before the live and steady phases
LIVE_ROOM = 15
#: a bucket-bound part shorter than this is flagged "short" in the table
SHORT_S = 20.0

#: live burst: messages per customer, cycled over the customers ("2-3")
BURST_SIZES = (2, 3)
#: live typed: customers, messages each, seconds between a customer's messages
TYPED_USERS = 3
TYPED_SIZE = 3
TYPED_GAP_S = 1.0

COMMENT = "crm.timeline.comment.add"
OAUTH_ENDPOINT = "oauth/token"


def _log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


# -- the sandbox's log ----------------------------------------------------------------


def counted(name: str, status: int) -> bool:
    """Did the portal's bucket count this request? Everything that reached
    the REST API past authentication and was not refused by the bucket
    itself (the sandbox: a refused request does not raise the counter)."""
    return name != OAUTH_ENDPOINT and status not in (401, 503)


def bucket_levels(items: Iterable[Sequence[Any]], drain: float) -> list[tuple[float, float]]:
    """(time, the portal's counter after it) for every request the bucket
    counted, replayed from the sandbox's log (+1 each, -``drain``/s)."""
    level, last = 0.0, None
    out = []
    for item in sorted(items, key=lambda r: r[0]):
        t, name, status = float(item[0]), str(item[2]), int(item[3])
        if not counted(name, status):
            continue
        if last is not None:
            level = max(0.0, level - drain * (t - last))
        level += 1.0
        last = t
        out.append((t, level))
    return out


@dataclass
class B24Window(Window):
    """The portal's REST requests in a window (``requests``: time, HTTP
    method, REST method, status) and, per request, a batch's commands."""

    commands: list[list[str] | None] = field(default_factory=list)

    @classmethod
    def of(cls, items: Iterable[Sequence[Any]]) -> B24Window:
        rows = sorted((r for r in items if r[2] != OAUTH_ENDPOINT), key=lambda r: r[0])
        return cls(
            [(float(r[0]), str(r[1]), str(r[2]), int(r[3])) for r in rows],
            [list(r[4]) if r[4] is not None else None for r in rows],
        )

    def routes(self) -> dict[str, int]:
        return dict(Counter(name for _, _, name, _ in self.requests).most_common())

    def only(self, keep: Callable[[tuple[float, str, str, int]], bool]) -> B24Window:
        pairs = [(r, c) for r, c in zip(self.requests, self.commands, strict=True) if keep(r)]
        return B24Window([r for r, _ in pairs], [c for _, c in pairs])

    def calls(self) -> Counter[str]:
        """The REST methods executed: a batch's commands, else the request's
        own method (requests the bucket refused executed nothing)."""
        out: Counter[str] = Counter()
        for (_, _, name, status), commands in zip(self.requests, self.commands, strict=True):
            if status == 503:
                continue
            if name == "batch":
                out.update(commands or [])
            else:
                out[name] += 1
        return out

    @property
    def methods(self) -> int:
        return sum(self.calls().values())


def _by_phase(
    items: Iterable[Sequence[Any]], phases: dict[str, tuple[float, float]], status: int
) -> dict[str, int]:
    """Answers with ``status`` by the phase they fell in (up to 1 s after its
    end; else "between")."""
    out = {name: 0 for name in phases}
    for item in items:
        if int(item[3]) == status:
            t = float(item[0])
            name = next((n for n, (a, b) in phases.items() if a <= t <= b + 1.0), "between")
            out[name] = out.get(name, 0) + 1
    return out


# -- the bench -----------------------------------------------------------------------------


class Bitrix24Bench(CrmBench):
    crm = "bitrix24"
    variants: dict[str, Variant] = {}  # noqa: RUF012 (set by configure)
    burst = 50
    drain = 2.0
    #: the counter's ceiling in practice: the portal's burst or the bridge's
    #: smaller bucket, whichever is lower
    ceiling = 50.0

    def configure(self, args: argparse.Namespace) -> dict[str, Any]:
        from crm_adapters.bitrix24.adapter import plan_rate
        from sandbox.bitrix24.config import DEFAULTS as SANDBOX

        applied = {}
        for key, generic in GENERIC_DEFAULTS.items():
            if getattr(args, key) == generic:
                setattr(args, key, DEFAULTS[key])
                applied[key] = DEFAULTS[key]
        if applied:
            _log(f"bench.sync --crm bitrix24: this bench's defaults for {applied}")
        tier = SANDBOX["limits"]["basic"]
        self.burst, self.drain = int(tier["burst"]), float(tier["drain_per_s"])
        args.sandbox_limit = {"plan": "basic", "burst": self.burst, "drain_per_s": self.drain}
        bucket = plan_rate({})  # the tenant's rate_per_second / burst unset
        args.bucket = bucket
        self.ceiling = min(float(self.burst), float(bucket.capacity))
        self.variants = {
            key: Variant(key, name, timeline, inbox)
            for key, (name, timeline, inbox) in VARIANT_SPECS.items()
        }
        return {
            "sandbox_limit": args.sandbox_limit,
            "bridge_bucket": {"capacity": bucket.capacity, "per_second": bucket.per_second},
            "defaults_applied": applied,
            "sizes": {
                "live": args.live,
                "steady_seconds": args.steady_seconds,
                "backlog_per_user": args.backlog_per_user,
                "burst_sizes": list(BURST_SIZES),
                "typed_users": TYPED_USERS,
                "typed_size": TYPED_SIZE,
                "typed_gap_s": TYPED_GAP_S,
            },
            "targets": TARGETS,
        }

    def check_sandbox(self, stack: Stack, args: argparse.Namespace) -> None:
        from bridge.config import Settings
        from bridge.runtime import Runtime
        from bridge.tables import Tenant
        from crm_adapters.bitrix24.adapter import plan_rate

        cfg = requests.get(f"{stack.sandbox_url}/bitrix24/_config", timeout=10).json()
        tier = cfg["limits"]["basic"]
        plans = {p["domain"]: p["plan"] for p in cfg["portals"]}
        running = {
            "plan": plans.get(stack.seeded.account),
            "burst": int(tier["burst"]),
            "drain_per_s": float(tier["drain_per_s"]),
        }
        if running != args.sandbox_limit:
            raise Failed(f"the sandbox runs at {running}, not the documented default")
        runtime = Runtime(Settings.from_env(stack.env()))
        try:
            with runtime.transaction() as session:
                tenant = session.get(Tenant, stack.seeded.tenant_id)
                assert tenant is not None
                settings = dict(tenant.settings or {})
        finally:
            runtime.close()
        own = {k: settings.get(k) for k in ("rate_per_second", "burst") if settings.get(k)}
        if own or plan_rate(settings) != args.bucket:
            raise Failed(f"the tenant sets its own bucket ({own or settings.get('plan')})")

    # -- the portal's counter -------------------------------------------------------

    def level(self, stack: Stack) -> float:
        """The portal's counter now (replayed from the whole log)."""
        levels = bucket_levels(self.stats(stack)["requests"], self.drain)
        if not levels:
            return 0.0
        t, level = levels[-1]
        return max(0.0, level - self.drain * (time.time() - t))

    def wait_level(self, stack: Stack, at_most: float) -> None:
        """Sleep until the portal's counter is down to ``at_most``."""
        level = self.level(stack)
        if level > at_most:
            time.sleep((level - at_most) / self.drain + 0.05)

    def quiet(self, stack: Stack, *, full: bool) -> None:
        # open and backlog start with the counter at 0 (an idle portal: the
        # whole burst is there); live and steady, which stay near the 2/s
        # drain, with LIVE_ROOM requests free (the bridge never waits)
        self.wait_level(stack, 0.0 if full else self.burst - LIVE_ROOM)

    # -- figures --------------------------------------------------------------------

    def window(self, stack: Stack, start: float, end: float | None = None) -> B24Window:
        items = self.stats(stack, since=start)["requests"]
        return B24Window.of(r for r in items if end is None or r[0] <= end)

    def phase_extra(self, phase: str, w: Window, n: int, seconds: float) -> dict[str, Any]:
        assert isinstance(w, B24Window)
        per = "per_conversation" if phase == "open" else "per_message"
        return {
            f"requests_{per}": rnd(w.count / n) if n else None,
            # the core's calls_* are requests; for Bitrix24 calls are methods
            f"calls_{per}": rnd(w.methods / n) if n else None,
            "calls": dict(w.calls().most_common()),
            "http_503": w.status(503),
        }

    def watch(self, run: Run) -> SyncWatcher:
        return SyncWatcher(run.db)

    def backlog(self, run: Run, w: Window, t0: float, t1: float) -> dict[str, Any]:
        assert isinstance(w, B24Window)
        messages = run.args.users * run.args.backlog_per_user
        admitted = w.only(lambda r: counted(r[2], r[3]))
        times = [r[0] for r in admitted.requests]
        levels = [
            (t, lv)
            for t, lv in bucket_levels(self.stats(run.stack)["requests"], self.drain)
            if t0 <= t <= t1
        ]
        span = times[-1] - times[0] if len(times) > 1 else 0.0
        window_rps = (len(times) - 1) / span if span > 0 else None
        # full: a request found the counter within one (+ the replay's error)
        # of its ceiling, i.e. the burst was spent and tokens came at 2/s
        full = next((t for t, lv in levels if lv >= self.ceiling - 1.25), None)
        sustained = [t for t in times if full is not None and t > full]
        s_span = times[-1] - full if full is not None and sustained else 0.0
        s_rps = len(sustained) / s_span if s_span > 0 else None
        comments = [
            (r[0], (c or []).count(COMMENT))
            for r, c in zip(admitted.requests, admitted.commands, strict=True)
        ]
        s_messages = sum(n for t, n in comments if full is not None and t > full)
        peak_10s = peak_rolling(times, 10.0) if times else 0
        return {
            "requests_per_message": rnd(w.count / messages),
            "calls_per_message": rnd(w.methods / messages),
            "messages_per_request": rnd(messages / w.count) if w.count else None,
            "http_503": w.status(503),
            "calls": dict(w.calls().most_common()),
            "drain_per_s": self.drain,
            "burst": self.burst,
            "window_seconds": rnd(span),
            "window_rps": rnd(window_rps),
            "window_pct_of_drain": rnd(100 * window_rps / self.drain, 1) if window_rps else None,
            "peak_1s": peak_rolling(times, 1.0) if times else 0,
            "peak_10s": peak_10s,
            "peak_10s_pct_of_drain": rnd(100 * peak_10s / (10 * self.drain), 1),
            "peak_level": rnd(max((lv for _, lv in levels), default=0.0), 1),
            "bucket_bound": bool(full is not None and len(sustained) >= 10),
            "sustained_seconds": rnd(s_span) if s_span else None,
            "sustained_requests": len(sustained),
            "sustained_rps": rnd(s_rps),
            "bucket_used_pct": rnd(100 * s_rps / self.drain, 1) if s_rps else None,
            "messages_per_s_sustained": rnd(s_messages / s_span) if s_span else None,
        }

    def errors(self, run: Run) -> dict[str, Any]:
        items = self.stats(run.stack, since=run.begin)["requests"]
        rest = [r for r in items if r[2] != OAUTH_ENDPOINT]
        return {
            "http_503_total": sum(1 for r in rest if r[3] == 503),
            "http_429_total": sum(1 for r in rest if r[3] == 429),
            "http_503_phases": _by_phase(rest, run.phases, 503),
            "http_429_phases": _by_phase(rest, run.phases, 429),
            "oauth_token_requests": sum(1 for r in items if r[2] == OAUTH_ENDPOINT),
            "http_503_context": self.refusals(run, rest),
        }

    def refusals(self, run: Run, rest: list[Any]) -> list[dict[str, Any]]:
        """Per 503: its phase, the portal's counter just before it (replayed:
        the portal refuses once counter + 1 > burst) and the time since the
        request admitted before it."""
        levels = bucket_levels(self.stats(run.stack)["requests"], self.drain)
        out = []
        for item in rest:
            if int(item[3]) != 503:
                continue
            t = float(item[0])
            before = [(u, lv) for u, lv in levels if u <= t]
            if not before:
                continue
            u, lv = before[-1]
            phase = next((n for n, (a, b) in run.phases.items() if a <= t <= b + 1.0), "between")
            out.append(
                {
                    "phase": phase,
                    "method": str(item[2]),
                    "counter_before": rnd(max(0.0, lv - self.drain * (t - u)), 2),
                    "ms_after_previous": rnd((t - u) * 1000.0, 0),
                }
            )
        return out

    def finish(self, run: Run, out: dict[str, Any], watcher: Any) -> None:
        customers = run.customers
        if watcher is not None:
            watcher.check()
        seen: dict[str, float] = watcher.seen if watcher is not None else {}

        def e2e(keys: list[str]) -> list[float]:
            return [(seen[k] - customers.accepted[k][2]) * 1000.0 for k in keys if k in seen]

        live_lat, steady_lat = e2e(run.live_keys), e2e(run.steady_keys)
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
        # 5-6: more live traffic into the open conversations (bench.sync_core
        # has no hook for more phases; this one runs while the stack is up)
        users = customers.users(run.args.users)
        sizes = list(islice(cycle(BURST_SIZES), len(users)))
        key = run.variant.key
        _log(f"[{key}] live burst: {len(users)} customers post {BURST_SIZES} back-to-back")
        out["live_burst"] = self.bursts(run, "live_burst", users, sizes, 0.0)
        typed = users[:TYPED_USERS]
        _log(f"[{key}] live typed: {len(typed)} customers type {TYPED_SIZE}, {TYPED_GAP_S} s apart")
        out["live_typed"] = self.bursts(
            run, "live_typed", typed, [TYPED_SIZE] * len(typed), TYPED_GAP_S
        )
        out.update(self.errors(run))
        out["check"] = self.check(run)

    def bursts(
        self, run: Run, phase: str, users: list[int], sizes: list[int], gap: float
    ) -> dict[str, Any]:
        """Each customer posts ``size`` messages ``gap`` s apart; all of them
        synced before the next customer starts."""
        stack, db, customers = run.stack, run.db, run.customers
        # room for one request per message, less what drains meanwhile (>= ~0.4 s
        # per customer): the bridge's bucket never makes a burst wait
        self.wait_level(stack, self.burst - max(5, sum(sizes) - len(sizes)))
        watcher = SyncWatcher(db)
        done: list[tuple[float, float, list[str]]] = []
        t0 = time.time()
        try:
            for user, size in zip(users, sizes, strict=True):
                start = time.time()
                keys: list[str] = []
                for i in range(size):
                    if i and gap:
                        time.sleep(gap)
                    keys.append(customers.send(user))

                def synced(mine: list[str] = keys) -> bool:
                    if db.problems():
                        raise Failed(f"parked/failed work: {stack.bridge_status()}")
                    return all(db.status_of(k) == "synced" for k in mine)

                wait_for(synced, run.args.timeout, f"the {phase} of {user} to sync", 0.01)
                done.append((start, time.time(), keys))
        finally:
            watcher.stop()
        watcher.check()
        t1 = time.time()
        run.phases[phase] = (t0, t1)
        time.sleep(0.3)
        w = self.window(stack, t0, t1)
        n = sum(len(keys) for _, _, keys in done)
        per_burst = [sum(1 for r in w.requests if a <= r[0] <= b) for a, b, _ in done]
        latency = [
            (watcher.seen[k] - customers.accepted[k][2]) * 1000.0
            for _, _, keys in done
            for k in keys
            if k in watcher.seen
        ]
        return {
            "bursts": len(done),
            "messages": n,
            "gap_s": gap,
            "sizes": {str(k): v for k, v in sorted(Counter(sizes).items())},
            "api_requests": w.count,
            "requests_per_message": rnd(w.count / n) if n else None,
            "calls_per_message": rnd(w.methods / n) if n else None,
            "requests_per_burst": {str(k): v for k, v in sorted(Counter(per_burst).items())},
            "bursts_in_one_request": sum(1 for x in per_burst if x == 1),
            "e2e_p50_ms": rnd(percentile(latency, 50), 0),
            "e2e_p99_ms": rnd(percentile(latency, 99), 0),
            "e2e_max_ms": rnd(max(latency) if latency else None, 0),
            "routes": w.routes(),
            "calls": dict(w.calls().most_common()),
            "http_503": w.status(503),
        }

    def check(self, run: Run) -> dict[str, Any]:
        """``bench.traffic.check_bitrix24`` over what the customers sent: the
        timeline comments (marker, order) and with Open Lines the chats
        (order) on their own."""
        state = run.stack.bitrix24_state()
        expected = run.customers.expected()
        reports = {"comments": check_bitrix24(state, expected, comments=True, chat=False)}
        if run.variant.inbox:
            reports["openlines"] = check_bitrix24(state, expected, comments=False, chat=True)
        return {
            "messages": sum(len(t) for t in expected.values()),
            "synced": run.db.synced(),
            "missing": sum(len(r.lost) for r in reports.values()),
            "duplicated": sum(
                len(r.duplicated) + len(r.inbox_duplicated) for r in reports.values()
            ),
            "unexpected": sum(len(r.unexpected) for r in reports.values()),
            "out_of_order": sum(len(r.out_of_order) for r in reports.values()),
            "reports": {k: r.summary() for k, r in reports.items()},
        }

    def render(self, figures: dict[str, Any]) -> str:
        return render(figures)


# -- output ----------------------------------------------------------------------------------


def _pct(value: Any) -> str:
    return "-" if value is None else f"{value:g} %"


def _verdict(value: Any, ok: Callable[[Any], bool]) -> str:
    if value is None:
        return "not measured"
    return "met" if ok(value) else "NOT met"


def render(f: dict[str, Any]) -> str:
    vs = f["variants"]
    keys = list(vs)
    head = ["", *[f"{k}: {vs[k]['mapping']}" for k in keys]]
    lim = f["sandbox_limit"]
    drain, burst = lim["drain_per_s"], lim["burst"]
    sizes = f["sizes"]

    def row(label: str, get: Callable[[dict[str, Any]], Any]) -> list[Any]:
        return [label, *[get(vs[k]) for k in keys]]

    def bl(name: str) -> Callable[[dict[str, Any]], Any]:
        return lambda v: v["backlog"][name]

    rows = [
        row("new conversation: HTTP requests", lambda v: v["open"]["requests_per_conversation"]),
        row("new conversation: calls (methods)", lambda v: v["open"]["calls_per_conversation"]),
        row(
            "live, one at a time: HTTP requests / msg", lambda v: v["live"]["requests_per_message"]
        ),
        row("live, one at a time: calls / msg", lambda v: v["live"]["calls_per_message"]),
        row(
            "live: e2e p50 / p99 ms",
            lambda v: f"{v['live']['e2e_p50_ms']:g} / {v['live']['e2e_p99_ms']:g}",
        ),
        row("live: 2xx -> first CRM request p50 ms", lambda v: v["live"]["first_call_p50_ms"]),
        row(
            f"live burst ({'-'.join(map(str, sizes['burst_sizes']))} back-to-back): "
            "HTTP requests / msg",
            lambda v: v["live_burst"]["requests_per_message"],
        ),
        row("live burst: calls / msg", lambda v: v["live_burst"]["calls_per_message"]),
        row(
            "live burst: bursts sent in 1 request",
            lambda v: f"{v['live_burst']['bursts_in_one_request']} of {v['live_burst']['bursts']}",
        ),
        row("live burst: e2e p50 ms", lambda v: v["live_burst"]["e2e_p50_ms"]),
        row(
            f"live typed ({sizes['typed_size']} msgs {sizes['typed_gap_s']:g} s apart): "
            "HTTP requests / msg",
            lambda v: v["live_typed"]["requests_per_message"],
        ),
        row(
            f"steady {f['steady_rate']:g}/s: HTTP requests / msg",
            lambda v: v["steady"]["requests_per_message"],
        ),
        row(
            "steady: e2e p50 / p99 ms",
            lambda v: f"{v['steady']['e2e_p50_ms']:g} / {v['steady']['e2e_p99_ms']:g}",
        ),
        row(
            "backlog: messages (conversations)",
            lambda v: f"{v['backlog']['messages']} ({v['backlog']['conversations']})",
        ),
        row("backlog: HTTP requests", bl("api_requests")),
        row("backlog: messages / HTTP request", bl("messages_per_request")),
        row("backlog: calls / msg", bl("calls_per_message")),
        row("backlog: drain s (from worker start)", bl("drain_seconds")),
        row("backlog: messages/s (whole drain)", bl("messages_per_s")),
        row("backlog: messages/s (bucket-bound part)", bl("messages_per_s_sustained")),
        row(
            "backlog: req/s first..last request (% of 2/s)",
            lambda v: f"{v['backlog']['window_rps']} ({_pct(v['backlog']['window_pct_of_drain'])})",
        ),
        row(
            f"backlog: req/s once the burst was spent (% of {drain:g}/s)",
            lambda v: (
                f"{v['backlog']['sustained_rps']} ({_pct(v['backlog']['bucket_used_pct'])})"
                + (" short" if (v["backlog"]["sustained_seconds"] or 0) < SHORT_S else "")
                if v["backlog"]["bucket_bound"]
                else "not bucket-bound"
            ),
        ),
        row(
            "backlog: bucket-bound part s (requests)",
            lambda v: (
                f"{v['backlog']['sustained_seconds']} ({v['backlog']['sustained_requests']})"
                if v["backlog"]["bucket_bound"]
                else "-"
            ),
        ),
        row(
            "backlog: peak requests in 10 s (% of the drain)",
            lambda v: f"{v['backlog']['peak_10s']} ({_pct(v['backlog']['peak_10s_pct_of_drain'])})",
        ),
        row("backlog: peak requests in 1 s", bl("peak_1s")),
        row(f"backlog: peak bucket level (limit {burst})", bl("peak_level")),
        row("503 QUERY_LIMIT_EXCEEDED (all phases)", lambda v: v["http_503_total"]),
        row("429 OPERATION_TIME_LIMIT (all phases)", lambda v: v["http_429_total"]),
        row(
            "check: missing / duplicated / out of order",
            lambda v: (
                f"{v['check']['missing']} / {v['check']['duplicated']} / "
                f"{v['check']['out_of_order']}"
            ),
        ),
    ]
    title = (
        f"Telegram -> Bitrix24 sync — portal bucket ({lim['plan']} plan) {burst} burst, "
        f"drains {drain:g} req/s; bridge bucket {f['bridge_bucket']['capacity']:g} + "
        f"{f['bridge_bucket']['per_second']:g}/s, {f['workers']} workers, "
        f"{f['users']} conversations, {f['database']}"
    )
    out = table(title, head, rows)
    t = f["targets"]
    for k in keys:
        v = vs[k]
        live, burst_v = v["live"]["requests_per_message"], v["live_burst"]["requests_per_message"]
        typed = v["live_typed"]["requests_per_message"]
        used = v["backlog"]["bucket_used_pct"] if v["backlog"]["bucket_bound"] else None
        out += (
            f"\n{k}: target <= {t['requests_per_message_live']} HTTP requests/message live: "
            f"one at a time {live} ({_verdict(live, lambda x: x <= 0.5)}), "
            f"burst {burst_v} ({_verdict(burst_v, lambda x: x <= 0.5)}), "
            f"typed {typed} ({_verdict(typed, lambda x: x <= 0.5)}); "
            f">= {t['bucket_used_pct_backlog']:g}% of the bucket while a backlog drains: "
            f"{_pct(used)} over {v['backlog']['sustained_seconds']} s "
            f"({_verdict(used, lambda x: x >= 90.0)}); "
            f"503s: {v['http_503_total']} ({_verdict(v['http_503_total'], lambda x: x == 0)})"
        )
    for k in keys:
        v = vs[k]
        if v["http_503_total"] or v["http_429_total"]:
            out += (
                f"\n{k}: 503s by phase: {v['http_503_phases']}; 429s: {v['http_429_phases']}; "
                f"each 503: {v['http_503_context']}"
            )
        out += (
            f"\n{k}: per new conversation: {_text(v['open']['routes'])}"
            f"\n{k}: live: {_text(v['live']['calls'])}"
            f"\n{k}: live burst: requests per burst {v['live_burst']['requests_per_burst']}"
            f"\n{k}: backlog: {_text(v['backlog']['routes'])}; calls {_text(v['backlog']['calls'])}"
        )
        for name, summary in v["check"]["reports"].items():
            out += f"\n{k}: check_bitrix24 ({name}): {summary}"
    return out


def _text(counts: dict[str, int]) -> str:
    return ", ".join(f"{n}x {name}" for name, n in counts.items()) or "none"
