# ruff: noqa: S105, S106  (test secrets)
"""A hosted channel's reply left unread goes on to the person's e-mail
(``bridge.pipeline.outbound.unread``), on real SQLite/PostgreSQL and Redis,
through the real e-mail channel to a real SMTP server the test starts: a
reply unread after the channel's wait is mailed once — a second pass, or a
second reply's pass, never mails it again — in the person's conversation
on the e-mail account (one per address) with the channel's subject and
opening line in their language; a reply read in the client, one still
inside the wait, or a visitor who left no address in the conversation (even
when their contact holds one from elsewhere) gets no mail."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select, update

import channel_adapters
import crm_adapters
from bridge import admin
from bridge.model import (
    CrmEvent,
    CrmEventKind,
    InboundMessage,
    MessageKind,
    OutboundMessage,
    SenderProfile,
    SendResult,
    WebhookRequest,
    utcnow,
)
from bridge.pipeline.inbound import AccountRef, accept
from bridge.pipeline.outbound import accept_crm_events, run_outbound
from bridge.pipeline.outbound.unread import MARK, forward_unread
from bridge.tables import Contact, Conversation, Message
from channel_adapters.base import ChannelAdapter
from tests.support import fakes
from tests.support.smtp_server import SmtpTestServer, smtp_server

MAPPING = """
crm: fake
language: en
channels:
  unreadtest:
    object: deal
    timeline: note
"""
WAIT = dt.timedelta(minutes=10)


class UnreadTestAdapter(ChannelAdapter):
    """A hosted channel whose unread replies go on after ten minutes."""

    kind = "unreadtest"
    title = "Unread test"
    hosted = True
    idempotent_sends = True

    def verify(self, request: WebhookRequest) -> None:
        return None

    def parse(self, request: WebhookRequest) -> list[Any]:
        return []

    def send(self, message: OutboundMessage) -> SendResult:
        return SendResult(external_ids=(message.bridge_id,))

    def unread_fallback(self) -> dt.timedelta | None:
        return WAIT

    def unread_texts(self, language: str | None) -> tuple[str, str]:
        if language == "ru":
            return ("Ответ в чате", "Вам ответили в чате на сайте:")
        return ("Your reply from the chat", "You have a reply in the chat:")


@pytest.fixture
def smtp() -> Iterator[SmtpTestServer]:
    with smtp_server(security="plain") as server:
        yield server


@pytest.fixture
def account(runtime, monkeypatch, smtp) -> AccountRef:  # type: ignore[no-untyped-def]
    monkeypatch.setitem(crm_adapters.REGISTRY, "fake", "tests.support.fakes:FakeCrm")
    monkeypatch.setitem(
        channel_adapters.REGISTRY,
        "unreadtest",
        "tests.unit.test_unread_fallback:UnreadTestAdapter",
    )
    fakes.STATE = fakes.FakeCrmState()
    (runtime.settings.mappings_dir / "fake.yaml").write_text(MAPPING)
    tenant_id = admin.create_tenant(runtime, slug="acme", crm_kind="fake", mapping="fake.yaml")
    admin.add_channel_account(
        runtime,
        tenant_id,
        kind="email",
        credentials={"webhook_secret": "w" * 32, "smtp_password": ""},
        settings={
            "mode": "webhook",
            "address": "support@acme.test",
            "smtp_host": smtp.host,
            "smtp_port": smtp.port,
            "smtp_security": "plain",
        },
        external_id="support@acme.test",
    )
    account_id = admin.add_channel_account(runtime, tenant_id, kind="unreadtest", credentials={})
    return AccountRef(account_id, tenant_id, "unreadtest")


def _visitor_writes(runtime, account: AccountRef, visitor: str, **profile: Any) -> None:  # type: ignore[no-untyped-def]
    accept(
        runtime,
        account,
        [
            InboundMessage(
                channel_kind=account.kind,
                external_id=f"{visitor}:m1",
                external_user_id=visitor,
                external_thread_id=visitor,
                kind=MessageKind.TEXT,
                sent_at=utcnow(),
                text="Do you deliver on Sundays?",
                profile=SenderProfile(**profile),
            )
        ],
    )


def _conversation(runtime, account_id: int, thread: str) -> Conversation:  # type: ignore[no-untyped-def]
    with runtime.read_session() as session:
        found = session.scalars(
            select(Conversation).where(
                Conversation.channel_account_id == account_id,
                Conversation.external_thread_id == thread,
            )
        ).one()
        session.expunge(found)
        return found


def _rep_replies(
    runtime, account: AccountRef, visitor: str, crm_id: str, text: str, *, age: dt.timedelta
) -> str:  # type: ignore[no-untyped-def]
    """A reply stored and sent in the widget, ``age`` ago; its uid."""
    conv = _conversation(runtime, account.id, visitor)
    event = CrmEvent(CrmEventKind.REPLY, crm_id, utcnow(), thread_key=conv.uid, text=text)
    accept_crm_events(runtime, account.tenant_id, [event])
    run_outbound(runtime, conv.id)
    with runtime.transaction() as session:
        reply = session.scalars(select(Message).where(Message.crm_message_id == crm_id)).one()
        assert reply.status == "sent"
        reply.created_at = utcnow() - age
        return str(reply.uid)


def _mail_out(runtime) -> None:  # type: ignore[no-untyped-def]
    """Run the e-mail account's delivery jobs (the worker's part)."""
    with runtime.read_session() as session:
        ids = session.scalars(
            select(Message.conversation_id).where(Message.dedupe_key.like("unread:%")).distinct()
        ).all()
    for conversation_id in ids:
        run_outbound(runtime, conversation_id)


def _payload(runtime, uid: str) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    with runtime.read_session() as session:
        return dict(session.scalar(select(Message.payload).where(Message.uid == uid)) or {})


def test_an_unread_reply_is_mailed_once(runtime, account, smtp) -> None:  # type: ignore[no-untyped-def]
    _visitor_writes(runtime, account, "v1", email="anna@example.org", language="ru")
    old = _rep_replies(runtime, account, "v1", "crm-1", "Да, до 18:00.", age=WAIT * 2)
    fresh = _rep_replies(runtime, account, "v1", "crm-2", "И в праздники.", age=WAIT / 2)

    assert forward_unread(runtime) == 1
    _mail_out(runtime)
    (mail,) = smtp.messages
    assert mail["To"] == "anna@example.org"
    assert "Ответ в чате" in str(mail["Subject"])
    body = mail.get_body(preferencelist=("plain",)).get_content()
    assert "Вам ответили в чате на сайте:" in body and "Да, до 18:00." in body
    assert "И в праздники." not in body  # still inside its wait
    assert _payload(runtime, old)[MARK]["message"]
    assert MARK not in _payload(runtime, fresh)

    # again: nothing twice; the fresh one once its time has come, in the
    # same conversation with the address
    assert forward_unread(runtime) == 0
    assert forward_unread(runtime, now=utcnow() + WAIT) == 1
    _mail_out(runtime)
    assert len(smtp.messages) == 2
    assert "И в праздники." in smtp.messages[1].get_body(preferencelist=("plain",)).get_content()
    with runtime.read_session() as session:
        copies = session.scalars(select(Message).where(Message.dedupe_key.like("unread:%"))).all()
        assert len({c.conversation_id for c in copies}) == 1
        assert all(c.status == "sent" for c in copies)


def test_a_read_reply_or_no_address_mails_nothing(runtime, account, smtp) -> None:  # type: ignore[no-untyped-def]
    _visitor_writes(runtime, account, "v1", email="anna@example.org")
    read = _rep_replies(runtime, account, "v1", "crm-1", "Seen it?", age=WAIT * 2)
    with runtime.transaction() as session:
        session.execute(
            update(Message).where(Message.uid == read).values(payload={"delivery": "read"})
        )
    _visitor_writes(runtime, account, "v2")  # left no address ...
    # ... though their contact has one from elsewhere (a typed phone joined
    # them to someone's contact): that someone is never mailed their replies
    with runtime.transaction() as session:
        conv = session.scalars(
            select(Conversation).where(Conversation.external_thread_id == "v2")
        ).one()
        session.execute(
            update(Contact).where(Contact.id == conv.contact_id).values(email="boris@example.org")
        )
    nobody = _rep_replies(runtime, account, "v2", "crm-2", "Hello?", age=WAIT * 2)

    assert forward_unread(runtime) == 0
    _mail_out(runtime)
    assert smtp.messages == []
    assert MARK not in _payload(runtime, read)
    assert _payload(runtime, nobody)[MARK] == {"none": "no address"}
