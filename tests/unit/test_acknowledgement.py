"""The acknowledgement of a new ticket (the mapping's ``acknowledge``): once
per ticket, in the customer's language, marked automatic, capped per sender
per hour; on real SQLite/PostgreSQL with the in-memory CRM."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy import select

from bridge.model import InboundMessage, MessageKind, SenderProfile, ThreadHints
from bridge.pipeline.inbound import AccountRef, accept, run_inbound
from bridge.tables import Conversation, Message
from tests.support import fakes

MAPPING = """
crm: fake
language: en
ticket_format: "#{number}"
channels:
  telegram:
    object: none
    timeline: note
    acknowledge:
      text:
        en: "Hello {contact.name}, we have your request {conversation.ticket}."
        ru: "Здравствуйте, {contact.name}! Ваше обращение {conversation.ticket} принято."
      per_sender_per_hour: 2
"""
T0 = dt.datetime(2026, 11, 1, 12, 0, tzinfo=dt.UTC)


@pytest.fixture
def account(runtime, monkeypatch) -> AccountRef:  # type: ignore[no-untyped-def]
    tenant_id, account_id = fakes.telegram_tenant(runtime, MAPPING, monkeypatch)
    return AccountRef(account_id, tenant_id, "telegram")


def mail(n: int, sender: str = "anna@example.org", **kw: Any) -> InboundMessage:
    return InboundMessage(
        channel_kind="telegram",
        external_id=f"mid:{n}",
        external_user_id=sender,
        external_thread_id=f"thread-{n}",
        kind=MessageKind.TEXT,
        sent_at=T0,
        text=f"mail {n}",
        profile=SenderProfile(display_name="Anna"),
        **{"opens_ticket": True, **kw},
    )


def sync_all(runtime) -> None:  # type: ignore[no-untyped-def]
    with runtime.transaction() as s:
        ids = list(s.scalars(select(Conversation.id).order_by(Conversation.id)))
    for conversation_id in ids:
        run_inbound(runtime, conversation_id)


def acks(runtime) -> list[tuple[str, str, dict[str, Any]]]:  # type: ignore[no-untyped-def]
    with runtime.transaction() as s:
        rows = s.execute(
            select(Conversation.external_thread_id, Message.text, Message.payload)
            .join(Conversation, Conversation.id == Message.conversation_id)
            .where(Message.direction == "out")
            .order_by(Message.id)
        ).all()
    return [(str(t), str(x), dict(p)) for t, x, p in rows]


def test_a_new_ticket_is_acknowledged_once_in_the_customers_language(runtime, account):  # type: ignore[no-untyped-def]
    accept(
        runtime,
        account,
        [mail(1), mail(2, sender="boris@example.org", thread_state={"language": "ru"})],
    )
    sync_all(runtime)
    accept(runtime, account, [mail(3, thread_hints=ThreadHints(message_keys=("mid:1",)))])
    sync_all(runtime)  # the reply in the same ticket: no second acknowledgement
    assert acks(runtime) == [
        ("thread-1", "Hello Anna, we have your request #1001.", {"auto": "acknowledgement"}),
        (
            "thread-2",
            "Здравствуйте, Anna! Ваше обращение #1002 принято.",
            {"auto": "acknowledgement"},
        ),
    ]


def test_a_loop_with_an_auto_responder_ends_at_the_hourly_cap(runtime, account):  # type: ignore[no-untyped-def]
    # each of its answers a new thread: a new ticket each time
    accept(runtime, account, [mail(n, sender="robot@example.org") for n in range(1, 6)])
    sync_all(runtime)
    assert [t for t, _, _ in acks(runtime)] == ["thread-1", "thread-2"]
    with runtime.transaction() as s:
        states = [
            c.channel_state for c in s.scalars(select(Conversation).order_by(Conversation.id))
        ]
    assert [st["acknowledged"] for st in states] == [
        "queued",
        "queued",
        "capped",
        "capped",
        "capped",
    ]


def test_a_messenger_conversation_without_a_ticket_is_not_acknowledged(runtime, account):  # type: ignore[no-untyped-def]
    accept(runtime, account, [mail(1, opens_ticket=False)])
    sync_all(runtime)
    assert acks(runtime) == []


def test_a_flagged_message_says_its_warning_first_in_the_mappings_language(
    runtime, account, monkeypatch
):  # type: ignore[no-untyped-def]
    from channel_adapters.telegram import TelegramAdapter

    words = {"unverified": {"en": "Sender not verified", "ru": "Отправитель не подтверждён"}}
    monkeypatch.setattr(TelegramAdapter, "flags", words)
    accept(
        runtime,
        account,
        [mail(1, flag="unverified", opens_ticket=False), mail(2, flag="other", opens_ticket=False)],
    )
    sync_all(runtime)
    texts = sorted(e["text"] for e in fakes.STATE.entries)
    # a warning the channel has no words for is shown by its code
    assert texts == ["[Sender not verified]\nmail 1", "[other]\nmail 2"]


def test_the_acknowledgement_is_stored_in_the_transaction_that_opens_the_ticket(
    runtime, account, monkeypatch
):  # type: ignore[no-untyped-def]
    """The process dies right after the commit (nothing after it runs): the
    acknowledgement is stored with the ticket, and the sweeper sends it."""
    import importlib

    # (the package's `accept` is the function: the module by its name)
    accept_module = importlib.import_module("bridge.pipeline.inbound.accept")
    monkeypatch.setattr(accept_module, "enqueue_jobs", lambda runtime, result: None)
    accept(runtime, account, [mail(1)])
    assert acks(runtime) == [
        ("thread-1", "Hello Anna, we have your request #1001.", {"auto": "acknowledgement"})
    ]
