"""``python -m bench.sync --crm hubspot`` (the default): the HubSpot part.

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
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import requests

from bench.report import parse_iso, percentile, rnd, table
from bench.stack import Stack
from bench.sync_core import (
    CrmBench,
    Failed,
    Run,
    Variant,
    Window,
    latencies,
    peak_rolling,
    phase_429s,
    routes_text,
)

__all__ = ["TARGETS", "VARIANTS", "HubSpotBench"]


VARIANTS = {
    "a": Variant("a", "bench-note-only.yaml", "note", False),
    "b": Variant("b", "bench-note-inbox.yaml", "note", True),
    "c": Variant("c", "bench-inbox-only.yaml", "none", True),
}

TARGETS = {"calls_per_message_open": 1.1, "limit_used_pct_backlog": 90.0, "http_429": 0}


def quiet(sandbox_url: str, room: int | None = None, limit: int = 100, span: float = 10.5) -> None:
    """Wait until the sandbox's rolling window has ``room`` requests free
    (default: all of them, i.e. none of the earlier calls is left in it)."""
    from bench.report import sandbox_stats

    allowed = limit - (limit if room is None else room)
    last = sandbox_stats(sandbox_url, since=time.time() - span)["requests"]
    if len(last) > allowed:
        time.sleep(max(0.0, last[len(last) - allowed - 1][0] + span - time.time()))


class HubSpotBench(CrmBench):
    crm = "hubspot"
    variants = VARIANTS

    def configure(self, args: argparse.Namespace) -> dict[str, Any]:
        from crm_adapters.hubspot.adapter import api_rate
        from crm_adapters.hubspot.settings import HubSpotSettings
        from sandbox.hubspot.config import DEFAULTS

        args.sandbox_limit = {
            "per_10s": DEFAULTS["per_10s_oauth"] or DEFAULTS["per_10s"],
            "search_per_s": DEFAULTS["search_per_s"],
        }
        bucket = api_rate(HubSpotSettings())  # the tenant's rate_per_10s unset
        return {
            "sandbox_limit": args.sandbox_limit,
            "bridge_bucket": {"capacity": bucket.capacity, "per_second": bucket.per_second},
            "targets": TARGETS,
        }

    def check_sandbox(self, stack: Stack, args: argparse.Namespace) -> None:
        limit = args.sandbox_limit
        cfg = requests.get(f"{stack.sandbox_url}/hubspot/_config", timeout=10).json()
        running = {
            "per_10s": cfg["per_10s_oauth"] or cfg["per_10s"],
            "search_per_s": cfg["search_per_s"],
        }
        if running != limit or cfg["rate_interval_ms"] != 10000:
            raise Failed(f"the sandbox runs at {running}, not the documented default {limit}")

    def quiet(self, stack: Stack, *, full: bool) -> None:
        # open and backlog fill the limit: none of the earlier calls in the
        # window; live and steady stay below it: 60 requests free
        quiet(stack.sandbox_url, None if full else 60)

    def backlog(self, run: Run, w: Window, t0: float, t1: float) -> dict[str, Any]:
        stats = self.stats(run.stack, since=run.begin)
        accepted_times = [r[0] for r in stats["requests"] if r[3] != 429]
        span = w.span()
        per_10s = run.args.sandbox_limit["per_10s"]
        api_rps = (w.count - 1) / span if span > 0 else None
        return {
            "api_window_seconds": rnd(span),
            "api_rps": rnd(api_rps),
            "limit_rps": per_10s / 10,
            "limit_used_pct": rnd(100 * api_rps / (per_10s / 10), 1) if api_rps else None,
            "peak_10s": peak_rolling([t for t in accepted_times if t >= t0]),
            "api_bound": w.count > per_10s,
        }

    def errors(self, run: Run) -> dict[str, Any]:
        stats = self.stats(run.stack, since=run.begin)
        everything = self.stats(run.stack)["requests"]  # the install's calls included
        return {
            "http_429_total": int(stats["by_status"].get("429", 0)),
            "http_429_routes": dict(
                Counter(f"{m} {p}" for _, m, p, st in stats["requests"] if st == 429)
            ),
            "http_429_phases": phase_429s(stats["requests"], run.phases),
            "http_429_policy": _policy_429s(everything, run.args.sandbox_limit),
        }

    def finish(self, run: Run, out: dict[str, Any], watcher: Any) -> None:
        state = run.stack.hubspot_state()
        uids = run.db.uids()
        times = crm_times(state, run.variant)
        live_lat = latencies(run.customers, run.live_keys, uids, times)
        steady_lat = latencies(run.customers, run.steady_keys, uids, times)
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
        out["check"] = {**check(state, uids, run.variant), "synced": run.db.synced()}

    def render(self, figures: dict[str, Any]) -> str:
        return render(figures)


# -- figures -------------------------------------------------------------------------


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
                f"by route: {routes_text(v['http_429_routes'])}; "
                f"full window: {v['http_429_policy']}"
            )
        out += (
            f"\n{k}: calls per new conversation: {routes_text(v['open']['routes'])}"
            f"\n{k}: calls in the live phase: {routes_text(v['live']['routes'])}"
            f"\n{k}: calls while draining: {routes_text(v['backlog']['routes'])}"
        )
    return out
