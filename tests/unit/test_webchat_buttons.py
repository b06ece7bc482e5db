"""Web chat buttons for the service layer's choices (a greeting menu, a 1-5 rating).

* What the widget reads of a reply (``GET /messages``, the stream: the
  API's message JSON): ``buttons`` as ``[{"id", "label"}]`` for a reply
  that offers choices, none for a visitor's message, for more than ten
  choices or an id the widget would not send (the text lists them); a
  long label is cut. The reply is the core's ``HostedMessage``, whose
  ``buttons`` are the stored reply's ``payload["buttons"]`` (as the service
  layer writes them; a visitor's message has none).
* A press: the widget sends the choice's id as the visitor's message (the
  body ``widget.js`` builds: ``{"id", "text": "<id>", "files": [],
  "context"}``): checked, journaled and normalised like a typed one, it is
  the visitor's TEXT message whose text is the id, what the service layer's
  menu reads. Through the real API on a real runtime (the harness of
  ``test_webchat_api``) and through the adapter's parse.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select

import crm_adapters
from bridge import admin
from bridge.hosted import HostedMessage
from bridge.model import InboundMessage, MessageKind, WebhookRequest
from bridge.runtime import Runtime
from bridge.tables import Message
from channel_adapters.webchat import api, inbound, tokens
from tests.support import fakes
from tests.support.harness import build_runtime
from tests.unit.test_webchat_api import APP, MAPPING, SITE, Widget, _make

NOW = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)
MENU = (("1", "Buy"), ("2", "Order status"), ("0", "Talk to a person"))
RATING = tuple((str(n), str(n)) for n in range(1, 6))


def reply(buttons: Any = MENU, direction: str = "out") -> HostedMessage:
    return HostedMessage(
        seq=3,
        uid="0b7d-reply",
        direction=direction,
        text="How can we help?\n1 — Buy\n2 — Order status\n0 — Talk to a person",
        kind="text",
        attachments=(),
        sent_at=NOW,
        key=None if direction == "out" else "v-1:c-00000001",
        status="sent",
        buttons=buttons,
    )


# -- what the widget reads -----------------------------------------------------------------


def test_a_reply_offers_its_choices_as_buttons() -> None:
    shown = api._message_json(reply(), "v-1")
    assert shown["buttons"] == [
        {"id": "1", "label": "Buy"},
        {"id": "2", "label": "Order status"},
        {"id": "0", "label": "Talk to a person"},
    ]
    assert shown["text"].startswith("How can we help?")  # the numbered text stays
    assert [b["id"] for b in api.buttons(reply(RATING))] == ["1", "2", "3", "4", "5"]


def test_a_reply_without_choices_and_a_visitors_message_have_none() -> None:
    assert api._message_json(reply(()), "v-1")["buttons"] == []
    assert api.buttons(reply(MENU, direction="in")) == []
    plain = HostedMessage(3, "u", "out", "Hello", "text", (), NOW, None, "sent")
    assert api._message_json(plain, "v-1")["buttons"] == []  # the core without the field


def test_more_than_ten_choices_or_an_unsendable_id_mean_the_text_alone() -> None:
    eleven = tuple((str(n), f"Option {n}") for n in range(api.MAX_BUTTONS + 1))
    assert api.buttons(reply(eleven)) == []
    assert len(api.buttons(reply(eleven[: api.MAX_BUTTONS]))) == api.MAX_BUTTONS
    assert api.buttons(reply((("1", "Buy"), ("", "Nothing")))) == []
    assert api.buttons(reply((("1", "Buy"), ("x" * 65, "Too long an id")))) == []


def test_a_label_is_one_line_cut_to_a_hundred_characters() -> None:
    long = "A very long option " * 10
    shown = api.buttons(reply((("1", long), ("2", "Two\nlines"), ("3", ""))))
    assert len(shown[0]["label"]) == 100 and shown[0]["label"].endswith("…")
    assert shown[1]["label"] == "Two lines" and shown[2]["label"] == "3"


# -- a press -------------------------------------------------------------------------------------


def press_body(choice: str = "2") -> dict[str, Any]:
    """What widget.js posts when a choice is pressed: its id as the text."""
    return {
        "id": "c-press-00000001",
        "text": choice,
        "files": [],
        "context": {"page_url": f"{SITE}/", "language": "en", "utm_first": {}, "utm_last": {}},
    }


@pytest.fixture
def runtime(settings: Any, redis_conn: Any) -> Iterator[Runtime]:
    with build_runtime(settings, redis_conn, apps={"webchat": APP}) as rt:
        yield rt


@pytest.fixture
def widget(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> Widget:
    monkeypatch.setitem(crm_adapters.REGISTRY, "fake", "tests.support.fakes:FakeCrm")
    fakes.STATE = fakes.FakeCrmState()
    (runtime.settings.mappings_dir / "fake.yaml").write_text(MAPPING)
    tenant = admin.create_tenant(runtime, slug="acme", crm_kind="fake", mapping="fake.yaml")
    return _make(runtime, tenant, title="Acme shop")


def test_a_press_is_the_visitors_message_whose_text_is_the_id(widget: Widget) -> None:
    token, visitor = widget.visitor()
    widget.send(token, "c-hello-0001", "Hello")
    widget.normalise()
    widget.reply(visitor, "How can we help?\n1 — Buy\n2 — Order status", "crm-1")
    body = press_body("2")
    answer = widget.send(token, body.pop("id"), **body)
    assert answer.status_code == 202, answer.data
    widget.normalise()
    messages = widget.history(token).get_json()["messages"]
    pressed = messages[-1]
    assert (pressed["from"], pressed["text"], pressed["client_id"]) == (
        "visitor",
        "2",
        "c-press-00000001",
    )
    assert pressed["buttons"] == [] and messages[-2]["from"] == "operator"
    with widget.rt.read_session() as session:
        stored = session.scalars(select(Message).where(Message.uid == pressed["id"])).one()
        assert (stored.text, stored.kind) == ("2", MessageKind.TEXT.value)


def test_the_adapter_parses_a_press_like_a_typed_message(widget: Widget) -> None:
    visitor = tokens.new_visitor()
    body = inbound.check_message(press_body("0")).body(visitor, NOW)  # what the API journals
    request = WebhookRequest(
        method="POST",
        url="https://bridge.example/webhooks/webchat/k",
        headers={},
        body=json.dumps(body).encode(),
        received_at=NOW,
    )
    (event,) = widget.adapter.parse(request)
    assert isinstance(event, InboundMessage)
    assert (event.kind, event.text, event.external_thread_id) == (MessageKind.TEXT, "0", visitor)


def test_a_stored_replys_choices_reach_the_widget(widget: Widget) -> None:
    """The core side: a reply stored with ``payload["buttons"]`` (as
    ``bridge.service.runner`` writes its menu) comes out of the widget API
    with them; a visitor's message never has any."""
    token, visitor = widget.visitor()
    widget.send(token, "c-hello-0001", "Hello")
    widget.normalise()
    widget.reply(visitor, "How can we help?\n1 — Buy\n2 — Order status", "crm-1")
    with widget.rt.transaction() as session:
        for message in session.scalars(select(Message)):
            buttons = [["1", "Buy"], ["2", "Order status"]]
            message.payload = {**(message.payload or {}), "buttons": buttons}
    shown = widget.history(token).get_json()["messages"]
    assert [m["buttons"] for m in shown] == [
        [],
        [{"id": "1", "label": "Buy"}, {"id": "2", "label": "Order status"}],
    ]
