# ruff: noqa: S105, S106  (test secrets)
"""VK buttons for the service layer's choices (a greeting menu, a 1-5 rating).

* The send body: ``OutboundMessage.buttons`` -> an inline keyboard of
  callback buttons (``keyboard``, a JSON string, on the last part), none
  without buttons or beyond VK's inline limit (10 buttons, 5 x 6; labels 40
  characters, payloads 255: dev.vk.com/ru/api/bots/development/keyboard).
  HTTP is mocked with ``responses``.
* A press: ``message_event`` with the button's payload -> the client's
  CALLBACK message whose text is the button's id. The events are the
  corpus' ``message_event_payload_sample_5_118.json`` (an object payload;
  provenance in the corpus MANIFEST.json) with the bridge's payload put in,
  and the schema's string form (``callback_message_event``).
* The sandbox: the keyboard the adapter builds is accepted, a keyboard VK
  would refuse is error 911, and ``/_button`` presses a button of a sent
  keyboard as VK reports it (a callback button: ``message_event``; a text
  button: ``message_new`` with the label and the payload). The adapter talks
  to the sandbox over local HTTP there, and answers the press.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
import responses

from bridge.http import HttpClient
from bridge.model import ChannelAccountInfo, InboundMessage, MessageKind, OutboundMessage
from channel_adapters.vk import VkAdapter
from channel_adapters.vk.inbound import parse
from channel_adapters.vk.outbound import INLINE_MAX_BUTTONS, LABEL_LIMIT, TEXT_LIMIT, keyboard
from sandbox.vk import DEMO_ACCESS_TOKEN, DEMO_CONFIRMATION, DEMO_GROUP_ID, DEMO_SECRET
from tests.unit.test_sandbox_vk import (
    CUSTOMER,
    Receiver,
    api,
    customer_writes,
    error_code,
    make,
    serve,
    wait_for,
)

CORPORA = Path(__file__).resolve().parents[1] / "fixtures" / "corpora"
PRESS = CORPORA / "vk" / "bots_longpoll_events" / "message_event_payload_sample_5_118.json"
BASE = "https://api.vk.com"
SEND = f"{BASE}/method/messages.send"
GROUP = "886761559"
PEER = "918650328"
TOKEN = "vk1.a.community-token"
NOW = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)
MENU = (("1", "Buy"), ("2", "Order status"), ("0", "Talk to a person"))
RATING = tuple((str(n), str(n)) for n in range(1, 6))
MENU_TEXT = "How can we help?\n1 — Buy\n2 — Order status\n0 — Talk to a person"


def account(group: str = GROUP, token: str = TOKEN) -> ChannelAccountInfo:
    return ChannelAccountInfo(
        id=1,
        kind="vk",
        key="acct-key",
        credentials={"access_token": token, "secret": "s3cretKey42"},
        settings={"confirmation": "1a2b3c4d"},
        external_id=group,
    )


def message(text: str = MENU_TEXT, buttons: Any = MENU, **extra: Any) -> OutboundMessage:
    return OutboundMessage(
        bridge_id="5a1e-menu", external_thread_id=PEER, text=text, buttons=buttons, **extra
    )


@pytest.fixture
def mock() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.add(responses.POST, SEND, json={"response": 287})
        yield rsps


def sent(rsps: responses.RequestsMock) -> list[dict[str, str]]:
    """The forms of the ``messages.send`` calls, one value per field."""
    out = []
    for call in rsps.calls:
        body = call.request.body
        text = body.decode() if isinstance(body, bytes) else str(body)
        out.append({k: v[0] for k, v in parse_qs(text, keep_blank_values=True).items()})
    return out


def send(rsps: responses.RequestsMock, outbound: OutboundMessage) -> list[dict[str, str]]:
    VkAdapter(account(), HttpClient(BASE)).send(outbound)
    return sent(rsps)


def board(form: dict[str, str]) -> dict[str, Any]:
    decoded: dict[str, Any] = json.loads(form["keyboard"])
    return decoded


def labels(decoded: dict[str, Any]) -> list[list[str]]:
    return [[b["action"]["label"] for b in row] for row in decoded["buttons"]]


# -- the send body --------------------------------------------------------------------------


def test_a_menu_goes_as_an_inline_keyboard_of_callback_buttons(
    mock: responses.RequestsMock,
) -> None:
    (form,) = send(mock, message())
    assert form["message"] == MENU_TEXT  # the text keeps the numbered choices
    decoded = board(form)
    assert decoded["inline"] is True and "one_time" not in decoded  # inline: no one_time
    assert labels(decoded) == [["Buy"], ["Order status"], ["Talk to a person"]]
    actions = [b["action"] for row in decoded["buttons"] for b in row]
    assert {a["type"] for a in actions} == {"callback"}
    # the payload is a JSON string naming the button by the id the client would type
    assert [json.loads(a["payload"]) for a in actions] == [
        {"button": "1"},
        {"button": "2"},
        {"button": "0"},
    ]


def test_a_rating_is_one_row_of_five(mock: responses.RequestsMock) -> None:
    (form,) = send(mock, message("Rate us from 1 to 5", RATING))
    assert labels(board(form)) == [["1", "2", "3", "4", "5"]]


def test_without_buttons_there_is_no_keyboard(mock: responses.RequestsMock) -> None:
    (form,) = send(mock, message("Hello", ()))
    assert "keyboard" not in form and form["message"] == "Hello"


def test_more_choices_than_vk_shows_inline_go_as_text_alone(
    mock: responses.RequestsMock,
) -> None:
    many = tuple((str(n), f"Option {n}") for n in range(INLINE_MAX_BUTTONS + 1))
    (form,) = send(mock, message("Eleven options, numbered", many))
    assert "keyboard" not in form and form["message"] == "Eleven options, numbered"


@pytest.mark.parametrize(("count", "rows"), [(6, [1] * 6), (7, [2, 2, 2, 1]), (10, [2] * 5)])
def test_long_menus_fit_the_inline_grid(count: int, rows: list[int]) -> None:
    choices = tuple((str(n), f"Option number {n}") for n in range(count))
    decoded = json.loads(keyboard(choices) or "{}")
    assert [len(row) for row in decoded["buttons"]] == rows
    assert len(decoded["buttons"]) <= 6 and all(len(row) <= 5 for row in decoded["buttons"])


def test_a_long_label_is_cut_to_forty_characters() -> None:
    long = "Where is my order and when will it be delivered to me?"
    decoded = json.loads(keyboard((("2", long), ("3", "Line\nbreak"))) or "{}")
    first, second = (row[0]["action"]["label"] for row in decoded["buttons"])
    assert len(first) == LABEL_LIMIT and first.endswith("…") and long.startswith(first[:-1])
    assert second == "Line break"


def test_an_id_the_payload_cannot_hold_means_text_alone() -> None:
    assert keyboard((("x" * 250, "Too long an id"),)) is None
    assert keyboard((("", "No id"),)) is None
    assert keyboard(()) is None


def test_the_keyboard_rides_on_the_last_part_of_a_long_text(
    mock: responses.RequestsMock,
) -> None:
    forms = send(mock, message("a" * (TEXT_LIMIT + 10), MENU))
    assert len(forms) == 2
    assert "keyboard" not in forms[0] and labels(board(forms[1]))[0] == ["Buy"]


# -- a press -------------------------------------------------------------------------------------


def press_event(payload: Any, peer: int = 918650328) -> dict[str, Any]:
    """The corpus' message_event with the bridge's payload put in."""
    event: dict[str, Any] = json.loads(PRESS.read_text())["updates"][0]
    event["object"]["payload"] = payload
    event["object"]["peer_id"] = peer
    event["v"] = "5.199"
    return event


def one(event: dict[str, Any]) -> InboundMessage:
    (found,) = parse(json.dumps(event).encode(), NOW)
    assert isinstance(found, InboundMessage)
    return found


@pytest.mark.parametrize("payload", [{"button": "2"}, '{"button":"2"}'])
def test_a_press_is_the_clients_message_whose_text_is_the_id(payload: Any) -> None:
    pressed = one(press_event(payload))
    assert pressed.kind is MessageKind.CALLBACK and pressed.text == "2"
    assert pressed.callback_id == "5bba1af2abf1"  # answered by the acknowledge path
    assert (pressed.external_user_id, pressed.external_thread_id) == (PEER, PEER)
    assert pressed.raw["button"] == "2" and pressed.reply_to == "c833"


def test_a_press_in_a_group_chat_names_its_user() -> None:
    pressed = one(press_event({"button": "0"}, peer=2000000008))
    assert pressed.text == "0" and pressed.callback_id == "5bba1af2abf1:918650328"


@pytest.mark.parametrize(
    ("payload", "text"),
    [
        ({"button": "2", "extra": 1}, '{"button":"2","extra":1}'),  # not only ours: as it came
        ({"button": 2}, '{"button":2}'),
        ({"button": "  "}, '{"button":"  "}'),
        ('{"button": ', '{"button": '),
        ("2", "2"),
    ],
)
def test_other_payloads_stay_as_they_came(payload: Any, text: str) -> None:
    pressed = one(press_event(payload))
    assert pressed.text == text and "button" not in pressed.raw


# -- the sandbox ----------------------------------------------------------------------------------


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    hook = Receiver(DEMO_CONFIRMATION)
    with serve(hook.app) as base:
        yield hook, f"{base}/webhooks/vk"


def control(client: Any, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    """A control call: (status, its JSON); a GET without a body."""
    answer = client.post(path, json=body) if body is not None else client.get(path)
    return answer.status_code, answer.get_json()


def _keyboard_send(client: Any, board_json: Any, random_id: int = 1) -> int | None:
    raw = board_json if isinstance(board_json, str) else json.dumps(board_json)
    return error_code(
        api(
            client,
            "messages.send",
            peer_id=CUSTOMER,
            random_id=random_id,
            message="x",
            keyboard=raw,
        )
    )


def _buttons(count: int, kind: str = "callback", **action: Any) -> list[dict[str, Any]]:
    return [{"action": {"type": kind, "label": f"B{n}", **action}} for n in range(count)]


def test_the_sandbox_refuses_a_keyboard_vk_would(receiver: tuple[Receiver, str]) -> None:
    _, url = receiver
    client = make(url)
    customer_writes(client)
    five = _buttons(5)
    refused = [
        {"inline": True, "buttons": [five, five, _buttons(1)]},  # 11 inline buttons
        {"inline": True, "buttons": [_buttons(1)] * 7},  # 7 inline rows
        {"buttons": [_buttons(6)]},  # 6 in a row
        {"buttons": [_buttons(5)] * 9},  # 45 buttons
        {"buttons": [[{"action": {"type": "callback", "label": "x" * 41}}]]},
        {"buttons": [[{"action": {"type": "callback", "label": "x", "payload": "not json"}}]]},
        {
            "buttons": [
                [
                    {
                        "action": {
                            "type": "callback",
                            "label": "x",
                            "payload": json.dumps({"b": "x" * 250}),
                        }
                    }
                ]
            ]
        },
        {"buttons": [[{"action": {"type": "callback"}}]]},  # no label
        {"buttons": [[{"action": {"type": "press", "label": "x"}}]]},
        {"buttons": [[{"action": {"type": "open_link", "label": "x"}}]]},  # no link
        {"buttons": [[{"action": {"type": "text", "label": "x"}, "color": "red"}]]},
        {"inline": "yes", "buttons": []},
    ]
    for index, candidate in enumerate(refused):
        assert _keyboard_send(client, candidate, index + 1) == 911, candidate
    accepted = [
        {"inline": True, "buttons": [five, five]},
        {"one_time": True, "buttons": [_buttons(4)] * 10},  # 40 under the input field
        {
            "buttons": [
                [
                    {
                        "action": {"type": "text", "label": "Yes", "payload": '{"a":1}'},
                        "color": "positive",
                    }
                ]
            ]
        },
        {"buttons": []},  # hides a chat's keyboard
    ]
    for index, candidate in enumerate(accepted):
        assert _keyboard_send(client, candidate, 100 + index) is None, candidate
    assert _keyboard_send(client, keyboard(MENU) or "", 200) is None
    assert _keyboard_send(client, keyboard(RATING) or "", 201) is None


def test_a_menu_sent_pressed_and_answered_through_the_sandbox(
    receiver: tuple[Receiver, str],
) -> None:
    hook, url = receiver
    client = make(url)
    customer_writes(client, text="Hello")
    with serve(client.application) as base:
        adapter = VkAdapter(account(str(DEMO_GROUP_ID), DEMO_ACCESS_TOKEN), HttpClient(base))
        (message_id,) = adapter.send(message(buttons=MENU)).external_ids
        record = control(client, "/_sent")[1]["sent"][-1]
        assert record["message_id"] == int(message_id)
        assert labels(record["keyboard"]) == [["Buy"], ["Order status"], ["Talk to a person"]]

        status, pressed = control(client, "/_button", {"user": CUSTOMER, "label": "Order status"})
        assert status == 200, pressed
        assert pressed["pressed"]["type"] == "callback" and pressed["body"] == "ok"
        event = hook.events("message_event")[-1]
        assert event["secret"] == DEMO_SECRET
        assert event["object"]["payload"] == {"button": "2"}  # an object, as in the corpus
        assert event["object"]["conversation_message_id"] == record["conversation_message_id"]

        choice = one(event)
        assert choice.kind is MessageKind.CALLBACK and choice.text == "2"
        adapter.acknowledge(choice)  # the acknowledge path: sendMessageEventAnswer
    events = control(client, "/_state")[1]["accounts"][0]["button_events"]
    answered = next(e for e in events if e["event_id"] == choice.callback_id)
    assert len(answered["answers"]) == 1

    # the schema's string form: the same id
    control(client, "/_config", {"event_payload": "string"})
    control(client, "/_button", {"user": CUSTOMER, "index": 2})
    last = hook.events("message_event")[-1]
    assert last["object"]["payload"] == '{"button":"0"}' and one(last).text == "0"


def test_pressing_a_text_button_writes_its_label_with_the_payload(
    receiver: tuple[Receiver, str],
) -> None:
    hook, url = receiver
    client = make(url)
    customer_writes(client)
    board_json = {
        "buttons": [
            [
                {"action": {"type": "text", "label": "Yes", "payload": '{"answer":"yes"}'}},
                {"action": {"type": "open_link", "label": "Site", "link": "https://example.com"}},
            ]
        ]
    }
    sent_id = api(
        client,
        "messages.send",
        peer_id=CUSTOMER,
        random_id=7,
        message="Sure?",
        keyboard=json.dumps(board_json),
    )["response"]
    status, pressed = control(
        client, "/_button", {"user": CUSTOMER, "label": "Yes", "message_id": sent_id}
    )
    assert status == 200 and pressed["pressed"]["type"] == "text"
    new = wait_for(lambda: hook.events("message_new"))[-1]["object"]["message"]
    assert new["text"] == "Yes" and new["payload"] == '{"answer":"yes"}'
    status, link = control(client, "/_button", {"user": CUSTOMER, "label": "Site"})
    assert status == 400 and link["error"] == "not_a_message_button"


def test_pressing_what_is_not_there_says_so(receiver: tuple[Receiver, str]) -> None:
    _, url = receiver
    client = make(url)
    customer_writes(client)
    status, nothing = control(client, "/_button", {"user": CUSTOMER, "label": "Buy"})
    assert status == 404 and nothing["error"] == "message_not_found"
    api(
        client,
        "messages.send",
        peer_id=CUSTOMER,
        random_id=9,
        message="Menu",
        keyboard=keyboard(MENU),
    )
    status, wrong = control(client, "/_button", {"user": CUSTOMER, "label": "Sell"})
    assert status == 404 and "'Buy'" in wrong["message"]
    assert control(client, "/_button", {"user": CUSTOMER, "index": 3})[0] == 404
    other = {"user": CUSTOMER, "label": "Buy", "message_id": 999}
    assert control(client, "/_button", other)[0] == 404
