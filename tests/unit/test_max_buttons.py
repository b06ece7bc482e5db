# ruff: noqa: S105  (test secrets)
"""MAX: a menu's or rating's buttons as an inline keyboard of callback
buttons, and a press coming back as the client's reply.

* The send body (HTTP mocked with ``responses``): with and without buttons,
  rows, beside the contact button, the limits (FACTS §9: 210 buttons, 30
  rows, 7 per row, text 1-128 characters, callback payload 1024), a split
  text.
* The body the adapter builds is what the sandbox (which checks a keyboard
  as FACTS §7/§9 document it) accepts; a press made with the sandbox's
  ``/_button`` comes back through ``GET /updates`` as a CALLBACK whose text
  is the button's id, and ``acknowledge`` answers it (``POST /answers``).
* A press parsed from the go-stab fixture ``go-stab.webhook.message_callback
  .json`` (max-messenger/max-bot-api-client-go, official; corpora MANIFEST).
* The sandbox's keyboard checks (the docs' own keyboard examples pass) and
  its press control.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import responses
from flask.testing import FlaskClient

from bridge.http import HttpClient
from bridge.model import (
    ChannelAccountInfo,
    InboundMessage,
    MessageKind,
    OutboundMessage,
    WebhookRequest,
)
from channel_adapters.max import MaxAdapter
from channel_adapters.max.outbound import MAX_BUTTONS, callback_rows
from sandbox.max import DEMO_BOT_ID, DEMO_TOKEN, create_app

BASE = "https://max.sandbox.test"
SECRET = "wh_Secret-0123456789"
USER = 123456789  # the go-stab user
EXAMPLES = Path(__file__).resolve().parents[1] / "fixtures" / "corpora" / "max" / "examples"
AUTH = {"Authorization": DEMO_TOKEN}

MENU = (("1", "Buy"), ("2", "Order status"), ("0", "Talk to a person"))
MENU_TEXT = "How can we help?\n1 — Buy\n2 — Order status\n0 — Talk to a person"
RATING = tuple((str(n), str(n)) for n in range(1, 6))


def example(name: str) -> Any:
    return json.loads((EXAMPLES / name).read_bytes())


def adapter(**settings: Any) -> MaxAdapter:
    account = ChannelAccountInfo(
        id=3,
        kind="max",
        key="acct-key",
        credentials={"access_token": DEMO_TOKEN, "secret": SECRET},
        settings=settings,
        external_id=str(DEMO_BOT_ID),
    )
    return MaxAdapter(account, HttpClient(BASE))


def menu(text: str = MENU_TEXT, **kw: Any) -> OutboundMessage:
    return OutboundMessage("b-1", str(USER), text, **kw)


def callback(key: str, label: str) -> dict[str, str]:
    return {"type": "callback", "text": label, "payload": key}


def keyboard(rows: list[list[dict[str, Any]]]) -> dict[str, Any]:
    return {"type": "inline_keyboard", "payload": {"buttons": rows}}


MENU_KEYBOARD = keyboard([[callback(k, label)] for k, label in MENU])


class Recorder:
    """``POST /messages`` answered with the schema-built send response."""

    def __init__(self, mock: responses.RequestsMock) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.answer = example("schema-built-send-message.response.json")  # schema-built
        mock.add_callback(responses.POST, f"{BASE}/messages", self._answer)

    def _answer(self, request: Any) -> tuple[int, dict[str, str], str]:
        self.bodies.append(json.loads(request.body))
        answer = json.loads(json.dumps(self.answer))
        answer["message"]["body"]["mid"] = f"mid.{len(self.bodies):032x}"
        return 200, {}, json.dumps(answer)


@pytest.fixture
def api() -> Iterator[Recorder]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield Recorder(mock)


# -- the send body ------------------------------------------------------------------------------


def test_a_menu_goes_with_one_callback_button_per_row_and_its_text(api: Recorder) -> None:
    adapter().send(menu(buttons=MENU))
    [body] = api.bodies
    assert body["text"] == MENU_TEXT  # the text is kept
    assert body["attachments"] == [MENU_KEYBOARD]


def test_the_rating_is_one_row(api: Recorder) -> None:
    adapter().send(menu("Rate us from 1 to 5", buttons=RATING))
    [body] = api.bodies
    assert body["attachments"] == [keyboard([[callback(k, k) for k, _ in RATING]])]


def test_without_buttons_there_is_no_keyboard(api: Recorder) -> None:
    adapter().send(menu())
    [body] = api.bodies
    assert body["attachments"] is None and body["text"] == MENU_TEXT


def test_the_contact_button_gets_a_row_of_its_own_below(api: Recorder) -> None:
    adapter(contact_button="Share my phone").send(menu(buttons=MENU))
    [body] = api.bodies
    contact = [{"type": "request_contact", "text": "Share my phone"}]
    assert body["attachments"] == [keyboard([*MENU_KEYBOARD["payload"]["buttons"], contact])]


LONG_31 = tuple((str(n), f"Option {n}") for n in range(31))  # 31 rows of one


@pytest.mark.parametrize(
    "buttons",
    [
        LONG_31,  # more than 30 rows
        tuple((str(n), str(n)) for n in range(MAX_BUTTONS + 1)),  # 211 buttons
        (("1", "Buy"), ("x" * 1025, "Too long a payload")),
        (("", "No id"),),
    ],
)
def test_over_the_limits_the_text_goes_alone(api: Recorder, buttons: Any) -> None:
    adapter().send(menu(buttons=buttons))
    [body] = api.bodies
    assert body["attachments"] is None and body["text"] == MENU_TEXT


def test_over_the_limits_the_contact_button_stays(api: Recorder) -> None:
    thirty = LONG_31[:30]  # fits alone, not with the contact row
    assert len(callback_rows(thirty)) == 30
    adapter(contact_button="Share my phone").send(menu(buttons=thirty))
    [body] = api.bodies
    assert body["attachments"] == [
        keyboard([[{"type": "request_contact", "text": "Share my phone"}]])
    ]


def test_at_the_limits_the_keyboard_goes() -> None:
    rows = callback_rows(tuple((str(n), str(n)) for n in range(MAX_BUTTONS)))
    assert (len(rows), {len(r) for r in rows}) == (30, {7})  # 210 in rows of 7
    assert callback_rows((("x" * 1024, "1024"),)) != []
    [[long]] = callback_rows((("1", "y" * 200),))
    assert long["text"] == "y" * 128  # a button's text is 1-128 characters
    assert callback_rows((("7", " "),)) == [[callback("7", "7")]]  # a blank label shows the id


def test_a_split_text_carries_the_keyboard_on_its_last_part(api: Recorder) -> None:
    long = "a" * 3990 + "\n\n" + "b" * 100 + "\n" + MENU_TEXT
    result = adapter().send(menu(long, buttons=MENU))
    first, last = api.bodies
    assert first["attachments"] is None and last["attachments"] == [MENU_KEYBOARD]
    assert len(result.external_ids) == 2


# -- a press ------------------------------------------------------------------------------------


def webhook(body: bytes) -> WebhookRequest:
    return WebhookRequest(
        method="POST",
        url="https://bridge.test/webhooks/max/acct-key",
        headers={"x-max-bot-api-secret": SECRET},
        body=body,
        received_at=dt.datetime(2026, 12, 6, 9, 0, tzinfo=dt.UTC),
    )


def test_a_go_stab_press_is_a_callback_with_its_payload() -> None:
    raw = (EXAMPLES / "go-stab.webhook.message_callback.json").read_bytes()  # go-stab
    [press] = adapter().parse(webhook(raw))
    assert isinstance(press, InboundMessage)
    assert (press.kind, press.text, press.external_thread_id) == (
        MessageKind.CALLBACK,
        json.loads(raw)["callback"]["payload"],
        str(USER),
    )
    assert press.callback_id == json.loads(raw)["callback"]["callback_id"]


def test_a_press_with_a_menu_id_reads_as_that_reply() -> None:
    # the go-stab update with the payload a menu button carries (built from it)
    update = example("go-stab.webhook.message_callback.json")
    update["callback"]["payload"] = "2"
    [press] = adapter().parse(webhook(json.dumps(update).encode()))
    assert isinstance(press, InboundMessage)
    assert (press.kind, press.text) == (MessageKind.CALLBACK, "2")


class Sandbox:
    """The MAX sandbox behind the adapter's HTTP (``responses`` hands every
    API call to the Flask app)."""

    def __init__(self, mock: responses.RequestsMock) -> None:
        self.client: FlaskClient = create_app({"per_chat_per_s": 0}).test_client()
        for method in ("GET", "POST"):
            mock.add_callback(method, re.compile(rf"{BASE}/.*"), self._forward)

    def _forward(self, request: Any) -> tuple[int, dict[str, str], bytes]:
        parts = urlsplit(request.url)
        answer = self.client.open(
            parts.path,
            method=request.method,
            query_string=parts.query,
            data=request.body,
            headers={"Authorization": request.headers.get("Authorization", "")},
            content_type="application/json",
        )
        return answer.status_code, {}, answer.get_data()


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield Sandbox(mock)


def test_the_sandbox_takes_the_keyboard_and_a_press_comes_back_as_the_id(
    sandbox: Sandbox,
) -> None:
    bot = adapter(contact_button="Share my phone")
    sandbox.client.post("/_customer", json={"from": USER, "name": "John Doe", "text": "Hi"})
    cursor = bot.poll(None, 0).cursor
    sent = bot.send(menu(buttons=MENU))  # accepted as FACTS §9 documents keyboards
    [entry] = sandbox.client.get(f"/_sent?user_id={USER}").get_json()["sent"]
    assert entry["attachments"][0]["payload"]["buttons"][:3] == [
        [callback(k, label)] for k, label in MENU
    ]
    assert entry["mid"] == sent.external_ids[0]

    press = sandbox.client.post("/_button", json={"user": USER, "button": "Order status"})
    assert press.get_json()["queued"] is True  # no subscription: kept for GET /updates
    [delivery] = bot.poll(cursor, 0).deliveries
    [event] = bot.parse(webhook(delivery.body))
    assert isinstance(event, InboundMessage)
    assert (event.kind, event.text, event.external_thread_id) == (
        MessageKind.CALLBACK,
        "2",
        str(USER),
    )
    assert event.reply_to == sent.external_ids[0]
    bot.acknowledge(event)
    [answer] = sandbox.client.get("/_state").get_json()["accounts"][0]["answers"]
    assert (answer["callback_id"], answer["body"]) == (event.callback_id, {"notification": "✓"})


# -- the sandbox: keyboards as MAX documents them, and the press control ------------------------


@pytest.fixture
def client() -> FlaskClient:
    client = create_app({"per_chat_per_s": 0}).test_client()  # no 2/s per chat here
    client.post("/_customer", json={"from": USER, "name": "John Doe", "text": "Hi"})
    return client


def send(client: FlaskClient, *attachments: dict[str, Any], text: str = "Pick one") -> Any:
    body = {"text": text, "attachments": list(attachments)}
    return client.post(f"/messages?user_id={USER}", headers=AUTH, json=body)


def test_the_docs_keyboards_are_accepted(client: FlaskClient) -> None:
    for name in (
        "docs.info.send-message.inline-keyboard-callback-chat.request.json",  # docs: chat button
        "docs.post-messages.link-button.request.json",  # docs: link button
        "schema-built-send-message.request-contact.request.json",  # schema-built
    ):
        answer = client.post(f"/messages?user_id={USER}", headers=AUTH, json=example(name))
        assert answer.status_code == 200, (name, answer.get_json())


@pytest.mark.parametrize(
    ("rows", "wrong"),
    [
        ([], "non-empty"),
        ([[callback("1", "o")]] * 31, "at most 30 rows"),
        ([[callback("1", "o")] * 7] * 30 + [[callback("1", "o")]], "at most 30 rows"),
        ([[callback("1", "o")] * 8], "at most 7 buttons in this row"),
        (
            [[callback("1", "o")] * 3 + [{"type": "request_contact", "text": "Phone"}]],
            "at most 3 buttons in this row",
        ),
        ([[{"type": "callback", "text": "o"}]], "payload"),
        ([[callback("x" * 1025, "o")]], "payload"),
        ([[callback("1", "")]], "text must be 1-128"),
        ([[callback("1", "y" * 129)]], "text must be 1-128"),
        ([[{"type": "link", "text": "Site"}]], "url"),
        ([[{"type": "teleport", "text": "Go"}]], "type must be one of"),
        ([[{"type": ["callback"], "text": "Go"}]], "type must be one of"),
        ([["not a button"]], "type must be one of"),
    ],
)
def test_the_sandbox_refuses_keyboards_outside_the_documented_shape(
    client: FlaskClient, rows: Any, wrong: str
) -> None:
    answer = send(client, keyboard(rows))
    assert answer.status_code == 400
    body = answer.get_json()
    assert body["code"] == "proto.payload" and wrong in body["message"]


def test_a_full_keyboard_is_accepted(client: FlaskClient) -> None:
    assert send(client, keyboard([[callback("1", "o")] * 7] * 30)).status_code == 200


def test_an_answer_replacing_the_message_has_its_keyboard_checked(client: FlaskClient) -> None:
    send(client, MENU_KEYBOARD)
    update = client.post("/_button", json={"user": USER, "payload": "1"}).get_json()["update"]
    callback_id = update["callback"]["callback_id"]
    bad = {"message": {"text": "Thanks", "attachments": [keyboard([])]}}
    refused = client.post(f"/answers?callback_id={callback_id}", headers=AUTH, json=bad)
    assert refused.status_code == 400
    good = {"message": {"text": "Thanks", "attachments": [keyboard([[callback("x", "Again")]])]}}
    answered = client.post(f"/answers?callback_id={callback_id}", headers=AUTH, json=good)
    assert answered.get_json() == {"success": True}


def test_the_press_control_presses_a_button_by_label_or_payload(client: FlaskClient) -> None:
    menu_mid = send(client, MENU_KEYBOARD, text=MENU_TEXT).get_json()["message"]["body"]["mid"]
    send(client, text="A rep's reply")  # no keyboard: not the one pressed
    by_label = client.post("/_button", json={"user": USER, "button": "Talk to a person"})
    update = by_label.get_json()["update"]
    assert update["update_type"] == "message_callback"
    assert update["callback"]["payload"] == "0"
    assert update["message"]["body"]["mid"] == menu_mid
    assert update["message"]["sender"]["user_id"] == DEMO_BOT_ID
    stab = example("go-stab.webhook.message_callback.json")  # go-stab: the same shape
    assert set(update) == set(stab) and set(update["callback"]) == set(stab["callback"])
    by_payload = client.post("/_button", json={"user": USER, "payload": "2", "mid": menu_mid})
    assert by_payload.get_json()["update"]["callback"]["payload"] == "2"


def test_the_press_control_presses_only_buttons_a_message_has(client: FlaskClient) -> None:
    nothing = client.post("/_button", json={"user": USER, "payload": "1"})
    assert nothing.status_code == 409  # no message with callback buttons yet
    send(client, MENU_KEYBOARD)
    missing = client.post("/_button", json={"user": USER, "payload": "9"})
    assert missing.status_code == 409 and "Order status" in missing.get_json()["message"]
    unknown = client.post("/_button", json={"user": USER, "button": "Refund"})
    assert unknown.status_code == 409
    elsewhere = client.post("/_button", json={"user": USER, "payload": "1", "mid": "mid.nope"})
    assert elsewhere.status_code == 404
