"""Telegram -> amoCRM -> Telegram through the sandbox amoCRM, a real Redis
and real RQ worker processes, with the demo mapping: each message once, in
amoCRM's own chat (Chats API) shown in the lead's feed (no note); replies
from the chat and from notes (``@client``, which works whatever ``timeline``
says), the lead lifecycle and the account webhooks.

The sandbox runs at 100 requests/s here (and the tenant's budget with it) so
the suite stays fast; ``python -m bench.sync --crm amocrm`` measures the
pipeline at amoCRM's documented 7 requests/s.
"""

from __future__ import annotations

import pytest
import requests

from bench.traffic import check_amocrm, message_text, send_all, telegram_traffic, wait_until
from bridge.config import Settings
from bridge.runtime import Runtime
from bridge.tables import Conversation, Tenant

pytestmark = pytest.mark.integration

FAST = {"amocrm": {"per_second": 100}}


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


def _account(stack) -> dict:  # type: ignore[no-untyped-def]
    state = stack.amocrm_state()
    return state["accounts"][0] if "accounts" in state else state


def _post(stack, path: str, **body):  # type: ignore[no-untyped-def]
    r = requests.post(f"{stack.sandbox_url}/amocrm/{path}", json=body, timeout=30)
    r.raise_for_status()
    return r.json()


def test_50_users_20_messages_in_the_chat_then_replies_both_ways(make_stack_once):  # type: ignore[no-untyped-def]
    stack = make_stack_once(crm="amocrm", sandbox_config=FAST, workers=2)
    _tenant_settings(stack, rate_per_second=100)
    traffic = telegram_traffic(50, 20, duplicate_rate=0.1, seed=13, first_user=8_000_001)
    assert set(send_all(stack.sandbox_url, traffic)) == {200}
    assert wait_until(_synced(stack, 1000), timeout=300), stack.bridge_status()

    expected = {
        user: [message_text(user, i) for i in range(20)] for user in {d.user for d in traffic}
    }
    report = check_amocrm(stack.amocrm_state(), expected, notes=False)
    assert report.summary() == {
        "contacts": 50,
        "deals": 50,
        "entries": 0,
        "lost": 0,
        "duplicated": 0,
        "unexpected": 0,
        "out_of_order": 0,
        "inbox_messages": 1000,
        "inbox_duplicated": 0,
    }
    account = _account(stack)
    # each message once: no note repeats what the chat shows in the lead's feed
    assert [n for n in account["notes"] if n["note_type"] == "common"] == []
    # ... and the chat is on the bridge's lead (no Unsorted lead, no second contact)
    assert not [lead for lead in account["leads"] if lead.get("is_unsorted")]
    leads = {lead["id"] for lead in account["leads"]}
    shown_on = {m["lead_id"] for c in account["chats"] for m in c["messages"]}
    assert shown_on <= leads and len(shown_on) == 50

    # A manager answers in amoCRM's chat -> exactly one Telegram message, and
    # amoCRM gets the delivery status back.
    user = traffic[0].user
    contact = next(
        c
        for c in account["contacts"]
        if any(v["values"][0]["value"] == str(user) for v in c.get("custom_fields_values") or [])
    )
    answer = _post(stack, "_reply", contact_id=contact["id"], text="Здравствуйте! / Hello!")
    assert answer["webhook"]["status"] == 200
    assert wait_until(lambda: len(stack.telegram_sent()) == 1, timeout=30)
    assert [(s["chat_id"], s["text"]) for s in stack.telegram_sent()] == [
        (user, "Здравствуйте! / Hello!")
    ]

    def delivered() -> bool:
        for chat in _account(stack)["chats"]:
            for message in chat["messages"]:
                if message.get("direction") == "out" and message.get("delivery_statuses"):
                    return message["delivery_statuses"][-1].get("status", 1) in (1, "1")
        return False

    assert wait_until(delivered, timeout=30)

    # Notes mode: a manager's note that starts with @client is a reply too.
    lead_id = contact["leads"][0]
    _post(stack, "_note", lead_id=lead_id, text="@client Ждём вас завтра")
    assert wait_until(lambda: len(stack.telegram_sent()) == 2, timeout=30)
    assert stack.telegram_sent()[-1]["text"] == "Ждём вас завтра"
    assert wait_until(lambda: stack.bridge_status()["messages"]["out"].get("sent") == 2, timeout=30)
    # the same note webhook again (amoCRM retries on a slow answer): nothing new is sent
    _post(stack, "_webhooks", flush=True)
    assert len(stack.telegram_sent()) == 2


def test_lead_lifecycle_and_account_webhooks(make_stack_once):  # type: ignore[no-untyped-def]
    stack = make_stack_once(crm="amocrm", sandbox_config=FAST, workers=2)
    _tenant_settings(stack, rate_per_second=100)
    user = 8_100_001
    traffic = telegram_traffic(1, 3, duplicate_rate=0, first_user=user)
    send_all(stack.sandbox_url, traffic[:1])
    assert wait_until(_synced(stack, 1), timeout=60)
    (lead,) = [lead for lead in _account(stack)["leads"] if not lead.get("is_deleted")]

    # responsible changed in amoCRM -> the conversation's owner follows
    _post(stack, "_responsible", lead_id=lead["id"], responsible_user_id=6001003)
    runtime = Runtime(Settings.from_env(stack.env()))
    try:

        def owner() -> str | None:
            with runtime.transaction() as session:
                return session.query(Conversation).one().owner_id

        assert wait_until(lambda: owner() == "6001003", timeout=30)
    finally:
        runtime.close()

    # won (142) -> the next message opens a new lead
    _post(stack, "_lead_status", lead_id=lead["id"], status_id=142)
    send_all(stack.sandbox_url, traffic[1:2])
    assert wait_until(_synced(stack, 2), timeout=60)
    leads = [lead for lead in _account(stack)["leads"] if not lead.get("is_deleted")]
    assert len(leads) == 2 and {x["status_id"] for x in leads} == {142, 61001002}

    # the open lead is deleted -> again a new one
    open_lead = next(x for x in leads if x["status_id"] != 142)
    _post(stack, "_delete_lead", lead_id=open_lead["id"])
    send_all(stack.sandbox_url, traffic[2:3])
    assert wait_until(_synced(stack, 3), timeout=60)
    live = [x for x in _account(stack)["leads"] if not x.get("is_deleted")]
    assert len(live) == 2 and len([x for x in live if x["status_id"] != 142]) == 1
    status = stack.bridge_status()
    assert status["failed"] == [] and status["parked"] == []


def test_merged_contact_is_found_again(make_stack_once):  # type: ignore[no-untyped-def]
    stack = make_stack_once(crm="amocrm", sandbox_config=FAST, workers=2)
    _tenant_settings(stack, rate_per_second=100)
    user = 8_200_001
    traffic = telegram_traffic(1, 2, duplicate_rate=0, first_user=user)
    send_all(stack.sandbox_url, traffic[:1])
    assert wait_until(_synced(stack, 1), timeout=60)
    (ours,) = _account(stack)["contacts"]
    # a manager merges our contact into an older one they had
    created = requests.post(
        f"{stack.sandbox_url}/amocrm/demo/api/v4/contacts",
        json=[{"name": "Existing customer"}],
        headers={"Authorization": f"Bearer {_access_token(stack)}"},
        timeout=30,
    )
    created.raise_for_status()
    keep = created.json()["_embedded"]["contacts"][0]["id"]
    _post(stack, "_merge_contacts", keep_id=keep, remove_id=ours["id"])
    send_all(stack.sandbox_url, traffic[1:2])
    assert wait_until(_synced(stack, 2), timeout=60)
    account = _account(stack)
    kept = next(c for c in account["contacts"] if c["id"] == keep)
    shown_on = {
        m["lead_id"]
        for c in account["chats"]
        for m in c["messages"]
        if m["text"] == message_text(user, 1)
    }
    assert set(kept["leads"]) & shown_on, "the next message did not land on the kept contact"
    assert not [c for c in account["contacts"] if c["id"] == ours["id"] and not c.get("is_deleted")]


def _access_token(stack) -> str:  # type: ignore[no-untyped-def]
    runtime = Runtime(Settings.from_env(stack.env()))
    try:
        with runtime.transaction() as session:
            tenant = session.get(Tenant, stack.seeded.tenant_id)
            return runtime.decrypt_tenant_credentials(tenant)["access_token"]
    finally:
        runtime.close()
