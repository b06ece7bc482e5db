"""Telegram -> Bitrix24 -> Telegram through the sandbox Bitrix24, a real
Redis and real RQ worker processes: the app installed by its ONAPPINSTALL
event, timeline comments on the lead and Open Lines messages, operator
replies back with the delivery confirmed, the lead lifecycle.

The sandbox's bucket drains at 100 requests/s here (and the tenant's budget
with it) so the suite stays fast; ``python -m bench.sync --crm bitrix24``
measures the pipeline against Bitrix24's documented 2 requests/s.
"""

from __future__ import annotations

import pytest
import requests

from bench.traffic import check_bitrix24, message_text, send_all, telegram_traffic, wait_until
from bridge.config import Settings
from bridge.runtime import Runtime
from bridge.tables import Tenant

pytestmark = pytest.mark.integration

FAST = {"bitrix24": {"limits": {"basic": {"drain_per_s": 100, "burst": 250}}}}


def _tenant_settings(stack, **values) -> None:  # type: ignore[no-untyped-def]
    runtime = Runtime(Settings.from_env(stack.env()))
    try:
        with runtime.transaction() as session:
            tenant = session.get(Tenant, stack.seeded.tenant_id)
            tenant.settings = {**tenant.settings, **values}
    finally:
        runtime.close()


def _synced(stack, total: int):  # type: ignore[no-untyped-def]
    return lambda: stack.bridge_status()["messages"]["in"].get("synced", 0) == total


def _post(stack, path: str, **body):  # type: ignore[no-untyped-def]
    r = requests.post(f"{stack.sandbox_url}/bitrix24/{path}", json=body, timeout=30)
    r.raise_for_status()
    return r.json()


def _chat_of(portal: dict, user: int) -> dict:
    return next(c for c in portal["chats"] if c["external_user_id"] == str(user))


def test_50_users_20_messages_in_comments_and_open_lines_then_replies(make_stack_once):  # type: ignore[no-untyped-def]
    stack = make_stack_once(crm="bitrix24", sandbox_config=FAST, workers=2)
    _tenant_settings(stack, rate_per_second=100, burst=250)
    traffic = telegram_traffic(50, 20, duplicate_rate=0.1, seed=17, first_user=9_000_001)
    assert set(send_all(stack.sandbox_url, traffic)) == {200}
    assert wait_until(_synced(stack, 1000), timeout=300), stack.bridge_status()

    expected = {
        user: [message_text(user, i) for i in range(20)] for user in {d.user for d in traffic}
    }
    portal = stack.bitrix24_state()
    report = check_bitrix24(portal, expected)
    assert report.summary() == {
        "contacts": 50,
        "deals": 50,  # leads, per the demo mapping
        "entries": 1000,
        "lost": 0,
        "duplicated": 0,
        "unexpected": 0,
        "out_of_order": 0,
        "inbox_messages": 1000,
        "inbox_duplicated": 0,
    }
    assert len(portal["leads"]) == 50 and portal["deals"] == []
    chat_only = check_bitrix24(portal, expected, comments=False)
    assert (chat_only.lost, chat_only.out_of_order, chat_only.unexpected) == ([], [], [])
    # one Open Lines chat per customer, filed by the bridge (not Bitrix24's tracker)
    assert len(portal["chats"]) == 50 and all(c["crm"] is None for c in portal["chats"])

    # An operator answers in Open Lines -> exactly one Telegram message to that
    # customer, and Bitrix24 gets the delivery confirmed.
    user = traffic[0].user
    chat = _chat_of(portal, user)
    answer = _post(
        stack,
        "_reply",
        conversation=chat["external_chat_id"],
        text="Здравствуйте!\n[b]Hello[/b]",
    )
    assert answer["webhook"]["status"] == 200
    assert wait_until(lambda: len(stack.telegram_sent()) == 1, timeout=30)
    [sent] = stack.telegram_sent()
    assert (sent["chat_id"], sent["text"]) == (user, "Здравствуйте!\nHello")

    def delivered() -> bool:
        out = [
            m for m in _chat_of(stack.bitrix24_state(), user)["messages"] if m["direction"] == "out"
        ]
        return len(out) == 1 and bool(out[0]["delivered"])

    assert wait_until(delivered, timeout=30)
    assert wait_until(lambda: stack.bridge_status()["messages"]["out"].get("sent") == 1, timeout=30)

    # The same event delivered again (Bitrix24 retries a slow handler): no second send.
    record = next(
        d
        for d in reversed(stack.bitrix24_state(full=True)["deliveries"])
        if d["event"].upper() == "ONIMCONNECTORMESSAGEADD"
    )
    again = requests.post(
        record["url"],
        data=record["form"].encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        timeout=30,
    )
    assert again.status_code == 200, again.text
    assert len(stack.telegram_sent()) == 1
    assert stack.bridge_status()["messages"]["out"].get("sent") == 1


def test_lead_lifecycle(make_stack_once):  # type: ignore[no-untyped-def]
    stack = make_stack_once(crm="bitrix24", sandbox_config=FAST, workers=1)
    _tenant_settings(stack, rate_per_second=100, burst=250)
    user = 9_100_001
    traffic = telegram_traffic(1, 3, duplicate_rate=0, reorder="none", first_user=user)
    send_all(stack.sandbox_url, traffic[:1])
    assert wait_until(_synced(stack, 1), timeout=60)
    [lead] = stack.bitrix24_state()["leads"]

    # converted (a success status) -> the next message opens a new lead
    _post(stack, "_lead_status", lead_id=lead["id"], status_id="CONVERTED")
    send_all(stack.sandbox_url, traffic[1:2])
    assert wait_until(_synced(stack, 2), timeout=60)
    leads = stack.bitrix24_state()["leads"]
    assert len(leads) == 2
    assert {x["fields"]["STATUS_ID"] for x in leads} == {"CONVERTED", "NEW"}

    # the open lead is deleted -> again a new one, on the same contact
    open_lead = next(x for x in leads if x["fields"]["STATUS_ID"] == "NEW")
    _post(stack, "_delete", entity="lead", id=open_lead["id"])
    send_all(stack.sandbox_url, traffic[2:3])
    assert wait_until(_synced(stack, 3), timeout=60)
    portal = stack.bitrix24_state()
    live = [x for x in portal["leads"] if x["id"] != open_lead["id"]]
    assert len(live) == 2 and len(portal["contacts"]) == 1
    newest = max(live, key=lambda x: x["id"])
    assert newest["fields"]["STATUS_ID"] == "NEW"
    assert message_text(user, 2) in newest["timeline"]["comments"][-1]["COMMENT"]
    status = stack.bridge_status()
    assert status["failed"] == [] and status["parked"] == []
