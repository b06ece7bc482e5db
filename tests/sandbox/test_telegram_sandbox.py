"""The Telegram sandbox behaves like the Bot API (api.json 10.1, FACTS.md 0-1).

Flask's test client drives the Bot API; webhook delivery runs over real HTTP
(werkzeug servers on port 0) to a small receiver app. Real corpora Updates
(tests/fixtures/corpora/telegram, provenance in its MANIFEST.json) must go
through ``/_deliver`` unchanged.
"""

from __future__ import annotations

import base64
import io
import json
import struct
import threading
import time
import zlib
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask, Response, request
from werkzeug.serving import make_server

from sandbox.telegram import DEMO_BOT_TOKEN, create_app
from sandbox.telegram.spec import load_spec

TOKEN = DEMO_BOT_TOKEN
SECRET = "Sekr3t_token-1"  # noqa: S105 - a test webhook secret
CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "corpora" / "telegram"
NO_FLOOD = {"per_chat_per_s": None, "per_bot_per_s": None, "per_group_per_min": None}
FAST = {**NO_FLOOD, "set_webhook_min_interval_s": 0, "webhook_timeout_s": 3,
        "redeliver_delay_s": 0.01, "redeliver_max_delay_s": 0.05}


# -- helpers -----------------------------------------------------------------------------


@contextmanager
def serve(app: Any) -> Iterator[str]:
    """Serve a WSGI app on 127.0.0.1:<free port> in a thread; yields the base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=5)


class Receiver:
    """A stand-in bridge webhook that records raw requests and answers as told."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.answers: deque[tuple[int, Any]] = deque()
        self.on_request: Any = None
        self.app = Flask("receiver")
        self.app.add_url_rule("/hook", "hook", self._hook, methods=["POST"])

    def _hook(self) -> Response:
        self.requests.append({"headers": dict(request.headers), "body": request.get_data()})
        if self.on_request:
            self.on_request()
        status, body = self.answers.popleft() if self.answers else (200, {"ok": True})
        if isinstance(body, (dict, list)):
            return Response(json.dumps(body), status=status, mimetype="application/json")
        return Response(body, status=status, mimetype="text/plain")


def api(client: Any, method: str, token: str = TOKEN, **params: Any) -> Any:
    return client.post(f"/bot{token}/{method}", json=params)


def know_chat(client: Any, chat_id: int, **extra: Any) -> None:
    chat = {"id": chat_id, "type": "private" if chat_id > 0 else "group", **extra}
    assert client.post("/_chats", json={"chat": chat}).status_code == 201


def upload(data: bytes, name: str) -> tuple[io.BytesIO, str]:
    """A multipart file part for Flask's test client."""
    return io.BytesIO(data), name


def tiny_png(width: int = 3, height: int = 2) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    rows = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2,
                                                              0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def corpus_updates() -> list[tuple[str, dict[str, Any]]]:
    """Every single Update and every getUpdates ``result[]`` Update in the corpora."""
    found = []
    for path in sorted(CORPUS.rglob("*.json")):
        data = json.loads(path.read_text("utf-8"))
        if isinstance(data, dict) and isinstance(data.get("update_id"), int):
            found.append((path.name, data))
        elif isinstance(data, dict) and data.get("ok") is True and isinstance(data.get("result"),
                                                                              list):
            for i, item in enumerate(data["result"]):
                if isinstance(item, dict) and isinstance(item.get("update_id"), int):
                    found.append((f"{path.name}[{i}]", item))
    return found


@pytest.fixture
def app() -> Flask:
    return create_app(dict(FAST))


@pytest.fixture
def client(app: Flask) -> Any:
    return app.test_client()


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    hook = Receiver()
    with serve(hook.app) as url:
        yield hook, f"{url}/hook"


# -- auth, routing, transports -----------------------------------------------------------


def test_get_me_is_the_bot_from_the_token(client: Any) -> None:
    body = client.get(f"/bot{TOKEN}/getMe").get_json()
    assert body["ok"] is True
    me = body["result"]
    assert me["id"] == int(TOKEN.split(":")[0]) and me["is_bot"] is True
    assert me["username"] and me["first_name"]
    # getMe-only fields come from api.json ("Returned only in getMe").
    assert set(load_spec().getme_only_user_fields) <= set(me)


def test_demo_token_has_telegrams_shape() -> None:
    bot_id, secret = DEMO_BOT_TOKEN.split(":")
    assert bot_id.isdigit() and not bot_id.startswith("0")
    assert len(secret) == 35 and all(c.isalnum() or c in "_-" for c in secret)


@pytest.mark.parametrize(("path", "status", "description"), [
    ("/botnot-a-token/getMe", 401, "Unauthorized: invalid token specified"),
    ("/bot999999:AAE_unknown-bot-token-aaaaaaaaaaaaaa/getMe", 401, "Unauthorized"),
    (f"/bot{TOKEN}/noSuchMethod", 404, "Not Found"),
    (f"/bot{TOKEN}/getUpdatez", 404, "Not Found"),
    ("/somewhere/else", 404, "Not Found"),
])
def test_auth_and_unknown_paths_use_telegrams_envelope(client: Any, path: str, status: int,
                                                       description: str) -> None:
    response = client.get(path)
    assert response.status_code == status
    assert response.get_json() == {"ok": False, "error_code": status, "description": description}


def test_method_names_are_case_insensitive(client: Any) -> None:
    assert client.get(f"/bot{TOKEN}/GETME").get_json()["ok"] is True
    assert client.get(f"/bot{TOKEN}/getwebhookinfo").get_json()["ok"] is True


def test_every_transport_is_accepted_and_message_ids_increase(client: Any) -> None:
    know_chat(client, 42, first_name="Ann")
    url = f"/bot{TOKEN}/sendMessage"
    answers = [
        client.get(url, query_string={"chat_id": "42", "text": "query"}),
        client.post(url, data={"chat_id": "42", "text": "form"}),
        client.post(url, json={"chat_id": 42, "text": "json"}),
        client.post(url, data={"chat_id": "42", "text": "multipart",
                               "x": upload(b"", "unused.bin")}, content_type="multipart/form-data"),
    ]
    results = [a.get_json()["result"] for a in answers]
    assert [r["text"] for r in results] == ["query", "form", "json", "multipart"]
    assert [r["message_id"] for r in results] == [1, 2, 3, 4]
    first = results[0]
    assert first["from"]["id"] == int(TOKEN.split(":")[0]) and first["from"]["is_bot"] is True
    assert first["chat"] == {"id": 42, "first_name": "Ann", "type": "private"}
    assert abs(first["date"] - time.time()) < 5


def test_message_ids_are_per_chat(client: Any) -> None:
    know_chat(client, 1)
    know_chat(client, 2)
    ids = [api(client, "sendMessage", chat_id=c, text="x").get_json()["result"]["message_id"]
           for c in (1, 2, 1, 1, 2)]
    assert ids == [1, 1, 2, 3, 2]


# -- validation against api.json ---------------------------------------------------------


@pytest.mark.parametrize(("params", "description"), [
    ({"chat_id": 7}, "Bad Request: message text is empty"),
    ({"chat_id": 7, "text": "  \n "}, "Bad Request: message text is empty"),
    ({"text": "hi"}, "Bad Request: chat_id is empty"),
    ({"chat_id": 8, "text": "hi"}, "Bad Request: chat not found"),
    ({"chat_id": "@nobody", "text": "hi"}, "Bad Request: chat not found"),
    ({"chat_id": True, "text": "hi"},
     'Bad Request: parameter "chat_id" must be of type Integer or String'),
    ({"chat_id": 7, "text": {"a": 1}}, 'Bad Request: parameter "text" must be of type String'),
    ({"chat_id": 7, "text": "hi", "disable_notification": "maybe"},
     'Bad Request: parameter "disable_notification" must be of type Boolean'),
    ({"chat_id": 7, "text": "hi", "message_thread_id": "abc"},
     'Bad Request: parameter "message_thread_id" must be of type Integer'),
    ({"chat_id": 7, "text": "hi", "reply_markup": "{not json"},
     "Bad Request: can't parse reply keyboard markup JSON object"),
    ({"chat_id": 7, "text": "hi", "parse_mode": "BBCode"}, "Bad Request: unsupported parse_mode"),
    ({"chat_id": 7, "text": "1.5", "parse_mode": "MarkdownV2"},
     "Bad Request: can't parse entities: Character '.' is reserved and must be escaped with "
     "the preceding '\\'"),
    ({"chat_id": 7, "text": "<blink>x</blink>", "parse_mode": "HTML"},
     "Bad Request: can't parse entities: Unsupported start tag \"blink\" at byte offset 0"),
    ({"chat_id": 7, "text": "<b>x", "parse_mode": "HTML"},
     "Bad Request: can't parse entities: Can't find end tag corresponding to start tag \"b\""),
    ({"chat_id": 7, "text": "snake_case", "parse_mode": "Markdown"},
     "Bad Request: can't parse entities: Can't find end of the entity starting at byte offset 5"),
    ({"chat_id": 7, "text": "hi", "reply_parameters": {"message_id": 99}},
     "Bad Request: message to be replied not found"),
])
def test_send_message_errors_use_telegrams_descriptions(client: Any, params: dict[str, Any],
                                                        description: str) -> None:
    know_chat(client, 7)
    response = api(client, "sendMessage", **params)
    assert response.status_code == 400
    assert response.get_json() == {"ok": False, "error_code": 400, "description": description}


def test_nested_objects_are_checked_against_their_types(client: Any) -> None:
    know_chat(client, 7)
    bad = api(client, "sendMessage", chat_id=7, text="x", reply_markup={"inline_keyboard": [[{}]]})
    assert bad.status_code == 400
    assert 'field "text" is required in InlineKeyboardButton' in bad.get_json()["description"]
    long_data = {"inline_keyboard": [[{"text": "b", "callback_data": "x" * 65}]]}
    assert api(client, "sendMessage", chat_id=7, text="x",
               reply_markup=long_data).status_code == 400
    good = {"inline_keyboard": [[{"text": "Yes", "callback_data": "yes"}]]}
    result = api(client, "sendMessage", chat_id=7, text="x", reply_markup=good).get_json()
    assert result["result"]["reply_markup"] == good
    # Form transport: objects arrive as JSON text.
    form = client.post(f"/bot{TOKEN}/sendMessage",
                       data={"chat_id": "7", "text": "x", "reply_markup": json.dumps(good)})
    assert form.get_json()["ok"] is True


def test_unknown_parameters_are_ignored(client: Any) -> None:
    know_chat(client, 7)
    body = api(client, "sendMessage", chat_id=7, text="hi", no_such_param={"x": 1}).get_json()
    assert body["ok"] is True


def test_text_limit_is_4096_utf16_units_after_parsing(client: Any) -> None:
    assert load_spec().method("sendMessage").fields["text"].limit == (1, 4096, "characters")
    know_chat(client, 7)
    ok = api(client, "sendMessage", chat_id=7, text="a" * 4096)
    assert ok.get_json()["ok"] is True
    too_long = api(client, "sendMessage", chat_id=7, text="a" * 4097).get_json()
    assert too_long == {"ok": False, "error_code": 400,
                        "description": "Bad Request: message is too long"}
    # An astral emoji is one code point but two UTF-16 code units (FACTS.md 1: unit
    # UNCONFIRMED, the sandbox counts UTF-16, the conservative choice).
    emoji = "\U0001F600"
    assert api(client, "sendMessage", chat_id=7, text=emoji * 2048).get_json()["ok"] is True
    over = api(client, "sendMessage", chat_id=7, text=emoji * 2048 + "a").get_json()
    assert over["description"] == "Bad Request: message is too long"
    # Markup does not count: 4096 visible characters inside <b> tags are fine.
    html = api(client, "sendMessage", chat_id=7, text="<b>" + "a" * 4096 + "</b>",
               parse_mode="HTML").get_json()
    assert html["ok"] is True and html["result"]["entities"] == [
        {"offset": 0, "length": 4096, "type": "bold"}]


def test_entities_are_in_utf16_units(client: Any) -> None:
    know_chat(client, 7)
    text = '\U0001F600 <i>hi</i> &amp; <a href="https://x.org">go</a>'
    result = api(client, "sendMessage", chat_id=7, text=text,
                 parse_mode="HTML").get_json()["result"]
    assert result["text"] == "\U0001F600 hi & go"
    assert result["entities"] == [{"offset": 3, "length": 2, "type": "italic"},
                                  {"offset": 8, "length": 2, "type": "text_link",
                                   "url": "https://x.org"}]


def test_markdown_v2_entities(client: Any) -> None:
    know_chat(client, 7)
    text = "*bold _both_* [link](https://x.org/a\\)b) `a\\`b` 1\\.5"
    result = api(client, "sendMessage", chat_id=7, text=text,
                 parse_mode="MarkdownV2").get_json()["result"]
    assert result["text"] == "bold both link a`b 1.5"
    assert result["entities"] == [
        {"offset": 0, "length": 9, "type": "bold"},
        {"offset": 5, "length": 4, "type": "italic"},
        {"offset": 10, "length": 4, "type": "text_link", "url": "https://x.org/a)b"},
        {"offset": 15, "length": 3, "type": "code"}]


def test_caption_limit_is_1024(client: Any) -> None:
    know_chat(client, 7)
    png = tiny_png()
    ok = client.post(f"/bot{TOKEN}/sendPhoto", data={"chat_id": "7", "caption": "c" * 1024,
                                                     "photo": upload(png, "p.png")},
                     content_type="multipart/form-data")
    assert ok.get_json()["ok"] is True
    bad = client.post(f"/bot{TOKEN}/sendPhoto", data={"chat_id": "7", "caption": "c" * 1025,
                                                      "photo": upload(png, "p.png")},
                      content_type="multipart/form-data")
    assert bad.get_json()["description"] == "Bad Request: message caption is too long"


# -- chats: blocked, migrated, flood -----------------------------------------------------


def test_blocked_user(client: Any) -> None:
    know_chat(client, 7)
    assert client.post("/_block", json={"chat_id": 7}).status_code == 200
    response = api(client, "sendMessage", chat_id=7, text="hi")
    assert response.status_code == 403
    assert response.get_json() == {"ok": False, "error_code": 403,
                                   "description": "Forbidden: bot was blocked by the user"}
    client.post("/_block", json={"chat_id": 7, "blocked": False})
    assert api(client, "sendMessage", chat_id=7, text="hi").get_json()["ok"] is True


def test_migrated_group_answers_migrate_to_chat_id(client: Any) -> None:
    know_chat(client, -4001, title="Team")
    moved = client.post("/_migrate", json={"chat_id": -4001, "new_chat_id": -1004001}).get_json()
    assert moved == {"chat_id": -4001, "new_chat_id": -1004001}
    response = api(client, "sendMessage", chat_id=-4001, text="hi")
    assert response.status_code == 400
    assert response.get_json() == {
        "ok": False, "error_code": 400,
        "description": "Bad Request: group chat was upgraded to a supergroup chat",
        "parameters": {"migrate_to_chat_id": -1004001}}
    new = api(client, "sendMessage", chat_id=-1004001, text="hi").get_json()["result"]
    assert new["chat"] == {"id": -1004001, "title": "Team", "type": "supergroup"}


def test_flood_per_chat_returns_429_with_retry_after() -> None:
    # 0.1 msg/s: a slow test run cannot refill the bucket between the sends.
    client = create_app({**FAST, "per_chat_per_s": 0.1, "per_chat_burst": 2}).test_client()
    know_chat(client, 7)
    know_chat(client, 8)
    assert [api(client, "sendMessage", chat_id=7, text="x").status_code for _ in range(2)] == [
        200, 200]
    flooded = api(client, "sendMessage", chat_id=7, text="x")
    assert flooded.status_code == 429
    retry_after = flooded.get_json()["parameters"]["retry_after"]
    assert retry_after in (9, 10)  # whole seconds until the next token
    assert flooded.get_json() == {"ok": False, "error_code": 429,
                                  "description": f"Too Many Requests: retry after {retry_after}",
                                  "parameters": {"retry_after": retry_after}}
    assert flooded.headers["Retry-After"] == str(retry_after)
    assert api(client, "sendMessage", chat_id=8, text="x").status_code == 200  # other chat
    sent = client.get("/_sent", query_string={"chat_id": 7}).get_json()["sent"]
    assert len(sent) == 2  # the refused send left no trace


def test_flood_per_bot() -> None:
    client = create_app({**FAST, "per_bot_per_s": 0.05, "per_bot_burst": 2}).test_client()
    for chat_id in (1, 2, 3):
        know_chat(client, chat_id)
    assert api(client, "sendMessage", chat_id=1, text="x").status_code == 200
    assert api(client, "sendMessage", chat_id=2, text="x").status_code == 200
    flooded = api(client, "sendMessage", chat_id=3, text="x").get_json()
    assert flooded["error_code"] == 429 and flooded["parameters"]["retry_after"] in (19, 20)


# -- replies, callbacks, files -----------------------------------------------------------


def test_customer_message_reply_and_callback_query(client: Any, receiver: Any) -> None:
    hook, url = receiver
    assert api(client, "setWebhook", url=url).get_json()["ok"] is True
    delivered = client.post("/_deliver", json={"from": {"id": 555, "first_name": "Ann"},
                                               "text": "/start hello"}).get_json()
    assert delivered["status"] == 200 and delivered["delivered"] is True
    update = json.loads(hook.requests[0]["body"])
    message = update["message"]
    assert message["chat"] == {"id": 555, "first_name": "Ann", "type": "private"}
    assert message["from"] == {"id": 555, "is_bot": False, "first_name": "Ann"}
    assert message["entities"] == [{"offset": 0, "length": 6, "type": "bot_command"}]
    reply = api(client, "sendMessage", chat_id=555, text="Hi Ann",
                reply_parameters={"message_id": message["message_id"]},
                reply_markup={"inline_keyboard": [[{"text": "OK", "callback_data": "ok"}]]}
                ).get_json()["result"]
    assert reply["message_id"] == message["message_id"] + 1  # one sequence per chat
    assert reply["reply_to_message"]["text"] == "/start hello"
    sent = client.get("/_sent", query_string={"chat_id": 555}).get_json()["sent"]
    assert [(s["method"], s["text"], s["reply_to_message_id"]) for s in sent] == [
        ("sendMessage", "Hi Ann", message["message_id"])]
    assert set(sent[0]) >= {"bot_id", "chat_id", "method", "message_id", "text", "caption",
                            "reply_to_message_id", "time"}

    pressed = client.post("/_deliver", json={"chat_id": 555, "callback_data": "ok"}).get_json()
    assert pressed["delivered"] is True
    query = json.loads(hook.requests[1]["body"])["callback_query"]
    assert query["data"] == "ok" and query["message"]["message_id"] == reply["message_id"]
    first = api(client, "answerCallbackQuery", callback_query_id=query["id"], text="Done")
    assert first.get_json() == {"ok": True, "result": True}
    again = api(client, "answerCallbackQuery", callback_query_id=query["id"])
    invalid = "Bad Request: query is too old and response timeout expired or query ID is invalid"
    assert again.get_json() == {"ok": False, "error_code": 400, "description": invalid}
    unknown = api(client, "answerCallbackQuery", callback_query_id="123")
    assert unknown.get_json()["description"] == invalid


def test_legacy_reply_to_message_id_and_allow_sending_without_reply(client: Any) -> None:
    know_chat(client, 7)
    first = api(client, "sendMessage", chat_id=7, text="one").get_json()["result"]
    legacy = api(client, "sendMessage", chat_id=7, text="two",
                 reply_to_message_id=first["message_id"]).get_json()["result"]
    assert legacy["reply_to_message"]["message_id"] == first["message_id"]
    loose = api(client, "sendMessage", chat_id=7, text="three",
                reply_parameters={"message_id": 999, "allow_sending_without_reply": True})
    assert loose.get_json()["ok"] is True and "reply_to_message" not in loose.get_json()["result"]


def test_photo_and_document_round_trip_through_get_file(client: Any) -> None:
    know_chat(client, 7)
    png = tiny_png(4, 3)
    photo = client.post(f"/bot{TOKEN}/sendPhoto",
                        data={"chat_id": "7", "caption": "pic", "photo": upload(png, "p.png")},
                        content_type="multipart/form-data").get_json()["result"]
    largest = photo["photo"][-1]
    assert (largest["width"], largest["height"], largest["file_size"]) == (4, 3, len(png))
    assert photo["caption"] == "pic"
    file = api(client, "getFile", file_id=largest["file_id"]).get_json()["result"]
    assert file["file_id"] == largest["file_id"] and file["file_path"].startswith("photos/")
    download = client.get(f"/file/bot{TOKEN}/{file['file_path']}")
    assert download.status_code == 200 and download.data == png

    document = client.post(f"/bot{TOKEN}/sendDocument",
                           data={"chat_id": "7", "document": upload(b"%PDF-1.4 hi", "a.pdf")},
                           content_type="multipart/form-data").get_json()["result"]["document"]
    assert document["file_name"] == "a.pdf" and document["mime_type"] == "application/pdf"
    path = api(client, "getFile", file_id=document["file_id"]).get_json()["result"]["file_path"]
    assert client.get(f"/file/bot{TOKEN}/{path}").data == b"%PDF-1.4 hi"
    # Re-sending by file_id works; an unknown id does not.
    again = api(client, "sendDocument", chat_id=7, document=document["file_id"]).get_json()
    assert again["result"]["document"]["file_id"] == document["file_id"]
    wrong = api(client, "sendDocument", chat_id=7, document="nope").get_json()
    assert wrong["description"] == "Bad Request: wrong file identifier/HTTP URL specified"
    assert api(client, "getFile", file_id="nope").get_json()["description"] == \
        "Bad Request: invalid file_id"
    assert client.get(f"/file/bot{TOKEN}/photos/missing.jpg").status_code == 404


def test_photo_upload_must_be_an_image(client: Any) -> None:
    know_chat(client, 7)
    response = client.post(f"/bot{TOKEN}/sendPhoto",
                           data={"chat_id": "7", "photo": upload(b"not an image", "x.jpg")},
                           content_type="multipart/form-data")
    assert response.get_json()["description"] == "Bad Request: IMAGE_PROCESS_FAILED"
    missing = api(client, "sendPhoto", chat_id=7)
    assert missing.get_json()["description"] == "Bad Request: there is no photo in the request"


def test_files_in_delivered_updates_can_be_fetched(client: Any, receiver: Any) -> None:
    _, url = receiver
    api(client, "setWebhook", url=url)
    update = json.loads((CORPUS / "updates/illemius_telegram_types/message_with_document.json")
                        .read_text("utf-8"))
    document = update["message"]["document"]
    content = b"real bytes of the document"
    client.post("/_deliver", json={
        "update": update, "files": {document["file_id"]: base64.b64encode(content).decode()}})
    file = api(client, "getFile", file_id=document["file_id"]).get_json()["result"]
    # Supplied bytes win over the update's declared file_size.
    assert file["file_id"] == document["file_id"] and file["file_size"] == len(content)
    assert client.get(f"/file/bot{TOKEN}/{file['file_path']}").data == content
    # Without supplied bytes the sandbox serves a stand-in of the declared size.
    photo_update = json.loads((CORPUS / "updates/illemius_telegram_types/message_with_photo.json")
                              .read_text("utf-8"))
    client.post("/_deliver", json={"update": photo_update})
    largest = photo_update["message"]["photo"][-1]
    path = api(client, "getFile", file_id=largest["file_id"]).get_json()["result"]["file_path"]
    assert path.startswith("photos/")
    assert len(client.get(f"/file/bot{TOKEN}/{path}").data) == largest["file_size"]


def test_send_chat_action(client: Any) -> None:
    know_chat(client, 7)
    assert api(client, "sendChatAction", chat_id=7, action="typing").get_json() == {
        "ok": True, "result": True}
    wrong = api(client, "sendChatAction", chat_id=7, action="dancing").get_json()
    assert wrong["description"] == "Bad Request: wrong parameter action in request"


# -- webhooks ------------------------------------------------------------------------------


@pytest.mark.parametrize(("params", "description"), [
    ({"url": "https://b.example/h", "secret_token": "has space"},
     "Bad Request: secret token contains unallowed characters"),
    ({"url": "https://b.example/h", "secret_token": "a" * 257},
     "Bad Request: secret token is too long"),
    ({"url": "not a url"}, "Bad Request: invalid webhook URL specified"),
])
def test_set_webhook_validation(client: Any, params: dict[str, Any], description: str) -> None:
    assert api(client, "setWebhook", **params).get_json()["description"] == description


def test_set_webhook_outside_local_mode_needs_https_and_known_ports() -> None:
    client = create_app({**FAST, "local_mode": False}).test_client()
    http = api(client, "setWebhook", url="http://b.example/h").get_json()
    assert http["description"] == ("Bad Request: bad webhook: An HTTPS URL must be provided "
                                   "for webhook")
    port = api(client, "setWebhook", url="https://b.example:8080/h").get_json()
    assert port["description"] == ("Bad Request: bad webhook: Webhook can be set up only on "
                                   "ports 80, 88, 443 or 8443")
    assert api(client, "setWebhook", url="https://b.example:8443/h").get_json()["ok"] is True


def test_webhook_info_and_descriptions(client: Any) -> None:
    set_ = api(client, "setWebhook", url="https://b.example/h", secret_token=SECRET,
               max_connections=500, allowed_updates=["message"]).get_json()
    assert set_ == {"ok": True, "result": True, "description": "Webhook was set"}
    info = api(client, "getWebhookInfo").get_json()["result"]
    assert info == {"url": "https://b.example/h", "has_custom_certificate": False,
                    "pending_update_count": 0, "max_connections": 100,
                    "allowed_updates": ["message"]}
    assert api(client, "setWebhook", url="https://b.example/h", secret_token=SECRET,
               max_connections=100).get_json()["description"] == "Webhook is already set"
    assert api(client, "deleteWebhook").get_json()["description"] == "Webhook was deleted"
    assert api(client, "deleteWebhook").get_json()["description"] == "Webhook is already deleted"
    assert api(client, "getWebhookInfo").get_json()["result"] == {
        "url": "", "has_custom_certificate": False, "pending_update_count": 0}


def test_set_webhook_is_limited_to_once_per_second() -> None:
    client = create_app({**NO_FLOOD, "set_webhook_min_interval_s": 30}).test_client()
    assert api(client, "setWebhook", url="https://b.example/1").status_code == 200
    again = api(client, "setWebhook", url="https://b.example/2")
    assert again.status_code == 429 and again.get_json()["parameters"] == {"retry_after": 1}


def test_deliver_posts_exactly_the_update_with_the_secret(client: Any, receiver: Any) -> None:
    hook, url = receiver
    api(client, "setWebhook", url=url, secret_token=SECRET)
    hook.answers.append((201, {"handled": True}))
    update = {"update_id": 9001, "message": {
        "message_id": 3, "date": 1700000000, "text": "Привет \U0001F600",
        "chat": {"id": 321, "type": "private", "first_name": "Ира"},
        "from": {"id": 321, "is_bot": False, "first_name": "Ира"}}}
    answer = client.post("/_deliver", json={"update": update}).get_json()
    assert answer["status"] == 201 and answer["body"] == {"handled": True}
    assert answer["update_id"] == 9001 and answer["delivered"] is True
    sent = hook.requests[0]
    assert sent["headers"]["X-Telegram-Bot-Api-Secret-Token"] == SECRET
    assert sent["headers"]["Content-Type"] == "application/json"
    assert json.loads(sent["body"]) == update
    # The chat and the user are known now: the bot may answer.
    assert api(client, "sendMessage", chat_id=321, text="ok").get_json()["ok"] is True
    log = client.get("/_deliveries").get_json()["deliveries"]
    assert [(d["update_id"], d["status"], d["ok"]) for d in log] == [(9001, 201, True)]


def test_deliver_without_secret_fills_update_ids_and_relays_failures(client: Any,
                                                                     receiver: Any) -> None:
    hook, url = receiver
    api(client, "setWebhook", url=url)
    hook.answers.extend([(500, "boom"), (503, "down"), (200, {"ok": True})])
    first = client.post("/_deliver", json={"update": {"message": {
        "message_id": 1, "date": 1, "chat": {"id": 9, "type": "private"}, "text": "a"}}}).get_json()
    assert first["status"] == 500 and first["body"] == "boom" and first["delivered"] is False
    assert "X-Telegram-Bot-Api-Secret-Token" not in hook.requests[0]["headers"]
    info = api(client, "getWebhookInfo").get_json()["result"]
    assert info["last_error_message"].startswith("Wrong response from the webhook: 500")
    second = client.post("/_deliver", json={"chat_id": 9, "text": "b",
                                            "redeliver_on_failure": True}).get_json()
    assert second["status"] == 200 and second["attempts"] == 2
    ids = [json.loads(r["body"])["update_id"] for r in hook.requests]
    assert ids[0] + 1 == ids[1] == ids[2]  # sequential per bot; the retry repeats the id
    log = client.get("/_deliveries").get_json()["deliveries"]
    assert [(d["attempt"], d["status"]) for d in log] == [(1, 500), (1, 503), (2, 200)]


def test_deliver_needs_a_webhook(client: Any) -> None:
    response = client.post("/_deliver", json={"from": {"id": 1, "first_name": "A"}, "text": "x"})
    assert response.status_code == 409 and "webhook" in response.get_json()["message"]


def test_allowed_updates_filter(client: Any, receiver: Any) -> None:
    hook, url = receiver
    api(client, "setWebhook", url=url)
    reaction = {"message_reaction": {"chat": {"id": 5, "type": "private"}, "message_id": 1,
                                     "date": 1, "old_reaction": [], "new_reaction": []}}
    skipped = client.post("/_deliver", json={"update": reaction}).get_json()
    assert skipped["delivered"] is False and skipped["filtered"] is True and not hook.requests
    api(client, "setWebhook", url=url, allowed_updates=["message_reaction"])
    assert client.post("/_deliver", json={"update": reaction}).get_json()["status"] == 200


def test_bridge_can_call_the_api_while_handling_a_webhook(receiver: Any) -> None:
    """Webhook HTTP runs outside the sandbox lock; a webhook reply ``method`` is executed."""
    hook, url = receiver
    app = create_app(dict(FAST))
    with serve(app) as base:
        requests.post(f"{base}/bot{TOKEN}/setWebhook", json={"url": url}, timeout=5)
        hook.on_request = lambda: requests.post(
            f"{base}/bot{TOKEN}/sendMessage", json={"chat_id": 77, "text": "from handler"},
            timeout=5)
        hook.answers.append((200, {"method": "sendMessage", "chat_id": 77, "text": "in reply"}))
        answer = requests.post(f"{base}/_deliver", json={
            "from": {"id": 77, "first_name": "Bo"}, "text": "hi"}, timeout=10).json()
        assert answer["status"] == 200 and answer["webhook_reply"]["ok"] is True
        sent = requests.get(f"{base}/_sent", params={"chat_id": 77}, timeout=5).json()["sent"]
        assert [s["text"] for s in sent] == ["from handler", "in reply"]


@pytest.mark.parametrize(("name", "update"), corpus_updates(),
                         ids=lambda v: v if isinstance(v, str) else "")
def test_corpus_updates_are_delivered_unchanged(name: str, update: dict[str, Any],
                                                shared_receiver: tuple[Receiver, str]) -> None:
    hook, url = shared_receiver
    client = create_app(dict(FAST)).test_client()
    api(client, "setWebhook", url=url, allowed_updates=list(load_spec().update_kinds))
    before = len(hook.requests)
    answer = client.post("/_deliver", json={"update": update}).get_json()
    assert answer["status"] == 200, answer
    assert json.loads(hook.requests[before]["body"]) == update


@pytest.fixture(scope="module")
def shared_receiver() -> Iterator[tuple[Receiver, str]]:
    hook = Receiver()
    with serve(hook.app) as url:
        yield hook, f"{url}/hook"


def test_corpus_has_updates() -> None:
    assert len(corpus_updates()) >= 50


# -- faults --------------------------------------------------------------------------------


def test_faults_use_telegrams_envelope_but_spare_control_and_files(client: Any) -> None:
    know_chat(client, 7)
    client.post("/_faults", json={"error_rate": 1.0})
    failed = api(client, "sendMessage", chat_id=7, text="x")
    assert failed.status_code == 503
    assert failed.get_json() == {"ok": False, "error_code": 503,
                                 "description": "Service Unavailable"}
    assert client.get("/_sent").status_code == 200
    assert client.get("/_sent").get_json()["sent"] == []  # nothing committed
    client.post("/_faults", json={"reset": True, "rate_429": 1.0, "retry_after": 2.5})
    limited = api(client, "getMe")
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "3"
    assert limited.get_json() == {"ok": False, "error_code": 429,
                                  "description": "Too Many Requests: retry after 3",
                                  "parameters": {"retry_after": 3}}
    client.post("/_faults", json={"reset": True, "timeout_rate": 1.0, "timeout_seconds": 0.05})
    timed_out = api(client, "sendMessage", chat_id=7, text="x")
    assert timed_out.status_code == 504 and client.get("/_sent").get_json()["sent"] == []


def test_commit_then_timeout_records_the_message_but_answers_late() -> None:
    app = create_app({**FAST, "chats": [{"id": 7, "type": "private"}],
                      "faults": {"commit_then_timeout_rate": 1.0, "timeout_seconds": 0.8}})
    with serve(app) as base:
        with pytest.raises(requests.ReadTimeout):
            requests.post(f"{base}/bot{TOKEN}/sendMessage", json={"chat_id": 7, "text": "dup?"},
                          timeout=0.3)
        sent = requests.get(f"{base}/_sent", timeout=5).json()["sent"]
        assert [s["text"] for s in sent] == ["dup?"]


# -- control API ---------------------------------------------------------------------------


def test_register_bot_config_and_reset(client: Any) -> None:
    other = "1234567:BBB_another-sandbox-bot-token-00000"
    assert client.post("/_bots", json={"token": "bad"}).status_code == 400
    made = client.post("/_bots", json={"token": other, "username": "other_bot",
                                       "first_name": "Other"})
    assert made.status_code == 201
    assert api(client, "getMe", token=other).get_json()["result"]["username"] == "other_bot"
    know_chat(client, 7)
    api(client, "sendMessage", chat_id=7, text="one")
    api(client, "sendMessage", token=other, chat_id=7, text="two")
    by_token = client.get("/_sent", query_string={"token": other}).get_json()["sent"]
    assert [s["text"] for s in by_token] == ["two"]

    config = client.post("/_config", json={"per_chat_per_s": 2.0}).get_json()
    assert config["per_chat_per_s"] == 2.0 and config["bots"][0]["token"] == TOKEN
    assert client.post("/_config", json={"no_such_key": 1}).status_code == 400
    state = client.get("/_state").get_json()["accounts"]
    assert {b["token"] for b in state} == {TOKEN, other}
    assert client.get("/").get_json()["demo_bot_token"] == TOKEN
    assert client.post("/_reset", json={}).get_json() == {"ok": True}
    assert client.get("/_sent").get_json()["sent"] == []
    assert api(client, "sendMessage", chat_id=7, text="x").get_json()["description"] == \
        "Bad Request: chat not found"


def test_unknown_config_key_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown telegram sandbox config keys"):
        create_app({"per_chat_per_second": 1})
