"""``python -m bench.sync --crm amocrm``: Telegram -> amoCRM sync against the
sandbox amoCRM at its documented default limit (7 requests per second per
integration and account, a rolling 1 s window, FACTS 1.4) with the bridge's
default buckets (the tenant's ``rate_per_second`` unset: 1 + 6/s, i.e. never
more than 7 requests in any second, one bucket for the account API and one
for the amojo chat host).

    python -m bench.sync --crm amocrm [--json] [--variants a,b,c]
                         [--users 20] [--backlog-per-user 25] [--live 20]
                         [--steady-rate 2.5] [--steady-seconds 20] [--workers 2]
                         [--database-url URL] [--keep]

About 6 minutes for the three variants on a 2-core machine (``--variants a``:
about 1). The phases are ``bench.sync``'s (open, live, steady, backlog); the
mapping variants (``bench/mappings``, the demo's rule otherwise):

* a: ``timeline: note, inbox: false``  (``bench-amocrm-note-only.yaml``)
* b: ``timeline: none, inbox: true``   (``bench-amocrm-chat-only.yaml``)
* c: ``timeline: note, inbox: true``   (``bench-amocrm-note-chat.yaml``; the demo's)

Two hosts, counted apart by the sandbox's ``GET /amocrm/_stats``:

* ``api``: the account's host (``<subdomain>.amocrm.ru``: ``/api/v4/...``,
  the token endpoint); the sandbox refuses more than 7 requests in any 1 s
  with 429 (403 for a storm of them);
* ``chat``: the Chats API host (``amojo.amocrm.ru``); amoCRM documents no
  limit for it and the sandbox sets none, so only the bridge's own bucket
  paces it.

The phases that fill a limit (open, backlog) and the others start once the
sandbox's 1 s window holds no account-API request. End-to-end latency runs
from the webhook's 2xx to the moment the bridge marked the message
``synced`` (its last CRM write answered and committed), seen by a thread
polling the bridge's database every 10 ms: the sandbox amoCRM stamps notes
and chat messages in whole seconds, too coarse to time them. In the live
phase ``last_call_p50_ms`` (2xx -> the message's last CRM request answered,
the sandbox's clock) is the CRM-side cross-check.

Reading the figures: the buckets hold one token and refill one every 1/6 s,
so the live phase (each message sent as soon as the previous one synced,
~6 a second) waits for a token on every message, and its latency shows that
pacing; the steady phase (2.5/s) is the latency of a message on its own.
Sustained, a bucket passes 6 requests/s: 86 % of the limit is the most a
drain bound by it can use.

With ``--json`` the last line on stdout is one JSON object::

    {"bench": "sync", "crm": "amocrm", "database": "sqlite"|"postgresql",
     "sandbox_limit": {"per_second": 7, "window_s": 1.0, "chat_per_second": null},
     "bridge_bucket": {"capacity": 1.0, "per_second": 6.0, "max_in_any_second": 7.0,
                       "buckets": ["api", "chat"]},
     "workers": 2, "users": 20, "steady_rate": 2.5,
     "targets": {"calls_per_message_open_per_host": 1.1, "limit_used_pct_backlog": 90.0,
                 "http_429": 0},
     "variants": {"a"|"b"|"c": {
        "mapping": "timeline: note, inbox: false",
        "open":    {"conversations", "api_requests", "calls_per_conversation", "seconds",
                    "routes": {"POST /<subdomain>/api/v4/leads/complex": n, ...},
                    "hosts": {"api"|"chat": {"requests", "per_conversation"}}},
        "live":    {"messages", "api_requests", "calls_per_message", "first_call_p50_ms",
                    "last_call_p50_ms", "e2e_p50_ms", "e2e_p99_ms", "routes",
                    "hosts": {"api"|"chat": {"requests", "per_message"}}},
        "steady":  {"messages", "rate_msgs_per_s", "seconds", "api_requests", "api_rps",
                    "calls_per_message", "e2e_p50_ms", "e2e_p99_ms", "e2e_max_ms", "http_429",
                    "hosts": {"api"|"chat": {"requests", "per_message", "rps"}}},
        "backlog": {"messages", "conversations", "drain_seconds", "messages_per_s",
                    "api_requests", "calls_per_message", "http_429", "routes",
                    "limit_rps": 7, "limit_used_pct": the account API's share of it,
                    "bound_by": ["chat"] | ["api"] | ["api", "chat"] | [] (the workers),
                    "hosts": {"api"|"chat": {"requests", "per_message", "window_seconds",
                              "rps", "peak_1s", "limit_rps", "limit_used_pct",
                              "bucket_rps", "bucket_used_pct", "http_429", "saturated"}}},
        "http_429_total", "http_403_total", "http_429_routes": {...},
        "http_429_phases": {"open": n, ...},
        "check": {"messages", "synced", "missing", "duplicated", "unexpected",
                  "out_of_order", "reports": {"notes"|"chat": bench.traffic.check_amocrm's
                  Report.summary()}}}}}

(``api_requests``/``calls_per_*``: both hosts together; ``hosts`` splits them.)

``rps`` in the backlog is a host's requests / (its last - first request of
the drain); ``limit_used_pct`` = rps / 7 x 100 (the account API only: the
sandbox does not limit the chat host); ``bucket_used_pct`` = rps / the
bucket's sustained rate (6/s); ``peak_1s``: the most accepted requests in
any rolling second (the sandbox's window; <= 7 for the account API);
``saturated``: more than one second's budget and >= 90 % of the bucket's
sustained rate, i.e. that host's bucket paced the drain. ``drain_seconds``
runs from the workers' start (process start-up included) to all synced.
"""

from __future__ import annotations

import argparse
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import requests

from bench.report import percentile, rnd, table
from bench.stack import Stack
from bench.sync_core import (
    BridgeDb,
    CrmBench,
    Failed,
    Run,
    Variant,
    Window,
    peak_rolling,
    phase_429s,
    routes_text,
)
from bench.traffic import check_amocrm

__all__ = ["TARGETS", "VARIANTS", "AmoCrmBench", "SyncWatcher"]

VARIANTS = {
    "a": Variant("a", "bench-amocrm-note-only.yaml", "note", False),
    "b": Variant("b", "bench-amocrm-chat-only.yaml", "none", True),
    "c": Variant("c", "bench-amocrm-note-chat.yaml", "note", True),
}

TARGETS = {"calls_per_message_open_per_host": 1.1, "limit_used_pct_backlog": 90.0, "http_429": 0}

HOSTS = ("api", "chat")


def host_of(route: str) -> str:
    """``chat`` for the amojo host (``/amojo/v2/...``), else ``api`` (the account's host)."""
    return "chat" if route.startswith("/amojo/") else "api"


def _on(host: str) -> Callable[[tuple[float, str, str, int]], bool]:
    return lambda r: host_of(r[2]) == host


class SyncWatcher:
    """When each inbound message was first seen ``synced`` in the bridge's
    database (rows newer than the watcher; polled every ``interval`` s)."""

    def __init__(self, db: BridgeDb, interval: float = 0.01) -> None:
        self.db = db
        self.interval = interval
        self.floor = db.last_id()
        #: dedupe key -> time.time() of the first poll that saw it synced
        self.seen: dict[str, float] = {}
        self.polls = 0
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name="sync-watcher", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        try:
            while not self._stop.is_set():
                # the poll's start: a row seen synced was committed before it
                polled = time.time()
                for key in self.db.synced_after(self.floor):
                    self.seen.setdefault(key, polled)
                self.polls += 1
                self._stop.wait(self.interval)
        except BaseException as exc:  # reported by stop()
            self._error = exc

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def check(self) -> None:
        if self._error is not None:
            raise Failed(f"the sync watcher failed: {self._error!r}")


class AmoCrmBench(CrmBench):
    crm = "amocrm"
    variants = VARIANTS
    #: the sandbox's rate window (s)
    window_s = 1.0

    def configure(self, args: argparse.Namespace) -> dict[str, Any]:
        from crm_adapters.amocrm.client import api_rate
        from sandbox.amocrm.config import DEFAULTS

        args.sandbox_limit = {
            "per_second": DEFAULTS["per_second"],
            "window_s": float(DEFAULTS["rate_window_s"]),
            "chat_per_second": None,  # the sandbox does not limit the amojo host
        }
        self.window_s = float(DEFAULTS["rate_window_s"])
        bucket = api_rate()  # the tenant's rate_per_second unset
        args.bucket = bucket
        return {
            "sandbox_limit": args.sandbox_limit,
            "bridge_bucket": {
                "capacity": bucket.capacity,
                "per_second": bucket.per_second,
                "max_in_any_second": bucket.capacity + bucket.per_second,
                "buckets": list(HOSTS),
            },
            "targets": TARGETS,
        }

    def check_sandbox(self, stack: Stack, args: argparse.Namespace) -> None:
        cfg = requests.get(f"{stack.sandbox_url}/amocrm/_config", timeout=10).json()
        running = {"per_second": cfg["per_second"], "window_s": float(cfg["rate_window_s"])}
        wanted = {k: args.sandbox_limit[k] for k in running}
        if running != wanted:
            raise Failed(f"the sandbox runs at {running}, not the documented default {wanted}")
        # the bridge's default bucket: no per-tenant rate_per_second
        from bridge.config import Settings
        from bridge.runtime import Runtime
        from bridge.tables import Tenant

        runtime = Runtime(Settings.from_env(stack.env()))
        try:
            with runtime.transaction() as session:
                tenant = session.get(Tenant, stack.seeded.tenant_id)
                assert tenant is not None
                own = (tenant.settings or {}).get("rate_per_second")
        finally:
            runtime.close()
        if own not in (None, ""):
            raise Failed(f"the tenant sets its own rate_per_second ({own}), not the default")

    def quiet(self, stack: Stack, *, full: bool) -> None:
        # the sandbox limits the account API in a rolling second: wait until
        # that second holds none of the earlier calls (the bridge's buckets
        # are full again by then too)
        span = self.window_s + 0.05
        last = [
            r
            for r in self.stats(stack, since=time.time() - span)["requests"]
            if host_of(r[2]) == "api"
        ]
        if last:
            time.sleep(max(0.0, last[-1][0] + span - time.time()))

    def phase_extra(self, phase: str, w: Window, n: int, seconds: float) -> dict[str, Any]:
        per = "per_conversation" if phase == "open" else "per_message"
        hosts: dict[str, dict[str, Any]] = {}
        for host in HOSTS:
            hw = w.only(_on(host))
            hosts[host] = {"requests": hw.count, per: rnd(hw.count / n) if n else None}
            if phase == "steady":
                hosts[host]["rps"] = rnd(hw.count / seconds) if seconds > 0 else None
        return {"hosts": hosts}

    def watch(self, run: Run) -> SyncWatcher:
        return SyncWatcher(run.db)

    def backlog(self, run: Run, w: Window, t0: float, t1: float) -> dict[str, Any]:
        limit = run.args.sandbox_limit["per_second"]
        bucket = run.args.bucket
        messages = run.args.users * run.args.backlog_per_user
        hosts: dict[str, dict[str, Any]] = {}
        for host in HOSTS:
            hw = w.only(_on(host))
            span = hw.span()
            rps = (hw.count - 1) / span if span > 0 else None
            limited = host == "api"
            hosts[host] = {
                "requests": hw.count,
                "per_message": rnd(hw.count / messages),
                "window_seconds": rnd(span),
                "rps": rnd(rps),
                "peak_1s": peak_rolling([r[0] for r in hw.requests if r[3] != 429], 1.0),
                "limit_rps": limit if limited else None,
                "limit_used_pct": rnd(100 * rps / limit, 1) if limited and rps else None,
                "bucket_rps": bucket.per_second,
                "bucket_used_pct": rnd(100 * rps / bucket.per_second, 1) if rps else None,
                "http_429": hw.status(429),
                "saturated": bool(
                    rps
                    and hw.count > bucket.capacity + bucket.per_second
                    and rps >= 0.9 * bucket.per_second
                ),
            }
        return {
            "limit_rps": limit,
            "limit_used_pct": hosts["api"]["limit_used_pct"],
            "bound_by": [h for h in HOSTS if hosts[h]["saturated"]],
            "hosts": hosts,
        }

    def errors(self, run: Run) -> dict[str, Any]:
        stats = self.stats(run.stack, since=run.begin)
        return {
            "http_429_total": int(stats["by_status"].get("429", 0)),
            "http_403_total": int(stats["by_status"].get("403", 0)),
            "http_429_routes": dict(
                Counter(f"{m} {p}" for _, m, p, st in stats["requests"] if st == 429)
            ),
            "http_429_phases": phase_429s(stats["requests"], run.phases),
        }

    def finish(self, run: Run, out: dict[str, Any], watcher: Any) -> None:
        customers = run.customers
        if watcher is not None:
            watcher.check()
        seen: dict[str, float] = watcher.seen if watcher is not None else {}

        def e2e(keys: list[str]) -> list[float]:
            return [(seen[k] - customers.accepted[k][2]) * 1000.0 for k in keys if k in seen]

        live_lat, steady_lat = e2e(run.live_keys), e2e(run.steady_keys)
        # live, CRM side: from the 2xx to the message's last CRM request (the
        # messages went one at a time: each one's calls lie before the next 2xx)
        t0, t1 = run.phases["live"]
        w = self.window(run.stack, t0, t1)
        accepted = [customers.accepted[k][2] for k in run.live_keys]
        last_call = []
        for i, start in enumerate(accepted):
            end = accepted[i + 1] if i + 1 < len(accepted) else t1
            mine = [r[0] for r in w.requests if start <= r[0] < end]
            if mine:
                last_call.append((mine[-1] - start) * 1000.0)
        out["live"].update(
            {
                "e2e_p50_ms": rnd(percentile(live_lat, 50), 0),
                "e2e_p99_ms": rnd(percentile(live_lat, 99), 0),
                "last_call_p50_ms": rnd(percentile(last_call, 50), 0),
            }
        )
        out["steady"].update(
            {
                "e2e_p50_ms": rnd(percentile(steady_lat, 50), 0),
                "e2e_p99_ms": rnd(percentile(steady_lat, 99), 0),
                "e2e_max_ms": rnd(max(steady_lat) if steady_lat else None, 0),
            }
        )
        out["check"] = self.check(run)

    def check(self, run: Run) -> dict[str, Any]:
        """``bench.traffic.check_amocrm`` over what the customers sent: the
        notes (marker, order) and/or the chat (ref id, order) on their own."""
        state = run.stack.amocrm_state()
        expected = run.customers.expected()
        reports = {}
        if run.variant.timeline != "none":
            reports["notes"] = check_amocrm(state, expected, notes=True, chat=False)
        if run.variant.inbox:
            reports["chat"] = check_amocrm(state, expected, notes=False, chat=True)
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


# -- output ------------------------------------------------------------------------------


def _pair(phase: dict[str, Any], key: str) -> str:
    h = phase["hosts"]
    return f"{_num(h['api'][key])} + {_num(h['chat'][key])}"


def _num(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:g}" if isinstance(value, float) else str(value)


def render(f: dict[str, Any]) -> str:
    vs = f["variants"]
    keys = list(vs)
    head = ["", *[f"{k}: {vs[k]['mapping']}" for k in keys]]
    limit = f["sandbox_limit"]["per_second"]
    bucket = f["bridge_bucket"]

    def row(label: str, get: Callable[[dict[str, Any]], Any]) -> list[Any]:
        return [label, *[get(vs[k]) for k in keys]]

    def host(name: str, key: str) -> Callable[[dict[str, Any]], Any]:
        return lambda v: v["backlog"]["hosts"][name][key]

    rows = [
        row(
            "new conversation: CRM calls (API + chat)",
            lambda v: _pair(v["open"], "per_conversation"),
        ),
        row("live: CRM calls / message (API + chat)", lambda v: _pair(v["live"], "per_message")),
        row("live: e2e p50 ms", lambda v: v["live"]["e2e_p50_ms"]),
        row("live: e2e p99 ms", lambda v: v["live"]["e2e_p99_ms"]),
        row("live: 2xx -> first CRM call p50 ms", lambda v: v["live"]["first_call_p50_ms"]),
        row("live: 2xx -> last CRM call p50 ms", lambda v: v["live"]["last_call_p50_ms"]),
        row(
            f"steady {f['steady_rate']}/s: CRM calls / message (API + chat)",
            lambda v: _pair(v["steady"], "per_message"),
        ),
        row("steady: req/s (API + chat)", lambda v: _pair(v["steady"], "rps")),
        row("steady: e2e p50 ms", lambda v: v["steady"]["e2e_p50_ms"]),
        row("steady: e2e p99 ms", lambda v: v["steady"]["e2e_p99_ms"]),
        row("backlog: messages", lambda v: v["backlog"]["messages"]),
        row("backlog: drain s (from worker start)", lambda v: v["backlog"]["drain_seconds"]),
        row("backlog: messages/s", lambda v: v["backlog"]["messages_per_s"]),
        row(
            "backlog: CRM calls / message (API + chat)",
            lambda v: _pair(v["backlog"], "per_message"),
        ),
        row("backlog: account API req/s (first..last call)", host("api", "rps")),
        row(f"backlog: % of the API limit ({limit} req/s)", host("api", "limit_used_pct")),
        row(f"backlog: account API peak in 1 s (limit {limit})", host("api", "peak_1s")),
        row("backlog: chat req/s (first..last call)", host("chat", "rps")),
        row("backlog: chat peak in 1 s (no sandbox limit)", host("chat", "peak_1s")),
        row(
            f"backlog: % of the bucket's {bucket['per_second']:g}/s (API + chat)",
            lambda v: _pair(v["backlog"], "bucket_used_pct"),
        ),
        row(
            "backlog: paced by",
            lambda v: (
                " + ".join(f"{h} bucket" for h in v["backlog"]["bound_by"])
                or "workers (no bucket full)"
            ),
        ),
        row(
            "429s / 403s from the sandbox (all phases)",
            lambda v: f"{v['http_429_total']} / {v['http_403_total']}",
        ),
        row(
            "check: missing / duplicated",
            lambda v: f"{v['check']['missing']} / {v['check']['duplicated']}",
        ),
    ]
    title = (
        f"Telegram -> amoCRM sync — sandbox limit {limit} req/s (account API, rolling "
        f"{f['sandbox_limit']['window_s']:g} s; chat host unlimited), bridge buckets "
        f"{bucket['capacity']:g} + {bucket['per_second']:g}/s (API, chat), "
        f"{f['workers']} workers, {f['users']} conversations, {f['database']}"
    )
    out = table(title, head, rows)
    out += (
        f"\ntargets: <= {TARGETS['calls_per_message_open_per_host']} CRM calls/message per host "
        f"once a conversation is open; >= {TARGETS['limit_used_pct_backlog']:g}% of the limit "
        "while a backlog bound by it drains; ~0 429s"
    )
    for k in keys:
        v = vs[k]
        if v["http_429_total"]:
            out += (
                f"\n{k}: 429s by phase: {v['http_429_phases']}; "
                f"by route: {routes_text(v['http_429_routes'])}"
            )
        out += (
            f"\n{k}: calls per new conversation: {routes_text(v['open']['routes'])}"
            f"\n{k}: calls in the live phase: {routes_text(v['live']['routes'])}"
            f"\n{k}: calls while draining: {routes_text(v['backlog']['routes'])}"
        )
        for name, summary in v["check"]["reports"].items():
            out += f"\n{k}: check_amocrm ({name}): {summary}"
    return out
