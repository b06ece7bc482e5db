"""A CRM automation starts a cascade message, fired by the CRM's sandbox at
the bridge's cascade URL, through real HTTP, a real Redis and real RQ
workers, one stack per CRM on its demo mapping with the demo's Telegram bot
and WhatsApp number connected:

1. a client writes on Telegram (the CRM gets the contact and a deal/lead);
2. the admin points the CRM's automation at the tenant's cascade URL
   (``/webhooks/crm/<crm>/<webhook key>/cascade?text=..&channels=whatsapp,
   telegram&wait_minutes=1&key=..``): HubSpot, a contact-based workflow
   whose "Send a webhook" action fires when ``lifecyclestage`` becomes
   ``customer`` (``sandbox/hubspot/workflows.py``); Bitrix24, an outgoing
   webhook on ``ONCRMCONTACTUPDATE`` (``sandbox/bitrix24/automation.py``) --
   the triggers the adapters read (``crm_adapters/<crm>/cascade.py``: a
   contact workflow's record, a contact event);
3. a rep changes the contact through the CRM's API;
4. the cascade skips WhatsApp (no conversation there), sends on Telegram
   exactly once (the Telegram sandbox's ``_sent``) and notes the outcome on
   the CRM contact;
5. the same call again starts no second cascade: HubSpot's own retry (the
   first answer lost: ``workflow_webhook_lose_answers``), and for Bitrix24,
   which never retries an online event (FACTS 2.6), the recorded request
   posted again as a duplicate delivery would be.

A deal-stage robot (Bitrix24) or a deal-based workflow (HubSpot) posts a
deal, which the adapters do not read (the sandbox unit tests show both
refused: ``tests/unit/test_sandbox_*``).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import pytest
import requests
from sqlalchemy import select, update

from bench.traffic import send_all, telegram_traffic, wait_until
from bridge.model import utcnow
from bridge.tables import Cascade, Contact, Tenant
from sandbox.bitrix24 import DEMO_DOMAIN, DEMO_WEBHOOK_CODE, DEMO_WEBHOOK_USER
from sandbox.hubspot.config import DEFAULTS as HUBSPOT
from tests.support.crm_views import Vendor, fast_stack, runtime_of

pytestmark = pytest.mark.integration

TEXT = "Your order is ready / Ваш заказ готов"
#: the outcome note's first words in each demo mapping's language (bridge.cascade_note)
NOTE = {
    "hubspot": "Cascade message: delivered on Telegram",
    "bitrix24": "Каскадное сообщение: доставлено в Telegram",
}


# -- the bridge's side ------------------------------------------------------------------


def _cascade_url(stack, crm: str) -> str:  # type: ignore[no-untyped-def]
    """The tenant's cascade URL with the message in its query, as the admin types it."""
    runtime = runtime_of(stack)
    try:
        with runtime.read_session() as session:
            key = session.scalar(
                select(Tenant.webhook_key).where(Tenant.id == stack.seeded.tenant_id)
            )
    finally:
        runtime.close()
    query = urlencode(
        {"text": TEXT, "channels": "whatsapp,telegram", "wait_minutes": 1, "key": "order-ready"}
    )
    return f"{stack.bridge_url}/webhooks/crm/{crm}/{key}/cascade?{query}"


def _cascades(stack) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    runtime = runtime_of(stack)
    try:
        with runtime.read_session() as session:
            rows = session.scalars(
                select(Cascade).where(Cascade.tenant_id == stack.seeded.tenant_id)
            ).all()
            return [
                {"uid": c.uid, "contact": c.crm_contact_id, "state": c.state, "note": c.note_state}
                for c in rows
            ]
    finally:
        runtime.close()


def _cascade_view(stack, uid: str) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    from bridge import cascade

    runtime = runtime_of(stack)
    try:
        shown = cascade.view(runtime, stack.seeded.tenant_id, uid)
    finally:
        runtime.close()
    assert shown is not None
    return shown


def _client_wrote(stack, user: int) -> None:  # type: ignore[no-untyped-def]
    """The client's first message, synced, and the bridge done writing their
    contact (its live reach field, ``bridge.live_fields``)."""
    traffic = telegram_traffic(1, 1, duplicate_rate=0, reorder="none", first_user=user)
    assert set(send_all(stack.sandbox_url, traffic)) == {200}
    assert wait_until(
        lambda: stack.bridge_status()["messages"]["in"].get("synced", 0) == 1, timeout=30
    ), stack.bridge_status()
    assert wait_until(lambda: _contact_written(stack), timeout=30)


def _contact_written(stack) -> bool:  # type: ignore[no-untyped-def]
    """The bridge wrote the contact's live fields and has nothing due there."""
    runtime = runtime_of(stack)
    try:
        with runtime.read_session() as session:
            rows = session.execute(
                select(Contact.crm_live, Contact.crm_live_due).where(
                    Contact.tenant_id == stack.seeded.tenant_id
                )
            ).all()
    finally:
        runtime.close()
    return bool(rows) and all(live and due is None for live, due in rows)


def _one_cascade_done(stack, contact: str) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """The cascade, once it ended and its note is written; there is one."""

    def done() -> bool:
        rows = _cascades(stack)
        return len(rows) == 1 and rows[0]["note"] == "done"

    assert wait_until(done, timeout=30), _cascades(stack)
    [row] = _cascades(stack)
    assert (row["contact"], row["state"]) == (contact, "delivered")
    shown = _cascade_view(stack, row["uid"])
    assert [(s["channel"], s["state"], s["reason"]) for s in shown["steps"]] == [
        ("whatsapp", "skipped", "no_conversation"),
        ("telegram", "delivered", "sent"),
    ]
    return shown


def _sent_once(stack, user: int) -> None:  # type: ignore[no-untyped-def]
    assert [(s["chat_id"], s["text"]) for s in stack.telegram_sent()] == [(user, TEXT)]
    assert stack.bridge_status()["messages"]["out"] == {"sent": 1}


# -- HubSpot -----------------------------------------------------------------------------


def _hubspot_token(portal: str) -> str:
    return str(next(p for p in HUBSPOT["portals"] if str(p["id"]) == portal)["private_app_token"])


def test_a_hubspot_workflow_starts_one_cascade_retries_included(make_stack_once) -> None:  # type: ignore[no-untyped-def]
    stack = fast_stack(make_stack_once, "hubspot", ("whatsapp",), workers=2)
    hubspot = Vendor(stack, "hubspot")
    user = 9_600_001
    _client_wrote(stack, user)
    contact = next(
        c["id"]
        for c in stack.hubspot_state()["contacts"]
        if c["properties"].get("bridge_telegram_id") == str(user)
    )

    # the admin's workflow: contacts whose lifecycle stage becomes "customer";
    # HubSpot loses the first answer, so it retries after a second
    url = _cascade_url(stack, "hubspot")
    workflow = {"object": "contacts", "property": "lifecyclestage", "value": "customer", "url": url}
    hubspot.post(
        "_config",
        workflow_webhooks=[workflow],
        workflow_webhook_retry_s=[1],
        workflow_webhook_lose_answers=1,
    )
    # the rep marks the contact a customer
    patched = requests.patch(
        f"{stack.sandbox_url}/hubspot/crm/v3/objects/contacts/{contact}",
        json={"properties": {"lifecyclestage": "customer"}},
        headers={"Authorization": f"Bearer {_hubspot_token(stack.seeded.account)}"},
        timeout=30,
    )
    assert patched.status_code == 200, patched.text

    shown = _one_cascade_done(stack, contact)
    assert shown["wait_minutes"] == 1 and shown["channels"] == ["whatsapp", "telegram"]
    _sent_once(stack, user)

    # HubSpot's two attempts: the first reached the bridge (its answer lost),
    # the retry -- the same bytes -- answered with the same cascade
    def retried() -> bool:
        return len(hubspot.get("_state")["workflow_deliveries"]) == 2

    assert wait_until(retried, timeout=15), hubspot.get("_state")["workflow_deliveries"]
    first, second = hubspot.get("_state")["workflow_deliveries"]
    assert (first["lost"], second["status"], second["attempt"]) == (True, 202, 2)
    assert first["body"] == second["body"]
    assert (second["answer"]["id"], second["answer"]["created"]) == (shown["id"], False)
    assert len(_cascades(stack)) == 1
    _sent_once(stack, user)

    # the outcome, noted on the contact
    state = stack.hubspot_state()
    noted = [n["id"] for n in state["notes"] if NOTE["hubspot"] in n["properties"]["hs_note_body"]]
    assert len(noted) == 1
    assert any(
        (a["fromObjectType"], a["fromId"], a["toObjectType"], a["toId"])
        == ("notes", noted[0], "contacts", contact)
        for a in state["associations"]
    )


# -- Bitrix24 ------------------------------------------------------------------------------


def _bitrix24_rest(stack, method: str, body: dict[str, Any]) -> Any:  # type: ignore[no-untyped-def]
    """A rep's call through the portal's incoming webhook (user 1)."""
    answer = requests.post(
        f"{stack.sandbox_url}/bitrix24/{DEMO_DOMAIN}/rest/{DEMO_WEBHOOK_USER}/"
        f"{DEMO_WEBHOOK_CODE}/{method}.json",
        json=body,
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    return answer.json()["result"]


def test_a_bitrix24_outgoing_webhook_starts_one_cascade_a_duplicate_included(
    make_stack_once,
) -> None:  # type: ignore[no-untyped-def]
    stack = fast_stack(make_stack_once, "bitrix24", ("whatsapp",), workers=2)
    bitrix24 = Vendor(stack, "bitrix24")
    user = 9_600_002
    _client_wrote(stack, user)
    [contact] = stack.bitrix24_state()["contacts"]
    assert len(stack.bitrix24_state()["leads"]) == 1

    # the admin's outgoing webhook: contact updates, to the cascade URL
    url = _cascade_url(stack, "bitrix24")
    bitrix24.post("_config", outgoing_webhooks=[{"url": url, "events": ["ONCRMCONTACTUPDATE"]}])
    # the rep edits the contact
    _bitrix24_rest(
        stack, "crm.contact.update", {"id": contact["id"], "fields": {"COMMENTS": "ready"}}
    )

    shown = _one_cascade_done(stack, str(contact["id"]))
    _sent_once(stack, user)

    # the same request posted again (Bitrix24 itself never retries an online
    # event): the same cascade, nothing sent again
    def hooked() -> list[dict[str, Any]]:
        deliveries = stack.bitrix24_state(full=True)["deliveries"]
        return [d for d in deliveries if d.get("outgoing_webhook") == 0]

    [record] = hooked()
    assert (record["status"], record["event"]) == (202, "ONCRMCONTACTUPDATE")
    again = requests.post(
        record["url"],
        data=record["form"].encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        timeout=30,
    )
    assert again.status_code == 202, again.text
    assert (again.json()["id"], again.json()["created"]) == (shown["id"], False)
    assert len(_cascades(stack)) == 1
    _sent_once(stack, user)
    assert len(hooked()) == 1

    # the bridge writes the contact itself (its live reach field): Bitrix24
    # fires the same outgoing webhook again, with a new ts; the same
    # automation and contact are the same call: nothing is sent again
    runtime = runtime_of(stack)
    try:
        with runtime.transaction() as session:
            session.execute(
                update(Contact)
                .where(Contact.tenant_id == stack.seeded.tenant_id)
                .values(crm_live={}, crm_live_due=utcnow())
            )
    finally:
        runtime.close()
    assert wait_until(lambda: len(hooked()) == 2, timeout=30), hooked()
    assert hooked()[1]["status"] == 202
    assert len(_cascades(stack)) == 1
    _sent_once(stack, user)

    # the outcome, noted on the contact's timeline
    portal = stack.bitrix24_state()
    [mine] = [c for c in portal["contacts"] if c["id"] == contact["id"]]
    assert sum(NOTE["bitrix24"] in c["COMMENT"] for c in mine["timeline"]["comments"]) == 1
