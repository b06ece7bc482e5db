# ruff: noqa: S105, S106  (test secrets)
"""A customer's consent to be written to (``bridge.consent``), on real
SQLite/PostgreSQL with the in-memory CRM and VK's API mocked
(``responses``): the latest word is recorded on the conversation whatever
the order the events arrive in, a reply after a withdrawal is refused before
anything is sent and the rep reads why, and on a channel where writing
counts (VK) the customer's newer message lets replies go again."""

from __future__ import annotations

import datetime as dt
from urllib.parse import parse_qs

import pytest
import responses
from sqlalchemy import select

import crm_adapters
from bridge import admin, consent
from bridge.model import CrmEvent, CrmEventKind, InboundMessage, MessageKind, utcnow
from bridge.pipeline.inbound import AccountRef, accept, run_inbound
from bridge.pipeline.outbound import accept_crm_events, run_outbound, run_reports
from bridge.tables import Conversation, Message
from channel_adapters.vk import VkAdapter
from tests.support import fakes

GROUP = "227000001"
USER = "712000001"
SEND = "https://api.vk.com/method/messages.send"
MAPPING = """
crm: fake
language: {language}
channels:
  vk:
    object: deal
    timeline: note
"""


def _account(runtime, monkeypatch, language: str = "en") -> AccountRef:  # type: ignore[no-untyped-def]
    monkeypatch.setitem(crm_adapters.REGISTRY, "fake", "tests.support.fakes:FakeCrm")
    fakes.STATE = fakes.FakeCrmState()
    (runtime.settings.mappings_dir / "fake.yaml").write_text(MAPPING.format(language=language))
    tenant_id = admin.create_tenant(runtime, slug="acme", crm_kind="fake", mapping="fake.yaml")
    account_id = admin.add_channel_account(
        runtime,
        tenant_id,
        kind="vk",
        credentials={"access_token": "vk1.a.test", "secret": "s3cr3t"},
        external_id=GROUP,
        settings={"confirmation": "5ab0c0de"},
    )
    return AccountRef(account_id, tenant_id, "vk")


@pytest.fixture
def account(runtime, monkeypatch) -> AccountRef:  # type: ignore[no-untyped-def]
    return _account(runtime, monkeypatch)


def _said(n: int, at: dt.datetime) -> InboundMessage:
    return InboundMessage(
        channel_kind="vk",
        external_id=f"ev-msg-{n}",
        external_user_id=USER,
        external_thread_id=USER,
        kind=MessageKind.TEXT,
        sent_at=at,
        text=f"question {n}",
    )


def _consent(n: int, at: dt.datetime, allowed: bool) -> InboundMessage:
    return InboundMessage(
        channel_kind="vk",
        external_id=f"ev-consent-{n}",
        external_user_id=USER,
        external_thread_id=USER,
        kind=MessageKind.SYSTEM,
        sent_at=at,
        text="(allowed)" if allowed else "(denied)",
        consent=allowed,
    )


def _conversation(runtime) -> Conversation:  # type: ignore[no-untyped-def]
    with runtime.transaction() as s:
        found = s.scalars(select(Conversation)).one()
        s.expunge(found)
        return found


def _reply(runtime, account: AccountRef, crm_id: str, text: str) -> None:  # type: ignore[no-untyped-def]
    uid = _conversation(runtime).uid
    event = CrmEvent(CrmEventKind.REPLY, crm_id, utcnow(), thread_key=uid, text=text)
    accept_crm_events(runtime, account.tenant_id, [event])


def _outbound(runtime) -> list[Message]:  # type: ignore[no-untyped-def]
    with runtime.transaction() as s:
        rows = list(
            s.scalars(select(Message).where(Message.direction == "out").order_by(Message.seq))
        )
        for row in rows:
            s.expunge(row)
        return rows


def _sent_texts() -> list[str]:
    return [
        parse_qs(str(c.request.body))["message"][0]
        for c in responses.calls
        if c.request.url == SEND
    ]


def _ingest(runtime, account: AccountRef, *events: InboundMessage) -> None:  # type: ignore[no-untyped-def]
    accept(runtime, account, list(events))
    run_inbound(runtime, _conversation(runtime).id)


@responses.activate
def test_a_withdrawal_is_recorded_and_the_next_reply_refused_before_anything_is_sent(  # type: ignore[no-untyped-def]
    runtime, account
):
    now = utcnow()
    denied_at = now - dt.timedelta(minutes=5)
    _ingest(runtime, account, _said(1, now - dt.timedelta(hours=1)), _consent(1, denied_at, False))
    conversation = _conversation(runtime)
    assert conversation.consent == consent.WITHDRAWN
    assert conversation.consent_at is not None
    assert abs(conversation.consent_at.replace(tzinfo=dt.UTC) - denied_at) < dt.timedelta(seconds=1)
    _reply(runtime, account, "crm-1", "Your refund is on its way")
    _reply(runtime, account, "crm-2", "Anything else?")
    assert run_outbound(runtime, conversation.id) == "idle"
    assert _sent_texts() == []  # VK never asked
    rows = _outbound(runtime)
    assert [r.status for r in rows] == ["refused", "refused"]  # neither holds the other back
    reason = str(rows[0].last_error)
    assert reason.startswith("Not sent: the client no longer allows messages from you on VK")
    assert denied_at.strftime("%Y-%m-%d %H:%M UTC") in reason
    assert admin.status(runtime)["consent_withdrawn"] == 1
    assert run_reports(runtime, conversation.id) == "idle"
    assert [(r.crm_message_id, r.status.value, r.error) for r in fakes.STATE.reports] == [
        ("crm-1", "failed", reason),
        ("crm-2", "failed", reason),
    ]


@responses.activate
def test_the_latest_word_wins_whatever_the_order_of_arrival(runtime, account):  # type: ignore[no-untyped-def]
    now = utcnow()
    # the allow (newer) arrives first, the deny (older) after it: still allowed
    _ingest(runtime, account, _said(1, now - dt.timedelta(hours=2)))
    _ingest(runtime, account, _consent(2, now - dt.timedelta(minutes=1), True))
    _ingest(runtime, account, _consent(1, now - dt.timedelta(minutes=30), False))
    assert _conversation(runtime).consent == consent.ALLOWED
    # a redelivery of the deny changes nothing either
    _ingest(runtime, account, _consent(1, now - dt.timedelta(minutes=30), False))
    assert _conversation(runtime).consent == consent.ALLOWED
    _reply(runtime, account, "crm-1", "Glad to hear from you")
    responses.post(SEND, json={"response": 101})
    assert run_outbound(runtime, _conversation(runtime).id) == "idle"
    assert _sent_texts() == ["Glad to hear from you"]
    assert [r.status for r in _outbound(runtime)] == ["sent"]


@responses.activate
def test_on_vk_a_message_newer_than_the_withdrawal_lets_replies_go_again(  # type: ignore[no-untyped-def]
    runtime, account
):
    now = utcnow()
    _ingest(runtime, account, _consent(1, now - dt.timedelta(minutes=10), False))
    _ingest(runtime, account, _said(1, now - dt.timedelta(minutes=1)))
    # the record still says withdrawn: only the reply's check counts the message
    assert _conversation(runtime).consent == consent.WITHDRAWN
    _reply(runtime, account, "crm-1", "Hello again")
    responses.post(SEND, json={"response": 102})
    assert run_outbound(runtime, _conversation(runtime).id) == "idle"
    assert _sent_texts() == ["Hello again"]


@responses.activate
def test_where_writing_does_not_count_only_a_new_consent_does(  # type: ignore[no-untyped-def]
    runtime, account, monkeypatch
):
    monkeypatch.setattr(VkAdapter, "consent_by_writing", False)
    now = utcnow()
    _ingest(runtime, account, _consent(1, now - dt.timedelta(minutes=10), False))
    _ingest(runtime, account, _said(1, now - dt.timedelta(minutes=1)))
    _reply(runtime, account, "crm-1", "Hello again")
    assert run_outbound(runtime, _conversation(runtime).id) == "idle"
    assert _sent_texts() == []
    assert [r.status for r in _outbound(runtime)] == ["refused"]
    _ingest(runtime, account, _consent(2, now, True))
    _reply(runtime, account, "crm-2", "Now it goes")
    responses.post(SEND, json={"response": 103})
    assert run_outbound(runtime, _conversation(runtime).id) == "idle"
    assert _sent_texts() == ["Now it goes"]


@responses.activate
def test_the_reason_is_in_the_mappings_language(runtime, monkeypatch):  # type: ignore[no-untyped-def]
    account = _account(runtime, monkeypatch, language="ru")
    _ingest(runtime, account, _consent(1, utcnow() - dt.timedelta(minutes=3), False))
    _reply(runtime, account, "crm-1", "Здравствуйте")
    assert run_outbound(runtime, _conversation(runtime).id) == "idle"
    [row] = _outbound(runtime)
    assert str(row.last_error).startswith("Не отправлено: клиент запретил сообщения от вас в VK")
