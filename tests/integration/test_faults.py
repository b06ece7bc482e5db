"""Faults: a misbehaving CRM, SIGKILLed workers, a wiped Redis.

Whatever happens, every accepted message ends up in the CRM exactly once and
in the customer's order (0 lost, 0 duplicated, 0 out of order), and the
SQL outbox — not RQ — is what brings the work back.

The 20 % CRM-fault mix (RELIABILITY.md §5 R1) runs in the chaos soak's ci
profile (tests/integration/test_chaos.py: 1,000 messages, the same mix, kills
and a wipe, on PostgreSQL in CI); here the kills and the wipe run on SQLite.
"""

from __future__ import annotations

import time
from collections import defaultdict

import pytest

from bench.traffic import check_hubspot, message_text, send_all, telegram_traffic, wait_until
from tests.integration.test_telegram_hubspot import FAST_TIER, _drained, _raise_tier

pytestmark = pytest.mark.integration


def _expected(traffic) -> dict[int, list[str]]:  # type: ignore[no-untyped-def]
    per_user: dict[int, int] = defaultdict(int)
    for d in traffic:
        per_user[d.user] = max(per_user[d.user], d.index + 1)
    return {u: [message_text(u, i) for i in range(n)] for u, n in per_user.items()}


def test_sigkilled_workers_and_a_wiped_redis_are_recovered_by_the_sweeper(make_sqlite_stack):  # type: ignore[no-untyped-def]
    # A slow CRM keeps jobs in flight long enough to be killed mid-sync.
    stack = make_sqlite_stack(sandbox_config=FAST_TIER, workers=2)
    _raise_tier(stack)
    stack.hubspot_faults(latency_ms=150, commit_then_timeout_rate=0.02, timeout_seconds=3, seed=5)
    traffic = telegram_traffic(20, 15, duplicate_rate=0.1, seed=29, first_user=7_000_001)
    assert set(send_all(stack.sandbox_url, traffic)) == {200}

    kills = 0
    deadline = time.monotonic() + 60
    while kills < 3 and time.monotonic() < deadline:
        busy = stack.busy_worker()
        if busy is None:
            time.sleep(0.1)
            continue
        time.sleep(0.3)  # let the horse get into its CRM calls
        killed = stack.kill_worker(busy)
        kills += bool(killed)
    assert kills == 3, "no job was ever caught in flight"

    stack.wipe_redis()  # every queued job and lease is gone
    assert wait_until(_drained(stack, 300), timeout=240), stack.bridge_status()
    stack.hubspot_faults(reset=True)
    report = check_hubspot(stack.hubspot_state(), _expected(traffic))
    assert report.ok, report.summary()
    assert (report.contacts, report.deals, report.entries, report.inbox_messages) == (
        20,
        20,
        300,
        300,
    )
    status = stack.bridge_status()
    assert status["failed"] == [] and status["parked"] == []
