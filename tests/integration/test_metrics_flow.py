"""GET /metrics over HTTP on a whole stack (gunicorn with two web processes,
an RQ worker process, the sandbox Telegram and HubSpot, a redis-server):
scraped before and after a few customers write (one update redelivered)
and a rep replies, the shared counters moved by exactly what happened —
the deliveries received and stored, the journal's parses, the messages
written to HubSpot and their latencies, every HubSpot call the sandbox
answered (its own request log, by status), the reply delivered — whichever
process counted them."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from bench.traffic import send_all, telegram_traffic, wait_until
from bridge import metrics

pytestmark = pytest.mark.integration

TOKEN = "metrics-token-for-the-test"  # noqa: S105 — the test stack's own


def scrape(stack: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the bridge's /metrics: (name, sorted labels) -> value."""
    answer = requests.get(
        f"{stack.bridge_url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
    )
    assert answer.status_code == 200, answer.text[:500]
    return {
        (s.name, tuple(sorted(s.labels.items()))): float(s.value)
        for family in text_string_to_metric_families(answer.text)
        for s in family.samples
    }


def hubspot_calls(stack: Any) -> Counter[str]:
    """The HubSpot API requests the sandbox answered, by the bridge's result names."""
    answer = requests.get(f"{stack.sandbox_url}/hubspot/_stats?requests=0", timeout=30)
    answer.raise_for_status()
    out: Counter[str] = Counter()
    for status, n in answer.json()["by_status"].items():
        out[metrics.crm_result(int(status))] += n
    return out


def moved(before: dict[Any, float], after: dict[Any, float], name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


def crm_calls(samples: dict[Any, float], tenant: str) -> Counter[str]:
    out: Counter[str] = Counter()
    for (name, labels), v in samples.items():
        found = dict(labels)
        if name == "bridge_crm_calls_total" and found["crm"] == "hubspot":
            assert found["tenant"] == tenant
            out[found["result"]] += int(v)
    return out


def quiet(stack: Any) -> tuple[dict[Any, float], Counter[str]]:
    """The scrape and the sandbox's count once neither moves for a second."""
    last: list[Any] = [None]

    def still() -> bool:
        now = (scrape(stack), hubspot_calls(stack))
        was, last[0] = last[0], now
        return now == was

    assert wait_until(still, timeout=30, interval=1.0)
    return last[0]  # type: ignore[no-any-return]


def test_metrics_count_a_conversation_across_processes(make_stack_once) -> None:  # type: ignore[no-untyped-def]
    # one database (PostgreSQL in CI): the unit tests read the gauges from both
    stack = make_stack_once(workers=1, web_workers=2, env_overrides={"BRIDGE_METRICS_TOKEN": TOKEN})
    assert requests.get(f"{stack.bridge_url}/metrics", timeout=30).status_code == 401
    metrics.flush()  # the seed's own HubSpot calls (this process) are in Redis
    before, calls_before = quiet(stack)
    tenant = str(stack.seeded.tenant_id)

    traffic = telegram_traffic(3, 2, duplicate_rate=0.5, seed=3, first_user=7_100_001)
    unique = sum(1 for d in traffic if not d.duplicate)
    assert unique == 6 and len(traffic) > unique  # some redelivered
    codes = send_all(stack.sandbox_url, traffic, threads=4)
    assert codes == Counter({200: len(traffic)})

    synced = ("bridge_sync_messages_total", {"channel": "telegram", "crm": "hubspot"})

    def all_synced() -> bool:
        return moved(before, scrape(stack), synced[0], **synced[1], tenant=tenant) >= unique

    assert wait_until(all_synced, timeout=60)

    # a rep answers the first customer in HubSpot's inbox -> one Telegram message
    user = traffic[0].user
    contact = next(
        c
        for c in stack.hubspot_state()["contacts"]
        if c["properties"].get("bridge_telegram_id") == str(user)
    )
    assert stack.reply(contact["id"], "Thanks! / Спасибо!")["webhook"]["status"] == 200

    def reported() -> bool:
        threads = stack.hubspot_state()["threads"]
        out = [m for t in threads for m in t["messages"] if m["direction"] == "OUTGOING"]
        return [m["status"] for m in out] == ["SENT"]

    assert wait_until(reported, timeout=60)
    after, calls_after = quiet(stack)

    channel = {"channel": "telegram"}
    assert moved(before, after, "bridge_ingest_received_total", **channel, tenant=tenant) == len(
        traffic
    )
    assert moved(before, after, "bridge_ingest_accepted_total", **channel, tenant=tenant) == unique
    assert not any(k[0] == "bridge_ingest_rejected_total" for k in after)
    parsed = moved(before, after, "bridge_journal_parsed_total", **channel, state="normalised")
    assert parsed == unique
    assert moved(before, after, "bridge_journal_lag_seconds_count", **channel) == unique
    assert moved(before, after, synced[0], **synced[1], tenant=tenant) == unique
    assert moved(before, after, "bridge_sync_latency_seconds_count", **synced[1]) == unique
    assert moved(before, after, "bridge_sync_latency_seconds_sum", **synced[1]) > 0
    sent = {"channel": "telegram", "result": "sent", "tenant": tenant}
    assert moved(before, after, "bridge_outbound_deliveries_total", **sent) == 1
    # every HubSpot call the bridge made is one the sandbox answered, by result
    made = crm_calls(after, tenant) - crm_calls(before, tenant)
    answered = calls_after - calls_before
    assert made == answered and made["ok"] >= unique, (made, answered)
    # the state: nothing waits, someone works the queues
    assert after[("bridge_journal_oldest_waiting_seconds", ())] == 0
    assert after[("bridge_workers_alive", ())] == 1
    assert after[("bridge_outbox_conversations", (("direction", "in"), ("state", "parked")))] == 0
    # the bridge's own record agrees
    assert stack.bridge_status()["messages"]["in"].get("synced") == unique
