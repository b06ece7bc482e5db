"""An amoCRM digital pipeline stage starts a cascade message (issue 16).

A client writes on Telegram (the demo bot), so the CRM has their contact
and lead. An admin gives a pipeline stage a "webhook" action pointing at the
tenant's cascade URL (``/webhooks/crm/amocrm/<tenant key>/cascade`` with the
message in the query, docs/cascade.md "Started from the CRM"); a manager
moves the lead into that stage. The sandbox posts the lead in the
account-webhook format (its ``dp_webhooks`` switch: that the pipeline's
webhook uses FACTS 1.12's format and retry table is UNCONFIRMED). Then:

* the cascade skips WhatsApp (the client has no conversation there) and
  delivers on Telegram, exactly once (the Telegram sandbox's ``_sent``);
* the outcome note lands on the client's amoCRM contact (the demo mapping
  is Russian);
* amoCRM's retry of the same body starts no second cascade. The retry is
  made real by a gateway between amoCRM and the bridge that loses the
  bridge's first answer (a 504 to amoCRM although the bridge got the call):
  FACTS 1.12 retries an answer >= 300 after 5 minutes, which the sandbox's
  ``_webhooks`` flush runs now.

Real HTTP to the stack (gunicorn, RQ workers, Redis, the sandboxes); the
gateway is a real HTTP server in the test. On PostgreSQL when the suite has
one (``make_stack_once``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlencode

import pytest
import requests
from flask import Flask, Response, request
from sqlalchemy import select

from bench.stack import Stack
from bench.traffic import wait_until
from bridge import cascade
from bridge.tables import Cascade, ChannelAccount, Conversation, Tenant
from tests.support.crm_views import Vendor, fast_stack, runtime_of
from tests.support.servers import serve_wsgi

pytestmark = pytest.mark.integration

TG_USER = 700_123_901
TG_FROM = {"id": TG_USER, "is_bot": False, "first_name": "Boris", "last_name": "Ivanov"}
#: the demo account's main pipeline and a stage of it (sandbox/amocrm/config.py)
MAIN, STAGE = 7001001, 61001003
TEXT = "Ваш заказ готов"


def telegram_writes(stack: Stack, text: str) -> None:
    chat = {"id": TG_USER, "type": "private", "first_name": "Boris", "last_name": "Ivanov"}
    message = {"message_id": 1, "from": TG_FROM, "chat": chat, "date": int(time.time())}
    answer = stack.deliver({"message": {**message, "text": text}})
    assert answer["status"] == 200, answer


def telegram_conversation(stack: Stack) -> dict[str, Any]:
    """The client's Telegram conversation: its CRM contact and lead, and the
    tenant's webhook key (the secret of its CRM webhook URLs)."""
    runtime = runtime_of(stack)
    try:
        with runtime.read_session() as session:
            conversation = session.scalars(
                select(Conversation)
                .join(ChannelAccount, ChannelAccount.id == Conversation.channel_account_id)
                .where(ChannelAccount.kind == "telegram")
            ).one()
            tenant = session.get(Tenant, stack.seeded.tenant_id)
            assert tenant is not None
            return {
                "contact": conversation.crm_contact_id,
                "lead": conversation.crm_entity_id,
                "key": tenant.webhook_key,
            }
    finally:
        runtime.close()


def shown(stack: Stack, uid: str) -> dict[str, Any] | None:
    """The cascade as ``GET /api/v1/cascades/<id>`` shows it."""
    runtime = runtime_of(stack)
    try:
        return cascade.view(runtime, stack.seeded.tenant_id, uid)
    finally:
        runtime.close()


def note_state(stack: Stack, uid: str) -> dict[str, Any]:
    """Where the cascade's CRM note is (for a failure's message)."""
    runtime = runtime_of(stack)
    try:
        with runtime.read_session() as session:
            row = session.scalars(select(Cascade).where(Cascade.uid == uid)).one()
            return {
                "state": row.note_state,
                "attempts": row.note_attempts,
                "error": row.note_error,
                "next_check": str(row.next_check),
            }
    finally:
        runtime.close()


def cascades(stack: Stack) -> list[str]:
    runtime = runtime_of(stack)
    try:
        with runtime.read_session() as session:
            return list(session.scalars(select(Cascade.uid)))
    finally:
        runtime.close()


@contextmanager
def lossy_gateway(target: str) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A gateway to ``target`` (the bridge) that forwards every call, and
    answers the first one with a 504 whatever the bridge said. Yields its
    URL and what the bridge answered, call by call."""
    answers: list[dict[str, Any]] = []
    app = Flask("gateway")

    @app.route("/<path:path>", methods=["POST"])
    def forward(path: str) -> Response:
        headers = {k: v for k, v in request.headers.items() if k.lower() in _FORWARDED}
        got = requests.post(
            f"{target}/{path}",
            params=request.args,
            data=request.get_data(),
            headers=headers,
            timeout=30,
        )
        answers.append({"status": got.status_code, "body": got.json()})
        if len(answers) == 1:
            return Response("gateway timeout", status=504)
        return Response(
            got.content, status=got.status_code, content_type=got.headers["Content-Type"]
        )

    with serve_wsgi(app) as server:
        yield server.url, answers


_FORWARDED = {"content-type", "user-agent"}


def test_a_pipeline_stage_starts_one_cascade(make_stack_once) -> None:  # type: ignore[no-untyped-def]
    stack: Stack = fast_stack(make_stack_once, "amocrm", ("whatsapp",), workers=2)
    amocrm = Vendor(stack, "amocrm")

    # a client wrote on Telegram: the CRM has their contact and lead
    telegram_writes(stack, "Здравствуйте, когда будет заказ?")
    assert wait_until(
        lambda: stack.bridge_status()["messages"]["in"].get("synced", 0) == 1, timeout=30
    ), stack.bridge_status()
    known = telegram_conversation(stack)
    assert known["contact"] and known["lead"], known
    before = len(stack.telegram_sent(TG_USER))

    query = urlencode(
        {
            "text": TEXT,
            "channels": "whatsapp,telegram",
            "wait_minutes": 1,
            "key": "order-ready",
        }
    )
    path = f"webhooks/crm/amocrm/{known['key']}/cascade?{query}"
    with lossy_gateway(stack.bridge_url) as (gateway, answers):
        # the admin gives the stage its webhook action; a manager moves the lead
        amocrm.post(
            "_config",
            dp_webhooks=[{"pipeline_id": MAIN, "status_id": STAGE, "url": f"{gateway}/{path}"}],
        )
        moved = amocrm.post("_lead_status", lead_id=int(known["lead"]), status_id=STAGE)
        (first,) = moved["dp_webhooks"]
        assert (first["status"], first["ok"]) == (504, False), first
        assert [a["status"] for a in answers] == [202]
        started = answers[0]["body"]
        assert started["created"] is True and started["contact"] == known["contact"]
        # amoCRM delivers the same body again (FACTS 1.12: after 5 minutes)
        (retry,) = amocrm.post("_webhooks", flush=True)["delivered"]
        assert (retry["attempt"], retry["status"], retry["ok"]) == (2, 202, True), retry
        assert retry["body"] == first["body"]
        again = answers[1]["body"]
        assert (again["id"], again["created"]) == (started["id"], False)
    assert cascades(stack) == [started["id"]]

    # WhatsApp skipped (no conversation), Telegram delivered, the note on the contact
    def noted() -> list[str]:
        data = stack.amocrm_state()
        account = data["accounts"][0] if "accounts" in data else data
        return [
            str((n.get("params") or {}).get("text") or "")
            for n in account["notes"]
            if n["entity_type"] == "contacts" and str(n["entity_id"]) == known["contact"]
        ]

    # a note whose first write timed out under load is written again after a
    # minute (bridge.cascade_note's backoff): wait past that
    assert wait_until(lambda: any("Каскадное сообщение" in n for n in noted()), timeout=90), (
        shown(stack, started["id"]),
        note_state(stack, started["id"]),
        stack.telegram_sent(TG_USER),
    )
    (note,) = [n for n in noted() if "Каскадное сообщение" in n]
    lines = note.split("\n")
    assert lines[0].startswith("Каскадное сообщение: доставлено в Telegram"), note
    assert lines[1:] == [
        "- WhatsApp: пропущен (нет переписки или адреса в этом канале)",
        "- Telegram: отправлено; канал не подтверждает доставку",
        f"Текст: {TEXT}",
    ], note
    sent = stack.telegram_sent(TG_USER)[before:]
    assert [m.get("text") for m in sent] == [TEXT]
    assert cascades(stack) == [started["id"]]
