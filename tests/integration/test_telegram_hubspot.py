"""Telegram -> HubSpot -> Telegram through the sandbox, a real Redis and real
RQ worker processes, with the demo mapping: each message once, in HubSpot's
inbox (its thread shows on the contact's timeline; no note).

The sandbox HubSpot runs at a higher API tier here (2000 requests / 10 s)
so the suite stays fast; ``python -m bench.sync`` measures the pipeline at
the documented 100 / 10 s.
"""

from __future__ import annotations

from collections import defaultdict

import pytest

from bench.traffic import check_hubspot, message_text, send_all, telegram_traffic, wait_until
from bridge.config import Settings
from bridge.runtime import Runtime
from bridge.tables import Tenant

pytestmark = pytest.mark.integration

FAST_TIER = {"hubspot": {"per_10s": 2000, "search_per_s": 20}}


def _raise_tier(stack, per_10s: int = 2000) -> None:  # type: ignore[no-untyped-def]
    """Tell the bridge the portal's tier (HubSpot API limit packs)."""
    runtime = Runtime(Settings.from_env(stack.env()))
    try:
        with runtime.transaction() as session:
            tenant = session.get(Tenant, stack.seeded.tenant_id)
            tenant.settings = {**tenant.settings, "rate_per_10s": per_10s}
    finally:
        runtime.close()


def _drained(stack, total: int):  # type: ignore[no-untyped-def]
    def check() -> bool:
        counts = stack.bridge_status()["messages"]["in"]
        return counts.get("synced", 0) == total

    return check


#: customers of the burst test (50 until 2026-12-06: the suite's 20-minute budget)
USERS = 30


def test_30_users_20_messages_duplicates_shuffled_then_a_reply(make_stack):  # type: ignore[no-untyped-def]
    stack = make_stack(sandbox_config=FAST_TIER, workers=2)
    _raise_tier(stack)
    traffic = telegram_traffic(USERS, 20, duplicate_rate=0.1, seed=11)
    assert sum(d.duplicate for d in traffic) > USERS  # ~10% redelivered
    codes = send_all(stack.sandbox_url, traffic, threads=8)
    assert set(codes) == {200}, codes

    assert wait_until(_drained(stack, USERS * 20), timeout=240), stack.bridge_status()
    expected = defaultdict(list)
    for user in {d.user for d in traffic}:
        expected[user] = [message_text(user, i) for i in range(20)]
    report = check_hubspot(stack.hubspot_state(), expected, notes=False)
    assert report.summary() == {
        "contacts": USERS,
        "deals": USERS,
        "entries": 0,
        "lost": 0,
        "duplicated": 0,
        "unexpected": 0,
        "out_of_order": 0,
        "inbox_messages": USERS * 20,
        "inbox_duplicated": 0,
    }
    status = stack.bridge_status()
    assert status["parked"] == [] and status["failed"] == []
    # each message once: the inbox thread, on its contact; no note repeats it
    state = stack.hubspot_state()
    assert state["notes"] == []
    assert {t["associatedContactId"] for t in state["threads"]} == {
        c["id"] for c in state["contacts"]
    }

    # A rep replies in HubSpot's inbox -> exactly one Telegram message, to the right chat.
    state = stack.hubspot_state()
    user = traffic[0].user
    contact = next(
        c for c in state["contacts"] if c["properties"].get("bridge_telegram_id") == str(user)
    )
    answer = stack.reply(contact["id"], "Thanks for writing! / Спасибо, что написали!")
    assert answer["webhook"]["status"] == 200
    assert wait_until(lambda: len(stack.telegram_sent()) >= 1, timeout=30)
    assert wait_until(
        lambda: stack.bridge_status()["messages"]["out"].get("sent") == 1, timeout=30
    ), stack.bridge_status()
    sent = stack.telegram_sent()
    assert [(s["chat_id"], s["text"]) for s in sent] == [
        (user, "Thanks for writing! / Спасибо, что написали!")
    ]

    # ... and HubSpot shows it as sent.
    def reported() -> bool:
        threads = stack.hubspot_state()["threads"]
        out = [m for t in threads for m in t["messages"] if m["direction"] == "OUTGOING"]
        return [m["status"] for m in out] == ["SENT"]

    assert wait_until(reported, timeout=30)
