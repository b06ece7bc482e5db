"""``bench.sync``'s new-customer burst: ``--new-customers`` people nobody
has seen write at once (an ad went out, a mailing was answered).

Every one of them needs a CRM contact (looked up first: they may exist from
another channel), a deal/lead, the owner's task and the first timeline
entry. One message each is posted to the bridge's webhook (from eight
threads, as fast as it answers) and the phase ends when every one is
synced. It runs first on a fresh stack, once the sandbox's rate window is
empty, with customers the other phases never use.

Figures (``figures["variants"][v]["new_customers"]`` in the ``--json`` line)::

    {"customers": 200, "seconds": from the first post to all synced,
     "post_seconds": how long posting them took,
     "crm_seconds": first to last CRM request of the phase,
     "api_requests": HTTP requests to the CRM, "calls_per_customer": the same / customers,
     "methods": (Bitrix24) REST methods run, a batch's commands counted one by one,
     "searches": contact/lead/record look-ups among them, "searches_per_customer",
     "searches_peak_1s": the most searches in any rolling second,
     "searches_per_s": searches / crm_seconds,
     "peak_10s": the most requests in any rolling 10 s,
     "peak_10s_without_searches": (HubSpot) the same without the searches, which
        its 10 s window does not count,
     "http_429", "http_503": refusals by the sandbox's rate limits,
     "contacts": {"one": customers with exactly one CRM contact, "missing", "duplicated"},
     "routes": {"POST /crm/v3/objects/contacts/search": n, ...}}

A search is what the CRM rate-limits as one (HubSpot: ``POST .../search``,
5 per second on their own) or what looks a person or a record up: amoCRM's
``GET /api/v4/contacts|leads?query=``, Bitrix24's ``crm.duplicate.findbycomm``
and ``crm.*.list`` (commands inside a ``batch`` request, one each: the
portal's bucket counts the request, not them).

``--new-customers 200`` (the default) runs it after the four core phases;
``--only-new-customers`` runs it alone on a fresh stack (about half a
minute per variant where the batches apply, a few minutes one by one).
"""

from __future__ import annotations

import argparse
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bench.report import rnd, table
from bench.sync_core import CrmBench, Failed, Run, Window, peak_rolling, wait_for

__all__ = ["FIRST_USER", "add_arguments", "render", "run_new_customers"]

#: the burst's Telegram user ids (the core phases use 8_000_001 and up)
FIRST_USER = 8_500_001
#: contact fields that can name the customer (never a timeline's text)
_SKIP_KEYS = frozenset({"timeline", "_links", "links", "createdAt", "updatedAt"})


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--new-customers",
        type=int,
        default=200,
        help="the new-customer burst: people writing at once (default 200; 0: skip it)",
    )
    parser.add_argument(
        "--only-new-customers",
        action="store_true",
        help="run the new-customer burst and none of the other phases",
    )


def is_search(crm: str, method: str, route: str) -> bool:
    if crm == "hubspot":
        return route.endswith("/search")
    if crm == "amocrm":
        return method == "GET" and route.split("?")[0].endswith(
            ("/api/v4/contacts", "/api/v4/leads")
        )
    return route == "crm.duplicate.findbycomm" or (
        route.startswith("crm.") and route.endswith(".list")
    )


def _searches(bench: CrmBench, w: Window) -> list[float]:
    """The times of the look-ups in ``w`` (a Bitrix24 batch: one per command)."""
    commands = getattr(w, "commands", None)
    out: list[float] = []
    for i, (t, method, route, status) in enumerate(w.requests):
        if status in (429, 503):
            continue
        if commands is not None and route == "batch":
            out += [t for c in commands[i] or [] if is_search(bench.crm, method, c)]
        elif is_search(bench.crm, method, route):
            out.append(t)
    return out


def _tokens(item: Any) -> Iterable[str]:
    if isinstance(item, dict):
        for key, value in item.items():
            if key not in _SKIP_KEYS:
                yield from _tokens(value)
    elif isinstance(item, list):
        for value in item:
            yield from _tokens(value)
    elif isinstance(item, (str, int)) and not isinstance(item, bool):
        yield from re.findall(r"\d+", str(item))


def _contacts(bench: CrmBench, run: Run) -> list[dict[str, Any]]:
    stack = run.stack
    if bench.crm == "hubspot":
        return list(stack.hubspot_state().get("contacts", []))
    if bench.crm == "amocrm":
        state = stack.amocrm_state()
        if "accounts" in state:
            state = state["accounts"][0]
        return list(state.get("contacts", []))
    return list(stack.bitrix24_state().get("contacts", []))


def contact_counts(bench: CrmBench, run: Run, users: list[int]) -> dict[str, int]:
    """How many CRM contacts name each burst customer (their Telegram id in
    a field, the identity property, the name the bridge gave them)."""
    wanted = {str(u) for u in users}
    per: Counter[str] = Counter()
    for contact in _contacts(bench, run):
        for user in set(_tokens(contact)) & wanted:
            per[user] += 1
    return {
        "one": sum(1 for u in wanted if per[u] == 1),
        "missing": sum(1 for u in wanted if per[u] == 0),
        "duplicated": sum(1 for u in wanted if per[u] > 1),
    }


def run_new_customers(bench: CrmBench, run: Run, log: Callable[[str], None]) -> dict[str, Any]:
    """The burst (see the module docstring); returns its figures."""
    n = run.args.new_customers
    customers = run.customers
    users = [FIRST_USER + i for i in range(n)]
    log(f"[{run.variant.key}] new customers: {n} at once")
    bench.quiet(run.stack, full=True)
    before = run.db.synced()

    def done() -> bool:
        if run.db.problems():
            raise Failed(f"parked/failed work: {run.stack.bridge_status()}")
        return run.db.synced() >= before + n

    t0 = time.time()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(customers.send, users))
    posted = time.time()
    t1 = wait_for(done, run.args.timeout, "the new customers to sync", 0.05)
    time.sleep(0.3)
    w = bench.window(run.stack, t0, t1)
    run.phases["new_customers"] = (t0, t1)
    searches = _searches(bench, w)
    accepted = [r[0] for r in w.requests if r[3] not in (429, 503)]
    searched = set(searches)
    crm_seconds = w.span()
    out: dict[str, Any] = {
        "customers": n,
        "seconds": rnd(t1 - t0),
        "post_seconds": rnd(posted - t0),
        "crm_seconds": rnd(crm_seconds),
        "api_requests": w.count,
        "calls_per_customer": rnd(w.count / n) if n else None,
        "searches": len(searches),
        "searches_per_customer": rnd(len(searches) / n) if n else None,
        "searches_peak_1s": peak_rolling(searches, 1.0) if searches else 0,
        "searches_per_s": rnd(len(searches) / crm_seconds) if crm_seconds > 0 else None,
        "peak_10s": peak_rolling(accepted) if accepted else 0,
        # HubSpot's 10 s window does not count its searches (FACTS 3.2)
        "peak_10s_without_searches": peak_rolling([t for t in accepted if t not in searched])
        if accepted and bench.crm == "hubspot"
        else None,
        "http_429": w.status(429),
        "http_503": w.status(503),
        "contacts": contact_counts(bench, run, users),
        "routes": w.routes(),
    }
    methods = getattr(w, "methods", None)
    if methods is not None:
        out["methods"] = methods
        out["methods_per_customer"] = rnd(methods / n) if n else None
    return out


def render(figures: dict[str, Any]) -> str:
    """The burst's table (one column per variant that ran it)."""
    vs = {k: v["new_customers"] for k, v in figures["variants"].items() if "new_customers" in v}
    if not vs:
        return ""
    keys = list(vs)

    def row(label: str, get: Callable[[dict[str, Any]], Any]) -> list[Any]:
        return [label, *[get(vs[k]) for k in keys]]

    rows = [
        row("customers", lambda v: v["customers"]),
        row("seconds, first post -> all synced", lambda v: v["seconds"]),
        row("  of which posting", lambda v: v["post_seconds"]),
        row("CRM requests", lambda v: v["api_requests"]),
        row("CRM requests / customer", lambda v: v["calls_per_customer"]),
        row("searches / customer", lambda v: v["searches_per_customer"]),
        row("searches in any 1 s, peak", lambda v: v["searches_peak_1s"]),
        row("requests in any 10 s, peak", lambda v: v["peak_10s"]),
        row("  without the searches (HubSpot)", lambda v: v["peak_10s_without_searches"]),
        row("429 / 503 from the sandbox", lambda v: f"{v['http_429']} / {v['http_503']}"),
        row(
            "contacts: one / missing / duplicated",
            lambda v: "{one} / {missing} / {duplicated}".format(**v["contacts"]),
        ),
    ]
    if any("methods" in v for v in vs.values()):
        rows.insert(5, row("REST methods / customer", lambda v: v.get("methods_per_customer")))
    head = ["", *[f"{k}: {figures['variants'][k]['mapping']}" for k in keys]]
    out = table(f"New-customer burst — {figures['crm']}, {figures['workers']} workers", head, rows)
    for k in keys:
        routes = ", ".join(f"{n}x {r}" for r, n in vs[k]["routes"].items()) or "none"
        out += f"\n{k}: calls in the burst: {routes}"
    return out
