# ruff: noqa: S105, S106  (test secrets)
"""WhatsApp's native buttons for the service layer's menus and ratings
(``OutboundMessage.buttons``): the send body (Graph API mocked with
``responses``: reply buttons, a list, the text alone over the limits), a
press read back as the client's text (the corpus' pywa fixtures, sources
named from MANIFEST.json, and a body built from Meta's interactive pages),
and the sandbox's ``/_press`` control: it accepts the body the adapter
sends and posts the reply Meta would, which the adapter reads as "2".
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import responses

from bridge.model import ChannelAccountInfo, InboundMessage, MessageKind, OutboundMessage
from channel_adapters.whatsapp import WhatsAppAdapter
from channel_adapters.whatsapp.inbound import parse, split
from channel_adapters.whatsapp.outbound import plan
from sandbox.whatsapp import DEMO_PHONE_NUMBER_ID
from tests.unit.test_sandbox_whatsapp import AUTH, CUSTOMER, SEND, customer_writes, make, receiver

__all__ = ["receiver"]  # the sandbox's webhook receiver fixture, shared

ROOT = Path(__file__).resolve().parents[2]
CORPORA = ROOT / "tests" / "fixtures" / "corpora"
MANIFEST = {e["file"]: e for e in json.loads((CORPORA / "MANIFEST.json").read_text())}
NUMBER = "106540352242922"
GRAPH = f"https://graph.facebook.com/v21.0/{NUMBER}/messages"
NOW = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)

MENU_TEXT = "How can we help?\n1 — Buy\n2 — Order status\n0 — Talk to a person"
MENU = (("1", "Buy"), ("2", "Order status"), ("0", "Talk to a person"))
RU_TEXT = (
    "Чем можем помочь?\n1 — Купить\n2 — Статус заказа\n"
    "3 — Доставка и оплата заказа в регионы\n0 — Поговорить с человеком"
)
RU_MENU = (
    ("1", "Купить"),
    ("2", "Статус заказа"),
    ("3", "Доставка и оплата заказа в регионы"),
    ("0", "Поговорить с человеком"),
)
RATING_TEXT = "How would you rate our help? Reply with a number from 1 (bad) to 5 (excellent)"
RATINGS = tuple((str(n), str(n)) for n in range(1, 6))


def adapter() -> WhatsAppAdapter:
    account = ChannelAccountInfo(
        id=1,
        kind="whatsapp",
        key="acct-key",
        credentials={"access_token": "EAAG-test-token"},
        settings={"waba_id": "102290129340398"},
        external_id=NUMBER,
    )
    return WhatsAppAdapter(account)


@pytest.fixture
def graph() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


def send(graph: responses.RequestsMock, message: OutboundMessage) -> list[dict[str, Any]]:
    """What the adapter posted for ``message`` (one wamid per post)."""
    graph.post(GRAPH, json={"messaging_product": "whatsapp", "messages": [{"id": "wamid.X"}]})
    adapter().send(message)
    return [json.loads(call.request.body) for call in graph.calls]


def menu(text: str, buttons: tuple[tuple[str, str], ...], **extra: Any) -> OutboundMessage:
    return OutboundMessage("b-1", CUSTOMER, text=text, buttons=buttons, **extra)


def base(**extra: Any) -> dict[str, Any]:
    return {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": CUSTOMER,
        "biz_opaque_callback_data": "b-1",
        **extra,
    }


# -- the send body -----------------------------------------------------------------------------


def test_up_to_three_short_choices_go_as_reply_buttons(graph: responses.RequestsMock) -> None:
    (body,) = send(graph, menu(MENU_TEXT, MENU, reply_to="wamid.Q"))
    assert body == base(
        context={"message_id": "wamid.Q"},
        type="interactive",
        interactive={
            "type": "button",
            "body": {"text": MENU_TEXT},
            "action": {
                "buttons": [
                    {"type": "reply", "reply": {"id": "1", "title": "Buy"}},
                    {"type": "reply", "reply": {"id": "2", "title": "Order status"}},
                    {"type": "reply", "reply": {"id": "0", "title": "Talk to a person"}},
                ]
            },
        },
    )


def test_more_choices_or_long_labels_go_as_a_list(graph: responses.RequestsMock) -> None:
    (body,) = send(graph, menu(RU_TEXT, RU_MENU))
    assert body["type"] == "interactive"
    choices = body["interactive"]
    assert (choices["type"], choices["body"]) == ("list", {"text": RU_TEXT})
    assert choices["action"]["button"] == "Выбрать"  # the text is Russian
    (section,) = choices["action"]["sections"]
    assert section["rows"] == [
        {"id": "1", "title": "Купить"},
        {"id": "2", "title": "Статус заказа"},
        # 33 characters: cut to 24 in the title, whole in the description
        {
            "id": "3",
            "title": "Доставка и оплата заказ…",
            "description": "Доставка и оплата заказа в регионы",
        },
        {"id": "0", "title": "Поговорить с человеком"},  # 22: a row, not a button
    ]
    assert all(len(row["title"]) <= 24 for row in section["rows"])


def test_three_choices_with_a_label_over_twenty_go_as_a_list(
    graph: responses.RequestsMock,
) -> None:
    three = (("1", "Купить"), ("2", "Статус заказа"), ("0", "Поговорить с человеком"))
    (body,) = send(graph, menu(RU_TEXT, three))
    assert body["interactive"]["type"] == "list"
    titles = [r["title"] for r in body["interactive"]["action"]["sections"][0]["rows"]]
    assert titles == ["Купить", "Статус заказа", "Поговорить с человеком"]


def test_a_rating_goes_as_a_list_of_five(graph: responses.RequestsMock) -> None:
    (body,) = send(graph, menu(RATING_TEXT, RATINGS))
    choices = body["interactive"]
    assert (choices["type"], choices["action"]["button"]) == ("list", "Choose")
    assert choices["action"]["sections"] == [
        {"rows": [{"id": str(n), "title": str(n)} for n in range(1, 6)]}
    ]


@pytest.mark.parametrize(
    ("text", "buttons"),
    [
        pytest.param(
            "Pick one", tuple((str(n), f"Option {n}") for n in range(11)), id="eleven-choices"
        ),
        pytest.param("x" * 1025, MENU, id="text-over-the-body-limit"),
        pytest.param("Pick one", (("1", "A"), ("1", "B")), id="repeated-id"),
        pytest.param("Pick one", (("1", "A"), ("2" * 257, "B")), id="id-over-256"),
    ],
)
def test_over_the_limits_the_text_goes_alone(
    graph: responses.RequestsMock, text: str, buttons: tuple[tuple[str, str], ...]
) -> None:
    (body,) = send(graph, menu(text, buttons))
    assert body == base(type="text", text={"body": text, "preview_url": False})


def test_without_buttons_the_text_goes_as_before(graph: responses.RequestsMock) -> None:
    (body,) = send(graph, menu(MENU_TEXT, ()))
    assert body == base(type="text", text={"body": MENU_TEXT, "preview_url": False})


# -- a press -----------------------------------------------------------------------------------


def _corpus(name: str, variant: str) -> bytes:
    entry = MANIFEST[f"whatsapp/pywa_updates/{name}"]
    assert entry["repo"] == "david-lev/pywa"  # tests/data/updates/<name>, MIT
    data = json.loads((CORPORA / "whatsapp" / "pywa_updates" / name).read_text("utf-8"))
    return json.dumps(data[variant]).encode()


def events(body: bytes) -> list[InboundMessage]:
    out = []
    for delivery in split(body, "1122334455667", ""):
        for event in parse(delivery.body, NOW):
            assert isinstance(event, InboundMessage)
            out.append(event)
    return out


def test_a_pressed_button_is_the_clients_text_its_id() -> None:
    # david-lev/pywa:tests/data/updates/callback_button.json "button"
    (button,) = events(_corpus("callback_button.json", "button"))
    assert (button.kind, button.text) == (MessageKind.TEXT, "callback_data")
    assert (button.raw["reply_id"], button.raw["title"]) == ("callback_data", "title")
    assert button.reply_to == "wamid.xyzxyz"
    # david-lev/pywa:tests/data/updates/callback_selection.json "description" (list_reply)
    (row,) = events(_corpus("callback_selection.json", "description"))
    assert (row.kind, row.text, row.raw["description"]) == (
        MessageKind.TEXT,
        "callback_data",
        "description",
    )


def test_a_pressed_menu_row_reads_as_the_digit() -> None:
    # built from Meta's interactive list messages page: the webhook's
    # interactive.list_reply {id, title, description?} replying to our message
    body = {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": "102290129340398",
                "changes": [
                    {
                        "field": "messages",
                        "value": {
                            "messaging_product": "whatsapp",
                            "metadata": {
                                "display_phone_number": "15550001111",
                                "phone_number_id": "1122334455667",
                            },
                            "contacts": [{"profile": {"name": "Anna"}, "wa_id": CUSTOMER}],
                            "messages": [
                                {
                                    "context": {"from": "15550001111", "id": "wamid.MENU"},
                                    "from": CUSTOMER,
                                    "id": "wamid.PRESS",
                                    "timestamp": "1764590400",
                                    "type": "interactive",
                                    "interactive": {
                                        "type": "list_reply",
                                        "list_reply": {"id": "2", "title": "Статус заказа"},
                                    },
                                }
                            ],
                        },
                    }
                ],
            }
        ],
    }
    (press,) = events(json.dumps(body).encode())
    assert (press.kind, press.text, press.reply_to) == (MessageKind.TEXT, "2", "wamid.MENU")


# -- the sandbox -------------------------------------------------------------------------------


def test_sandbox_takes_the_adapters_bodies_and_press_replies_as_meta(receiver: Any) -> None:
    hook, url = receiver
    client = make(url, status_webhooks="off")
    customer_writes(client)  # the 24-hour window opens
    for text, buttons in ((MENU_TEXT, MENU), (RU_TEXT, RU_MENU), (RATING_TEXT, RATINGS)):
        (body,) = plan(menu(text, buttons), CUSTOMER)
        answer = client.post(SEND, json=body, headers=AUTH)
        assert answer.status_code == 200, answer.json
    menu_id, rows_id, ratings_id = (s["id"] for s in client.get("/_sent").json["sent"])

    pressed = client.post("/_press", json={"from": CUSTOMER, "id": "2", "message_id": menu_id})
    assert pressed.status_code == 200, pressed.json
    assert pressed.json["delivered"] is True
    message = pressed.json["payload"]["entry"][0]["changes"][0]["value"]["messages"][0]
    assert message["interactive"] == {
        "type": "button_reply",
        "button_reply": {"id": "2", "title": "Order status"},
    }
    assert message["context"]["id"] == menu_id
    # without message_id: the latest button or list message (the rating)
    assert client.post("/_press", json={"from": CUSTOMER, "id": "4"}).status_code == 200
    rows = client.post("/_press", json={"from": CUSTOMER, "id": "3", "message_id": rows_id}).json
    long_row = rows["payload"]["entry"][0]["changes"][0]["value"]["messages"][0]["interactive"]
    assert long_row["list_reply"]["description"] == "Доставка и оплата заказа в регионы"

    assert all(p["signed"] for p in hook.posts)
    presses = [
        (e.text, e.reply_to)
        for p in hook.posts
        if b'"interactive"' in p["raw"]
        for d in split(p["raw"], DEMO_PHONE_NUMBER_ID, "")
        for e in parse(d.body, NOW)
        if isinstance(e, InboundMessage)
    ]
    assert presses == [("2", menu_id), ("4", ratings_id), ("3", rows_id)]


def test_sandbox_press_refuses_what_was_not_shown(receiver: Any) -> None:
    _, url = receiver
    client = make(url, status_webhooks="off")
    nothing = client.post("/_press", json={"from": CUSTOMER, "id": "1"})
    assert (nothing.status_code, nothing.json["error"]) == (404, "no_interactive")
    customer_writes(client)
    (body,) = plan(menu(MENU_TEXT, MENU), CUSTOMER)
    assert client.post(SEND, json=body, headers=AUTH).status_code == 200
    unknown = client.post("/_press", json={"from": CUSTOMER, "id": "7"})
    assert (unknown.status_code, unknown.json["error"]) == (400, "unknown_button")
    other = client.post("/_press", json={"from": "79990009999", "id": "1"})
    assert other.status_code == 404


def interactive(**content: Any) -> dict[str, Any]:
    return {
        "messaging_product": "whatsapp",
        "to": CUSTOMER,
        "type": "interactive",
        "interactive": {"body": {"text": "Pick one"}, **content},
    }


def _buttons(*pairs: tuple[str, str]) -> dict[str, Any]:
    return {"buttons": [{"type": "reply", "reply": {"id": i, "title": t}} for i, t in pairs]}


def _rows(n: int, **row: Any) -> list[dict[str, Any]]:
    return [{"id": str(i), "title": f"Row {i}", **row} for i in range(n)]


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(
            {"type": "button", "action": _buttons(*[(str(i), str(i)) for i in range(4)])},
            id="four-buttons",
        ),
        pytest.param({"type": "button", "action": _buttons(("1", "x" * 21))}, id="title-21"),
        pytest.param({"type": "button", "action": _buttons(("i" * 257, "A"))}, id="id-257"),
        pytest.param({"type": "button", "action": _buttons(("1", "A"), ("2", "A"))}, id="twins"),
        pytest.param({"type": "button", "action": _buttons(("1", "A"), ("1", "B"))}, id="same-id"),
        pytest.param(
            {"type": "list", "action": {"button": "Choose", "sections": [{"rows": _rows(11)}]}},
            id="eleven-rows",
        ),
        pytest.param(
            {
                "type": "list",
                "action": {
                    "button": "Choose",
                    "sections": [
                        {"title": "A", "rows": _rows(6)},
                        {"title": "B", "rows": _rows(5)},
                    ],
                },
            },
            id="eleven-rows-in-two-sections",
        ),
        pytest.param(
            {
                "type": "list",
                "action": {
                    "button": "Choose",
                    "sections": [{"rows": [{"id": "1", "title": "y" * 25}]}],
                },
            },
            id="row-title-25",
        ),
        pytest.param(
            {
                "type": "list",
                "action": {
                    "button": "Choose",
                    "sections": [{"rows": _rows(1, description="d" * 73)}],
                },
            },
            id="description-73",
        ),
        pytest.param(
            {
                "type": "list",
                "action": {
                    "button": "Choose",
                    "sections": [{"rows": [{"id": "r" * 201, "title": "A"}]}],
                },
            },
            id="row-id-201",
        ),
        pytest.param(
            {"type": "list", "action": {"button": "b" * 21, "sections": [{"rows": _rows(2)}]}},
            id="list-button-21",
        ),
        pytest.param(
            {
                "type": "list",
                "action": {
                    "button": "Choose",
                    "sections": [{"rows": _rows(2)}, {"rows": _rows(1)}],
                },
            },
            id="two-sections-without-titles",
        ),
        pytest.param(
            {"type": "list", "action": {"sections": [{"rows": _rows(2)}]}}, id="no-list-button"
        ),
    ],
)
def test_sandbox_refuses_interactive_bodies_over_metas_limits(
    receiver: Any, content: dict[str, Any]
) -> None:
    _, url = receiver
    client = make(url, status_webhooks="off")
    customer_writes(client)
    answer = client.post(SEND, json=interactive(**content), headers=AUTH)
    assert answer.status_code == 400
    assert answer.json["error"]["code"] in (100, 131008)
    assert client.get("/_sent").json == {"sent": []}


def test_sandbox_accepts_the_limits_themselves(receiver: Any) -> None:
    _, url = receiver
    client = make(url, status_webhooks="off")
    customer_writes(client)
    edge = [
        {"type": "button", "action": _buttons(("i" * 256, "x" * 20), ("2", "B"), ("3", "C"))},
        {
            "type": "list",
            "action": {
                "button": "b" * 20,
                "sections": [
                    {"title": "t" * 24, "rows": _rows(9)},
                    {
                        "title": "Other",
                        "rows": [{"id": "r" * 200, "title": "y" * 24, "description": "d" * 72}],
                    },
                ],
            },
        },
    ]
    for content in edge:
        answer = client.post(SEND, json=interactive(**content), headers=AUTH)
        assert answer.status_code == 200, answer.json
    assert len(client.get("/_sent").json["sent"]) == 2
