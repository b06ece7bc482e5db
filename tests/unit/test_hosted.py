# ruff: noqa: S105, S106  (test secrets)
"""The core's side of hosted channels (``bridge.hosted``), on real
SQLite/PostgreSQL and a real Redis, with a hosted channel of the test's own
(the core knows no provider): the conversation as its client reads it —
ordered by seq, a reply visible from the moment the CRM's webhook stored
it, a failed or refused one never — and thread news: a watch entered before
the read wakes when the customer's message is normalised or a reply is
stored on its thread, not on another thread, not for a channel that is not
hosted; the shared rate limit; an uploaded file kept and linked."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from sqlalchemy import select, update

import channel_adapters
import crm_adapters
from bridge import admin, hosted
from bridge.model import (
    Attachment,
    CrmEvent,
    CrmEventKind,
    InboundMessage,
    MessageKind,
    OutboundMessage,
    SendResult,
    WebhookRequest,
    utcnow,
)
from bridge.pipeline.inbound import AccountRef, accept
from bridge.pipeline.outbound import accept_crm_events
from bridge.tables import Conversation, Message
from channel_adapters.base import ChannelAdapter
from tests.support import fakes

MAPPING = """
crm: fake
language: en
channels:
  hostedtest:
    object: deal
    timeline: note
  vk:
    object: deal
    timeline: note
"""


class HostedTestAdapter(ChannelAdapter):
    """A hosted channel of this test's own: the bridge is the provider."""

    kind = "hostedtest"
    title = "Hosted test"
    hosted = True

    def verify(self, request: WebhookRequest) -> None:
        return None

    def parse(self, request: WebhookRequest) -> list[Any]:
        return []

    def send(self, message: OutboundMessage) -> SendResult:
        return SendResult(external_ids=(message.bridge_id,))


@pytest.fixture
def account(runtime, monkeypatch) -> AccountRef:  # type: ignore[no-untyped-def]
    monkeypatch.setitem(crm_adapters.REGISTRY, "fake", "tests.support.fakes:FakeCrm")
    monkeypatch.setitem(
        channel_adapters.REGISTRY, "hostedtest", "tests.unit.test_hosted:HostedTestAdapter"
    )
    fakes.STATE = fakes.FakeCrmState()
    (runtime.settings.mappings_dir / "fake.yaml").write_text(MAPPING)
    tenant_id = admin.create_tenant(runtime, slug="acme", crm_kind="fake", mapping="fake.yaml")
    account_id = admin.add_channel_account(runtime, tenant_id, kind="hostedtest", credentials={})
    return AccountRef(account_id, tenant_id, "hostedtest")


def _said(account: AccountRef, visitor: str, n: int, **extra: Any) -> InboundMessage:
    return InboundMessage(
        channel_kind=account.kind,
        external_id=f"{visitor}:m{n}",
        external_user_id=visitor,
        external_thread_id=visitor,
        kind=MessageKind.TEXT,
        sent_at=utcnow(),
        text=f"question {n}",
        **extra,
    )


def _conversation_uid(runtime, account: AccountRef, visitor: str) -> str:  # type: ignore[no-untyped-def]
    with runtime.read_session() as session:
        return str(
            session.scalar(
                select(Conversation.uid).where(
                    Conversation.channel_account_id == account.id,
                    Conversation.external_thread_id == visitor,
                )
            )
        )


def _reply(runtime, account: AccountRef, visitor: str, crm_id: str, text: str) -> None:  # type: ignore[no-untyped-def]
    uid = _conversation_uid(runtime, account, visitor)
    event = CrmEvent(CrmEventKind.REPLY, crm_id, utcnow(), thread_key=uid, text=text)
    accept_crm_events(runtime, account.tenant_id, [event])


def test_the_client_reads_its_thread_in_seq_order(runtime, account) -> None:  # type: ignore[no-untyped-def]
    assert hosted.thread(runtime, account.id, "v1") == []  # nothing normalised yet
    accept(runtime, account, [_said(account, "v1", 1), _said(account, "v2", 1)])
    _reply(runtime, account, "v1", "crm-1", "an answer")
    accept(runtime, account, [_said(account, "v1", 2)])

    seen = hosted.thread(runtime, account.id, "v1")
    assert [(m.direction, m.text) for m in seen] == [
        ("in", "question 1"),
        ("out", "an answer"),  # visible as stored, before any send
        ("in", "question 2"),
    ]
    assert [m.seq for m in seen] == sorted(m.seq for m in seen)
    assert seen[0].key == "v1:m1" and seen[1].key is None and seen[1].status == "pending"
    # another visitor's conversation is not in it; `after` resumes
    assert [m.text for m in hosted.thread(runtime, account.id, "v1", after=seen[1].seq)] == [
        "question 2"
    ]
    assert [m.text for m in hosted.thread(runtime, account.id, "v2")] == ["question 1"]

    # a reply refused or failed for good is never shown
    with runtime.transaction() as session:
        session.execute(update(Message).where(Message.uid == seen[1].uid).values(status="failed"))
    assert [m.direction for m in hosted.thread(runtime, account.id, "v1")] == ["in", "in"]


def test_a_watch_wakes_on_its_own_thread_only(runtime, account) -> None:  # type: ignore[no-untyped-def]
    accept(runtime, account, [_said(account, "v1", 1), _said(account, "v2", 1)])
    with hosted.watch(runtime, account.id, "v1") as news:
        assert hosted.watching(runtime) >= 1
        assert not news.wait(0.3)  # nothing happened yet
        # another visitor's message: not this thread's news
        accept(runtime, account, [_said(account, "v2", 2)])
        assert not news.wait(0.5)
        # the customer's own message (another tab), once normalised
        later = threading.Timer(0.2, accept, (runtime, account, [_said(account, "v1", 2)]))
        later.start()
        started = time.monotonic()
        assert news.wait(5.0)
        assert time.monotonic() - started < 4.0
        later.join()
        # a reply stored by the CRM's webhook
        _reply(runtime, account, "v1", "crm-2", "here")
        assert news.wait(5.0)
        assert hosted.thread(runtime, account.id, "v1")[-1].text == "here"
        # and another behind it while its delivery job is still pending
        # (no new job is bumped for it: the news must not depend on one)
        _reply(runtime, account, "v1", "crm-3", "and here")
        assert news.wait(5.0)
        assert hosted.thread(runtime, account.id, "v1")[-1].text == "and here"
    assert hosted.watching(runtime) == 0


def test_a_channel_that_is_not_hosted_publishes_nothing(runtime, account, redis_conn) -> None:  # type: ignore[no-untyped-def]
    vk = admin.add_channel_account(
        runtime,
        account.tenant_id,
        kind="vk",
        credentials={"access_token": "vk1.a.test", "secret": "s3cr3t"},
        external_id="227000001",
        settings={"confirmation": "5ab0c0de"},
    )
    ref = AccountRef(vk, account.tenant_id, "vk")
    listener = redis_conn.pubsub()
    # this test's two threads only: pub/sub is shared by every Redis database,
    # so other test processes publish on bridge:hosted:* meanwhile
    ours = (f"{hosted.CHANNEL}{vk}:712", f"{hosted.CHANNEL}{account.id}:v9")
    listener.subscribe(*ours)
    for _ in ours:
        listener.get_message(timeout=1.0)  # the subscriptions' confirmations
    said = InboundMessage(
        channel_kind="vk",
        external_id="ev-1",
        external_user_id="712",
        external_thread_id="712",
        kind=MessageKind.TEXT,
        sent_at=utcnow(),
        text="hi",
    )
    accept(runtime, ref, [said])
    _reply(runtime, ref, "712", "crm-vk-1", "hello")
    accept(runtime, account, [_said(account, "v9", 1)])  # a hosted one, for contrast
    got = []
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        item = listener.get_message(timeout=0.2)
        if item and item["type"] == "message":
            got.append(item["channel"].decode())
    listener.close()
    assert got == [f"{hosted.CHANNEL}{account.id}:v9"]


def test_rate_allows_a_burst_then_says_how_long(runtime, account) -> None:  # type: ignore[no-untyped-def]
    name = f"test-{time.monotonic_ns()}"
    allowed = [hosted.rate(runtime, name, "1.2.3.4", per_minute=6, burst=3) for _ in range(3)]
    assert allowed == [None, None, None]
    wait = hosted.rate(runtime, name, "1.2.3.4", per_minute=6, burst=3)
    assert wait is not None and 5.0 < wait <= 10.5  # one token every 10 s
    assert hosted.rate(runtime, name, "5.6.7.8", per_minute=6, burst=3) is None


def test_a_kept_file_is_linked_in_the_thread(runtime, account) -> None:  # type: ignore[no-untyped-def]
    kept = hosted.keep_file(
        runtime,
        account.tenant_id,
        Attachment(
            MessageKind.PHOTO, mime_type="image/png", file_name="cat.png", content=b"\x89PNG"
        ),
    )
    assert kept.file_ref and kept.file_ref.startswith("file:") and kept.content is None
    accept(runtime, account, [_said(account, "v1", 1, attachments=(kept,))])
    (message,) = hosted.thread(runtime, account.id, "v1")
    (attachment,) = message.attachments
    assert attachment["file_name"] == "cat.png" and attachment["size"] == 4
    assert attachment["url"].startswith(f"{runtime.settings.public_url}/files/")
