"""The CRM contact's live fields (``bridge.live_fields``): a mapping field
using ``{client.reachable}`` is kept current on the CRM contact.

Real SQLite/PostgreSQL and the machine's Redis (the per-contact lock); the
CRM is the fake adapter. Time is passed in (``now``), never slept."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy import select

from bridge import live_fields
from bridge.errors import RetryableError
from bridge.locks import ConversationLock
from bridge.model import InboundMessage, MessageKind, SenderProfile, utcnow
from bridge.pipeline.inbound import AccountRef, accept, run_inbound
from bridge.runtime import Runtime
from bridge.tables import Contact, Conversation, MessageStatus
from mappings import MappingError, parse_mapping
from tests.support import fakes
from tests.unit.test_cascade import World, make_world

HOUR = dt.timedelta(hours=1)

MAPPING = """\
crm: fake
language: en
channels:
  whatsapp:
    object: none
    timeline: note
    fields: {contact: {reach_now: "{client.reachable}", first_seen: "{message.text}"}}
  telegram:
    object: none
    timeline: note
    fields: {contact: {reach_now: "{client.reachable}"}}
"""


@pytest.fixture
def live(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> World:
    return make_world(runtime, monkeypatch, mapping=MAPPING)


def _writes(world: World, kind: str, user: str, text: str = "Hi") -> int:
    """The client writes on ``kind``; the sync runs; the conversation's id."""
    account = AccountRef(world.accounts[kind], world.tenant_id, kind)
    accept(
        world.rt,
        account,
        [
            InboundMessage(
                channel_kind=kind,
                external_id=f"{kind}-{user}-{text}",
                external_user_id=user,
                external_thread_id=user,
                kind=MessageKind.TEXT,
                sent_at=utcnow(),
                text=text,
                profile=SenderProfile(first_name="Ann"),
            )
        ],
    )
    with world.rt.read_session() as session:
        conversation_id = session.scalars(
            select(Conversation.id)
            .where(Conversation.channel_account_id == world.accounts[kind])
            .order_by(Conversation.id.desc())
        ).first()
    assert conversation_id is not None
    run_inbound(world.rt, conversation_id)
    return conversation_id


def _contact(world: World) -> Contact:
    with world.rt.read_session() as session:
        row = session.scalars(
            select(Contact).where(Contact.merged_into_id.is_(None)).order_by(Contact.id)
        ).first()
        assert row is not None
        session.expunge(row)
        return row


def _crm_field(contact: Contact) -> Any:
    assert contact.crm_contact_id is not None
    return fakes.STATE.contacts[contact.crm_contact_id]["properties"].get("reach_now")


def test_the_field_is_written_with_the_new_contact_and_only_changes_are_written_again(
    live: World,
) -> None:
    _writes(live, "whatsapp", "79990001122")
    contact = _contact(live)
    assert _crm_field(contact) == "WhatsApp: yes"
    # created with it: nothing more to write, the window's end is the next look
    assert contact.crm_live == {"reach_now": "WhatsApp: yes"}
    assert contact.crm_live_due is not None
    assert not fakes.STATE.field_writes
    # the client writes again in the window: the field says the same
    _writes(live, "whatsapp", "79990001122", "again")
    assert not fakes.STATE.field_writes
    # the only live field of the WhatsApp rule is written, never the rest
    assert fakes.STATE.contacts[contact.crm_contact_id or ""]["properties"]["first_seen"] == "Hi"


def test_the_reply_window_closing_rewrites_the_field_when_it_closes(live: World) -> None:
    _writes(live, "whatsapp", "79990001122")
    due = _contact(live).crm_live_due
    assert due is not None
    closes = due if due.tzinfo else due.replace(tzinfo=dt.UTC)
    # not due before the window closes
    assert live_fields.sweep(live.rt, now=closes - dt.timedelta(minutes=1)) == 0
    assert live_fields.sweep(live.rt, now=closes + dt.timedelta(seconds=1)) == 1
    assert live_fields.refresh(
        live.rt, _contact(live).id, now=closes + dt.timedelta(seconds=2)
    ) == ("written")
    contact = _contact(live)
    assert _crm_field(contact) == "WhatsApp: window closed, no template"
    assert fakes.STATE.field_writes == [
        (contact.crm_contact_id, {"reach_now": "WhatsApp: window closed, no template"})
    ]
    # nothing changes by the clock any more: no next look
    assert contact.crm_live_due is None


def test_a_failed_reply_makes_the_contact_due_and_the_field_says_blocked(live: World) -> None:
    tg = _writes(live, "telegram", "42")
    contact = _contact(live)
    assert _crm_field(contact) == "Telegram: yes"
    assert contact.crm_live_due is None  # no window on this channel
    live.outbound(tg, MessageStatus.FAILED, "Telegram 403: Forbidden: bot was blocked by the user")
    with live.rt.transaction() as session:
        live_fields.mark_conversation(session, tg)
    assert live_fields.sweep(live.rt) == 1
    # held while its job runs: a second pass does not enqueue it again
    assert live_fields.sweep(live.rt) == 0
    assert live_fields.refresh(live.rt, contact.id) == "written"
    assert _crm_field(_contact(live)) == "Telegram: blocked"


def test_a_second_channel_joins_the_field_of_one_client(live: World) -> None:
    _writes(live, "whatsapp", "79990001122")
    contact = _contact(live)
    # the client's Telegram conversation (a merge brought it), synced
    live.conversation(contact.id, "telegram", last_inbound=utcnow())
    with live.rt.transaction() as session:
        due_now = live_fields.after_sync(session, live.rt.mapping_for(_tenant(live)), contact.id)
    assert due_now
    assert live_fields.refresh(live.rt, contact.id) == "written"
    assert _crm_field(_contact(live)) == "WhatsApp: yes; Telegram: yes"


def _tenant(world: World) -> Any:
    from bridge.tables import Tenant

    with world.rt.read_session() as session:
        tenant = session.get(Tenant, world.tenant_id)
        assert tenant is not None
        session.expunge(tenant)
        return tenant


def test_one_job_at_a_time_per_contact(live: World) -> None:
    _writes(live, "telegram", "42")
    contact = _contact(live)
    lock = ConversationLock(live.rt.redis, f"bridge:live:{contact.id}", ttl=30)
    assert lock.acquire()
    try:
        now = utcnow()
        assert live_fields.refresh(live.rt, contact.id, now=now) == "busy"
        due = _contact(live).crm_live_due
        assert due is not None
        assert (due if due.tzinfo else due.replace(tzinfo=dt.UTC)) == now + live_fields.BUSY
    finally:
        lock.release()


def test_a_crm_that_is_down_is_tried_later_and_nothing_is_recorded_written(live: World) -> None:
    tg = _writes(live, "telegram", "42")
    contact = _contact(live)
    live.outbound(tg, MessageStatus.FAILED, "Telegram 403: Forbidden: bot was blocked by the user")
    fakes.STATE.fail_next("write_contact_fields", RetryableError("down"), times=10)
    now = utcnow()
    assert live_fields.refresh(live.rt, contact.id, now=now) == "later"
    after = _contact(live)
    assert after.crm_live == {"reach_now": "Telegram: yes"}
    due = after.crm_live_due
    assert due is not None
    assert (due if due.tzinfo else due.replace(tzinfo=dt.UTC)) == now + live_fields.RETRY


def test_an_event_during_the_write_leaves_the_contact_due(live: World) -> None:
    tg = _writes(live, "telegram", "42")
    contact = _contact(live)
    live.outbound(tg, MessageStatus.FAILED, "Telegram 403: Forbidden: bot was blocked by the user")

    def event_meanwhile(_arg: Any) -> None:
        with live.rt.transaction() as session:
            live_fields.mark_due(session, contact.id)

    fakes.STATE.after["write_contact_fields"].append(event_meanwhile)
    assert live_fields.refresh(live.rt, contact.id) == "written"
    after = _contact(live)
    assert after.crm_live == {"reach_now": "Telegram: blocked"}
    assert after.crm_live_due is not None  # looked at again: the event may change it


def test_a_merged_contact_hands_its_look_to_the_client_it_merged_into(live: World) -> None:
    _writes(live, "telegram", "42")
    survivor = _contact(live)
    gone = live.contact("crm-gone")
    with live.rt.transaction() as session:
        row = session.get(Contact, gone)
        assert row is not None
        row.merged_into_id = survivor.id
    assert live_fields.refresh(live.rt, gone) == "merged"
    assert _contact(live).crm_live_due is not None


def test_a_live_field_may_use_only_what_the_client_alone_gives() -> None:
    bad = MAPPING.replace(
        'reach_now: "{client.reachable}", first_seen',
        'reach_now: "{client.reachable} {message.text}", first_seen',
    )
    assert bad != MAPPING
    with pytest.raises(MappingError) as caught:
        parse_mapping(bad, file="shop.yaml")
    text = str(caught.value)
    assert "shop.yaml" in text and "reach_now" in text and "{message.text}" in text
    assert "a field of its own" in text
    # the same placeholder in a field of its own is fine
    assert parse_mapping(MAPPING, file="shop.yaml").live_contact_fields() == {
        "reach_now": "{client.reachable}"
    }
