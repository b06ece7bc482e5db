# ruff: noqa: S105, S106  (test secrets)
"""Viber's native buttons for the service layer's menus and ratings
(``OutboundMessage.buttons``): the ``send_message`` body (mocked with
``responses``: a keyboard of ``reply`` buttons on the last message, the
text alone over the limits), a press read back as the client's text (the
``message`` callback built from the REST docs on the corpus' own callback,
viber-bot-python's ``unicode_request``), and the sandbox: it checks a
keyboard as the keyboards page describes it, and ``/_press`` posts the
callback Viber sends for a tap, which the adapter reads as "2".
"""

from __future__ import annotations

import copy
import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import responses

from bridge.model import Attachment, InboundMessage, MessageKind, OutboundMessage
from channel_adapters.viber.inbound import parse, split
from channel_adapters.viber.outbound import plan
from tests.unit.test_sandbox_viber import USER, _api, _client, _hooked, receiver
from tests.unit.test_viber_outbound import SEND, adapter, ok, sent

__all__ = ["receiver"]  # the sandbox's webhook receiver fixture, shared

ROOT = Path(__file__).resolve().parents[2]
CORPORA = ROOT / "tests" / "fixtures" / "corpora"
MANIFEST = {e["file"]: e for e in json.loads((CORPORA / "MANIFEST.json").read_text())}
NOW = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)

MENU_TEXT = "How can we help?\n1 — Buy\n2 — Order status\n0 — Talk to a person"
MENU = (("1", "Buy"), ("2", "Order status"), ("0", "Talk to a person"))
RATING_TEXT = "How would you rate our help? Reply with a number from 1 (bad) to 5 (excellent)"
RATINGS = tuple((str(n), str(n)) for n in range(1, 6))


@pytest.fixture
def api() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.post(SEND, json=ok())
        yield mock


def menu(text: str, buttons: tuple[tuple[str, str], ...], **extra: Any) -> OutboundMessage:
    return OutboundMessage("7d6c1f3e-msg", USER, text=text, buttons=buttons, **extra)


def reply_button(key: str, label: str, columns: int = 6) -> dict[str, Any]:
    return {"Columns": columns, "Rows": 1, "ActionType": "reply", "ActionBody": key, "Text": label}


# -- the send body -----------------------------------------------------------------------------


def test_a_menu_rides_as_a_keyboard_one_button_a_row(api: responses.RequestsMock) -> None:
    adapter().send(menu(MENU_TEXT, MENU))
    (body,) = sent(api)
    assert body == {
        "receiver": USER,
        "sender": {"name": "Demo Shop"},
        "tracking_data": "7d6c1f3e-msg",
        "type": "text",
        "text": MENU_TEXT,
        "keyboard": {
            "Type": "keyboard",
            "DefaultHeight": False,
            "Buttons": [reply_button(k, label) for k, label in MENU],
        },
    }


def test_a_rating_is_one_row_of_five(api: responses.RequestsMock) -> None:
    adapter().send(menu(RATING_TEXT, RATINGS))
    (body,) = sent(api)
    assert body["keyboard"]["Buttons"] == [reply_button(str(n), str(n), 1) for n in range(1, 6)]


def test_labels_are_escaped_and_cut_at_250(api: responses.RequestsMock) -> None:
    adapter().send(menu("Pick", (("1", "<b>Sale</b> & more"), ("2", "x" * 300))))
    (body,) = sent(api)
    first, second = body["keyboard"]["Buttons"]
    assert first["Text"] == "&lt;b&gt;Sale&lt;/b&gt; &amp; more"
    assert second["Text"] == "x" * 249 + "…" and len(second["Text"]) == 250
    assert second["ActionBody"] == "2"


def test_the_keyboard_goes_on_the_last_message(api: responses.RequestsMock) -> None:
    adapter(text_limit=40).send(menu("word " * 15, MENU))
    bodies = sent(api)
    assert len(bodies) == 2
    assert "keyboard" not in bodies[0] and bodies[1]["keyboard"]["Type"] == "keyboard"
    picture = Attachment(kind=MessageKind.PHOTO, url="https://files.example/a.jpg")
    (only,) = plan(menu("Which one?", MENU, attachments=(picture,)), sender_name="Shop")
    assert (only["type"], only["text"]) == ("picture", "Which one?")
    assert len(only["keyboard"]["Buttons"]) == 3


@pytest.mark.parametrize(
    ("buttons", "text"),
    [
        pytest.param(tuple((str(n), f"Option {n}") for n in range(25)), "Pick", id="25-rows"),
        pytest.param((("1", "A"), ("1", "B")), "Pick", id="repeated-id"),
        pytest.param((("", "A"),), "Pick", id="empty-id"),
        # the text alone is 29.8 KB as sent (non-ASCII escaped); with the keyboard, 30.2
        pytest.param(MENU, "я" * 4950, id="request-over-30-KB"),
    ],
)
def test_over_the_limits_the_text_goes_alone(
    api: responses.RequestsMock, buttons: tuple[tuple[str, str], ...], text: str
) -> None:
    adapter().send(menu(text, buttons))
    (body,) = sent(api)
    assert "keyboard" not in body and body["text"] == text


def test_twenty_four_choices_still_fit() -> None:
    buttons = tuple((str(n), f"Option {n}") for n in range(24))
    (body,) = plan(menu("Pick", buttons), sender_name="Shop")
    assert len(body["keyboard"]["Buttons"]) == 24


def test_without_buttons_no_keyboard(api: responses.RequestsMock) -> None:
    adapter().send(menu(MENU_TEXT, ()))
    (body,) = sent(api)
    assert "keyboard" not in body


# -- a press -----------------------------------------------------------------------------------


def test_a_pressed_button_is_the_clients_text_its_action_body() -> None:
    # Viber/viber-bot-python:tests/api/test_data/unicode_request (corpus), its
    # message made what a tap on a reply button sends: "reply - will send a
    # reply to the bot" (the ActionBody as text; tracking_data "passed back
    # with user's reply", REST docs)
    assert MANIFEST["viber/unicode_request.json"]["repo"] == "Viber/viber-bot-python"
    callback = json.loads((CORPORA / "viber" / "unicode_request.json").read_text("utf-8"))
    pressed = copy.deepcopy(callback)
    pressed["message"] = {"type": "text", "text": "2", "tracking_data": "7d6c1f3e-msg"}
    raw = json.dumps(pressed).encode()
    (event,) = parse(split(raw).body, NOW)
    assert isinstance(event, InboundMessage)
    assert (event.kind, event.text) == (MessageKind.TEXT, "2")
    assert event.raw["tracking_data"] == "7d6c1f3e-msg"


# -- the sandbox -------------------------------------------------------------------------------


def test_sandbox_takes_the_keyboard_and_a_press_reads_as_the_digit(receiver: Any) -> None:
    rec, url = receiver
    client = _client()
    _hooked(client, url)
    client.post("/_customer", json={"from": USER, "text": "hi"})
    for text, buttons in ((MENU_TEXT, MENU), (RATING_TEXT, RATINGS)):
        (body,) = plan(menu(text, buttons), sender_name="Shop")
        assert _api(client, "send_message", body)["status"] == 0
    # the keyboard shown is the last sent: the rating's
    rated = client.post("/_press", json={"from": USER, "body": "4"})
    assert rated.status_code == 200, rated.get_json()
    assert rated.get_json()["delivered"] is True
    callback = rec.posts[-1]["json"]
    assert callback["event"] == "message"
    assert callback["message"] == {"type": "text", "text": "4", "tracking_data": "7d6c1f3e-msg"}
    assert callback["silent"] is False
    (event,) = parse(split(rec.posts[-1]["raw"]).body, NOW)
    assert isinstance(event, InboundMessage)
    assert (event.kind, event.text, event.external_user_id) == (MessageKind.TEXT, "4", USER)
    # the menu's keyboard is no longer shown: its "2" is not on the rating's
    gone = client.post("/_press", json={"from": USER, "body": "0"})
    assert (gone.status_code, gone.get_json()["error"]) == (400, "unknown_button")


def test_sandbox_press_needs_a_keyboard_sent(receiver: Any) -> None:
    _, url = receiver
    client = _client()
    _hooked(client, url)
    client.post("/_customer", json={"from": USER, "text": "hi"})
    none = client.post("/_press", json={"from": USER, "body": "1"})
    assert (none.status_code, none.get_json()["error"]) == (409, "no_keyboard")


def _with(keyboard: Any) -> dict[str, Any]:
    return {
        "receiver": USER,
        "sender": {"name": "Shop"},
        "type": "text",
        "text": "Pick",
        "keyboard": keyboard,
    }


def _board(*buttons: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"Type": "keyboard", "Buttons": list(buttons), **extra}


OK_BUTTON = {"ActionType": "reply", "ActionBody": "1", "Text": "One"}


@pytest.mark.parametrize(
    ("keyboard", "words"),
    [
        pytest.param(
            {"Buttons": [OK_BUTTON]},
            'keyboard is not valid. [object has missing required properties (["Type"])]',
            id="no-Type",
        ),
        pytest.param(_board(), "Buttons", id="no-buttons"),
        pytest.param(_board({"Text": "One"}), "ActionBody", id="no-ActionBody"),
        pytest.param(_board({**OK_BUTTON, "Columns": 7}), "Columns", id="columns-7"),
        pytest.param(_board({**OK_BUTTON, "Rows": 3}), "Rows", id="rows-3"),
        pytest.param(_board({**OK_BUTTON, "Text": "x" * 251}), "250", id="text-251"),
        pytest.param(_board({**OK_BUTTON, "ActionType": "buy-now"}), "ActionType", id="action"),
        pytest.param(_board({"ActionBody": "1"}), "Text", id="nothing-to-show"),
        pytest.param(_board(*[OK_BUTTON] * 25), "24 rows", id="25-rows"),
        pytest.param(_board(*[{**OK_BUTTON, "Rows": 2}] * 13), "24 rows", id="13-double-rows"),
    ],
)
def test_sandbox_refuses_a_keyboard_viber_would(
    receiver: Any, keyboard: dict[str, Any], words: str
) -> None:
    _, url = receiver
    client = _client()
    _hooked(client, url)
    client.post("/_customer", json={"from": USER, "text": "hi"})
    answer = _api(client, "send_message", _with(keyboard))
    assert answer["status"] == 3
    assert words in answer["status_message"]
    assert client.get("/_sent").get_json()["sent"] == []


def test_sandbox_lays_short_buttons_out_side_by_side(receiver: Any) -> None:
    _, url = receiver
    client = _client()
    _hooked(client, url)
    client.post("/_customer", json={"from": USER, "text": "hi"})
    # 48 one-column buttons fill 8 rows; 24 full-width ones fill 24
    narrow = _board(*[{**OK_BUTTON, "Columns": 1}] * 48)
    assert _api(client, "send_message", _with(narrow))["status"] == 0
    assert _api(client, "send_message", _with(_board(*[OK_BUTTON] * 24)))["status"] == 0
