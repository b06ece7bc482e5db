"""Reachability per channel (``ChannelAdapter.reachability``) and per client
(``bridge.reach``).

The channel hooks are pure (a ``ReachView`` in, a ``Reach`` out): each
channel's rule is checked on its own. ``for_contact`` and ``summary`` run on
real SQLite/PostgreSQL: a client's conversations (merges followed), an
address a channel can write to first, and the one line the CRM contact's
``{client.reachable}`` field shows."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select

from bridge import reach
from bridge.model import InboundMessage, MessageKind, SenderProfile, utcnow
from bridge.pipeline.inbound import AccountRef, accept, run_inbound
from bridge.registry import channel_class
from bridge.runtime import Runtime
from bridge.tables import Contact, Conversation, MessageStatus
from channel_adapters.base import ReachView
from tests.support import fakes
from tests.unit.test_cascade import World, make_world, world  # noqa: F401 (the fixture)

NOW = dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.UTC)
HOUR = dt.timedelta(hours=1)


def _reach(kind: str, **view: object) -> tuple[bool, str]:
    answer = channel_class(kind).reachability(ReachView(now=NOW, **view))  # type: ignore[arg-type]
    return answer.reachable, answer.reason


def test_a_channel_reaches_a_client_unless_they_withdrew_or_the_last_send_failed() -> None:
    assert _reach("custom", last_inbound_at=NOW - HOUR) == (True, "ok")
    assert _reach("custom", consent="withdrawn", consent_at=NOW - HOUR) == (
        False,
        "consent_withdrawn",
    )
    assert _reach("custom", last_failure="Custom 400: chat gone", last_failure_at=NOW) == (
        False,
        "failed",
    )


def test_whatsapp_is_free_inside_its_window_and_template_only_outside_it() -> None:
    assert _reach("whatsapp", last_inbound_at=NOW - HOUR) == (True, "window_open")
    assert _reach("whatsapp", last_inbound_at=NOW - 25 * HOUR, template=True) == (True, "template")
    assert _reach("whatsapp", last_inbound_at=NOW - 25 * HOUR) == (False, "window_closed")
    assert _reach("whatsapp") == (False, "window_closed")  # never wrote


def test_messenger_consent_is_said_in_each_channels_words() -> None:
    withdrawn = {
        "consent": "withdrawn",
        "consent_at": NOW - HOUR,
        "last_inbound_at": NOW - 2 * HOUR,
    }
    assert _reach("vk", **withdrawn) == (False, "denied")
    assert _reach("max", **withdrawn) == (False, "stopped")
    assert _reach("viber", **withdrawn) == (False, "unsubscribed")
    assert _reach("vk", consent="allowed", consent_at=NOW - HOUR) == (True, "ok")
    # a Viber or VK user who writes after unsubscribing is reachable again
    # (FACTS §3/§4); MAX needs bot_started, writing is not enough
    wrote_since = {**withdrawn, "last_inbound_at": NOW - dt.timedelta(minutes=5)}
    assert _reach("viber", **wrote_since) == (True, "ok")
    assert _reach("vk", **wrote_since) == (True, "ok")
    assert _reach("max", **wrote_since) == (False, "stopped")


def test_telegram_is_blocked_once_a_send_said_so_and_email_once_it_bounced() -> None:
    blocked = "Telegram 403: Forbidden: bot was blocked by the user"
    assert _reach("telegram", last_failure=blocked, last_failure_at=NOW) == (False, "blocked")
    other = "Telegram 400: Bad Request: message is too long"
    assert _reach("telegram", last_failure=other, last_failure_at=NOW) == (False, "failed")
    bounced = "bounced: 5.1.1 user unknown"
    assert _reach("email", last_failure=bounced, last_failure_at=NOW) == (False, "bounced")
    assert _reach("email") == (True, "ok")


def test_a_clients_channels_follow_merges_and_sum_up_in_one_line(world: World) -> None:  # noqa: F811
    client = world.contact("crm-1", email="ann@example.test")
    wa = world.conversation(client, "whatsapp", last_inbound=utcnow() - 30 * HOUR)
    tg = world.conversation(client, "telegram", last_inbound=utcnow() - HOUR)
    world.outbound(tg, MessageStatus.FAILED, "Telegram 403: Forbidden: bot was blocked by the user")
    # a second contact merged into the first: its id still finds the client
    gone = world.contact(None)
    with world.rt.transaction() as session:
        row = session.get(Contact, gone)
        assert row is not None
        row.merged_into_id = client
    with world.rt.read_session() as session:
        answers = reach.for_contact(session, gone)
    by_kind = {a.kind: a for a in answers}
    assert (by_kind["whatsapp"].conversation_id, by_kind["whatsapp"].reason) == (
        wa,
        "window_closed",
    )
    assert (by_kind["telegram"].reachable, by_kind["telegram"].reason) == (False, "blocked")
    # the e-mail channel writes first to the address the client has
    assert (by_kind["email"].conversation_id, by_kind["email"].reason) == (None, "opens")
    assert by_kind["email"].address == "ann@example.test"
    assert reach.summary(answers, "en") == (
        "WhatsApp: window closed, no template; Telegram: blocked; E-mail: yes (a new thread)"
    )
    assert reach.summary(answers, "ru") == (
        "WhatsApp: окно закрыто, шаблона нет; Telegram: заблокирован; E-mail: да (новая переписка)"
    )


def test_the_client_writing_again_makes_an_old_failure_old_news(world: World) -> None:  # noqa: F811
    client = world.contact("crm-2")
    tg = world.conversation(client, "telegram", last_inbound=utcnow() - 2 * HOUR)
    world.outbound(tg, MessageStatus.FAILED, "Telegram 403: Forbidden: bot was blocked by the user")
    world.inbound(tg, utcnow() + dt.timedelta(seconds=5))  # unblocked, and wrote
    with world.rt.read_session() as session:
        (answer,) = [a for a in reach.for_contact(session, client) if a.kind == "telegram"]
    assert (answer.reachable, answer.reason) == (True, "ok")


@pytest.mark.parametrize("reason", sorted(reach.WORDS))
def test_every_reason_is_worded_in_english_and_russian(reason: str) -> None:
    assert set(reach.WORDS[reason]) >= {"en", "ru"}


def test_the_crm_contact_field_shows_the_summary_when_the_mapping_asks(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    mapping = (
        "crm: fake\nlanguage: en\nchannels:\n  telegram:\n    object: none\n    timeline: note\n"
        '    fields: {contact: {reach_now: "{client.reachable}"}}\n'
    )
    built = make_world(runtime, monkeypatch, mapping=mapping)
    account = AccountRef(built.accounts["telegram"], built.tenant_id, "telegram")
    accept(
        runtime,
        account,
        [
            InboundMessage(
                channel_kind="telegram",
                external_id="u1",
                external_user_id="42",
                external_thread_id="42",
                kind=MessageKind.TEXT,
                sent_at=utcnow(),
                text="Hi",
                profile=SenderProfile(first_name="Ann"),
            )
        ],
    )
    with runtime.read_session() as session:
        conversation_id = session.scalars(select(Conversation.id)).one()
    run_inbound(runtime, conversation_id)
    (crm_contact,) = fakes.STATE.contacts.values()
    assert crm_contact["properties"] == {"reach_now": "Telegram: yes"}
