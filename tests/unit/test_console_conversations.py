"""The console's Conversations page (``bridge.console.trace`` and
``bridge.console.pages.conversations``) on SQLite and PostgreSQL, with rows
made by the real pipeline: messages accepted as the webhook's normaliser
stores them (``accept``, and the ingest journal itself for the traces),
synced to an in-memory CRM, a reply from the CRM sent to Telegram (mocked
with ``responses``) and reported back.

The tenant ``acme`` has three clients:

* Ann (Telegram 101, accepted directly): synced (CRM contact, deal, task,
  notes), answered by a rep, the reply sent and reported; then the deal is
  closed in the CRM, so the conversation is ``closed``. Her messages are of
  1 November 2026.
* Bob (Telegram 202, through the journal): the CRM refused his message for
  good, so it is ``failed`` and the conversation ``parked``. 10 November.
* Carol (WhatsApp, a verified phone and an e-mail): stored, not synced yet.
  20 November.

Another tenant, ``other``, has one conversation of its own.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import responses
from flask import Flask
from flask.testing import FlaskClient
from rq import Queue
from sqlalchemy import select

import channel_adapters
import crm_adapters
from bridge import admin
from bridge.console import trace
from bridge.errors import PermanentError
from bridge.jobs import SYNC_QUEUE
from bridge.model import (
    CrmAccountInfo,
    CrmEvent,
    CrmEventKind,
    CrmRef,
    InboundEvent,
    InboundMessage,
    MessageKind,
    RawDelivery,
    SenderProfile,
    WebhookRequest,
)
from bridge.pipeline.inbound import AccountRef, accept, run_inbound
from bridge.pipeline.inbound.journal import record, run_normaliser
from bridge.pipeline.outbound import accept_crm_events, run_outbound, run_reports
from bridge.runtime import Runtime
from bridge.tables import ConsoleAudit, Contact, Conversation, Delivery, Message, Outbox
from channel_adapters.telegram.adapter import TelegramAdapter
from crm_adapters.amocrm.adapter import AmoCrmAdapter
from crm_adapters.bitrix24.adapter import Bitrix24Adapter
from crm_adapters.hubspot.adapter import HubSpotAdapter
from tests.support import fakes
from tests.support.console import console_app, csrf_token, login, make_user
from tests.support.harness import body, tg_update, tg_user

MAPPING = """\
crm: fake
channels:
  telegram:
    object: deal
    task: {when: new_entity, subject: "Call {contact.name}"}
  whatsapp:
    object: deal
"""

NOV_1 = dt.datetime(2026, 11, 1, 12, 0, tzinfo=dt.UTC)
NOV_10 = dt.datetime(2026, 11, 10, 9, 30, tzinfo=dt.UTC)
NOV_20 = dt.datetime(2026, 11, 20, 18, 0, tzinfo=dt.UTC)
TELEGRAM_SEND = "https://api.telegram.org/bot1:x/sendMessage"


class LinkedFakeCrm(fakes.FakeCrm):
    """The in-memory CRM with pages for its contacts and deals."""

    def record_url(self, ref: CrmRef) -> str | None:
        if ref.kind in ("contact", "deal"):
            return f"https://crm.test/{ref.kind}/{ref.id}"
        return None


class OutdatedTelegram(TelegramAdapter):
    """This bridge's Telegram parser before a fix: it fails on a shape
    Telegram started to send (a message with ``business_connection_id``)."""

    def parse(self, request: WebhookRequest) -> list[InboundEvent]:
        if b"business_connection_id" in request.body:
            raise KeyError("business_connection_id")
        return super().parse(request)


@dataclass
class World:
    runtime: Runtime
    app: Flask
    tenant: int
    other: int
    telegram: AccountRef
    whatsapp: AccountRef
    ann: int
    bob: int
    carol: int
    stranger: int
    #: Bob's journal row
    bob_delivery: int


def _message(
    kind: str, key: str, user: str, text: str, at: dt.datetime, **profile: Any
) -> InboundMessage:
    return InboundMessage(
        channel_kind=kind,
        external_id=key,
        external_user_id=user,
        external_thread_id=user,
        kind=MessageKind.TEXT,
        sent_at=at,
        text=text,
        profile=SenderProfile(**profile),
    )


def _conversation(runtime: Runtime, account: AccountRef, thread: str) -> int:
    with runtime.read_session() as s:
        found = s.scalar(
            select(Conversation.id).where(
                Conversation.channel_account_id == account.id,
                Conversation.external_thread_id == thread,
            )
        )
    assert found is not None
    return int(found)


def _account(runtime: Runtime, tenant: int, kind: str, external_id: str) -> AccountRef:
    credentials = (
        {"bot_token": "1:x", "secret_token": "s"}
        if kind == "telegram"
        else {"access_token": "t", "app_secret": "s", "phone_number_id": external_id}
    )
    account = admin.add_channel_account(
        runtime, tenant, kind=kind, credentials=credentials, external_id=external_id
    )
    return AccountRef(account, tenant, kind, *runtime.ingest_view(tenant))


@pytest.fixture
def world(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    monkeypatch.setitem(crm_adapters.REGISTRY, "fake", f"{__name__}:LinkedFakeCrm")
    fakes.STATE = fakes.FakeCrmState()
    (runtime.settings.mappings_dir / "fake.yaml").write_text(MAPPING, encoding="utf-8")
    tenant = admin.create_tenant(runtime, slug="acme", crm_kind="fake", mapping="fake.yaml")
    other = admin.create_tenant(runtime, slug="other", crm_kind="fake", mapping="fake.yaml")
    telegram = _account(runtime, tenant, "telegram", "1")
    whatsapp = _account(runtime, tenant, "whatsapp", "555")
    elsewhere = _account(runtime, other, "telegram", "9")

    # Ann: accepted, synced, answered, reported, then her deal is closed
    accept(
        runtime,
        telegram,
        [
            _message(
                "telegram",
                "1",
                "101",
                "Hi, is my order ready?",
                NOV_1,
                first_name="Ann",
                last_name="Smith",
                phone="+7 999 123-45-67",
            ),
            _message(
                "telegram",
                "2",
                "101",
                "Order #12",
                NOV_1 + dt.timedelta(minutes=1),
                first_name="Ann",
                last_name="Smith",
            ),
        ],
    )
    ann = _conversation(runtime, telegram, "101")
    assert run_inbound(runtime, ann) == "idle"
    with runtime.read_session() as s:
        conv = s.get(Conversation, ann)
        assert conv is not None
        ann_uid, deal = conv.uid, conv.crm_entity_id
    reply = CrmEvent(
        CrmEventKind.REPLY,
        "crm-msg-1",
        NOV_1 + dt.timedelta(minutes=5),
        thread_key=ann_uid,
        text="Yes, it ships today",
        author_id="101",
        author_name="Rep One",
    )
    accept_crm_events(runtime, tenant, [reply])
    with responses.RequestsMock() as mock:
        mock.post(
            TELEGRAM_SEND,
            json={"ok": True, "result": {"message_id": 100, "date": 1, "chat": {"id": 101}}},
        )
        assert run_outbound(runtime, ann) == "idle"
    assert run_reports(runtime, ann) == "idle"
    closed = CrmEvent(
        CrmEventKind.ENTITY_CLOSED,
        "close-1",
        NOV_1 + dt.timedelta(hours=1),
        entity=CrmRef("deal", str(deal)),
    )
    accept_crm_events(runtime, tenant, [closed])

    # Bob: through the journal; the CRM refuses his message for good
    delivery = RawDelivery(
        "5",
        body(
            tg_update(
                5,
                chat_id=202,
                text="Where is my parcel?",
                date=int(NOV_10.timestamp()),
                user=tg_user(202, "Bob"),
            )
        ),
    )
    assert record(runtime, telegram, [delivery]) == 1
    run_normaliser(runtime, telegram.id)
    bob = _conversation(runtime, telegram, "202")
    fakes.STATE.fail_next("append_entries", PermanentError("property bad_field does not exist"))
    assert run_inbound(runtime, bob) == "parked"

    # Carol: a verified phone on WhatsApp and a typed e-mail, not synced yet
    accept(
        runtime,
        whatsapp,
        [
            _message(
                "whatsapp",
                "wamid.1",
                "79990001122",
                "Do you ship to Kazan?",
                NOV_20,
                display_name="Carol Jones",
                phone="+79990001122",
                phone_verified=True,
                email="Carol@Example.com",
            ),
        ],
    )
    carol = _conversation(runtime, whatsapp, "79990001122")

    # another tenant's client, through its journal
    theirs = RawDelivery(
        "1", body(tg_update(1, chat_id=303, text="hello", user=tg_user(303, "Ann")))
    )
    assert record(runtime, elsewhere, [theirs]) == 1
    run_normaliser(runtime, elsewhere.id)
    stranger = _conversation(runtime, elsewhere, "303")
    with runtime.read_session() as s:
        bob_delivery = s.scalars(select(Delivery.id).where(Delivery.delivery_key == "5")).one()
    yield World(
        runtime,
        console_app(runtime),
        tenant,
        other,
        telegram,
        whatsapp,
        ann,
        bob,
        carol,
        stranger,
        int(bob_delivery),
    )


def _signed_in(world: World, role: str = "admin", email: str | None = None) -> FlaskClient:
    address = email or f"{role}@acme.test"
    make_user(world.runtime, address, role=role, tenant_id=world.tenant)
    client = world.app.test_client()
    assert login(client, address).status_code == 302
    return client


def _found(world: World, **args: str) -> list[int]:
    filters, bad = trace.Filters.from_args(args)
    assert bad == []
    with world.runtime.read_session() as s:
        return sorted(row.id for row in trace.search(s, world.tenant, filters).rows)


def _post(client: FlaskClient, path: str) -> Any:
    return client.post(path, data={"csrf_token": csrf_token(client, "/console/conversations")})


def _audits(world: World) -> list[ConsoleAudit]:
    with world.runtime.read_session() as s:
        return list(s.scalars(select(ConsoleAudit).where(ConsoleAudit.action != "sign_in")))


def _messages(world: World, conversation: int) -> list[Message]:
    with world.runtime.read_session() as s:
        rows = list(
            s.scalars(
                select(Message).where(Message.conversation_id == conversation).order_by(Message.seq)
            )
        )
        for row in rows:
            s.expunge(row)
        return rows


# -- the search ---------------------------------------------------------------------------------


def test_the_seeded_rows_are_what_the_pipeline_made(world: World) -> None:
    """(The scenario the tests below rely on.)"""
    ann = _messages(world, world.ann)
    assert [(m.direction, m.status) for m in ann] == [
        ("in", "synced"),
        ("in", "synced"),
        ("out", "sent"),
    ]
    assert ann[2].followup_status == "done" and ann[2].channel_message_ids == ["100"]
    [bob] = _messages(world, world.bob)
    assert (bob.status, bob.last_error) == ("failed", "property bad_field does not exist")
    with world.runtime.read_session() as s:
        assert s.get(Conversation, world.ann).status == "closed"  # type: ignore[union-attr]
        assert (
            s.scalars(
                select(Outbox.state).where(
                    Outbox.conversation_id == world.bob, Outbox.direction == "in"
                )
            ).one()
            == "parked"
        )
        carol = s.get(Contact, s.get(Conversation, world.carol).contact_id)  # type: ignore[union-attr]
        assert carol is not None and carol.phone == "+79990001122"


def test_search_by_the_contacts_name_phone_email_crm_id_and_handle(world: World) -> None:
    with world.runtime.read_session() as s:
        ann_contact = s.get(Contact, s.get(Conversation, world.ann).contact_id)  # type: ignore[union-attr]
        assert ann_contact is not None and ann_contact.crm_contact_id
        crm_id = ann_contact.crm_contact_id
        uid = s.get(Conversation, world.bob).uid  # type: ignore[union-attr]
    assert _found(world) == sorted([world.ann, world.bob, world.carol])  # never another tenant's
    assert _found(world, contact="ann") == [world.ann]  # part of the name, any case
    assert _found(world, contact="CAROL JONES") == [world.carol]
    assert _found(world, contact="+7 (999) 000-11-22") == [world.carol]  # the whole number
    assert _found(world, contact="0001122") == [world.carol]  # a part of it
    assert _found(world, contact="carol@example.com") == [world.carol]
    assert _found(world, contact="example.COM") == [world.carol]
    assert _found(world, contact=crm_id) == [world.ann]  # the CRM contact id
    assert _found(world, contact="202") == [world.bob]  # the Telegram user id (a handle)
    assert _found(world, contact=uid) == [world.bob]  # the conversation's public id
    assert _found(world, contact="nobody") == []
    assert _found(world, contact="100%") == []  # a LIKE wildcard is only a character


def test_search_by_channel_status_and_days(world: World) -> None:
    assert _found(world, channel="whatsapp") == [world.carol]
    assert _found(world, channel="telegram") == sorted([world.ann, world.bob])
    assert _found(world, status="closed") == [world.ann]
    assert _found(world, status="open") == sorted([world.bob, world.carol])
    assert _found(world, status="parked") == [world.bob]
    assert _found(world, status="failed") == [world.bob]
    assert _found(world, **{"from": "2026-11-09", "to": "2026-11-15"}) == [world.bob]
    assert _found(world, **{"from": "2026-11-10"}) == sorted([world.bob, world.carol])
    assert _found(world, to="2026-11-01") == [world.ann]  # the last day is included
    assert _found(world, **{"from": "2026-11-15", "to": "2026-11-09"}) == []
    assert _found(world, channel="telegram", status="open", contact="bob") == [world.bob]
    filters, bad = trace.Filters.from_args({"from": "yesterday", "status": "weird", "page": "x"})
    assert bad == ["yesterday"] and (filters.since, filters.status, filters.page) == (None, "", 1)


def test_the_list_is_paginated_latest_first(world: World) -> None:
    filters, _ = trace.Filters.from_args({})
    with world.runtime.read_session() as s:
        first = trace.search(s, world.tenant, filters, per_page=2)
        second = trace.search(s, world.tenant, trace.Filters(page=2), per_page=2)
    assert first.more and not second.more
    ids = [r.id for r in first.rows] + [r.id for r in second.rows]
    assert sorted(ids) == sorted([world.ann, world.bob, world.carol]) and len(set(ids)) == 3
    # the latest active first: Carol wrote last, Ann's deal was closed before Bob wrote
    assert ids == [world.carol, world.bob, world.ann]
    row = next(r for r in first.rows + second.rows if r.id == world.bob)
    assert (row.status, row.parked, row.failed, row.messages) == ("open", True, True, 1)


def test_the_page_lists_and_filters_for_a_viewer(world: World) -> None:
    client = _signed_in(world, "viewer")
    page = client.get(f"/console/conversations?tenant={world.tenant}&status=parked")
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert f'data-conversation="{world.bob}"' in html
    assert f'data-conversation="{world.ann}"' not in html
    everything = client.get("/console/conversations").get_data(as_text=True)
    assert everything.count("data-conversation=") == 3
    assert f'data-conversation="{world.stranger}"' not in everything
    assert "Ingest journal: 0 rejected, 0 ignored deliveries" in everything
    bad = client.get("/console/conversations?from=31.12.2026").get_data(as_text=True)
    assert "Not a date (YYYY-MM-DD), left out: 31.12.2026" in bad
    ru = client.get("/console/conversations?lang=ru").get_data(as_text=True)
    assert "Диалоги" in ru and "Контакт" in ru


# -- a conversation and a message's trace ----------------------------------------------------


def test_a_conversation_shows_its_messages_both_ways_in_order(world: World) -> None:
    client = _signed_in(world, "viewer")
    page = client.get(f"/console/conversations/{world.ann}?tenant={world.tenant}")
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    rows = [m.id for m in _messages(world, world.ann)]
    positions = [html.index(f'data-message="{mid}"') for mid in rows]
    assert positions == sorted(positions)
    assert 'data-status="synced"' in html and 'data-status="sent"' in html
    assert "delivery report: done" in html
    with world.runtime.read_session() as s:
        conv = s.get(Conversation, world.ann)
        assert conv is not None
        contact = s.get(Contact, conv.contact_id)
        assert contact is not None
    assert f"https://crm.test/contact/{contact.crm_contact_id}" in html
    assert f"https://crm.test/deal/{conv.crm_entity_id}" in html
    assert "Replay this conversation" not in html  # nothing failed or parked


def test_a_long_conversation_shows_its_latest_messages_and_links_to_earlier_ones(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(trace, "MESSAGES_SHOWN", 2)
    client = _signed_in(world, "viewer")
    first, second, reply = _messages(world, world.ann)
    latest = client.get(f"/console/conversations/{world.ann}").get_data(as_text=True)
    assert f'data-message="{first.id}"' not in latest
    assert f'data-message="{second.id}"' in latest and f'data-message="{reply.id}"' in latest
    assert f"upto={first.seq}" in latest
    earlier = client.get(f"/console/conversations/{world.ann}?upto={first.seq}")
    html = earlier.get_data(as_text=True)
    assert f'data-message="{first.id}"' in html and f'data-message="{second.id}"' not in html


def test_an_inbound_trace_shows_each_step_with_its_ids(world: World) -> None:
    client = _signed_in(world, "viewer")
    [bob] = _messages(world, world.bob)
    html = client.get(
        f"/console/conversations/{world.bob}/messages/{bob.id}?tenant={world.tenant}"
    ).get_data(as_text=True)
    # received and journaled: the journal row, its account, how it came
    assert f">#{world.bob_delivery}</a>" in html
    assert "webhook: POST /webhooks/telegram/…" in html
    assert "its kept body parses to this message" in html
    assert "parsed" in html and "Parsed after" in html
    # normalised: the parsed message
    assert bob.uid in html and "Where is my parcel?" in html
    assert "first_name: Bob" in html and "phone_verified" not in html  # no yes/no noise
    # the CRM: refused, the reason, the parked work and its reason
    assert "property bad_field does not exist" in html
    assert "Outbox: sync to the CRM" in html
    assert "message failed: property bad_field does not exist" in html  # why it is parked
    assert f"<code>sync-{world.bob}-1</code>" in html
    with world.runtime.read_session() as s:
        journaled = s.get(Delivery, world.bob_delivery)
        assert journaled is not None
        delivery_key = journaled.delivery_key
    assert f"<code>{delivery_key}</code>" in html
    # an admin gets the replay button, a viewer only the words
    assert "Only an admin can replay or reparse." in html


def test_a_trace_finds_the_journal_row_among_its_batch(world: World) -> None:
    """Several deliveries normalised in one transaction: the one whose body
    parses to the message is its row, whatever the keys."""
    runtime, telegram = world.runtime, world.telegram
    record(
        runtime,
        telegram,
        [
            RawDelivery(
                f"k{n}",
                body(tg_update(40 + n, chat_id=404, text=f"part {n}", user=tg_user(404, "Dan"))),
            )
            for n in range(3)
        ],
    )
    run_normaliser(runtime, telegram.id)
    dan = _conversation(runtime, telegram, "404")
    messages = _messages(world, dan)
    with runtime.read_session() as s:
        rows = {d.delivery_key: d.id for d in s.scalars(select(Delivery))}
        found = {
            m.text: trace.journal_for(runtime, s, s.get(Message, m.id))  # type: ignore[arg-type]
            for m in messages
        }
        normalised = {
            d.normalised_at
            for d in s.scalars(
                select(Delivery).where(Delivery.delivery_key.in_(["k0", "k1", "k2"]))
            )
        }
    assert len(normalised) == 1  # one batch: the time alone cannot tell them apart
    assert {text: (m.how, m.delivery.id if m.delivery else None) for text, m in found.items()} == {
        f"part {n}": ("parsed", rows[f"k{n}"]) for n in range(3)
    }
    # a message accepted without the journal has no row
    with runtime.read_session() as s:
        ann_first = s.get(Message, _messages(world, world.ann)[0].id)
        assert ann_first is not None
        assert trace.journal_for(runtime, s, ann_first).how == "none"


def test_a_synced_trace_links_every_crm_id_and_lists_the_reply(world: World) -> None:
    client = _signed_in(world, "viewer")
    first, second, reply = _messages(world, world.ann)
    html = client.get(
        f"/console/conversations/{world.ann}/messages/{second.id}?tenant={world.tenant}"
    ).get_data(as_text=True)
    with world.runtime.read_session() as s:
        conv = s.get(Conversation, world.ann)
        assert conv is not None
        contact = s.get(Contact, conv.contact_id)
        assert contact is not None
    [(note_kind, note_id)] = second.crm_refs or []
    assert f"<code>{note_kind} {note_id}</code>" in html  # the timeline entry written
    assert f"https://crm.test/contact/{contact.crm_contact_id}" in html
    assert f"https://crm.test/deal/{conv.crm_entity_id}" in html
    assert f"<code>task {(conv.task_state or '').split(':')[1]}</code>" in html
    assert "No journal row found for this message" in html  # accepted without the journal
    # the reply and its delivery: sent with the channel's id, reported to the CRM
    assert f'data-reply="{reply.id}"' in html and "Yes, it ships today" in html
    assert "<code>crm-msg-1</code>" in html and "<code>100</code>" in html
    assert "Report to the CRM" in html
    # the first message's replies are none: the client wrote again before the rep answered
    first_html = client.get(
        f"/console/conversations/{world.ann}/messages/{first.id}?tenant={world.tenant}"
    ).get_data(as_text=True)
    assert "No reply yet." in first_html
    # the reply's own trace: from the CRM, sent, reported; it answers the second message
    out = client.get(
        f"/console/conversations/{world.ann}/messages/{reply.id}?tenant={world.tenant}"
    ).get_data(as_text=True)
    assert "a reply from the CRM" in out and "Rep One" in out
    assert f"message_id={second.id}" not in out  # (links carry the id in the path)
    assert f"/messages/{second.id}?tenant={world.tenant}" in out
    assert "Delivery report to the CRM" in out and "done" in out


def test_another_tenants_conversation_message_and_row_are_not_found(world: World) -> None:
    client = _signed_in(world, "admin")
    [theirs] = _messages(world, world.stranger)
    [bob] = _messages(world, world.bob)
    assert client.get(f"/console/conversations/{world.stranger}").status_code == 404
    assert (
        client.get(f"/console/conversations/{world.stranger}?tenant={world.other}").status_code
        == 404
    )
    assert (
        client.get(f"/console/conversations/{world.stranger}/messages/{theirs.id}").status_code
        == 404
    )
    # a message of this tenant under another conversation's id
    assert client.get(f"/console/conversations/{world.ann}/messages/{bob.id}").status_code == 404
    with world.runtime.read_session() as s:
        their_row = s.scalars(select(Delivery.id).where(Delivery.tenant_id == world.other)).first()
    assert _post(client, f"/console/conversations/{world.stranger}/replay").status_code == 404
    assert (
        _post(
            client, f"/console/conversations/{world.stranger}/messages/{theirs.id}/replay"
        ).status_code
        == 404
    )
    assert their_row is not None
    assert client.get(f"/console/conversations/journal/{their_row}").status_code == 404
    assert (
        client.get(f"/console/conversations/journal/{their_row}?tenant={world.other}").status_code
        == 404
    )
    assert _post(client, f"/console/conversations/journal/{their_row}/reparse").status_code == 404
    assert _audits(world) == []


# -- acting: replay and reparse ------------------------------------------------------------------


def test_a_viewer_cannot_replay_or_reparse(world: World) -> None:
    client = _signed_in(world, "viewer")
    [bob] = _messages(world, world.bob)
    assert (
        _post(client, f"/console/conversations/{world.bob}/messages/{bob.id}/replay").status_code
        == 403
    )
    assert _post(client, f"/console/conversations/{world.bob}/replay").status_code == 403
    assert (
        _post(client, f"/console/conversations/journal/{world.bob_delivery}/reparse").status_code
        == 403
    )
    assert _messages(world, world.bob)[0].status == "failed"
    assert _audits(world) == []


def test_a_replay_without_the_csrf_token_is_refused(world: World) -> None:
    client = _signed_in(world, "admin")
    [bob] = _messages(world, world.bob)
    answer = client.post(f"/console/conversations/{world.bob}/messages/{bob.id}/replay")
    assert answer.status_code == 400
    assert _messages(world, world.bob)[0].status == "failed"


def test_an_admin_replays_a_failed_message_reset_enqueued_and_audited(
    world: World, redis_conn: Any
) -> None:
    client = _signed_in(world, "admin")
    [bob] = _messages(world, world.bob)
    page = client.get(
        f"/console/conversations/{world.bob}/messages/{bob.id}?tenant={world.tenant}"
    ).get_data(as_text=True)
    assert "Replay this message" in page
    redis_conn.delete(*redis_conn.keys("rq:queue:*") or ["-"])
    answer = _post(
        client, f"/console/conversations/{world.bob}/messages/{bob.id}/replay?tenant={world.tenant}"
    )
    assert answer.status_code == 303
    assert answer.headers["Location"].endswith(
        f"/console/conversations/{world.bob}/messages/{bob.id}?tenant={world.tenant}"
    )
    [again] = _messages(world, world.bob)
    # it was tried once: it goes back as in flight, so the next attempt looks it up first
    assert (again.status, again.attempts, again.last_error) == ("in_flight", 0, None)
    with world.runtime.read_session() as s:
        row = s.scalars(
            select(Outbox).where(Outbox.conversation_id == world.bob, Outbox.direction == "in")
        ).one()
        assert (row.state, row.reason) == ("pending", None)
        job = row.last_job_id
    assert job is not None and job.startswith(f"sync-{world.bob}-")
    assert Queue(SYNC_QUEUE, connection=redis_conn).job_ids == [job]
    [entry] = _audits(world)
    assert (entry.action, entry.target, entry.tenant_id) == (
        "conversation.replay_message",
        f"message:{bob.uid}",
        world.tenant,
    )
    assert entry.user_email == "admin@acme.test"
    assert entry.before == {
        "status": "failed",
        "attempts": 1,
        "followup": None,
        "outbox": {"in": "parked"},
    }
    assert entry.after["status"] == "in_flight" and entry.after["outbox"] == {"in": "pending"}
    assert entry.after["requeued"] == 1
    assert "Where is my parcel?" not in json.dumps([entry.before, entry.after])  # no text
    # the job does its work: the CRM has it now
    assert run_inbound(world.runtime, world.bob) == "idle"
    assert _messages(world, world.bob)[0].status == "synced"
    # nothing left to replay: no change, no audit row
    again_answer = _post(
        client, f"/console/conversations/{world.bob}/messages/{bob.id}/replay?tenant={world.tenant}"
    )
    assert again_answer.status_code == 303 and len(_audits(world)) == 1


def test_a_replay_whose_audit_row_fails_changes_nothing(
    world: World, redis_conn: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The change and its audit row are one transaction: no replay that the
    audit log does not show."""
    from bridge.console.pages import conversations as page

    def broken(*_: Any, **__: Any) -> None:
        raise RuntimeError("the audit table is unwritable")

    client = _signed_in(world, "admin")
    [bob] = _messages(world, world.bob)
    monkeypatch.setattr(page, "audit", broken)
    redis_conn.delete(*redis_conn.keys("rq:queue:*") or ["-"])
    for path in (f"messages/{bob.id}/replay", "replay"):
        with pytest.raises(RuntimeError, match="unwritable"):
            _post(client, f"/console/conversations/{world.bob}/{path}?tenant={world.tenant}")
    [still] = _messages(world, world.bob)
    assert (still.status, still.attempts) == ("failed", 1)
    with world.runtime.read_session() as s:
        row = s.scalars(
            select(Outbox).where(Outbox.conversation_id == world.bob, Outbox.direction == "in")
        ).one()
        assert row.state == "parked"
    assert Queue(SYNC_QUEUE, connection=redis_conn).job_ids == []
    assert _audits(world) == []


def test_an_admin_replays_a_parked_conversation(world: World, redis_conn: Any) -> None:
    client = _signed_in(world, "admin")
    html = client.get(f"/console/conversations/{world.bob}").get_data(as_text=True)
    assert "Replay this conversation" in html
    answer = _post(client, f"/console/conversations/{world.bob}/replay")
    assert answer.status_code == 303
    assert _messages(world, world.bob)[0].status == "in_flight"
    with world.runtime.read_session() as s:
        job = s.scalars(
            select(Outbox.last_job_id).where(
                Outbox.conversation_id == world.bob, Outbox.direction == "in"
            )
        ).one()
    assert job in Queue(SYNC_QUEUE, connection=redis_conn).job_ids
    [entry] = _audits(world)
    assert (entry.action, entry.target) == ("conversation.replay", f"conversation:{world.bob}")
    assert entry.before == {"in": "parked"} and entry.after == {"in": "pending", "requeued": 1}


def test_an_admin_reparses_a_rejected_journal_row(
    world: World, monkeypatch: pytest.MonkeyPatch, redis_conn: Any
) -> None:
    runtime, telegram = world.runtime, world.telegram
    monkeypatch.setitem(channel_adapters.REGISTRY, "telegram", f"{__name__}:OutdatedTelegram")
    sent = dt.datetime(2026, 11, 30, 9, 15, tzinfo=dt.UTC)
    new_shape = RawDelivery(
        "77",
        body(
            tg_update(
                77,
                chat_id=505,
                text="order #77",
                date=int(sent.timestamp()),
                user=tg_user(505, "Eve"),
                business_connection_id="bc-1",
            )
        ),
    )
    record(runtime, telegram, [new_shape])
    run_normaliser(runtime, telegram.id)
    with runtime.read_session() as s:
        row = s.scalars(select(Delivery).where(Delivery.delivery_key == "77")).one()
        row_id = row.id
        assert (row.state, row.reason, row.detail) == ("rejected", "parser_error", "KeyError")
    client = _signed_in(world, "admin")
    listing = client.get("/console/conversations/journal").get_data(as_text=True)
    assert f"/console/conversations/journal/{row_id}?tenant={world.tenant}" in listing
    assert "parser_error" in listing
    page = client.get(f"/console/conversations/journal/{row_id}").get_data(as_text=True)
    assert 'id="reparse"' in page and "KeyError" in page
    # still the old parser: rejected again, audited as such
    assert _post(client, f"/console/conversations/journal/{row_id}/reparse").status_code == 303
    with runtime.read_session() as s:
        assert s.get(Delivery, row_id).state == "rejected"  # type: ignore[union-attr]
    # the fix ships
    monkeypatch.setitem(
        channel_adapters.REGISTRY, "telegram", "channel_adapters.telegram:TelegramAdapter"
    )
    redis_conn.delete(*redis_conn.keys("rq:queue:*") or ["-"])
    answer = _post(client, f"/console/conversations/journal/{row_id}/reparse")
    assert answer.status_code == 303
    with runtime.read_session() as s:
        row = s.get(Delivery, row_id)
        assert row is not None and (row.state, row.reason) == ("normalised", None)
        message = s.scalars(select(Message).where(Message.text == "order #77")).one()
        assert message.payload.get("late") is True  # written late, with its own time
        eve = message.conversation_id
    assert f"sync-{eve}-1" in Queue(SYNC_QUEUE, connection=redis_conn).job_ids
    audits = [a for a in _audits(world) if a.action == "journal.reparse"]
    assert [(a.target, a.before["state"], a.after["state"]) for a in audits] == [
        (f"delivery:{row_id}", "rejected", "rejected"),
        (f"delivery:{row_id}", "rejected", "normalised"),
    ]
    # the row's page now names the message it became; the message's trace names the row
    page = client.get(f"/console/conversations/journal/{row_id}").get_data(as_text=True)
    assert message.uid in page and "Reparsed: the row is now parsed." in page  # the flash
    assert 'id="reparse"' not in page
    trace_page = client.get(f"/console/conversations/{eve}/messages/{message.id}").get_data(
        as_text=True
    )
    assert f">#{row_id}</a>" in trace_page and "late" in trace_page
    # a normalised row is not reparsed
    assert _post(client, f"/console/conversations/journal/{row_id}/reparse").status_code == 303
    assert len([a for a in _audits(world) if a.action == "journal.reparse"]) == 2


# -- links into the CRMs ------------------------------------------------------------------------


def test_each_crm_adapter_builds_its_record_links() -> None:
    creds = fakes.MemoryCredentials({"access_token": "t"})
    hubspot = HubSpotAdapter(CrmAccountInfo(1, "hubspot", "123456"), creds)
    assert hubspot.record_url(CrmRef("contact", "51")) == (
        "https://app.hubspot.com/contacts/123456/record/0-1/51"
    )
    assert hubspot.record_url(CrmRef("ticket", "9")) == (
        "https://app.hubspot.com/contacts/123456/record/0-5/9"
    )
    assert hubspot.record_url(CrmRef("note", "5")) is None
    assert (
        HubSpotAdapter(CrmAccountInfo(1, "hubspot", None), creds).record_url(CrmRef("deal", "1"))
        is None
    )
    amo = AmoCrmAdapter(CrmAccountInfo(1, "amocrm", "9", settings={"subdomain": "acme"}), creds)
    assert amo.record_url(CrmRef("lead", "77")) == "https://acme.amocrm.ru/leads/detail/77"
    assert amo.record_url(CrmRef("contact", "5")) == "https://acme.amocrm.ru/contacts/detail/5"
    assert amo.record_url(CrmRef("note", "5")) is None
    kommo = AmoCrmAdapter(
        CrmAccountInfo(
            1, "amocrm", "9", settings={"subdomain": "acme", "domain": "acme.kommo.com"}
        ),
        creds,
    )
    assert kommo.record_url(CrmRef("lead", "7")) == "https://acme.kommo.com/leads/detail/7"
    assert (
        AmoCrmAdapter(CrmAccountInfo(1, "amocrm", "9"), creds).record_url(CrmRef("lead", "7"))
        is None
    )
    b24_creds = fakes.MemoryCredentials(
        {"type": "oauth", "client_endpoint": "https://acme.bitrix24.ru/rest/", "access_token": "t"}
    )
    b24 = Bitrix24Adapter(CrmAccountInfo(1, "bitrix24", "m1"), b24_creds)
    assert b24.record_url(CrmRef("deal", "7")) == "https://acme.bitrix24.ru/crm/deal/details/7/"
    assert b24.record_url(CrmRef("comment", "7")) is None
    by_domain = Bitrix24Adapter(
        CrmAccountInfo(1, "bitrix24", "m1", settings={"domain": "shop.bitrix24.com"}),
        fakes.MemoryCredentials({}),
    )
    assert by_domain.record_url(CrmRef("contact", "3")) == (
        "https://shop.bitrix24.com/crm/contact/details/3/"
    )
