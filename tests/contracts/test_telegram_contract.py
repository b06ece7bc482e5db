"""The channel contract against the sandbox Telegram Bot API, over real HTTP.

The sandbox (``sandbox.telegram``) and a tiny webhook receiver each run on a
real port. The adapter registers the receiver with ``setWebhook``; a "signed"
request is whatever the sandbox POSTs there when asked to deliver an update
(``POST /_deliver``), so ``verify`` meets the vendor's own header. Replies go
through the sandbox's Bot API and are read back from ``GET /_sent``.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import json
import struct
import threading
import zlib
from pathlib import Path
from typing import Any

import pytest
import requests
from werkzeug.wrappers import Request, Response

from bridge.errors import PermanentError
from bridge.model import (
    ChannelAccountInfo,
    InboundMessage,
    MessageKind,
    OutboundMessage,
    WebhookRequest,
)
from channel_adapters.telegram import TelegramAdapter
from sandbox.telegram import DEMO_BOT_TOKEN, create_app
from tests.contracts.channel_contract import (
    ChannelAdapterContract,
    PulledChannelContract,
    Sample,
    SentPart,
)
from tests.support.servers import serve_wsgi

CORPORA = Path(__file__).resolve().parents[1] / "fixtures" / "corpora"
MANIFEST = {e["file"]: e for e in json.loads((CORPORA / "MANIFEST.json").read_text())}

#: Real updates of the kinds the adapter asks for in setWebhook.allowed_updates
#: (the sandbox, like Telegram, does not deliver the others): (file, index in a
#: getUpdates envelope or None).
SAMPLES = [
    ("updates/illemius_telegram_types/message.json", None),
    ("updates/illemius_telegram_types/edited_message.json", None),
    ("updates/illemius_telegram_types/reply_message.json", None),
    ("updates/illemius_telegram_types/message_with_photo.json", None),
    ("updates/illemius_telegram_types/message_with_document.json", None),
    ("updates/illemius_telegram_types/message_with_game.json", None),
    ("telegrambots_extracted/TestDeserialization__testListUpdates2.json", 3),  # voice
    ("telegrambots_extracted/TestDeserialization__testListUpdates3.json", 7),  # sticker
    ("telegrambots_extracted/TestDeserialization__testListUpdates3.json", 10),  # contact
    ("telegrambots_extracted/TestDeserialization__testListUpdates3.json", 13),  # live location
    ("telegrambots_extracted/TestDeserialization__testListUpdatesVoiceChat.json", 1),  # migrate
    ("telegrambots_extracted/TelegramBotsHelper__GetUpdateWithMessageInCallbackQuery.json", None),
    ("telegrambots_resources/Update.json", None),  # every kind at once
]


def _png(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height)))
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


PNG_2X1 = _png(2, 1)
DEFAULT_FLOOD = {"per_chat_per_s": 1.0, "per_chat_burst": 3, "per_bot_per_s": 30.0}


def _sample(rel: str, index: int | None) -> Sample:
    entry = MANIFEST[f"telegram/{rel}"]
    data = json.loads((CORPORA / "telegram" / rel).read_text(encoding="utf-8"))
    payload = data["result"][index] if index is not None else data
    label = f"{entry['repo']}:{entry['path']}" + (f"[{index}]" if index is not None else "")
    return Sample(label, payload)


class Receiver:
    """A webhook endpoint that records what the sandbox POSTs."""

    def __init__(self) -> None:
        self.requests: list[WebhookRequest] = []
        self.lock = threading.Lock()

    def __call__(self, environ, start_response):
        request = Request(environ)
        captured = WebhookRequest(
            method=request.method,
            url=request.url,
            headers={k.lower(): v for k, v in request.headers.items()},
            body=request.get_data(),
        )
        with self.lock:
            self.requests.append(captured)
        return Response(json.dumps({"ok": True}), mimetype="application/json")(
            environ, start_response
        )


class SandboxTelegram:
    """The :class:`~tests.contracts.channel_contract.Vendor` for the sandbox."""

    def __init__(self, url: str, receiver: Receiver) -> None:
        self.url = url
        self.receiver = receiver
        self.next_user = 1000

    def control(self, method: str, path: str, **body: Any) -> dict:
        response = requests.request(method, f"{self.url}{path}", json=body or None, timeout=10)
        assert response.status_code < 300, response.text
        return response.json()

    def deliver(self, update: dict) -> WebhookRequest:
        """Have the sandbox POST ``update`` to the webhook; the request it made."""
        before = len(self.receiver.requests)
        answer = self.control("POST", "/_deliver", update=update)
        assert answer["delivered"], answer
        # this update's requests: a setWebhook at the end of an earlier test
        # (the `hold` fixture's) posts the updates it left unconfirmed in the
        # background, and one may land now
        made = [
            r
            for r in self.receiver.requests[before:]
            if json.loads(r.body).get("update_id") == answer["update_id"]
        ]
        assert len(made) == answer["attempts"] == 1, (len(made), answer)
        return made[-1]

    def thread(self) -> str:
        self.next_user += 1
        user = {"id": self.next_user, "first_name": "Anna", "username": f"anna{self.next_user}"}
        answer = self.control("POST", "/_deliver", **{"from": user, "text": "Hello"})
        assert answer["delivered"], answer
        return str(self.next_user)

    def sent(self, thread: str) -> list[SentPart]:
        entries = self.control("GET", f"/_sent?chat_id={thread}")["sent"]
        return [SentPart(str(e["message_id"]), e["text"] or e["caption"]) for e in entries]

    def rate_limit(self, thread: str) -> None:
        # one message a minute per chat, no burst; then use up the one token
        self.control("POST", "/_config", per_chat_per_s=1 / 60, per_chat_burst=1)
        reply = requests.post(
            f"{self.url}/bot{DEMO_BOT_TOKEN}/sendMessage",
            json={"chat_id": int(thread), "text": "takes the last token"},
            timeout=10,
        )
        assert reply.status_code == 200, reply.text


@pytest.fixture(scope="module")
def servers():
    receiver = Receiver()
    app = create_app({"set_webhook_min_interval_s": 0.0, **DEFAULT_FLOOD})
    with serve_wsgi(app) as sandbox, serve_wsgi(receiver) as hook:
        yield sandbox.url, hook.url, receiver


@pytest.fixture(scope="module")
def secret() -> str:
    return TelegramAdapter.generate_secret_token()


@pytest.fixture(scope="module")
def registered(servers, secret):
    """setWebhook once per module, through the adapter itself."""
    sandbox_url, hook_url, _ = servers
    adapter = TelegramAdapter(_account(sandbox_url, secret))
    adapter.setup_webhook(f"{hook_url}/webhooks/telegram/acct-key")
    return True


def _account(api_base: str, secret: str) -> ChannelAccountInfo:
    return ChannelAccountInfo(
        id=1,
        kind="telegram",
        key="acct-key",
        credentials={"bot_token": DEMO_BOT_TOKEN, "secret_token": secret},
        api_base=api_base,
    )


class TestTelegramContract(ChannelAdapterContract, PulledChannelContract):
    @classmethod
    def sample_payloads(cls) -> list[Sample]:
        return [_sample(rel, index) for rel, index in SAMPLES]

    @pytest.fixture
    def vendor(self, servers, registered):
        sandbox_url, _, receiver = servers
        vendor = SandboxTelegram(sandbox_url, receiver)
        vendor.control("POST", "/_reset", keep_webhooks=True)
        vendor.control("POST", "/_config", **DEFAULT_FLOOD)
        return vendor

    @pytest.fixture
    def adapter(self, servers, secret, vendor):
        adapter = TelegramAdapter(_account(servers[0], secret))
        adapter.sleep = lambda seconds: None  # the sandbox's flood waits are not waited for
        return adapter

    @pytest.fixture
    def signed_request(self, vendor):
        return lambda payload: vendor.deliver(payload)

    @pytest.fixture
    def hold(self, adapter, vendor, servers):
        """Switch the bot to long polling as the bridge does (deleteWebhook,
        then getUpdates), then queue the payload; the webhook is set again
        afterwards for the other tests."""
        pulled = []

        def keep(payload: Any) -> None:
            if not pulled:
                adapter.remove_webhook()
                assert adapter.poll(None, 0).deliveries == ()
                pulled.append(True)
            answer = vendor.control("POST", "/_deliver", update=payload)
            assert answer["queued"] is True, answer

        yield keep
        if pulled:
            adapter.setup_webhook(f"{servers[1]}/webhooks/telegram/acct-key")

    @pytest.fixture
    def forged_request(self, signed_request):
        def make(payload: Any) -> WebhookRequest:
            request = signed_request(payload)
            headers = dict(request.headers)
            headers["x-telegram-bot-api-secret-token"] = "forged-" + "A" * 36
            return dataclasses.replace(request, headers=headers)

        return make

    # -- Telegram specifics over the same wire --------------------------------

    def test_setwebhook_registered_our_secret_and_kinds(self, vendor, secret):
        (bot,) = [b for b in vendor.control("GET", "/_state")["accounts"] if b["webhook"]]
        assert bot["webhook"]["has_secret_token"] is True
        assert bot["webhook"]["allowed_updates"] == ["message", "edited_message", "callback_query"]
        assert bot["webhook"]["max_connections"] == 40
        request = vendor.deliver({"message": _text_message(4242, "hi")})
        assert request.headers["x-telegram-bot-api-secret-token"] == secret

    def test_a_customer_message_through_the_sandbox(self, adapter, vendor):
        request = vendor.deliver({"message": _text_message(4243, "Нужна помощь 🙏")})
        adapter.verify(request)
        (msg,) = adapter.parse(request)
        assert isinstance(msg, InboundMessage)
        assert (msg.kind, msg.text, msg.external_thread_id) == (
            MessageKind.TEXT,
            "Нужна помощь 🙏",
            "4243",
        )

    def test_reply_to_a_customer_message(self, adapter, vendor):
        thread = vendor.thread()
        (first,) = vendor.control("GET", f"/_deliveries?chat_id={thread}")["deliveries"]
        customer_message_id = first["update"]["message"]["message_id"]
        result = adapter.send(
            OutboundMessage("b-1", thread, "Sure!", reply_to=str(customer_message_id))
        )
        (entry,) = vendor.control("GET", f"/_sent?chat_id={thread}")["sent"]
        assert entry["reply_to_message_id"] == customer_message_id
        assert result.external_ids == (str(entry["message_id"]),)

    def test_callback_query_is_answered(self, adapter, vendor):
        thread = vendor.thread()
        sent = adapter.send(OutboundMessage("b-2", thread, "Pick one"))
        press = vendor.control(
            "POST",
            "/_deliver",
            chat_id=int(thread),
            callback_data="yes",
            message_id=int(sent.external_ids[0]),
        )
        assert press["delivered"], press
        (msg,) = adapter.parse(vendor.receiver.requests[-1])
        assert (msg.kind, msg.text, msg.external_thread_id) == (MessageKind.CALLBACK, "yes", thread)
        adapter.acknowledge(msg)
        answers = vendor.control("GET", "/_state")["accounts"][0]["callback_answers"]
        assert [a["callback_query_id"] for a in answers] == [msg.callback_id]
        adapter.acknowledge(msg)  # a second answer is "query is too old": ignored

    def test_blocked_user_is_permanent(self, adapter, vendor):
        thread = vendor.thread()
        vendor.control("POST", "/_block", chat_id=int(thread))
        with pytest.raises(PermanentError, match="blocked"):
            adapter.send(OutboundMessage("b-3", thread, "hello?"))

    def test_migrated_group_is_followed(self, adapter, vendor):
        moved = vendor.control("POST", "/_migrate", chat_id=-552721116)
        result = adapter.send(OutboundMessage("b-4", "-552721116", "to the group"))
        assert result.new_thread_id == str(moved["new_chat_id"])
        (entry,) = vendor.control("GET", f"/_sent?chat_id={moved['new_chat_id']}")["sent"]
        assert result.external_ids == (str(entry["message_id"]),)

    def test_customer_photo_resent_by_file_id_with_caption(self, adapter, vendor):
        # (by file_id, not by URL: the sandbox accepts any URL without fetching
        # it, Telegram fetches it and takes only GIF/PDF/ZIP for sendDocument)
        thread = vendor.thread()
        answer = vendor.control(
            "POST",
            "/_deliver",
            chat_id=int(thread),
            photo={"content_base64": base64.b64encode(PNG_2X1).decode()},
            caption="look",
        )
        assert answer["delivered"], answer
        (photo,) = adapter.parse(vendor.receiver.requests[-1])
        assert (photo.kind, photo.text) == (MessageKind.PHOTO, "look")
        (largest,) = photo.attachments
        assert (largest.width, largest.height) == (2, 1)
        result = adapter.send(OutboundMessage("b-5", thread, "the invoice", attachments=(largest,)))
        (entry,) = vendor.control("GET", f"/_sent?chat_id={thread}")["sent"]
        assert (entry["method"], entry["caption"]) == ("sendPhoto", "the invoice")
        assert entry["message"]["photo"][-1]["file_id"] == largest.file_ref
        assert result.external_ids == (str(entry["message_id"]),)

    def test_get_updates_while_the_webhook_is_set_is_a_permanent_409(self, adapter, vendor):
        with pytest.raises(PermanentError) as info:
            adapter.poll(None, 0)
        assert info.value.status == 409
        assert "use deleteWebhook to delete the webhook first" in info.value.message

    def test_poll_asks_for_the_kinds_the_webhook_asks_for(self, adapter, vendor, hold):
        hold({"message": _text_message(4244, "polled")})
        (bot,) = [b for b in vendor.control("GET", "/_state")["accounts"] if b["polling"]["active"]]
        assert bot["polling"]["allowed_updates"] == ["message", "edited_message", "callback_query"]
        reaction = {
            "message_reaction": {
                "chat": {"id": 4244, "type": "private"},
                "message_id": 1,
                "date": 1,
                "old_reaction": [],
                "new_reaction": [],
            }
        }
        assert vendor.control("POST", "/_deliver", update=reaction)["filtered"] is True
        result = adapter.poll(None, 1)
        (delivery,) = result.deliveries
        (msg,) = adapter.parse(delivery.request(dt.datetime.now(dt.UTC)))
        assert (msg.text, msg.external_thread_id) == ("polled", "4244")
        assert result.cursor == str(int(delivery.key) + 1)


def _text_message(user_id: int, text: str) -> dict:
    user = {"id": user_id, "is_bot": False, "first_name": "Ivan"}
    return {
        "message_id": 1,
        "from": user,
        "chat": {"id": user_id, "first_name": "Ivan", "type": "private"},
        "date": 1_700_000_000,
        "text": text,
    }
