"""Which conversation a rep's reply goes out in (``bridge.pipeline.outbound
.route``), on real SQLite and PostgreSQL with the in-memory CRM: a chat the
CRM names keeps the reply; a reply naming only the deal (notes-mode) or the
recipient goes where the client last wrote (their own messages, not our
sends, echoes or system events); a ``/channel <kind>`` prefix on the first
line picks the contact's conversation on that kind and is not sent; an
unknown kind, or one the contact has no conversation on, is refused with
the reason the CRM is told, in the mapping's language.

The rows are written here directly (one client on several channels, as a
merge leaves them): what routes a reply is only what the tables hold."""

from __future__ import annotations

import datetime as dt
import itertools
import uuid
from typing import Any

import pytest
from sqlalchemy import select

import crm_adapters
from bridge import admin
from bridge.model import CrmEvent, CrmEventKind, CrmRef, MessageKind, utcnow
from bridge.pipeline.outbound import accept_crm_events, run_reports
from bridge.pipeline.outbound.route import kind_named, split_prefix
from bridge.tables import (
    ChannelAccount,
    ChannelStatus,
    Contact,
    Conversation,
    ConversationStatus,
    Message,
    Outbox,
)
from tests.support import fakes

MAPPING = """
crm: fake
language: {language}
channels:
  telegram: {{object: deal, timeline: note}}
  whatsapp: {{object: deal, timeline: note}}
  vk: {{object: deal, timeline: note}}
"""
NOW = utcnow()
DEAL = "deal-7"
_ids = itertools.count(1)


class World:
    """One tenant's rows, written directly."""

    def __init__(self, runtime: Any, monkeypatch: pytest.MonkeyPatch, language: str) -> None:
        monkeypatch.setitem(crm_adapters.REGISTRY, "fake", "tests.support.fakes:FakeCrm")
        fakes.STATE = fakes.FakeCrmState()
        path = runtime.settings.mappings_dir / f"fake-{language}.yaml"
        path.write_text(MAPPING.format(language=language))
        self.rt = runtime
        self.tenant = admin.create_tenant(
            runtime, slug=f"acme-{language}", crm_kind="fake", mapping=path.name
        )
        self.accounts: dict[str, int] = {}

    def account(self, kind: str, status: str = ChannelStatus.ACTIVE) -> int:
        if kind not in self.accounts:
            with self.rt.transaction() as s:
                row = ChannelAccount(
                    tenant_id=self.tenant,
                    kind=kind,
                    key=uuid.uuid4().hex,
                    external_id=f"{kind}-bot",
                    status=status,
                )
                s.add(row)
                s.flush()
                self.accounts[kind] = row.id
        return self.accounts[kind]

    def contact(self, name: str = "Anna") -> int:
        with self.rt.transaction() as s:
            row = Contact(tenant_id=self.tenant, display_name=name)
            s.add(row)
            s.flush()
            return row.id

    def conversation(
        self,
        kind: str,
        contact: int,
        *,
        entity: str | None = DEAL,
        touched: dt.datetime = NOW,
        status: str = ConversationStatus.OPEN,
    ) -> str:
        uid = str(uuid.uuid4())
        account = self.account(kind)
        with self.rt.transaction() as s:
            s.add(
                Conversation(
                    uid=uid,
                    tenant_id=self.tenant,
                    channel_account_id=account,
                    contact_id=contact,
                    external_thread_id=f"{kind}-{next(_ids)}",
                    status=status,
                    crm_entity_type="deal" if entity else None,
                    crm_entity_id=entity,
                    next_seq=1000,
                    updated_at=touched,
                )
            )
        return uid

    def said(
        self,
        conversation: str,
        ago: dt.timedelta,
        *,
        kind: MessageKind = MessageKind.TEXT,
        echo: bool = False,
        direction: str = "in",
    ) -> None:
        """A message in ``conversation`` ``ago`` before now (the client's,
        unless it is an echo, a system event or our own)."""
        when = NOW - ago
        with self.rt.transaction() as s:
            conv = s.scalars(select(Conversation).where(Conversation.uid == conversation)).one()
            s.add(
                Message(
                    uid=str(uuid.uuid4()),
                    tenant_id=self.tenant,
                    conversation_id=conv.id,
                    channel_account_id=conv.channel_account_id,
                    direction=direction,
                    seq=next(_ids),
                    dedupe_key=f"m-{next(_ids)}",
                    kind=kind.value,
                    text="hello",
                    payload={"echo": True} if echo else {},
                    sent_at=when,
                    created_at=when,
                    status="synced" if direction == "in" else "sent",
                )
            )

    def reply(self, crm_id: str, text: str = "Your order ships today", **names: Any) -> Any:
        event = CrmEvent(CrmEventKind.REPLY, crm_id, utcnow(), text=text, **names)
        return accept_crm_events(self.rt, self.tenant, [event])

    def out(self, crm_id: str) -> tuple[str, str, str, str | None]:
        """(conversation uid, text, status, reason) of the stored reply."""
        with self.rt.transaction() as s:
            row = s.scalars(select(Message).where(Message.crm_message_id == crm_id)).one()
            conv = s.get(Conversation, row.conversation_id)
            assert conv is not None
            return conv.uid, row.text, str(row.status), row.last_error


@pytest.fixture
def world(runtime: Any, monkeypatch: pytest.MonkeyPatch) -> World:
    return World(runtime, monkeypatch, "en")


def _client_on_two_channels(world: World) -> tuple[int, str, str]:
    """A client on Telegram and WhatsApp under one deal: wrote on WhatsApp
    two hours ago, on Telegram one hour ago; our reply on WhatsApp moved
    its conversation last."""
    anna = world.contact()
    tg = world.conversation("telegram", anna, touched=NOW - dt.timedelta(hours=1))
    wa = world.conversation("whatsapp", anna, touched=NOW)
    world.said(wa, dt.timedelta(hours=2))
    world.said(tg, dt.timedelta(hours=1))
    world.said(wa, dt.timedelta(minutes=1), direction="out")
    return anna, tg, wa


# -- the deal or the recipient only: the channel the client last wrote from ---------------


def test_a_reply_to_the_deal_goes_where_the_client_last_wrote(world: World) -> None:
    _, tg, wa = _client_on_two_channels(world)
    result = world.reply("r-1", entity=CrmRef("deal", DEAL))
    assert result.stored == 1
    assert world.out("r-1")[:3] == (tg, "Your order ships today", "pending")
    world.said(wa, dt.timedelta(minutes=10))  # now they write on WhatsApp
    world.reply("r-2", entity=CrmRef("deal", DEAL))
    assert world.out("r-2")[0] == wa


def test_echoes_system_events_and_our_sends_are_not_the_client_writing(world: World) -> None:
    _, tg, wa = _client_on_two_channels(world)
    world.said(wa, dt.timedelta(minutes=5), echo=True)  # the business's own app
    world.said(wa, dt.timedelta(minutes=4), kind=MessageKind.SYSTEM)  # e.g. a consent event
    world.said(wa, dt.timedelta(minutes=3), direction="out")
    world.reply("r-1", entity=CrmRef("deal", DEAL))
    assert world.out("r-1")[0] == tg


def test_the_same_contacts_conversation_on_another_channel_without_a_deal_counts(
    world: World,
) -> None:
    anna, tg, _ = _client_on_two_channels(world)
    vk = world.conversation("vk", anna, entity=None)  # merged in later: no deal of its own yet
    world.said(vk, dt.timedelta(minutes=20))
    # none of these is where a reply about this deal may go, however recent:
    closed = world.conversation("vk", anna, entity=None, status=ConversationStatus.CLOSED)
    world.said(closed, dt.timedelta(minutes=1))  # closed
    matter = world.conversation("vk", anna, entity="deal-other")
    world.said(matter, dt.timedelta(minutes=1))  # another deal: another matter
    group = world.conversation("telegram", anna, entity=None)
    world.said(group, dt.timedelta(minutes=1))  # another chat on the deal's own account
    other = world.conversation("vk", world.contact("Boris"), entity=None)
    world.said(other, dt.timedelta(seconds=5))  # another client entirely
    world.reply("r-1", entity=CrmRef("deal", DEAL))
    assert world.out("r-1")[0] == vk
    world.said(tg, dt.timedelta(minutes=2))
    world.reply("r-2", entity=CrmRef("deal", DEAL))
    assert world.out("r-2")[0] == tg


def test_a_recipient_only_reply_goes_to_that_clients_last_channel(world: World) -> None:
    _, tg, wa = _client_on_two_channels(world)
    with world.rt.transaction() as s:
        thread = s.scalars(
            select(Conversation.external_thread_id).where(Conversation.uid == wa)
        ).one()
    world.reply("r-1", recipient=thread)
    assert world.out("r-1")[0] == tg


def test_a_connected_channel_wins_over_a_disconnected_one(world: World) -> None:
    _, tg, wa = _client_on_two_channels(world)
    with world.rt.transaction() as s:
        account = s.get(ChannelAccount, world.accounts["telegram"])
        assert account is not None
        account.status = ChannelStatus.DISCONNECTED
    world.reply("r-1", entity=CrmRef("deal", DEAL))
    assert world.out("r-1")[0] == wa


def test_a_notes_reply_naming_the_deals_marker_still_goes_where_they_last_wrote(
    world: World,
) -> None:
    _, tg, wa = _client_on_two_channels(world)
    # the adapter read the deal's conversation marker (WhatsApp's), the rep named the deal
    world.reply("r-1", entity=CrmRef("deal", DEAL), thread_key=wa)
    assert world.out("r-1")[0] == tg


def test_a_redelivered_reply_is_stored_once_wherever_it_would_route_now(world: World) -> None:
    _, tg, wa = _client_on_two_channels(world)
    world.reply("r-1", entity=CrmRef("deal", DEAL))
    world.said(wa, dt.timedelta(seconds=30))  # the client writes elsewhere meanwhile
    again = world.reply("r-1", entity=CrmRef("deal", DEAL))
    assert (again.stored, again.duplicates) == (0, 1)
    assert world.out("r-1")[0] == tg


# -- a chat the CRM names: the rep picked it ------------------------------------------------


def test_a_named_chat_keeps_the_reply(world: World) -> None:
    _, tg, wa = _client_on_two_channels(world)
    world.reply("r-1", thread_key=wa)  # the rep answered in the WhatsApp chat
    assert world.out("r-1")[0] == wa
    with world.rt.transaction() as s:
        s.scalars(select(Conversation).where(Conversation.uid == wa)).one().crm_thread_id = "T-9"
    world.reply("r-2", crm_thread_id="T-9")
    assert world.out("r-2")[0] == wa


# -- the /channel prefix ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "sent"),
    [
        ("/channel whatsapp Hello there", "Hello there"),
        ("/Channel WhatsApp\nHello there\nBye", "Hello there\nBye"),
        ("  /канал whatsapp Привет\nкак дела?", "Привет\nкак дела?"),
    ],
)
def test_a_prefix_picks_the_contacts_channel_and_is_not_sent(
    world: World, text: str, sent: str
) -> None:
    _, tg, wa = _client_on_two_channels(world)
    result = world.reply("r-1", text=text, thread_key=tg)
    assert world.out("r-1")[:3] == (wa, sent, "pending")
    assert [direction for direction, _, _ in result.jobs] == ["out"]
    assert len(result.replied) == 1


def test_a_prefix_prefers_the_deals_conversation_on_that_kind(world: World) -> None:
    anna, tg, wa = _client_on_two_channels(world)
    group = world.conversation("whatsapp", anna, entity="deal-group")
    world.said(group, dt.timedelta(seconds=10))  # newer, but another deal's chat
    world.reply("r-1", text="/channel whatsapp Hi", thread_key=tg)
    assert world.out("r-1")[0] == wa
    loose = world.conversation("vk", anna, entity=None)
    also = world.conversation("vk", anna, entity="deal-vk")
    world.said(loose, dt.timedelta(hours=3))
    world.said(also, dt.timedelta(seconds=10))
    world.reply("r-2", text="/channel vk Hi", thread_key=tg)
    assert world.out("r-2")[0] == loose  # an open one without a deal before another deal's


def test_a_prefix_on_a_later_line_is_the_reps_text(world: World) -> None:
    _, tg, _ = _client_on_two_channels(world)
    text = "Hello\n/channel whatsapp is how you switch"
    world.reply("r-1", text=text, thread_key=tg)
    assert world.out("r-1")[:3] == (tg, text, "pending")


def test_an_unknown_kind_is_refused_with_the_reason_the_crm_is_told(world: World) -> None:
    _, tg, _ = _client_on_two_channels(world)
    result = world.reply("r-1", text="/channel pigeon Hello", thread_key=tg)
    uid, text, status, reason = world.out("r-1")
    assert (uid, text, status) == (tg, "Hello", "refused")
    assert reason is not None and reason.startswith("Not sent: there is no channel “pigeon”")
    assert "telegram" in reason  # the kinds it takes
    assert not result.replied  # nothing to deliver, nothing shown in a hosted chat
    with world.rt.transaction() as s:
        conv = s.scalars(select(Conversation).where(Conversation.uid == tg)).one()
        out = s.scalars(
            select(Outbox).where(Outbox.conversation_id == conv.id, Outbox.direction == "out")
        ).first()
        assert out is None  # no delivery work bumped
        conversation_id = conv.id
    assert run_reports(world.rt, conversation_id) == "idle"
    assert [(r.crm_message_id, r.status.value, r.error) for r in fakes.STATE.reports] == [
        ("r-1", "failed", reason)
    ]


def test_a_kind_the_contact_has_no_conversation_on_is_refused_in_the_mappings_language(
    runtime: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = World(runtime, monkeypatch, "ru")
    _, tg, _ = _client_on_two_channels(world)
    world.account("vk")  # the tenant has VK, the client never wrote there
    world.reply("r-1", text="/канал vk Здравствуйте", thread_key=tg)
    uid, text, status, reason = world.out("r-1")
    assert (uid, text, status) == (tg, "Здравствуйте", "refused")
    assert reason is not None
    assert reason.startswith("Не отправлено: у клиента нет переписки в VK")
    assert "telegram, whatsapp" in reason  # where the client can be answered


def test_a_prefix_with_nothing_after_it_is_refused(world: World) -> None:
    _, tg, _ = _client_on_two_channels(world)
    world.reply("r-1", text="/channel whatsapp", thread_key=tg)
    assert world.out("r-1")[2:] == (
        "refused",
        "Not sent: the reply has no text after “/channel whatsapp”.",
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("/channel telegram hi", ("telegram", "hi")),
        ("\n\n/channel telegram\r\nhi", ("telegram", "hi")),
        ("/channel telegram  \n\n Hi,\nthere", ("telegram", " Hi,\nthere")),
        ("/channel telegram hi\r\nthere", ("telegram", "hi\nthere")),
        ("/канал e-mail Добрый день", ("e-mail", "Добрый день")),
        ("/channels telegram hi", None),  # another command
        ("/channel\ntelegram hi", None),  # the kind is not on the first line
        ("hi /channel telegram", None),
        ("", None),
    ],
)
def test_split_prefix(text: str, expected: tuple[str, str] | None) -> None:
    assert split_prefix(text) == expected


def test_kinds_are_named_by_slug_or_title() -> None:
    assert kind_named("TELEGRAM") == "telegram"
    assert kind_named("e-mail") == "email"  # the channel's title, "E-mail"
    assert kind_named("Web chat") == "webchat"  # its title
    assert kind_named("webchat") == "webchat"
    assert kind_named("pigeon") is None
