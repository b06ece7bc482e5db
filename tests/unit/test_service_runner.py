"""The service layer in the pipeline (``bridge.service.runner``): the
issue's scenario on the real pipeline and database (SQLite and
PostgreSQL), the CRM being the fake adapter, time passed in through the
messages' and events' own times (never slept).

A new client writes at 23:00 (Moscow) on Telegram: the greeting menu and
the out-of-hours notice once, a task due at 09:00 for the line; they pick
"order status": the knowledge base's answer, routed to line 1; the
operator answers at 09:05 (first response recorded, no SLA breach), then
moves the session to line 2 with ``/transfer 2`` (the client told once,
the command not sent); the CRM closes the deal: the session closes and the
client is asked for a rating; they answer 2: the rating on the session and
in the CRM, one alert task for the supervisor."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path

import pytest
from sqlalchemy import select

from bridge import admin, create_app, outbox
from bridge.model import (
    CrmEvent,
    CrmEventKind,
    CrmRef,
    InboundMessage,
    MessageKind,
    SenderProfile,
)
from bridge.pipeline.inbound import AccountRef, accept
from bridge.pipeline.outbound.accept import accept_crm_events
from bridge.runtime import Runtime
from bridge.service import assist, runner
from bridge.tables import (
    Conversation,
    Message,
    MessageStatus,
    ServiceAction,
    ServiceSession,
    TenantService,
)
from tests.support import fakes

MSK = dt.timezone(dt.timedelta(hours=3))
#: Monday 7 December 2026, 23:00 in Moscow
NIGHT = dt.datetime(2026, 12, 7, 23, 0, tzinfo=MSK)
ROOT = Path(__file__).resolve().parents[2]

MAPPING = """\
crm: fake
language: en
channels:
  telegram:
    object: deal
    timeline: note
service:
  defaults:
    hours:
      timezone: Europe/Moscow
      week: {mon-fri: "09:00-18:00"}
    sla:
      default: {first_response: 1h, warn_share: 0.8}
    supervisor: {user: "900"}
    csat: {enabled: true, threshold: 3}
  lines:
    support:
      title: {en: Support, ru: Поддержка}
      members: ["201", "202"]
    support_2:
      title: {en: Second line, ru: Вторая линия}
      members: ["301"]
  default_line: support
  knowledge_base: kb/acme.yaml
  suggestions: {enabled: true, count: 2}
  transfer: {numbers: {"1": support, "2": support_2}}
  menus:
    main:
      text: {en: "Hello! What can we help you with?", ru: "Здравствуйте! Чем помочь?"}
      options:
        - label: {en: Buy, ru: Купить}
          line: support
        - label: {en: Order status, ru: Статус заказа}
          knowledge: order-status
          line: support
  greetings:
    - {menu: main, channels: [telegram]}
"""


@pytest.fixture
def world(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> tuple[Runtime, int, int]:
    monkeypatch.setitem(__import__("crm_adapters").REGISTRY, "fake", "tests.support.fakes:FakeCrm")
    fakes.STATE = fakes.FakeCrmState()
    assist.forget()
    mappings = runtime.settings.mappings_dir
    (mappings / "shop.yaml").write_text(MAPPING, encoding="utf-8")
    (mappings / "kb").mkdir(exist_ok=True)
    kb = (ROOT / "mappings/examples/kb/acme.yaml").read_text(encoding="utf-8")
    (mappings / "kb/acme.yaml").write_text(kb, encoding="utf-8")
    tenant = admin.create_tenant(runtime, slug="shop", crm_kind="fake", mapping="shop.yaml")
    account = admin.add_channel_account(
        runtime,
        tenant,
        kind="telegram",
        credentials={"bot_token": "1:x", "secret_token": "s"},
        external_id="2",
    )
    return runtime, tenant, account


def _writes(
    world: tuple[Runtime, int, int], text: str, at: dt.datetime, n: int, language: str | None = None
) -> int:
    runtime, tenant, account = world
    ref = AccountRef(account, tenant, "telegram", *runtime.ingest_view(tenant))
    assert ref.service
    accept(
        runtime,
        ref,
        [
            InboundMessage(
                channel_kind="telegram",
                external_id=f"m{n}",
                external_user_id="42",
                external_thread_id="42",
                kind=MessageKind.TEXT,
                sent_at=_utc(at),  # channels give UTC (SQLite keeps no offset)
                text=text,
                profile=SenderProfile(first_name="Ann", language=language),
            )
        ],
    )
    with runtime.read_session() as session:
        conversation_id = session.scalars(select(Conversation.id)).one()
    assert runner.run_service(runtime, conversation_id) == "idle"
    return conversation_id


def _said(runtime: Runtime) -> list[tuple[str, str]]:
    """What the bridge sent the client itself: (kind, text)."""
    with runtime.read_session() as session:
        rows = session.scalars(
            select(Message).where(Message.direction == outbox.OUT).order_by(Message.seq)
        ).all()
        return [
            ((m.payload or {}).get("service", "reply"), m.text or "")
            for m in rows
            if m.status != MessageStatus.REFUSED
        ]


def _actions(runtime: Runtime) -> list[ServiceAction]:
    with runtime.read_session() as session:
        rows = list(session.scalars(select(ServiceAction).order_by(ServiceAction.id)))
        for row in rows:
            session.expunge(row)
        return rows


def _sessions(runtime: Runtime) -> list[ServiceSession]:
    with runtime.read_session() as session:
        rows = list(session.scalars(select(ServiceSession).order_by(ServiceSession.number)))
        for row in rows:
            session.expunge(row)
        return rows


def _crm(runtime: Runtime, tenant: int, *events: CrmEvent) -> None:
    accept_crm_events(runtime, tenant, events)


def test_a_night_client_is_greeted_routed_answered_moved_and_rated(
    world: tuple[Runtime, int, int],
) -> None:
    runtime, tenant, _ = world
    conversation = _writes(world, "Hi, where is my parcel?", NIGHT, 1)
    said = _said(runtime)
    assert [kind for kind, _ in said] == ["menu", "notice"]
    assert "2 — Order status" in said[0][1] and "0 — Talk to a person" in said[0][1]
    assert "tomorrow at 09:00" in said[1][1]
    # the menu's entries go with it as buttons, for the channels that show them
    with runtime.read_session() as session:
        shown = session.scalars(
            select(Message).where(Message.direction == outbox.OUT).order_by(Message.seq)
        ).first()
        assert shown is not None
        assert shown.payload["buttons"] == [
            ["1", "Buy"],
            ["2", "Order status"],
            ["0", "Talk to a person"],
        ]
    (task,) = [a for a in _actions(runtime) if a.kind == "task"]
    assert task.kind == "task" and task.payload["owner"] == "900"
    assert dt.datetime.fromisoformat(task.payload["due"]) == dt.datetime(
        2026, 12, 8, 9, 0, tzinfo=MSK
    )

    # a second message the same night: no second notice, the menu again
    _writes(world, "hello?", NIGHT + dt.timedelta(minutes=1), 2)
    assert [kind for kind, _ in _said(runtime)] == ["menu", "notice", "menu"]

    # the client picks "order status": the knowledge base answers, line 1
    _writes(world, "2", NIGHT + dt.timedelta(minutes=2), 3)
    said = _said(runtime)
    assert said[-1][0] == "answer" and "My orders" in said[-1][1]
    (row,) = _sessions(runtime)
    assert (row.line, row.menu, row.owner_id) == ("support", None, None)  # nobody on shift
    notes = [a.payload["text"] for a in _actions(runtime) if a.kind == "note"]
    assert "The client chose in the menu: Order status" in notes
    assert any(n.startswith("Routed to Support") for n in notes)

    # the CRM's side: the tasks and notes are written once each
    _sync_crm(runtime, conversation)
    _run_actions(runtime, NIGHT + dt.timedelta(hours=1))
    deal = fakes.STATE.entities["d-1"]
    # the line and the first response's due time on the deal: an hour of
    # the line's working time after it opens at 09:00
    assert deal["properties"]["service_line"] == "Support"
    assert deal["properties"]["sla_due"] == "2026-12-08 07:00 UTC"
    assert [t["subject"] for t in fakes.STATE.tasks] == [
        "The client wrote out of hours: answer at opening"
    ]
    assert runner.run_action(runtime, task.id) == "not due"  # done: never twice

    # the operator answers at 09:05: the first response, within the SLA
    morning = dt.datetime(2026, 12, 8, 9, 5, tzinfo=MSK)
    _crm(runtime, tenant, _reply(runtime, "r1", "Your order ships today", morning, conversation))
    (row,) = _sessions(runtime)
    assert row.first_response_at is not None
    assert _aware(row.first_response_at) == morning
    runner.sweep(runtime, now=_utc(morning) + dt.timedelta(hours=3))
    assert not [a for a in _actions(runtime) if a.key.startswith("sla:")]

    # ... then passes it to line 2: the client is told once, the command is not sent
    _crm(
        runtime,
        tenant,
        _reply(runtime, "r2", "/transfer 2", morning + dt.timedelta(minutes=1), conversation),
    )
    said = _said(runtime)
    assert said[-1][0] == "transfer" and "Second line" in said[-1][1]
    assert "/transfer 2" not in [text for _, text in said]
    (row,) = _sessions(runtime)
    assert row.line == "support_2"

    # the CRM closes the deal: the session closes, the client is asked to rate
    closing = morning + dt.timedelta(minutes=10)
    _crm(runtime, tenant, _closed(conversation, runtime, closing))
    (row,) = _sessions(runtime)
    assert row.close_reason == "crm_closed" and row.closed_at is not None
    assert _said(runtime)[-1][0] == "csat"

    # they rate it 2: on the session, in the CRM, one alert for the supervisor
    _writes(world, "2", closing + dt.timedelta(minutes=3), 4)
    (row,) = _sessions(runtime)
    assert row.rating == 2
    assert _said(runtime)[-1][0] == "thanks"
    alerts = [a for a in _actions(runtime) if a.key.startswith("csat-low:")]
    assert len(alerts) == 1 and alerts[0].payload["owner"] == "900"
    assert any(a.payload["text"] == "The client rated session 1: 2/5" for a in _actions(runtime))
    _run_actions(runtime, closing + dt.timedelta(minutes=5))
    assert deal["properties"]["csat_score"] == "2"
    assert [t["owner"] for t in fakes.STATE.tasks] == ["900", "900"]  # the morning, the alert
    # the sync writes the rating to the closed deal instead of opening a new
    # one (a rating is no new request); a new question opens one
    rated_at = _utc(closing + dt.timedelta(minutes=3))
    assert runner.answers_closed_session(runtime, conversation, [("2", rated_at)]) == 1
    later = _utc(closing + dt.timedelta(hours=2))
    assert runner.answers_closed_session(runtime, conversation, [("One more thing", later)]) == 0
    # the same rating again changes nothing, and opens no session
    _writes(world, "2", closing + dt.timedelta(minutes=4), 5)
    assert len([a for a in _actions(runtime) if a.key.startswith("csat-low:")]) == 1


def test_an_operator_who_answered_just_before_closing_gets_no_notice_sent_on_their_behalf(
    world: tuple[Runtime, int, int],
) -> None:
    runtime, tenant, _ = world
    day = dt.datetime(2026, 12, 8, 17, 50, tzinfo=MSK)
    conversation = _writes(world, "Hi", day, 1)
    _writes(world, "1", day + dt.timedelta(minutes=1), 2)  # "Buy"
    _crm(
        runtime,
        tenant,
        _reply(
            runtime, "r1", "Hello, how can I help?", day + dt.timedelta(minutes=5), conversation
        ),
    )
    # 18:02: after closing, mid-dialog: no notice
    _writes(world, "I want the red one", day + dt.timedelta(minutes=12), 3)
    assert "notice" not in [kind for kind, _ in _said(runtime)]


def test_an_idle_session_closes_and_a_new_message_opens_the_next(
    world: tuple[Runtime, int, int],
) -> None:
    runtime, tenant, _ = world
    day = dt.datetime(2026, 12, 8, 10, 0, tzinfo=MSK)
    conversation = _writes(world, "Hi", day, 1)
    _writes(world, "1", day + dt.timedelta(minutes=1), 2)
    _crm(
        runtime, tenant, _reply(runtime, "r1", "Hello", day + dt.timedelta(minutes=2), conversation)
    )
    # the line's idle hours (24 by default) pass: the sweeper closes it
    runner.sweep(runtime, now=_utc(day) + dt.timedelta(hours=25))
    (row,) = _sessions(runtime)
    assert row.close_reason == "idle"
    assert _said(runtime)[-1][0] == "csat"  # an operator had answered
    _writes(world, "Me again", day + dt.timedelta(days=3), 3)
    rows = _sessions(runtime)
    assert [(r.number, r.closed_at is None) for r in rows] == [(1, False), (2, True)]


def test_a_first_response_past_its_target_alerts_the_supervisor_once(
    world: tuple[Runtime, int, int],
) -> None:
    runtime, _, _ = world
    day = dt.datetime(2026, 12, 8, 10, 0, tzinfo=MSK)
    _writes(world, "Hi", day, 1)
    _writes(world, "1", day + dt.timedelta(minutes=1), 2)
    # bridge status lists it once its due time is within the hour, then as breached
    assert runner.at_risk(runtime, now=_utc(day) - dt.timedelta(minutes=5)) == []
    (risk,) = runner.at_risk(runtime, now=_utc(day) + dt.timedelta(minutes=30))
    assert (risk["line"], risk["breached"], risk["due"]) == (
        "support",
        False,
        _utc(day) + dt.timedelta(hours=1),
    )
    (risk,) = runner.at_risk(runtime, now=_utc(day) + dt.timedelta(minutes=70))
    assert risk["breached"]
    for minutes in (50, 61, 62, 90):
        runner.sweep(runtime, now=_utc(day) + dt.timedelta(minutes=minutes))
    keys = sorted(a.key.split(":")[4] for a in _actions(runtime) if a.key.startswith("sla:"))
    assert keys == ["breach", "warning"]


# -- helpers ----------------------------------------------------------------------------------


def _utc(at: dt.datetime) -> dt.datetime:
    return at.astimezone(dt.UTC)


def _aware(at: dt.datetime) -> dt.datetime:
    return at if at.tzinfo else at.replace(tzinfo=dt.UTC)


def _reply(runtime: Runtime, uid: str, text: str, at: dt.datetime, conversation: int) -> CrmEvent:
    """A rep's reply in the conversation's thread (the CRM echoes our uid)."""
    with runtime.read_session() as session:
        conv = session.get(Conversation, conversation)
        assert conv is not None
        thread = conv.uid
    return CrmEvent(
        kind=CrmEventKind.REPLY,
        external_id=uid,
        occurred_at=_utc(at),
        thread_key=thread,
        text=text,
        author_id="201",
    )


def _sync_crm(runtime: Runtime, conversation: int) -> None:
    """The CRM side as the sync leaves it: the contact and the deal."""
    with runtime.transaction() as session:
        conv = session.get(Conversation, conversation)
        assert conv is not None
        conv.crm_contact_id, conv.crm_entity_type, conv.crm_entity_id = "c-1", "deal", "d-1"
    fakes.STATE.contacts["c-1"] = {"identities": {}, "phones": [], "emails": [], "properties": {}}
    fakes.STATE.entities["d-1"] = {"type": "deal", "owner": None, "properties": {}}


def _run_actions(runtime: Runtime, now: dt.datetime) -> None:
    for action in _actions(runtime):
        if action.state == "pending":
            assert runner.run_action(runtime, action.id, now=_utc(now)) == "done", action.key


def _closed(conversation: int, runtime: Runtime, at: dt.datetime) -> CrmEvent:
    return CrmEvent(
        kind=CrmEventKind.ENTITY_CLOSED,
        external_id="closed-1",
        occurred_at=_utc(at),
        entity=CrmRef("deal", "d-1"),
    )


def test_the_operator_reads_suggested_replies_and_their_answer_ranks_them(
    world: tuple[Runtime, int, int],
) -> None:
    runtime, tenant, _ = world
    day = dt.datetime(2026, 12, 8, 11, 0, tzinfo=MSK)
    conversation = _writes(world, "Hi", day, 1)
    _writes(world, "1", day + dt.timedelta(minutes=1), 2)
    _writes(world, "как оформить возврат товара", day + dt.timedelta(minutes=2), 3)
    (note,) = [a for a in _actions(runtime) if a.key.startswith("suggest:")]
    head, first = note.payload["text"].split("\n")[:2]
    # the operators' words (the mapping's language); the answer in the client's
    assert head == "Suggested replies:"
    assert first.startswith("1. Оформите возврат в личном кабинете")
    (row,) = _sessions(runtime)
    assert row.suggested and row.suggested[0]["id"] == "return-how"
    assert "answer" not in [kind for kind, _ in _said(runtime)]  # open hours: the operator answers
    # the operator sends the suggestion (edited a little): accepted
    reply = "Оформите возврат в личном кабинете, распечатайте ярлык и сдайте посылку"
    _crm(runtime, tenant, _reply(runtime, "r1", reply, day + dt.timedelta(minutes=5), conversation))
    with runtime.read_session() as session:
        state = session.get(TenantService, tenant)
        assert state is not None and state.suggestions
        counts = state.suggestions
    (row,) = _sessions(runtime)
    assert row.suggested is None
    assert "kb:return-how" in str(counts)
    # the session's own counts, for the KPIs: one reply to a suggested message, taken
    assert (row.suggestions_answered, row.suggestions_accepted) == (1, 1)
    # another suggested message, answered in words of the operator's own: not taken
    _writes(world, "как оформить возврат товара?", day + dt.timedelta(minutes=6), 4)
    answer = "Позвоните нам, пожалуйста"
    _crm(
        runtime, tenant, _reply(runtime, "r2", answer, day + dt.timedelta(minutes=7), conversation)
    )
    (row,) = _sessions(runtime)
    assert (row.suggestions_answered, row.suggestions_accepted) == (2, 1)


def test_out_of_hours_the_bot_answers_a_self_service_question(
    world: tuple[Runtime, int, int],
) -> None:
    runtime, _, _ = world
    _writes(world, "Hi", NIGHT, 1)
    _writes(world, "1", NIGHT + dt.timedelta(minutes=1), 2)
    _writes(world, "How do I return an item?", NIGHT + dt.timedelta(minutes=2), 3)
    kind, text = _said(runtime)[-1]
    assert kind == "answer" and "print the label" in text
    notes = [a.payload["text"] for a in _actions(runtime) if a.key.startswith("self:")]
    assert notes == [
        "Answered automatically from the knowledge base (return-how); no operator was needed."
    ]


def test_a_mail_client_rates_by_a_signed_link_once(
    world: tuple[Runtime, int, int],
) -> None:
    runtime, tenant, _ = world
    mappings = runtime.settings.mappings_dir
    mapping = MAPPING.replace(
        "channels:\n  telegram:",
        "channels:\n  email:\n    object: deal\n    timeline: note\n  telegram:",
    )
    (mappings / "shop.yaml").write_text(mapping, encoding="utf-8")
    mail = admin.add_channel_account(
        runtime, tenant, kind="email", credentials={}, external_id="support@shop.example"
    )
    day = dt.datetime(2026, 12, 8, 10, 0, tzinfo=MSK)
    ref = AccountRef(mail, tenant, "email", *runtime.ingest_view(tenant))
    accept(
        runtime,
        ref,
        [
            InboundMessage(
                channel_kind="email",
                external_id="<m1@client.example>",
                external_user_id="ann@client.example",
                external_thread_id="ann@client.example",
                kind=MessageKind.TEXT,
                sent_at=_utc(day),
                text="Where is my order?",
                profile=SenderProfile(first_name="Ann", email="ann@client.example"),
            )
        ],
    )
    with runtime.read_session() as session:
        conversation = session.scalars(select(Conversation.id)).one()
    assert runner.run_service(runtime, conversation) == "idle"
    _crm(
        runtime,
        tenant,
        _reply(runtime, "r1", "It ships today", day + dt.timedelta(minutes=5), conversation),
    )
    _sync_crm(runtime, conversation)
    _crm(runtime, tenant, _closed(conversation, runtime, day + dt.timedelta(minutes=9)))
    kind, prompt = _said(runtime)[-1]
    assert kind == "csat"
    links = dict(line.split(" — ") for line in prompt.splitlines() if " — http" in line)
    assert sorted(links) == ["1", "2", "3", "4", "5"]
    http = create_app(runtime=runtime).test_client()
    path = links["2"].split("://", 1)[1].split("/", 1)[1]
    answer = http.get("/" + path)
    assert answer.status_code == 200 and "Thank you for your rating" in answer.text
    assert "Спасибо за оценку" in answer.text
    (row,) = _sessions(runtime)
    assert row.rating == 2
    assert len([a for a in _actions(runtime) if a.key.startswith("csat-low:")]) == 1
    # another score's link, later: rated already, nothing changes
    again = http.get("/" + links["5"].split("://", 1)[1].split("/", 1)[1])
    assert again.status_code == 200 and "rated already" in again.text
    assert [r.rating for r in _sessions(runtime)] == [2]
    assert len([a for a in _actions(runtime) if a.key.startswith("csat-low:")]) == 1
    # a link tampered with is refused, with a reason
    token = path.split("token=", 1)[1]
    bad = http.get(f"/service/rate?token={token[:-2]}xx")
    assert bad.status_code == 400 and bad.get_json()["error"] == "bad_link"


def test_an_urgent_first_message_gets_its_prioritys_targets(
    world: tuple[Runtime, int, int],
) -> None:
    runtime, _, _ = world
    mapping = MAPPING.replace(
        "    object: deal\n    timeline: note\n",
        "    object: deal\n    timeline: note\n"
        "    priority: {rules: [{keyword: urgent, value: high}]}\n",
    ).replace(
        "      default: {first_response: 1h, warn_share: 0.8}",
        "      default: {first_response: 1h, warn_share: 0.8}\n      high: {first_response: 15m}",
    )
    (runtime.settings.mappings_dir / "shop.yaml").write_text(mapping, encoding="utf-8")
    day = dt.datetime(2026, 12, 8, 10, 0, tzinfo=MSK)
    _writes(world, "URGENT: my order is lost", day, 1)
    _writes(world, "1", day + dt.timedelta(minutes=1), 2)  # the choice keeps the session's priority
    (risk,) = runner.at_risk(runtime, now=_utc(day))
    assert risk["due"] == _utc(day) + dt.timedelta(minutes=15)


def test_a_crm_stage_moves_the_session_and_a_crm_field_routes_it(
    world: tuple[Runtime, int, int],
) -> None:
    runtime, tenant, _ = world
    mapping = MAPPING.replace(
        '  transfer: {numbers: {"1": support, "2": support_2}}',
        '  transfer: {numbers: {"1": support, "2": support_2}, stages: {ESCALATED: support_2}}\n'
        "  rules:\n    - {line: support_2, field: tier, values: [vip]}",
    )
    (runtime.settings.mappings_dir / "shop.yaml").write_text(mapping, encoding="utf-8")
    day = dt.datetime(2026, 12, 8, 10, 0, tzinfo=MSK)
    conversation = _writes(world, "Hi", day, 1)
    _sync_crm(runtime, conversation)
    with runtime.transaction() as session:
        contact = session.get(Conversation, conversation)
        assert contact is not None
        from bridge.tables import Contact

        row = session.get(Contact, contact.contact_id)
        assert row is not None
        row.crm_contact_id = "c-1"
    fakes.STATE.contacts["c-1"]["fields"] = {"tier": "VIP"}
    # "0": a person, routed by the rules: the client's CRM tier is vip
    _writes(world, "0", day + dt.timedelta(minutes=1), 2)
    (row,) = _sessions(runtime)
    assert (row.line, row.owner_id) == ("support_2", "301")
    assert "read_contact_fields" in fakes.STATE.calls

    # a regular client: the stage the rep moves the deal to moves the session
    fakes.STATE.contacts["c-1"]["fields"] = {}
    runner.sweep(runtime, now=_utc(day) + dt.timedelta(days=2))  # the session goes idle
    _writes(world, "Hi again", day + dt.timedelta(days=2), 3)
    _writes(world, "0", day + dt.timedelta(days=2, minutes=1), 4)
    assert _sessions(runtime)[-1].line == "support"
    stage = CrmEvent(
        kind=CrmEventKind.ENTITY_STAGE,
        external_id="stage-1",
        occurred_at=_utc(day + dt.timedelta(days=2, minutes=5)),
        entity=CrmRef("deal", "d-1"),
        stage="ESCALATED",
    )
    _crm(runtime, tenant, stage)
    assert _sessions(runtime)[-1].line == "support_2"
    assert _said(runtime)[-1][0] == "transfer"
    _crm(runtime, tenant, stage)  # delivered again: moves nothing, says nothing more
    assert [kind for kind, _ in _said(runtime)].count("transfer") == 1


def test_a_menu_choice_tags_the_deal_and_a_crm_tag_or_closed_chat_acts_on_the_session(
    world: tuple[Runtime, int, int],
) -> None:
    """Tags where the CRM has them: the option's tags added to the deal (the
    tags it had kept); a tag the mapping's ``transfer.tags`` names moves the
    session (told once; the same tags again move nothing); the CRM closing
    its chat session (``THREAD_CLOSED``, e.g. Bitrix24's Open Lines) closes
    the service session and asks for the rating, the deal staying open."""
    runtime, tenant, _ = world
    mapping = MAPPING.replace(
        '  transfer: {numbers: {"1": support, "2": support_2}}',
        '  transfer: {numbers: {"1": support, "2": support_2}, tags: {escalate: support_2}}',
    ).replace(
        "          knowledge: order-status\n          line: support",
        "          knowledge: order-status\n          line: support\n          tags: [orders, web]",
    )
    assert "tags: [orders, web]" in mapping
    (runtime.settings.mappings_dir / "shop.yaml").write_text(mapping, encoding="utf-8")
    day = dt.datetime(2026, 12, 8, 10, 0, tzinfo=MSK)
    conversation = _writes(world, "Hi", day, 1)
    _sync_crm(runtime, conversation)
    fakes.STATE.entities["d-1"]["tags"] = ["manual"]
    _writes(world, "2", day + dt.timedelta(minutes=1), 2)
    _run_actions(runtime, day + dt.timedelta(minutes=2))
    assert fakes.STATE.entities["d-1"]["tags"] == ["manual", "orders", "web"]
    (note,) = [a for a in _actions(runtime) if a.key.startswith("menu:")]
    assert note.payload["fields"] == {"choice": "main:2"}  # for the KPIs
    assert _sessions(runtime)[-1].line == "support"

    def tagged(n: int, *tags: str) -> CrmEvent:
        return CrmEvent(
            kind=CrmEventKind.ENTITY_TAGS,
            external_id=f"tags-{n}",
            occurred_at=_utc(day + dt.timedelta(minutes=5 + n)),
            entity=CrmRef("deal", "d-1"),
            tags=tags,
        )

    _crm(runtime, tenant, tagged(1, "manual", "orders"))  # no tag of transfer.tags
    assert _sessions(runtime)[-1].line == "support"
    _crm(runtime, tenant, tagged(2, "manual", "Escalate"))  # case aside
    assert _sessions(runtime)[-1].line == "support_2"
    _crm(runtime, tenant, tagged(3, "manual", "Escalate", "later"))
    assert [kind for kind, _ in _said(runtime)].count("transfer") == 1

    # the operator answers; then the CRM closes its chat session: the
    # service session closes, the rating asked
    _crm(
        runtime,
        tenant,
        _reply(runtime, "r-1", "Shipped", day + dt.timedelta(minutes=15), conversation),
    )
    with runtime.read_session() as session:
        conv = session.get(Conversation, conversation)
        assert conv is not None
        uid = conv.uid
    closed = CrmEvent(
        kind=CrmEventKind.THREAD_CLOSED,
        external_id="dialog-1",
        occurred_at=_utc(day + dt.timedelta(minutes=20)),
        thread_key=uid,
    )
    _crm(runtime, tenant, closed)
    (row,) = _sessions(runtime)
    assert row.close_reason == "crm_closed"
    assert _said(runtime)[-1][0] == "csat"
    with runtime.read_session() as session:
        conv = session.get(Conversation, conversation)
        assert conv is not None and conv.status != "closed"  # the deal stays open
    # a chat the bridge does not know: nothing happens
    _crm(runtime, tenant, dataclasses.replace(closed, external_id="dialog-2", thread_key="8"))
    assert len(_sessions(runtime)) == 1


def test_the_menu_and_notice_speak_the_clients_language(
    world: tuple[Runtime, int, int],
) -> None:
    """An English mapping; a client whose channel says they speak Russian."""
    runtime, _, _ = world
    _writes(world, "Здравствуйте", NIGHT, 1, language="ru")
    (menu, notice) = _said(runtime)
    assert (
        menu[1].startswith("Здравствуйте! Чем помочь?") and "0 — Связаться с оператором" in menu[1]
    )
    assert "завтра в 09:00" in notice[1]


@pytest.mark.parametrize("own_deal", [True, False])
def test_a_session_after_an_idle_one_gets_a_deal_of_its_own_when_the_mapping_says(
    world: tuple[Runtime, int, int], own_deal: bool
) -> None:
    from bridge.pipeline.inbound import run_inbound

    runtime, _, _ = world
    if own_deal:
        mapping = MAPPING.replace("service:\n", "service:\n  new_deal_per_session: true\n", 1)
        (runtime.settings.mappings_dir / "shop.yaml").write_text(mapping, encoding="utf-8")
    day = dt.datetime(2026, 12, 8, 10, 0, tzinfo=MSK)
    conversation = _writes(world, "Hi", day, 1)
    run_inbound(runtime, conversation)
    _writes(world, "1", day + dt.timedelta(minutes=1), 2)
    run_inbound(runtime, conversation)
    first = _entity(runtime, conversation)
    assert first is not None
    # a day and more later (the line's idle hours: 24): a new session; the
    # sync decides by the same rule whether the service job ran yet or not
    later = day + dt.timedelta(days=2)
    assert runner.new_session_since(runtime, conversation, _utc(later)) == (
        _utc(day + dt.timedelta(minutes=1, hours=24)) if own_deal else None
    )
    _writes(world, "New question", later, 3)
    assert runner.new_session_since(runtime, conversation, _utc(later)) == (
        _utc(later) if own_deal else None
    )
    run_inbound(runtime, conversation)
    second = _entity(runtime, conversation)
    assert (second != first) is own_deal
    # the session's next message stays on its deal
    _writes(world, "and another thing", later + dt.timedelta(minutes=1), 4)
    run_inbound(runtime, conversation)
    assert _entity(runtime, conversation) == second


def _entity(runtime: Runtime, conversation: int) -> str | None:
    with runtime.read_session() as session:
        row = session.get(Conversation, conversation)
        assert row is not None
        return row.crm_entity_id


def test_a_breach_also_reaches_the_supervisors_telegram_chat_once(
    world: tuple[Runtime, int, int],
) -> None:
    import responses

    runtime, _, _ = world
    mapping = MAPPING.replace(
        'supervisor: {user: "900"}',
        'supervisor: {user: "900", alerts: [{channel: telegram, to: "-1001234567890"}]}',
    )
    assert mapping != MAPPING
    (runtime.settings.mappings_dir / "shop.yaml").write_text(mapping, encoding="utf-8")
    day = dt.datetime(2026, 12, 8, 10, 0, tzinfo=MSK)
    _writes(world, "Hi", day, 1)
    _writes(world, "1", day + dt.timedelta(minutes=1), 2)
    for minutes in (50, 61, 62):
        runner.sweep(runtime, now=_utc(day) + dt.timedelta(minutes=minutes))
    notify = [a for a in _actions(runtime) if a.kind == "notify"]
    assert [a.key.split(":")[4] for a in notify] == ["warning", "breach"]
    with responses.RequestsMock() as rsps:
        sent = rsps.post(
            "https://api.telegram.org/bot1:x/sendMessage",
            json={
                "ok": True,
                "result": {
                    "message_id": 7,
                    "date": 0,
                    "chat": {"id": -1001234567890, "type": "supergroup"},
                },
            },
        )
        for action in notify:
            assert (
                runner.run_action(runtime, action.id, now=_utc(day) + dt.timedelta(hours=2))
                == "done"
            )
        assert sent.call_count == 2
        body = json.loads(sent.calls[1].request.body)
        assert body["chat_id"] in (-1001234567890, "-1001234567890")
        assert body["text"].startswith("SLA breached: first response was due")
    # done: never sent twice
    assert (
        runner.run_action(runtime, notify[1].id, now=_utc(day) + dt.timedelta(hours=3)) == "not due"
    )
