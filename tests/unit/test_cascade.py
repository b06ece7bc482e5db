# ruff: noqa: S105, S106  (test secrets)
"""Cascade messages (``bridge.cascade``) on real SQLite/PostgreSQL and Redis,
through the real outbound pipeline to a mocked Telegram Bot API
(``responses``): WhatsApp outside its window with no template is skipped,
a VK user who denied messages is skipped, Telegram delivers, and the
outcome is noted on the CRM contact in the mapping's language; a step
without delivered/read moves on after its wait (an unsent message is
withdrawn), a delivered status ends it; a retried cascade job stores and
sends nothing twice; a batch skips an unsubscribed client and draws from
the channel's shared bucket.

The CRM is an in-memory fake with ``note_contact`` (the real CRMs' notes
are their adapters' tests)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import responses
from sqlalchemy import func, select

import crm_adapters
from bridge import admin, cascade, outbox
from bridge.model import CrmRef, MessageKind, OutboundStatus, utcnow
from bridge.pipeline.inbound import threads
from bridge.pipeline.outbound import run_outbound
from bridge.runtime import Runtime
from bridge.tables import (
    Cascade,
    CascadeStep,
    Contact,
    Conversation,
    Message,
    MessageStatus,
)
from tests.support import fakes

MAPPING = """
crm: fake
language: {language}
channels:
  telegram: {{object: none, timeline: note}}
  whatsapp: {{object: none, timeline: note}}
"""
SEND = "https://api.telegram.org/bot1:x/sendMessage"
NOTES: list[dict[str, Any]] = []


class NotingCrm(fakes.FakeCrm):
    """The fake CRM, with notes on contacts (one per key, as the real ones)."""

    def note_contact(self, contact: CrmRef, text: str, key: str) -> CrmRef:
        for i, note in enumerate(NOTES):
            if note["key"] == key:
                return CrmRef("note", str(i))
        NOTES.append({"contact": contact.id, "text": text, "key": key})
        return CrmRef("note", str(len(NOTES) - 1))


@dataclass
class World:
    """A tenant with an account per channel kind, and builders of clients."""

    rt: Runtime
    tenant_id: int
    accounts: dict[str, int] = field(default_factory=dict)
    threads: int = 0

    def contact(self, crm_id: str | None, email: str | None = None) -> int:
        with self.rt.transaction() as session:
            row = Contact(
                tenant_id=self.tenant_id,
                display_name="Ann",
                crm_contact_id=crm_id,
                crm_state="synced" if crm_id else None,
                email=email,
            )
            session.add(row)
            session.flush()
            return row.id

    def conversation(
        self,
        contact_id: int,
        kind: str,
        *,
        last_inbound: dt.datetime | None = None,
        consent: str | None = None,
    ) -> int:
        self.threads += 1
        with self.rt.transaction() as session:
            row = Conversation(
                uid=str(uuid.uuid4()),
                tenant_id=self.tenant_id,
                channel_account_id=self.accounts[kind],
                contact_id=contact_id,
                external_thread_id=str(1000 + self.threads),
                next_seq=1,
                consent=consent,
                consent_at=utcnow() if consent else None,
            )
            session.add(row)
            session.flush()
            conversation_id = row.id
        if last_inbound is not None:
            self.inbound(conversation_id, last_inbound)
        return conversation_id

    def _message(self, conversation_id: int, direction: str, **values: Any) -> int:
        from bridge.pipeline.outbound.accept import take_seq

        with self.rt.transaction() as session:
            conv = session.get(Conversation, conversation_id)
            assert conv is not None
            row = Message(
                uid=str(uuid.uuid4()),
                tenant_id=self.tenant_id,
                conversation_id=conversation_id,
                channel_account_id=conv.channel_account_id,
                direction=direction,
                seq=take_seq(session, conversation_id),
                dedupe_key=str(uuid.uuid4()),
                kind=MessageKind.TEXT.value,
                text="hello",
                **values,
            )
            session.add(row)
            session.flush()
            return row.id

    def inbound(self, conversation_id: int, at: dt.datetime) -> int:
        return self._message(conversation_id, outbox.IN, sent_at=at, status=MessageStatus.SYNCED)

    def outbound(self, conversation_id: int, status: str, error: str | None = None) -> int:
        return self._message(
            conversation_id, outbox.OUT, sent_at=utcnow(), status=status, last_error=error
        )


def make_world(
    runtime: Runtime,
    monkeypatch: pytest.MonkeyPatch,
    language: str = "en",
    mapping: str | None = None,
) -> World:
    monkeypatch.setitem(crm_adapters.REGISTRY, "fake", "tests.unit.test_cascade:NotingCrm")
    fakes.STATE = fakes.FakeCrmState()
    NOTES.clear()
    (runtime.settings.mappings_dir / "fake.yaml").write_text(
        mapping or MAPPING.format(language=language)
    )
    tenant_id = admin.create_tenant(runtime, slug="acme", crm_kind="fake", mapping="fake.yaml")
    found = World(runtime, tenant_id)
    credentials = {"telegram": {"bot_token": "1:x", "secret_token": "s"}}
    for kind in ("whatsapp", "vk", "telegram", "viber", "max", "email"):
        found.accounts[kind] = admin.add_channel_account(
            runtime,
            tenant_id,
            kind=kind,
            credentials=credentials.get(kind, {}),
            external_id="2" if kind == "telegram" else f"{kind}-1",
        )
    return found


@pytest.fixture
def world(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    yield make_world(runtime, monkeypatch)


def _ask(text: str = "Your order is ready", *channels: str, wait: int = 30, key: str = "k1") -> Any:
    return cascade.parse_request(
        {"text": text, "channels": list(channels), "wait_minutes": wait, "key": key}
    )


def _state(rt: Runtime, uid: str, tenant_id: int) -> dict[str, Any]:
    shown = cascade.view(rt, tenant_id, uid)
    assert shown is not None
    return shown


def _steps(shown: dict[str, Any]) -> list[tuple[str, str, str | None]]:
    return [(s["channel"], s["state"], s["reason"]) for s in shown["steps"]]


def _cascade_messages(rt: Runtime) -> list[Message]:
    with rt.read_session() as session:
        return list(
            session.scalars(
                select(Message).where(Message.dedupe_key.like("cascade:%")).order_by(Message.id)
            )
        )


def _telegram_ok(rsps: responses.RequestsMock) -> None:
    rsps.post(
        SEND,
        json={
            "ok": True,
            "result": {"message_id": 101, "date": 1, "chat": {"id": 7, "type": "private"}},
        },
    )


def test_closed_window_and_denied_vk_are_skipped_and_telegram_delivers(world: World) -> None:
    rt = world.rt
    client = world.contact("crm-1")
    world.conversation(client, "whatsapp", last_inbound=utcnow() - dt.timedelta(hours=30))
    world.conversation(
        client, "vk", last_inbound=utcnow() - dt.timedelta(hours=2), consent="withdrawn"
    )
    tg = world.conversation(client, "telegram", last_inbound=utcnow() - dt.timedelta(hours=40))
    uid, created = cascade.start_once(
        rt, world.tenant_id, "crm-1", _ask("Your order is ready", "whatsapp", "vk", "telegram")
    )
    assert created
    shown = _state(rt, uid, world.tenant_id)
    assert _steps(shown) == [
        ("whatsapp", "skipped", "window_closed"),
        ("vk", "skipped", "denied"),
        ("telegram", "sending", None),
    ]
    (message,) = _cascade_messages(rt)
    assert (message.conversation_id, message.text) == (tg, "Your order is ready")
    with responses.RequestsMock() as rsps:
        _telegram_ok(rsps)
        run_outbound(rt, tg)
        assert len(rsps.calls) == 1
    cascade.sweep(rt)
    shown = _state(rt, uid, world.tenant_id)
    assert shown["state"] == "delivered"
    # Telegram's Bot API confirms no delivery: its accepting the send counts
    assert shown["delivered"]["channel"] == "telegram"
    assert shown["delivered"]["status"] == "sent"
    (message,) = _cascade_messages(rt)
    # a cascade's message is no rep's reply: no CRM delivery report is due
    assert (message.status, message.crm_message_id, message.followup_status) == ("sent", None, None)
    with rt.read_session() as session:
        cascade_id = session.scalar(select(Cascade.id).where(Cascade.uid == uid))
    assert cascade_id is not None
    assert cascade.note(rt, cascade_id) == "done"
    assert cascade.note(rt, cascade_id) == "not due"  # written once
    (note,) = NOTES
    assert note["contact"] == "crm-1" and note["key"] == f"cascade:{uid}"
    assert note["text"].splitlines()[:4] == [
        note["text"].splitlines()[0],
        "- WhatsApp: skipped (window closed, no template)",
        "- VK: skipped (messages denied)",
        "- Telegram: sent; the channel confirms no delivery",
    ]
    assert note["text"].startswith("Cascade message: delivered on Telegram (sent;")
    assert note["text"].endswith("Text: Your order is ready")


def test_the_note_is_in_the_mappings_language(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = make_world(runtime, monkeypatch, language="ru")
    client = world.contact("crm-ru")
    world.conversation(client, "vk", consent="withdrawn")
    uid, _ = cascade.start_once(
        runtime, world.tenant_id, "crm-ru", _ask("Привет", "vk", "telegram")
    )
    assert _state(runtime, uid, world.tenant_id)["state"] == "undelivered"
    with runtime.read_session() as session:
        cascade_id = session.scalar(select(Cascade.id).where(Cascade.uid == uid))
    assert cascade_id is not None and cascade.note(runtime, cascade_id) == "done"
    assert NOTES[0]["text"].splitlines() == [
        "Каскадное сообщение: не доставлено ни в один канал.",
        "- VK: пропущен (сообщения запрещены)",
        "- Telegram: пропущен (нет переписки или адреса в этом канале)",
        "Текст: Привет",
    ]


def test_a_wait_without_delivered_moves_on_and_a_delivered_status_ends_it(world: World) -> None:
    rt = world.rt
    client = world.contact("crm-2")
    wa = world.conversation(client, "whatsapp", last_inbound=utcnow() - dt.timedelta(hours=1))
    tg = world.conversation(client, "telegram", last_inbound=utcnow() - dt.timedelta(hours=1))
    uid, _ = cascade.start_once(
        rt, world.tenant_id, "crm-2", _ask("Hi", "whatsapp", "telegram", wait=10)
    )
    (wa_message,) = _cascade_messages(rt)
    assert wa_message.conversation_id == wa and wa_message.status == "pending"
    # nothing happens before the wait is over
    cascade.sweep(rt, now=utcnow() + dt.timedelta(minutes=9))
    assert _steps(_state(rt, uid, world.tenant_id))[0][1] == "sending"
    # ten minutes, still unsent: withdrawn, and the next channel goes
    cascade.sweep(rt, now=utcnow() + dt.timedelta(minutes=11))
    shown = _state(rt, uid, world.tenant_id)
    assert _steps(shown) == [
        ("whatsapp", "timed_out", "timed_out"),
        ("telegram", "sending", None),
    ]
    first, second = _cascade_messages(rt)
    assert (first.status, second.conversation_id) == ("refused", tg)
    assert "cascade moved on" in (first.last_error or "")

    # a second client: WhatsApp sends, then reports it delivered
    other = world.contact("crm-3")
    wa2 = world.conversation(other, "whatsapp", last_inbound=utcnow() - dt.timedelta(hours=1))
    uid2, _ = cascade.start_once(
        rt, world.tenant_id, "crm-3", _ask("Hi", "whatsapp", "telegram", wait=10, key="k2")
    )
    message = _cascade_messages(rt)[-1]
    assert message.conversation_id == wa2
    with rt.transaction() as session:
        row = session.get(Message, message.id)
        assert row is not None
        row.status, row.channel_message_ids = MessageStatus.SENT, ["wamid.1"]
    cascade.sweep(rt)
    assert _state(rt, uid2, world.tenant_id)["state"] == "running"  # sent is not delivered here
    jobs: list[tuple[str, int, str]] = []
    with rt.transaction() as session:
        status = OutboundStatus("whatsapp", "st-1", message.uid, "delivered")
        assert threads.outbound_status(session, world.accounts["whatsapp"], status, jobs)
    cascade.sweep(rt)
    shown = _state(rt, uid2, world.tenant_id)
    assert (shown["state"], shown["delivered"]["channel"], shown["delivered"]["status"]) == (
        "delivered",
        "whatsapp",
        "delivered",
    )
    assert _steps(shown)[1] == ("telegram", "waiting", None)  # never tried


def test_a_retried_cascade_job_stores_and_sends_nothing_twice(world: World) -> None:
    rt = world.rt
    client = world.contact("crm-4")
    tg = world.conversation(client, "telegram", last_inbound=utcnow() - dt.timedelta(hours=1))
    request = _ask("Once", "telegram")
    uid, created = cascade.start_once(rt, world.tenant_id, "crm-4", request)
    # the same POST again (a client retrying after a timeout): the same cascade
    assert cascade.start_once(rt, world.tenant_id, "crm-4", request) == (uid, False)
    with rt.read_session() as session:
        cascade_id = session.scalar(select(Cascade.id).where(Cascade.uid == uid))
    assert cascade_id is not None
    for _ in range(3):
        cascade.run_cascade(cascade_id)
    # a job that died after storing the message but whose step change was
    # lost still finds the message by its key
    with rt.transaction() as session:
        step = session.scalars(
            select(CascadeStep).where(CascadeStep.cascade_id == cascade_id)
        ).one()
        step.state, step.message_id = "waiting", None
    cascade.advance(rt, cascade_id)
    assert len(_cascade_messages(rt)) == 1
    with responses.RequestsMock() as rsps:
        _telegram_ok(rsps)
        run_outbound(rt, tg)
        run_outbound(rt, tg)
        assert len(rsps.calls) == 1
    for _ in range(2):
        cascade.sweep(rt)
        cascade.run_cascade(cascade_id)
    assert _state(rt, uid, world.tenant_id)["state"] == "delivered"
    with rt.read_session() as session:
        assert (
            session.scalar(
                select(func.count()).select_from(Message).where(Message.direction == outbox.OUT)
            )
            == 1
        )


def test_a_batch_skips_the_unsubscribed_and_takes_the_channels_shared_budget(
    world: World, monkeypatch: pytest.MonkeyPatch, redis_conn: Any
) -> None:
    rt = world.rt
    # a budget of one send on the account (the shared bucket), refilled
    # at the floor's 0.01 a second: a slow machine's seconds between the two
    # sends below give the second no token (1/30 of Telegram's 30 a second
    # refilled one in a second, and a loaded CI run sent both)
    monkeypatch.setattr(cascade, "SHARE", 1 / 3000)
    reachable = [world.contact(f"crm-{i}") for i in (10, 11)]
    for contact_id in reachable:
        world.conversation(contact_id, "telegram", last_inbound=utcnow())
    gone = world.contact("crm-12")
    world.conversation(
        gone, "viber", last_inbound=utcnow() - dt.timedelta(hours=1), consent="withdrawn"
    )
    request = cascade.parse_request(
        {
            "text": "Sale!",
            "channels": ["viber", "telegram"],
            "key": "promo-1",
            "contacts": ["crm-10", "crm-11", "crm-12", "nobody"],
        },
        batch=True,
    )
    batch, started, unknown = cascade.start_batch(rt, world.tenant_id, request)
    assert unknown == ["nobody"] and [c for c, _ in started] == ["crm-10", "crm-11", "crm-12"]
    states = {c: _state(rt, uid, world.tenant_id) for c, uid in started}
    assert _steps(states["crm-12"]) == [
        ("viber", "skipped", "unsubscribed"),
        ("telegram", "skipped", "no_conversation"),
    ]
    assert states["crm-12"]["state"] == "undelivered"
    # the first send took the bucket's one token; the second waits for it
    assert _steps(states["crm-10"])[1] == ("telegram", "sending", None)
    assert _steps(states["crm-11"])[1] == ("telegram", "waiting", None)
    assert len(_cascade_messages(rt)) == 1
    # the same batch again: the same cascades, nothing new
    assert cascade.start_batch(rt, world.tenant_id, request)[:2] == (batch, started)
    # the bucket refilled (here: emptied by hand): the sweeper sends the next
    for key in redis_conn.scan_iter("bridge:rl:cascade:*"):
        redis_conn.delete(key)
    # (its wait was the bucket's: one token at 0.01 a second)
    cascade.sweep(rt, now=utcnow() + dt.timedelta(seconds=101))
    assert _steps(_state(rt, started[1][1], world.tenant_id))[1] == ("telegram", "sending", None)
    assert len(_cascade_messages(rt)) == 2


def test_a_client_without_a_conversation_is_written_first_where_a_channel_can(
    world: World,
) -> None:
    rt = world.rt
    world.contact("crm-20", email="bob@example.test")
    uid, _ = cascade.start_once(rt, world.tenant_id, "crm-20", _ask("Hello", "telegram", "email"))
    assert _steps(_state(rt, uid, world.tenant_id)) == [
        ("telegram", "skipped", "no_conversation"),
        ("email", "sending", None),
    ]
    (message,) = _cascade_messages(rt)
    with rt.read_session() as session:
        conversation = session.get(Conversation, message.conversation_id)
        assert conversation is not None
        assert conversation.channel_account_id == world.accounts["email"]
        assert (conversation.channel_state or {}).get("subject") == "A message from acme"


def test_an_unknown_contact_is_not_found_and_a_reused_key_conflicts(world: World) -> None:
    rt = world.rt
    with pytest.raises(cascade.NotFound):
        cascade.start_once(rt, world.tenant_id, "nobody", _ask("Hi", "telegram"))
    world.contact("crm-30")
    cascade.start_once(rt, world.tenant_id, "crm-30", _ask("Hi", "telegram"))
    with pytest.raises(cascade.BadRequest) as raised:
        cascade.start_once(rt, world.tenant_id, "crm-30", _ask("Other text", "telegram"))
    assert raised.value.status == 409


# -- the outcome on a real CRM's timeline: the HubSpot sandbox over HTTP --------------


@pytest.fixture
def hubspot(settings: Any, redis_conn: Any) -> Iterator[tuple[Runtime, str]]:
    from sandbox.hubspot import create_app as sandbox_app
    from tests.support.servers import serve_wsgi

    with serve_wsgi(sandbox_app()) as server:
        changed = dataclasses.replace(settings, api_bases={"hubspot": server.url})
        changed.mappings_dir.mkdir(parents=True, exist_ok=True)
        rt = Runtime(changed, redis_connection=redis_conn)
        from bridge.migrate import upgrade

        upgrade(rt.engine)
        try:
            yield rt, server.url
        finally:
            rt.close()


def test_the_outcome_lands_on_the_hubspot_contacts_timeline(
    hubspot: tuple[Runtime, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.contracts.test_hubspot_contract import PORTAL_ID, HubSpotVendor

    rt, url = hubspot
    token = "pat-na1-11111111-1111-4111-8111-111111111111"  # the sandbox's seeded portal
    (rt.settings.mappings_dir / "hs.yaml").write_text(
        "crm: hubspot\nlanguage: en\nchannels:\n  vk: {object: none, timeline: note}\n"
    )
    tenant_id = admin.create_tenant(
        rt,
        slug="hs",
        crm_kind="hubspot",
        mapping="hs.yaml",
        credentials={"type": "private_app", "access_token": token},
        account_id=str(PORTAL_ID),
    )
    admin.setup_crm(rt, tenant_id)  # `bridge crm setup`: the bridge's properties
    vendor = HubSpotVendor(url, token)
    crm_id = vendor.seed_contact(name="Ann Lee")
    world = World(rt, tenant_id)
    world.accounts["vk"] = admin.add_channel_account(
        rt, tenant_id, kind="vk", credentials={}, external_id="vk-1"
    )
    client = world.contact(crm_id)
    world.conversation(
        client, "vk", last_inbound=utcnow() - dt.timedelta(hours=1), consent="withdrawn"
    )
    uid, _ = cascade.start_once(rt, tenant_id, crm_id, _ask("Your order is ready", "vk"))
    with rt.read_session() as session:
        cascade_id = session.scalar(select(Cascade.id).where(Cascade.uid == uid))
    assert cascade_id is not None
    assert cascade.note(rt, cascade_id) == "done"
    # a second job (the sweeper re-enqueued it) writes nothing more
    with rt.transaction() as session:
        row = session.get(Cascade, cascade_id)
        assert row is not None
        row.note_state, row.next_check = "pending", utcnow()
    assert cascade.note(rt, cascade_id) == "done"
    (note,) = [n for n in vendor.contact_notes(CrmRef("contact", crm_id)) if "Cascade" in n]
    assert "Cascade message: not delivered on any channel." in note
    assert "VK: skipped (messages denied)" in note
    assert _state(rt, uid, tenant_id)["note"] == "done"


def test_a_disabled_tenants_cascade_waits_and_goes_on_once_enabled(world: World) -> None:
    from bridge.tables import Tenant, TenantStatus

    rt = world.rt
    client = world.contact("crm-40")
    world.conversation(client, "telegram", last_inbound=utcnow() - dt.timedelta(hours=1))

    def status(value: str) -> None:
        with rt.transaction() as session:
            tenant = session.get(Tenant, world.tenant_id)
            assert tenant is not None
            tenant.status = value

    status(TenantStatus.DISABLED)
    uid, _ = cascade.start_once(rt, world.tenant_id, "crm-40", _ask("Hi", "telegram"))
    cascade.sweep(rt, now=utcnow() + dt.timedelta(minutes=2))
    assert _steps(_state(rt, uid, world.tenant_id)) == [("telegram", "waiting", None)]
    assert _cascade_messages(rt) == []
    status(TenantStatus.ACTIVE)
    cascade.sweep(rt, now=utcnow() + dt.timedelta(minutes=4))
    assert _steps(_state(rt, uid, world.tenant_id)) == [("telegram", "sending", None)]
    assert len(_cascade_messages(rt)) == 1


def test_deleting_the_tenant_deletes_its_cascades_and_tokens(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bridge import apitokens, lifecycle
    from bridge.tables import ApiToken

    # the channels' webhooks are not the point here (no provider is called)
    monkeypatch.setattr(lifecycle, "_stop_webhooks", lambda *_a, **_k: [])
    delete_tenant = lifecycle.delete_tenant
    rt = world.rt
    client = world.contact("crm-50")
    world.conversation(client, "telegram", last_inbound=utcnow() - dt.timedelta(hours=1))
    cascade.start_once(rt, world.tenant_id, "crm-50", _ask("Hi", "telegram"))
    apitokens.issue(rt, world.tenant_id)
    deleted, _ = delete_tenant(rt, world.tenant_id)
    assert deleted["messages"] == 2  # the client's and the cascade's (the step let go of it)
    with rt.read_session() as session:
        for table in (Cascade, CascadeStep, ApiToken, Message):
            assert session.scalar(select(func.count()).select_from(table)) == 0
