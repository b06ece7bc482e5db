"""The service layer's scenario (issue 17, "Shown by") per CRM, through the
sandboxes: one stack per CRM on its demo mapping plus a ``service:``
section (``tests/fixtures/service/service.yaml``, the lines' members being
that CRM sandbox's users), the demo bot (Telegram) as the channel.

1. A new client writes at 23:00 Moscow time on a weekday (the update's
   ``date``): the menu and the out-of-hours notice, once; a second message
   the same night gets the menu again and no second notice.
2. They answer "2" (Order status): the knowledge base's answer; in the CRM
   the menu choice noted on the contact, the deal/lead's ``service_line`` =
   the line's title, a task due at 09:00 Moscow for the supervisor (nobody
   of the line is on shift at night).
3. The operator answers at 09:05 (the CRM sandbox's clock, so the reply's
   own time is 09:05): the reply reaches the client; three hours later by
   the service clock (``runner.sweep`` with its ``now``) no SLA alert.
4. The operator replies ``/transfer 2``: the client is told once, the
   command never reaches them, and the CRM shows the reply as not sent
   with the reason.
   amoCRM, whose leads carry tags: the menu choice tagged the lead
   ``order-status``, and a manager tagging it ``first-line`` moves the
   session back to the first line (the mapping's ``transfer.tags``).
5. The CRM closes the session, a user's act in the sandbox firing the CRM's
   own webhook (HubSpot deal stage ``closedwon``: ``deal.propertyChange``;
   amoCRM lead status 142; Bitrix24: the operator closes the Open Lines
   session, ``OnImConnectorDialogFinish``, the lead staying open): the
   client is asked to rate.
6. They send "2": the thanks; the deal/lead's ``csat_score`` = "2", the
   rating noted on the contact, exactly one alert task for the supervisor.

Then ``bridge status`` shows nothing parked or failed. Real HTTP to the
stack (gunicorn, RQ workers, Redis, the sandboxes); time comes from the
messages' and the CRM's own clocks, never slept. On PostgreSQL when the
suite has one (``make_stack_once``).
"""

from __future__ import annotations

import datetime as dt
import json
import string
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from bench.stack import ROOT, Stack
from bench.traffic import wait_until
from bridge.service import runner
from bridge.tables import Contact, Conversation, ServiceAction, ServiceSession
from crm_adapters.freetext import strip_markers
from crm_adapters.hubspot.webhooks import html_to_text
from tests.support.crm_views import CrmView, Vendor, crm_view, fast_stack, runtime_of

pytestmark = pytest.mark.integration

CRMS = ("hubspot", "amocrm", "bitrix24")
FIXTURES = ROOT / "tests" / "fixtures" / "service"
MSK = ZoneInfo("Europe/Moscow")
TG_USER = 700_123_517

#: each CRM sandbox's users: line 1's members, line 2's, the supervisor
#: (HubSpot owners 70000001-3 as its sandbox seeds them; amoCRM's Anna
#: Admin, Boris and Vera; Bitrix24's Klaus (head of sales) and Maria)
STAFF: dict[str, tuple[list[str], list[str], str]] = {
    "hubspot": (["70000001", "70000002"], ["70000002"], "70000003"),
    "amocrm": (["6001002", "6001003"], ["6001003"], "6001001"),
    "bitrix24": (["2", "1"], ["1"], "1"),
}
#: the demo mappings' language (what CRM users read: HubSpot's English,
#: amoCRM's and Bitrix24's Russian); the client writes in it too (their
#: Telegram ``language_code``)
LANGUAGE = {"hubspot": "en", "amocrm": "ru", "bitrix24": "ru"}
#: what the client and the CRM users read, by that language
TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "choice": "2 — Order status",
        "person": "0 — Talk to a person",
        "opening": "tomorrow at 09:00",
        "answer": "My orders",
        "moved": "Second line",
        "support": "Support",
        "chose": "The client chose in the menu: Order status",
        "morning": "The client wrote out of hours: answer at opening",
        "rated": "The client rated session 1: 2/5",
        "low": "Low rating: 2/5",
        "command": "a command to the bridge",
    },
    "ru": {
        "choice": "2 — Статус заказа",
        "person": "0 — Связаться с оператором",
        "opening": "завтра в 09:00",
        "answer": "Мои заказы",
        "moved": "Вторая линия",
        "support": "Поддержка",
        "chose": "Клиент выбрал в меню: Статус заказа",
        "morning": "Клиент написал в нерабочее время",
        "rated": "Клиент оценил сессию 1: 2/5",
        "low": "Низкая оценка: 2/5",
        "command": "команда для моста",
    },
}


def first_night(now: dt.datetime) -> dt.datetime:
    """The first 23:00 in Moscow after ``now`` (plus an hour's margin) on
    Monday to Thursday: the next morning is a working day of the lines'
    ``mon-fri`` week. The scenario lies ahead of the bridge's own clock, so
    its sweepers (which read the wall clock) never close the session or
    raise an SLA alert on their own."""
    day = now.astimezone(MSK).date()
    while True:
        night = dt.datetime.combine(day, dt.time(23, 0), tzinfo=MSK)
        if night.weekday() <= 3 and night > now + dt.timedelta(hours=1):
            return night
        day += dt.timedelta(days=1)


# -- the stack ------------------------------------------------------------------------------


def service_mapping(crm: str, directory: Path) -> str:
    """``crm``'s demo mapping plus the service section, and the knowledge
    base it names, written into ``directory``; the mapping's file name."""
    support, support_2, supervisor = STAFF[crm]
    section = string.Template((FIXTURES / "service.yaml").read_text(encoding="utf-8"))
    tagged = crm == "amocrm"  # the one CRM with tags on its deals (leads)
    filled = section.substitute(
        support=json.dumps(support),
        support_2=json.dumps(support_2),
        supervisor=supervisor,
        tags="\n          tags: [order-status]" if tagged else "",
        tag_transfer=", tags: {first-line: support}" if tagged else "",
    )
    demo = (ROOT / "mappings" / f"demo-{crm}.yaml").read_text(encoding="utf-8")
    name = f"service-{crm}.yaml"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_text(f"{demo.rstrip()}\n\n{filled}", encoding="utf-8")
    (directory / "kb").mkdir(exist_ok=True)
    kb = (FIXTURES / "kb" / "acme.yaml").read_text(encoding="utf-8")
    (directory / "kb" / "acme.yaml").write_text(kb, encoding="utf-8")
    return name


def client_writes(stack: Stack, message_id: int, text: str, at: dt.datetime) -> None:
    """The Telegram user writes ``text``; the update's ``date`` is ``at``."""
    chat = {"id": TG_USER, "type": "private", "first_name": "Ann"}
    user = {"id": TG_USER, "is_bot": False, "first_name": "Ann"}
    message = {
        "message_id": message_id,
        "from": {**user, "language_code": LANGUAGE[stack.crm]},
        "chat": chat,
        "date": int(at.timestamp()),
        "text": text,
    }
    answer = stack.deliver({"message": message})
    assert answer["status"] == 200, answer


def told(stack: Stack) -> list[str]:
    """What the bot sent the client, in order."""
    return [str(m.get("text") or "") for m in stack.telegram_sent(TG_USER)]


def told_count(stack: Stack, n: int) -> bool:
    return len(told(stack)) >= n


@contextmanager
def crm_clock(stack: Stack, at: dt.datetime) -> Iterator[None]:
    """The CRM sandbox's clock reads ``at`` while a CRM user acts (``POST
    /_clock``: an offset from the wall clock), so the webhook the act fires
    carries that time; then the wall clock again, which the bridge's own
    signed calls must agree with (amoCRM's chat API refuses a ``Date``
    header 15 minutes off its clock, sandbox/amocrm/amojo.py)."""
    vendor = Vendor(stack, stack.crm)
    vendor.post("_clock", offset=at.timestamp() - time.time())
    try:
        yield
    finally:
        vendor.post("_clock", offset=0)


def conversation(stack: Stack) -> dict[str, Any]:
    """The client's conversation in the bridge: its CRM contact and deal/lead."""
    runtime = runtime_of(stack)
    try:
        with runtime.read_session() as session:
            conv = session.scalars(select(Conversation)).one()
            client = session.get(Contact, conv.contact_id)
            return {
                "id": conv.id,
                # the client's CRM contact, as the service layer's CRM work finds it
                "contact": conv.crm_contact_id or (client.crm_contact_id if client else None),
                "entity": conv.crm_entity_id,
                "entity_type": conv.crm_entity_type,
            }
    finally:
        runtime.close()


def actions(stack: Stack) -> list[tuple[str, str, str]]:
    """The service layer's CRM work: (key, kind, state)."""
    runtime = runtime_of(stack)
    try:
        with runtime.read_session() as session:
            rows = session.scalars(select(ServiceAction).order_by(ServiceAction.id)).all()
            return [(r.key, r.kind, r.state) for r in rows]
    finally:
        runtime.close()


def sessions(stack: Stack) -> list[dict[str, Any]]:
    runtime = runtime_of(stack)
    try:
        with runtime.read_session() as session:
            rows = session.scalars(select(ServiceSession).order_by(ServiceSession.number)).all()
            return [
                {
                    "line": r.line,
                    "owner": r.owner_id,
                    "first_response_at": r.first_response_at,
                    "close_reason": r.close_reason,
                    "rating": r.rating,
                }
                for r in rows
            ]
    finally:
        runtime.close()


def service_clock(stack: Stack, now: dt.datetime) -> None:
    """One pass of the service layer's clock at ``now`` (what each sweeper
    pass does with the wall clock)."""
    runtime = runtime_of(stack)
    try:
        runner.sweep(runtime, now=now.astimezone(dt.UTC))
    finally:
        runtime.close()


def actions_done(stack: Stack) -> bool:
    return all(state == "done" for _, _, state in actions(stack))


# -- each CRM as the scenario reads it ---------------------------------------------------------


class Side:
    """One CRM sandbox: the client's contact notes, their deal/lead's
    fields, the tasks, and closing the deal as a CRM user does."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack

    def state(self) -> dict[str, Any]:
        raise NotImplementedError

    def tasks(self) -> list[tuple[str, dt.datetime, str]]:
        """(text, due, owner) of every task in the CRM."""
        raise NotImplementedError

    def notes(self, contact: str) -> list[str]:
        """The texts on the client's contact (the bridge's invisible
        markers taken off)."""
        return [strip_markers(text).strip() for text in self.contact_notes(contact)]

    def contact_notes(self, contact: str) -> list[str]:
        raise NotImplementedError

    def field(self, entity: str, name: str) -> str | None:
        raise NotImplementedError

    def close(self, entity: str) -> None:
        raise NotImplementedError

    def tags(self, entity: str) -> list[str]:
        """The deal/lead's tags (where the CRM has them)."""
        raise NotImplementedError


class HubSpot(Side):
    def state(self) -> dict[str, Any]:
        return self.stack.hubspot_state()

    def tasks(self) -> list[tuple[str, dt.datetime, str]]:
        return [
            (
                str(t["properties"].get("hs_task_subject") or ""),
                _moment(t["properties"].get("hs_timestamp")),
                str(t["properties"].get("hubspot_owner_id")),
            )
            for t in self.state()["tasks"]
        ]

    def contact_notes(self, contact: str) -> list[str]:
        state = self.state()
        mine = {
            a["toId"]
            for a in state["associations"]
            if a["fromObjectType"] == "contacts"
            and a["fromId"] == contact
            and a["toObjectType"] == "notes"
        }
        # a note's body is HTML (hs_note_body)
        return [
            html_to_text(str(n["properties"].get("hs_note_body") or ""))
            for n in state["notes"]
            if n["id"] in mine
        ]

    def field(self, entity: str, name: str) -> str | None:
        deal = next(d for d in self.state()["deals"] if d["id"] == entity)
        value = deal["properties"].get(name)
        return None if value is None else str(value)

    def close(self, entity: str) -> None:
        """A rep moves the deal to Closed Won in HubSpot's UI (the sandbox's
        ``/_edit``): the app's ``deal.propertyChange`` webhook of
        ``dealstage``."""
        answer = Vendor(self.stack, "hubspot").post(
            "_edit", type="deals", id=entity, properties={"dealstage": "closedwon"}
        )
        assert (answer["webhook"] or {}).get("status") == 200, answer
        assert self.field(entity, "dealstage") == "closedwon"


class AmoCrm(Side):
    def state(self) -> dict[str, Any]:
        data = self.stack.amocrm_state()
        account: dict[str, Any] = data["accounts"][0] if "accounts" in data else data
        return account

    def tasks(self) -> list[tuple[str, dt.datetime, str]]:
        return [
            (
                str(t.get("text") or ""),
                dt.datetime.fromtimestamp(int(t["complete_till"]), dt.UTC),
                str(t.get("responsible_user_id")),
            )
            for t in self.state()["tasks"]
        ]

    def contact_notes(self, contact: str) -> list[str]:
        return [
            str((n.get("params") or {}).get("text") or "")
            for n in self.state()["notes"]
            if n["entity_type"] == "contacts" and str(n["entity_id"]) == contact
        ]

    def field(self, entity: str, name: str) -> str | None:
        lead = next(lead for lead in self.state()["leads"] if str(lead["id"]) == entity)
        for value in lead.get("custom_fields_values") or ():
            if name in (value.get("field_name"), value.get("field_code")):
                return str(value["values"][0]["value"])
        return None

    def close(self, entity: str) -> None:
        """A manager moves the lead to "won" (status 142): amoCRM's
        ``leads[status]`` webhook."""
        answer = Vendor(self.stack, "amocrm").post(
            "_lead_status", lead_id=int(entity), status_id=142
        )
        statuses = [w["status"] for w in answer.get("webhooks") or []]
        assert statuses and set(statuses) == {200}, answer  # status_lead, update_lead

    def tags(self, entity: str) -> list[str]:
        lead = next(lead for lead in self.state()["leads"] if str(lead["id"]) == entity)
        return list(lead.get("tags") or [])

    def tag(self, entity: str, tag: str) -> None:
        """A manager adds a tag to the lead: amoCRM's ``leads[update]``
        webhook carries the lead's tags."""
        answer = Vendor(self.stack, "amocrm").post("_lead_tags", lead_id=int(entity), add=[tag])
        assert [w["status"] for w in answer.get("webhooks") or []] == [200], answer


class Bitrix24(Side):
    def state(self) -> dict[str, Any]:
        return self.stack.bitrix24_state()

    def tasks(self) -> list[tuple[str, dt.datetime, str]]:
        state = self.state()
        todos = [
            a
            for record in (*state["leads"], *state["contacts"], *state.get("deals", []))
            for a in (record.get("timeline") or {}).get("activities") or []
        ]
        return [
            (
                str(a.get("title") or a.get("SUBJECT") or ""),
                _moment(a.get("deadline") or a.get("DEADLINE")),
                str(a.get("responsibleId") or a.get("RESPONSIBLE_ID")),
            )
            for a in todos
        ]

    def contact_notes(self, contact: str) -> list[str]:
        found = next(c for c in self.state()["contacts"] if str(c["id"]) == contact)
        return [str(c["COMMENT"]) for c in found["timeline"]["comments"]]

    def field(self, entity: str, name: str) -> str | None:
        lead = next(lead for lead in self.state()["leads"] if str(lead["id"]) == entity)
        wanted = {f"UF_CRM_{name.upper()}", name}
        for key, value in lead["fields"].items():
            if key in wanted or key.upper().endswith(name.upper()):
                return None if value in (None, "") else str(value)
        return None

    def close(self, entity: str) -> None:
        """The operator closes the chat's Open Lines session (the lead stays
        open): Bitrix24's ``ONIMCONNECTORDIALOGFINISH`` event."""
        (chat,) = self.state()["chats"]
        answer = Vendor(self.stack, "bitrix24").post(
            "_finish_dialog", conversation=chat["external_chat_id"]
        )
        assert [d["status"] for d in answer["deliveries"]] == [200], answer


SIDES: dict[str, type[Side]] = {"hubspot": HubSpot, "amocrm": AmoCrm, "bitrix24": Bitrix24}


def _moment(value: Any) -> dt.datetime:
    """A CRM's due time: epoch milliseconds, epoch seconds or ISO 8601."""
    if isinstance(value, (int, float)) or (isinstance(value, str) and value.isdigit()):
        number = int(value)
        return dt.datetime.fromtimestamp(number / 1000 if number > 10**11 else number, dt.UTC)
    moment = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


# -- the test ----------------------------------------------------------------------------------


@pytest.mark.parametrize("crm", CRMS)
def test_a_night_client_through_the_crm(make_stack_once: Any, tmp_path: Path, crm: str) -> None:
    started = time.monotonic()
    mappings = tmp_path / "mappings"
    name = service_mapping(crm, mappings)
    stack: Stack = fast_stack(make_stack_once, crm, (), mapping=name, mappings_dir=mappings)
    side = SIDES[crm](stack)
    view: CrmView = crm_view(stack, "telegram", 1, 1, read_receipts=False)
    words = TEXTS[LANGUAGE[crm]]
    _, _, supervisor = STAFF[crm]
    night = first_night(dt.datetime.now(dt.UTC))
    morning = (night + dt.timedelta(days=1)).replace(hour=9, minute=0)
    steps: dict[str, float] = {}

    def lap(step: str) -> None:
        steps[step] = round(time.monotonic() - started, 1)
        print(f"{crm}: {step} at {steps[step]} s")

    lap("stack")

    # 1. a new client at 23:00: the menu and the out-of-hours notice, once
    client_writes(stack, 1, "Hi, where is my parcel?", night)
    assert wait_until(lambda: told_count(stack, 2), timeout=30), told(stack)
    menu, notice = told(stack)
    assert words["choice"] in menu and words["person"] in menu, menu
    assert words["opening"] in notice, notice
    # the same night again: the menu again, no second notice
    client_writes(stack, 2, "hello?", night + dt.timedelta(minutes=1))
    assert wait_until(lambda: told_count(stack, 3), timeout=30), told(stack)
    assert told(stack)[2] == menu
    lap("1 menu and notice")

    # 2. "2": the knowledge base's answer; the choice, the line and the
    # morning task in the CRM
    client_writes(stack, 3, "2", night + dt.timedelta(minutes=2))
    assert wait_until(lambda: told_count(stack, 4), timeout=30), told(stack)
    said = told(stack)
    assert words["answer"] in said[3], said
    assert [t for t in said if t == notice] == [notice]  # one notice in all
    assert [row["line"] for row in sessions(stack)] == ["support"]
    assert wait_until(lambda: None not in conversation(stack).values(), timeout=30)
    conv = conversation(stack)
    contact, entity = str(conv["contact"]), str(conv["entity"])
    assert wait_until(lambda: actions_done(stack), timeout=90), actions(stack)
    assert words["chose"] in side.notes(contact), side.notes(contact)
    assert side.field(entity, "service_line") == words["support"]
    if crm == "amocrm":  # the option's tags on the lead
        # added to the tags the bridge gave the lead (kept)
        assert side.tags(entity) == ["CRM bridge", "Telegram", "order-status"], side.tags(entity)
    morning_tasks = [t for t in side.tasks() if t[0].startswith(words["morning"])]
    assert [(due, owner) for _, due, owner in morning_tasks] == [(morning, supervisor)], (
        side.tasks()
    )
    lap("2 answer, note, line, task")

    # 3. the operator answers at 09:05 by the CRM's clock
    reply_at = morning + dt.timedelta(minutes=5)
    reply = "Your order ships today"
    with crm_clock(stack, reply_at):
        answer = view.reply(TG_USER, reply)
    assert answer["webhook"]["status"] == 200, answer
    assert wait_until(lambda: reply in told(stack), timeout=30), told(stack)
    (row,) = sessions(stack)
    first = row["first_response_at"]
    first = first if first.tzinfo else first.replace(tzinfo=dt.UTC)
    assert reply_at <= first < reply_at + dt.timedelta(minutes=1), first
    # three hours on by the service clock: the first response was in time
    service_clock(stack, reply_at + dt.timedelta(hours=3))
    assert [key for key, _, _ in actions(stack) if key.startswith("sla:")] == []
    lap("3 reply in time")

    # 4. "/transfer 2": the client told once, the command kept from them
    before = len(told(stack))
    with crm_clock(stack, reply_at + dt.timedelta(minutes=1)):
        answer = view.reply(TG_USER, "/transfer 2")
    assert answer["webhook"]["status"] == 200, answer
    assert wait_until(lambda: told_count(stack, before + 1), timeout=30), told(stack)
    said = told(stack)
    assert [t for t in said if words["moved"] in t] == [said[before]], said
    assert "/transfer 2" not in said
    assert sessions(stack)[0]["line"] == "support_2"

    def command_reported() -> bool:
        out = [m for m in view.messages(TG_USER) if m["text"] == "/transfer 2"]
        return len(out) == 1 and out[0]["status"] == "failed"

    assert wait_until(command_reported, timeout=30), view.messages(TG_USER)
    (shown,) = [m for m in view.messages(TG_USER) if m["text"] == "/transfer 2"]
    assert words["command"] in str(shown["error"]), shown
    if isinstance(side, AmoCrm):
        # a manager tags the lead first-line: back to the first line
        before = len(told(stack))
        side.tag(entity, "first-line")
        assert wait_until(lambda: sessions(stack)[0]["line"] == "support", timeout=30), sessions(
            stack
        )
        assert wait_until(lambda: told_count(stack, before + 1), timeout=30), told(stack)
        assert words["support"] in told(stack)[before], told(stack)  # told of the move
    lap("4 transfer")

    # 5. the deal closes in the CRM: the client is asked to rate
    before = len(told(stack))
    closing = reply_at + dt.timedelta(minutes=10)
    with crm_clock(stack, closing):
        side.close(entity)
    assert wait_until(lambda: told_count(stack, before + 1), timeout=30), (
        f"{crm}: the deal/lead closed in the CRM, yet no rating prompt reached the client "
        f"(the session: {sessions(stack)})"
    )
    prompt = told(stack)[before]
    assert "1" in prompt and "5" in prompt, prompt
    assert sessions(stack)[0]["close_reason"] == "crm_closed"
    lap("5 closed, rating asked")

    # 6. they rate it 2: the thanks, the score in the CRM, one alert
    client_writes(stack, 4, "2", closing + dt.timedelta(minutes=3))
    assert wait_until(lambda: told_count(stack, before + 2), timeout=30), told(stack)
    assert sessions(stack)[0]["rating"] == 2
    assert wait_until(lambda: actions_done(stack), timeout=90), actions(stack)
    assert words["rated"] in side.notes(contact), side.notes(contact)
    alerts = [t for t in side.tasks() if t[0].startswith(words["low"])]
    assert [owner for _, _, owner in alerts] == [supervisor], side.tasks()
    status = stack.bridge_status()
    assert status["parked"] == [] and status["failed"] == [], status
    # the score on the deal/lead the client rated (the session's, closed in step 5)
    now_on = str(conversation(stack)["entity"])
    assert side.field(entity, "csat_score") == "2", (
        f"{crm}: the score is not on the rated deal/lead {entity}; the conversation is on "
        f"{now_on} now (opened by the rating message), whose csat_score is "
        f"{side.field(now_on, 'csat_score')!r}"
    )
    lap("6 rated")
    print(f"{crm}: {json.dumps(steps)}")
