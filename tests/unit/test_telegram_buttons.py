# ruff: noqa: S105  (test secrets)
"""Telegram: a menu's or rating's buttons as an inline keyboard, and a press
coming back as the client's reply.

* The send body (HTTP mocked with ``responses``): with and without buttons,
  rows, the limits (api.json ``InlineKeyboardButton.callback_data`` 1-64
  bytes; 100 buttons and 8 per row, third-party: tginfo/Telegram-Limits#228),
  a split text and an attachment.
* The body the adapter builds is what the sandbox (which checks every
  parameter against api.json) accepts; a press made with the sandbox's
  control comes back through ``getUpdates`` as a CALLBACK whose text is the
  button's id, and ``acknowledge`` answers it.
* A press parsed from the corpus: ``TelegramBotsHelper__GetUpdateWithMessage
  InCallbackQuery.json`` (rubenlagus/TelegramBots, extracted; MANIFEST).
* The sandbox's keyboard checks and its press control.
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
    Attachment,
    ChannelAccountInfo,
    InboundMessage,
    MessageKind,
    OutboundMessage,
    WebhookRequest,
)
from channel_adapters.telegram import TelegramAdapter
from channel_adapters.telegram.outbound import MAX_BUTTONS, inline_keyboard
from sandbox.telegram import DEMO_BOT_TOKEN, create_app
from sandbox.telegram.markup import TEXT_BUTTONS, TOO_LONG

BASE = "https://tg.sandbox.test"
TOKEN = DEMO_BOT_TOKEN  # the sandbox's demo bot; a token of the real shape
SECRET = "Sekr3t_token-1"
CUSTOMER = 1001
NO_FLOOD = {"per_chat_per_s": None, "per_bot_per_s": None, "per_group_per_min": None}
CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "corpora" / "telegram"
#: rubenlagus/TelegramBots TelegramBotsHelper.java#L16-L177 (extracted; MANIFEST)
CORPUS_PRESS = "telegrambots_extracted/TelegramBotsHelper__GetUpdateWithMessageInCallbackQuery.json"

MENU = (("1", "Buy"), ("2", "Order status"), ("0", "Talk to a person"))
MENU_TEXT = "How can we help?\n1 — Buy\n2 — Order status\n0 — Talk to a person"
RATING = tuple((str(n), str(n)) for n in range(1, 6))


def adapter() -> TelegramAdapter:
    account = ChannelAccountInfo(
        id=1,
        kind="telegram",
        key="acct-key",
        credentials={"bot_token": TOKEN, "secret_token": SECRET},
    )
    return TelegramAdapter(account, HttpClient(BASE))


def menu(text: str = MENU_TEXT, **kw: Any) -> OutboundMessage:
    return OutboundMessage("b-1", str(CUSTOMER), text, **kw)


class Recorder:
    """sendMessage & co. answered like the Bot API; the JSON bodies kept."""

    def __init__(self, mock: responses.RequestsMock) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.next_id = 40
        for method in ("sendMessage", "sendPhoto", "answerCallbackQuery"):
            mock.add_callback(responses.POST, f"{BASE}/bot{TOKEN}/{method}", self._answer)

    def _answer(self, request: Any) -> tuple[int, dict[str, str], str]:
        method = urlsplit(request.url).path.rsplit("/", 1)[-1]
        self.calls.append((method, json.loads(request.body)))
        self.next_id += 1
        result: Any = True
        if method != "answerCallbackQuery":
            result = {"message_id": self.next_id, "date": 1, "chat": {"id": CUSTOMER}}
        return 200, {}, json.dumps({"ok": True, "result": result})


@pytest.fixture
def api() -> Iterator[Recorder]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield Recorder(mock)


# -- the send body ------------------------------------------------------------------------------


def test_a_menu_goes_with_one_button_per_row_and_its_text(api: Recorder) -> None:
    adapter().send(menu(buttons=MENU))
    [(method, body)] = api.calls
    assert method == "sendMessage" and body["text"] == MENU_TEXT  # the text is kept
    assert body["reply_markup"] == {
        "inline_keyboard": [
            [{"text": "Buy", "callback_data": "1"}],
            [{"text": "Order status", "callback_data": "2"}],
            [{"text": "Talk to a person", "callback_data": "0"}],
        ]
    }


def test_the_rating_is_one_row(api: Recorder) -> None:
    adapter().send(menu("Rate us from 1 to 5", buttons=RATING))
    [(_, body)] = api.calls
    row = [{"text": str(n), "callback_data": str(n)} for n in range(1, 6)]
    assert body["reply_markup"] == {"inline_keyboard": [row]}


def test_without_buttons_there_is_no_keyboard(api: Recorder) -> None:
    adapter().send(menu())
    [(_, body)] = api.calls
    assert "reply_markup" not in body and body["text"] == MENU_TEXT


@pytest.mark.parametrize(
    "buttons",
    [
        tuple((str(n), f"Option {n}") for n in range(MAX_BUTTONS + 1)),  # 101 buttons
        (("1", "Buy"), ("x" * 65, "Too long an id")),  # callback_data over 64 bytes
        (("1", "Buy"), ("ж" * 33, "66 bytes in UTF-8")),
        (("", "No id"),),  # callback_data is at least 1 byte
        (("\ud800", "A lone surrogate"),),
    ],
)
def test_over_the_limits_the_text_goes_alone(api: Recorder, buttons: Any) -> None:
    adapter().send(menu(buttons=buttons))
    [(_, body)] = api.calls
    assert "reply_markup" not in body and body["text"] == MENU_TEXT


def test_at_the_limits_the_keyboard_goes() -> None:
    hundred = tuple((str(n), f"Option {n}") for n in range(MAX_BUTTONS))
    assert len(inline_keyboard(hundred)["inline_keyboard"]) == 100  # type: ignore[index]
    assert inline_keyboard((("x" * 64, "64 bytes"),)) is not None
    short = tuple((str(n), str(n)) for n in range(10))
    rows = inline_keyboard(short)["inline_keyboard"]  # type: ignore[index]
    assert [len(r) for r in rows] == [8, 2]  # at most 8 in a row
    blank = inline_keyboard((("7", "  "),))
    assert blank == {"inline_keyboard": [[{"text": "7", "callback_data": "7"}]]}


def test_a_split_text_carries_the_keyboard_on_its_last_part(api: Recorder) -> None:
    long = "a" * 4000 + "\n\n" + "b" * 200 + "\n" + MENU_TEXT
    result = adapter().send(menu(long, buttons=MENU))
    assert [m for m, _ in api.calls] == ["sendMessage", "sendMessage"]
    first, last = api.calls[0][1], api.calls[1][1]
    assert "reply_markup" not in first and last["reply_markup"]["inline_keyboard"][0] == [
        {"text": "Buy", "callback_data": "1"}
    ]
    assert len(result.external_ids) == 2


def test_with_an_attachment_the_keyboard_rides_on_it(api: Recorder) -> None:
    photo = Attachment(kind=MessageKind.PHOTO, file_ref="AgACAgIAAxkBAAI")
    adapter().send(menu("Pick one", buttons=RATING, attachments=(photo,)))
    [(method, body)] = api.calls
    assert method == "sendPhoto" and body["caption"] == "Pick one"
    assert [b["callback_data"] for b in body["reply_markup"]["inline_keyboard"][0]] == list("12345")


def test_a_resent_reply_keeps_the_keyboard_on_the_part_still_missing(api: Recorder) -> None:
    long = "a" * 4090 + "\n\n" + MENU_TEXT  # two parts
    adapter().send(menu(long, buttons=MENU, sent_parts=("40",)))
    [(_, body)] = api.calls  # only the second part
    assert body["text"] == MENU_TEXT and "reply_markup" in body


# -- a press ------------------------------------------------------------------------------------


def webhook(body: bytes) -> WebhookRequest:
    return WebhookRequest(
        method="POST",
        url="https://bridge.test/webhooks/telegram/acct-key",
        headers={"x-telegram-bot-api-secret-token": SECRET},
        body=body,
        received_at=dt.datetime(2026, 12, 6, 9, 0, tzinfo=dt.UTC),
    )


def test_a_corpus_press_is_a_callback_with_its_data(api: Recorder) -> None:
    raw = (CORPUS / CORPUS_PRESS).read_bytes()
    [press] = adapter().parse(webhook(raw))
    assert isinstance(press, InboundMessage)
    assert (press.kind, press.text, press.callback_id) == (
        MessageKind.CALLBACK,
        "*",
        "4382bfdwdsb323b2d9",
    )
    assert (press.external_thread_id, press.external_user_id, press.reply_to) == ("2", "1", "3572")
    adapter().acknowledge(press)
    assert api.calls == [("answerCallbackQuery", {"callback_query_id": "4382bfdwdsb323b2d9"})]


def test_a_press_with_a_menu_id_reads_as_that_reply() -> None:
    # the corpus update with the data a menu button carries (built from it)
    update = json.loads((CORPUS / CORPUS_PRESS).read_bytes())
    update["callback_query"]["data"] = "2"
    [press] = adapter().parse(webhook(json.dumps(update).encode()))
    assert isinstance(press, InboundMessage)
    assert (press.kind, press.text) == (MessageKind.CALLBACK, "2")


class Sandbox:
    """The Telegram sandbox behind the adapter's HTTP (``responses``
    hands every Bot API call to the Flask app)."""

    def __init__(self, mock: responses.RequestsMock) -> None:
        self.client: FlaskClient = create_app(NO_FLOOD).test_client()
        pattern = re.compile(rf"{BASE}/bot.*")
        mock.add_callback(responses.POST, pattern, self._forward)

    def _forward(self, request: Any) -> tuple[int, dict[str, str], bytes]:
        path = urlsplit(request.url).path
        answer = self.client.post(path, data=request.body, content_type="application/json")
        return answer.status_code, {}, answer.get_data()


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield Sandbox(mock)


def test_the_sandbox_takes_the_keyboard_and_a_press_comes_back_as_the_id(
    sandbox: Sandbox,
) -> None:
    bot = adapter()
    cursor = bot.poll(None, 0).cursor  # getUpdates: the bot polls
    hello = {"from": {"id": CUSTOMER, "first_name": "Ann"}, "text": "/start"}
    assert sandbox.client.post("/_deliver", json=hello).get_json()["queued"] is True
    cursor = bot.poll(cursor, 0).cursor
    sent = bot.send(menu(buttons=MENU))  # accepted against api.json
    [entry] = sandbox.client.get(f"/_sent?chat_id={CUSTOMER}").get_json()["sent"]
    assert entry["message"]["reply_markup"] == inline_keyboard(MENU)
    assert str(entry["message_id"]) == sent.external_ids[0]

    press = {"chat_id": CUSTOMER, "button": "Order status"}
    assert sandbox.client.post("/_deliver", json=press).get_json()["queued"] is True
    [delivery] = bot.poll(cursor, 0).deliveries
    [event] = bot.parse(webhook(delivery.body))
    assert isinstance(event, InboundMessage)
    assert (event.kind, event.text, event.external_thread_id) == (
        MessageKind.CALLBACK,
        "2",
        str(CUSTOMER),
    )
    assert event.reply_to == sent.external_ids[0]
    bot.acknowledge(event)
    [state] = sandbox.client.get("/_state").get_json()["accounts"]
    assert [a["callback_query_id"] for a in state["callback_answers"]] == [event.callback_id]
    bot.acknowledge(event)  # a second answer is "query is too old": ignored


# -- the sandbox: keyboards as the Bot API reads them, and the press control --------------------


def api_call(client: FlaskClient, method: str, **params: Any) -> Any:
    return client.post(f"/bot{TOKEN}/{method}", json=params)


@pytest.fixture
def client() -> FlaskClient:
    client = create_app(NO_FLOOD).test_client()
    client.post("/_chats", json={"chat": {"id": CUSTOMER, "type": "private", "first_name": "Ann"}})
    return client


def keyboard(*rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {"inline_keyboard": list(rows)}


@pytest.mark.parametrize(
    ("markup", "description"),
    [
        (keyboard([{"text": "Buy"}]), TEXT_BUTTONS),  # no action: api.json "exactly one"
        (keyboard([{"text": "Buy", "callback_data": ""}]), TEXT_BUTTONS),
        (keyboard([{"text": "Buy", "callback_data": "x" * 100}]), "BUTTON_DATA_INVALID"),
        (keyboard(*[[{"text": "o", "callback_data": "o"}]] * 101), TOO_LONG),
        (keyboard([{"text": "o", "callback_data": "o"}] * 9), TOO_LONG),
    ],
)
def test_the_sandbox_refuses_keyboards_the_bot_api_refuses(
    client: FlaskClient, markup: dict[str, Any], description: str
) -> None:
    answer = api_call(client, "sendMessage", chat_id=CUSTOMER, text="x", reply_markup=markup)
    assert answer.status_code == 400
    assert answer.get_json()["description"] == f"Bad Request: {description}"


def test_the_sandbox_caps_are_settings(client: FlaskClient) -> None:
    client.post("/_config", json={"max_inline_buttons": None, "max_inline_row": None})
    wide = keyboard([{"text": "o", "callback_data": "o"}] * 9)
    answer = api_call(client, "sendMessage", chat_id=CUSTOMER, text="x", reply_markup=wide)
    assert answer.get_json()["ok"] is True
    assert client.post("/_config", json={"max_inline_row": 0}).status_code == 400


def test_a_url_button_is_not_a_text_button(client: FlaskClient) -> None:
    markup = keyboard([{"text": "Site", "url": "https://example.com"}])
    answer = api_call(client, "sendMessage", chat_id=CUSTOMER, text="x", reply_markup=markup)
    assert answer.get_json()["ok"] is True


def sent_menu(client: FlaskClient, text: str = MENU_TEXT) -> int:
    answer = api_call(
        client, "sendMessage", chat_id=CUSTOMER, text=text, reply_markup=inline_keyboard(MENU)
    )
    return int(answer.get_json()["result"]["message_id"])


def pressed(client: FlaskClient, **body: Any) -> Any:
    """A press, kept for getUpdates (the bot polls); its callback_query."""
    api_call(client, "getUpdates", timeout=0)
    answer = client.post("/_deliver", json={"chat_id": CUSTOMER, **body})
    if answer.status_code != 200:
        return answer
    [update] = api_call(client, "getUpdates", timeout=0).get_json()["result"][-1:]
    api_call(client, "getUpdates", offset=update["update_id"] + 1, timeout=0)
    return update["callback_query"]


def test_the_press_control_presses_a_button_by_its_label(client: FlaskClient) -> None:
    menu_id = sent_menu(client)
    api_call(client, "sendMessage", chat_id=CUSTOMER, text="A rep's reply")  # no keyboard
    query = pressed(client, button="Talk to a person")
    assert query["data"] == "0"
    # the latest message with a keyboard, not the latest message
    assert query["message"]["message_id"] == menu_id
    assert query["message"]["reply_markup"] == inline_keyboard(MENU)
    assert set(query) == {"id", "from", "message", "chat_instance", "data"}
    assert query["from"]["id"] == CUSTOMER
    answer = api_call(client, "answerCallbackQuery", callback_query_id=query["id"])
    assert answer.get_json() == {"ok": True, "result": True}


def test_the_press_control_presses_only_buttons_the_message_has(client: FlaskClient) -> None:
    sent_menu(client)
    assert pressed(client, callback_data="2")["data"] == "2"
    missing = pressed(client, callback_data="9")
    assert missing.status_code == 409 and "no button" in missing.get_json()["message"]
    unknown = pressed(client, button="Refund")
    assert unknown.status_code == 409 and "'Refund'" in unknown.get_json()["message"]
    assert pressed(client, button="Buy", message_id=["7"]).status_code == 400


def test_a_press_names_its_message(client: FlaskClient) -> None:
    first = sent_menu(client, "first menu")
    sent_menu(client, "second menu")
    query = pressed(client, button="Buy", message_id=first)
    assert (query["message"]["message_id"], query["data"]) == (first, "1")
