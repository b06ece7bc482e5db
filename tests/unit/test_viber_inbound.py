# ruff: noqa: S105, S106  (test secrets)
"""Viber callbacks inbound: verify -> edge -> parse, and the answer.

The real callback is ``tests/fixtures/corpora/viber/unicode_request.json``
(Viber/viber-bot-python's test data, copied verbatim: MANIFEST.json); the
other callbacks are built from the Viber REST docs (the "Callbacks" and
"Events" pages: creators.viber.com/docs/bots-api/events) and say so in the
table. The signature test vector is FACTS §4's (viber-bot-python
``tests/api/test_api.py`` ``test_verify_signature``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import pytest

from bridge.errors import PayloadError, SignatureError
from bridge.model import (
    ChannelAccountInfo,
    IgnoredEvent,
    InboundMessage,
    MessageKind,
    OutboundStatus,
    WebhookRequest,
)
from channel_adapters.viber import ViberAdapter
from channel_adapters.viber.inbound import CONSENT, parse, signature, split

CORPORA = Path(__file__).resolve().parents[1] / "fixtures" / "corpora"
CORPUS = CORPORA / "viber" / "unicode_request.json"
MANIFEST = {e["file"]: e for e in json.loads((CORPORA / "MANIFEST.json").read_text())}
NOW = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)
TOKEN = "44dafb7e0f40021e-61a47a1e6778d187-f2c5a676a07050b3"
VECTOR_BODY = b'{"event":"webhook","timestamp":4977069964384421269,"message_token":1478683725125}'
VECTOR_SIGNATURE = "d21b343448c8aee33b8e93768ef6ceb64a6ba6163099973a2b8bd028fea510ef"
USER = "01234567890A="
BIG = 4912661846655238145
SENDER = {
    "id": USER,
    "name": "John McClane",
    "avatar": "http://avatar.example.com",
    "country": "UK",
    "language": "en",
    "api_version": 1,
}


def adapter(**settings: Any) -> ViberAdapter:
    return ViberAdapter(
        ChannelAccountInfo(
            id=1,
            kind="viber",
            key="k",
            credentials={"auth_token": TOKEN},
            settings={"sender_name": "Demo Shop", **settings},
            external_id="pa:1",
        )
    )


def signed(body: bytes, sig: str | None = None) -> WebhookRequest:
    headers = {"content-type": "application/json"}
    if sig is not False:
        headers["x-viber-content-signature"] = sig if sig is not None else signature(TOKEN, body)
    return WebhookRequest(
        method="POST", url="https://b/webhooks/viber/k", headers=headers, body=body, received_at=NOW
    )


def built(event: str, **fields: Any) -> bytes:
    """A callback built from the Viber REST docs' example for ``event``."""
    return json.dumps(
        {"event": event, "timestamp": 1457764197627, "message_token": BIG, **fields}
    ).encode()


def message(mtype: str, **fields: Any) -> bytes:
    return built("message", sender=SENDER, message={"type": mtype, **fields}, silent=False)


# --------------------------------------------------------------------------
# The table: each callback -> (journal key, what it becomes). "text",
# "photo"...: a customer message of that kind; "system": a conversation or
# consent entry; "status <s>": a status of our message; "ignored <event>".
# --------------------------------------------------------------------------

TABLE: list[tuple[str, bytes, str, str]] = [
    ("corpus viber/unicode_request.json", CORPUS.read_bytes(), str(BIG), "text"),
    ("built: webhook (set_webhook's check)", built("webhook"), f"webhook:{BIG}", "ignored webhook"),
    ("built: text", message("text", text="Hi", tracking_data="t"), str(BIG), "text"),
    (
        "built: picture",
        message(
            "picture",
            text="look",
            media="https://dl.viber.com/p.jpg",
            thumbnail="https://dl.viber.com/t.jpg",
        ),
        str(BIG),
        "photo",
    ),
    (
        "built: video",
        message("video", media="https://dl.viber.com/v.mp4", size=10_000, duration=10),
        str(BIG),
        "video",
    ),
    (
        "built: file",
        message("file", media="https://dl.viber.com/f.pdf", size=2048, file_name="invoice.pdf"),
        str(BIG),
        "document",
    ),
    (
        "built: sticker",
        message("sticker", sticker_id=46105, media="https://dl.viber.com/s.png"),
        str(BIG),
        "sticker",
    ),
    (
        "built: contact",
        message("contact", contact={"name": "John McClane", "phone_number": "+972511123123"}),
        str(BIG),
        "contact",
    ),
    (
        "built: location",
        message("location", location={"lat": 37.7898, "lon": -122.3942}),
        str(BIG),
        "location",
    ),
    ("built: url", message("url", media="https://www.example.com"), str(BIG), "text"),
    ("built: an unknown message type", message("hologram"), str(BIG), "unknown"),
    (
        "built: conversation_started",
        built(
            "conversation_started",
            type="open",
            context="utm_source-google__utm_campaign-spring",
            user=SENDER,
            subscribed=False,
        ),
        f"conversation_started:{BIG}",
        "system",
    ),
    ("built: subscribed", built("subscribed", user=SENDER), f"subscribed:{BIG}", "system"),
    ("built: unsubscribed", built("unsubscribed", user_id=USER), f"unsubscribed:{BIG}", "system"),
    ("built: delivered", built("delivered", user_id=USER), f"{BIG}:delivered", "status delivered"),
    ("built: seen", built("seen", user_id=USER), f"{BIG}:seen", "status seen"),
    (
        "built: failed",
        built("failed", user_id=USER, desc="failure description"),
        f"{BIG}:failed",
        "status failed",
    ),
    (
        "built: an event Viber may add",
        built("client_status"),
        f"client_status:{BIG}",
        "ignored client_status",
    ),
]


def _label(event: Any) -> str:
    if isinstance(event, IgnoredEvent):
        return f"ignored {event.event_type}"
    if isinstance(event, OutboundStatus):
        return f"status {event.status}"
    assert isinstance(event, InboundMessage)
    return event.kind.value


def test_the_corpus_file_is_vibers_own() -> None:
    entry = MANIFEST["viber/unicode_request.json"]
    assert entry["repo"] == "Viber/viber-bot-python"
    assert (
        hashlib.sha1(
            b"blob %d\x00" % len(CORPUS.read_bytes()) + CORPUS.read_bytes(), usedforsecurity=False
        ).hexdigest()
        == entry["blob"]
    )


@pytest.mark.parametrize(("label", "body", "key", "expected"), TABLE, ids=[r[0] for r in TABLE])
def test_every_callback_becomes_its_event(label: str, body: bytes, key: str, expected: str) -> None:
    a = adapter()
    request = signed(body)
    a.verify(request)
    [delivery] = a.edge(request)
    assert delivery.key == key and delivery.body == body  # journaled byte for byte
    [event] = a.parse(delivery.request(NOW))
    assert _label(event) == expected
    assert event.external_id == key


def test_the_signature_test_vector_on_the_raw_bytes() -> None:
    assert signature(TOKEN, VECTOR_BODY) == VECTOR_SIGNATURE
    adapter().verify(signed(VECTOR_BODY, VECTOR_SIGNATURE))
    adapter().verify(signed(VECTOR_BODY, VECTOR_SIGNATURE.upper()))  # hex, either case


@pytest.mark.parametrize(
    "sig",
    [
        None,  # no header at all
        "",
        VECTOR_SIGNATURE[:-1] + "0",  # almost right
        "sha256=" + VECTOR_SIGNATURE,  # WhatsApp's shape is not Viber's
        hmac.new(b"another-token", VECTOR_BODY, hashlib.sha256).hexdigest(),
        "ü" * 64,
    ],
)
def test_forged_signatures_are_refused(sig: Any) -> None:
    with pytest.raises(SignatureError):
        adapter().verify(signed(VECTOR_BODY, sig if sig is not None else False))


def test_a_reserialised_body_no_longer_matches() -> None:
    again = json.dumps(json.loads(VECTOR_BODY)).encode()  # ", " and ": ": other bytes
    with pytest.raises(SignatureError):
        adapter().verify(signed(again, VECTOR_SIGNATURE))


def test_a_bot_without_a_token_refuses_everything() -> None:
    a = ViberAdapter(
        ChannelAccountInfo(
            id=1, kind="viber", key="k", credentials={}, settings={}, external_id="pa:1"
        )
    )
    with pytest.raises(SignatureError):
        a.verify(signed(VECTOR_BODY, signature("", VECTOR_BODY)))


def test_the_big_message_token_stays_exact() -> None:
    delivery = split(CORPUS.read_bytes())
    assert delivery.key == "4912661846655238145"
    assert float(delivery.key) != BIG  # what a float would have made of it
    [event] = parse(delivery.body, NOW)
    assert isinstance(event, InboundMessage)
    assert event.provider_message_id == "4912661846655238145"
    assert event.raw["message_token"] == "4912661846655238145"
    assert event.raw["tracking_data"] == "אל תעקוב אחרי!"
    assert event.external_user_id == event.external_thread_id == "01234567890A="
    assert event.profile.display_name.startswith("ふで都急")
    assert event.text.startswith("批封廟根縄華勢田郎報株聞")
    assert event.sent_at == dt.datetime.fromtimestamp(1457764197.627, dt.UTC)


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"not json", "not JSON"),
        (b"[1]", "JSON object"),
        (b'{"timestamp": 1}', "event"),
        (b'{"event": "message", "sender": {"id": "a"}}', "message_token"),
        (b'{"event": "seen", "message_token": 1.5}', "message_token"),
        (b'{"event": "message", "message_token": 1, "message": {}}', "sender.id"),
        (b'{"event": "message", "message_token": 1, "sender": {"id": "a"}}', "message object"),
        (b'{"event": "subscribed", "message_token": 1}', "names no user"),
    ],
)
def test_bodies_that_are_not_callbacks(body: bytes, words: str) -> None:
    with pytest.raises(PayloadError, match=words):
        parse(body, NOW)


def test_a_shared_phone_of_the_senders_own_becomes_their_e164_phone() -> None:
    own = message("contact", contact={"name": "John McClane", "phone_number": "972511123123"})
    [event] = parse(own, NOW)
    assert event.kind is MessageKind.CONTACT and event.profile.phone == "+972511123123"
    assert "+972511123123" in event.text
    card = message("contact", contact={"name": "Someone Else", "phone_number": "+79991234567"})
    [other] = parse(card, NOW)
    assert other.profile.phone is None and "Someone Else" in other.text  # shown only
    nameless = message("contact", contact={"phone_number": "+44 20 7946 0958"})
    assert parse(nameless, NOW)[0].profile.phone == "+442079460958"
    bad = message("contact", contact={"name": "John McClane", "phone_number": "12"})
    assert parse(bad, NOW)[0].profile.phone is None


def test_a_viber_phone_is_never_verified() -> None:
    # built from the docs' contact message: share-phone and an address-book
    # card look the same (no marker, no hash), so even "own" is a guess
    own = message("contact", contact={"name": "John McClane", "phone_number": "972511123123"})
    [event] = parse(own, NOW)
    assert (event.profile.phone, event.profile.phone_verified) == ("+972511123123", False)
    # the real callback (viber-bot-python unicode_request): text, no phone
    [text] = parse(CORPUS.read_bytes(), NOW)
    assert isinstance(text, InboundMessage)
    assert (text.profile.phone, text.profile.phone_verified) == (None, False)


def test_a_deep_link_context_is_kept_as_utm() -> None:
    body = built(
        "conversation_started",
        type="open",
        user=SENDER,
        subscribed=False,
        context="utm_source-google__utm_campaign-spring-sale",
    )
    [event] = parse(body, NOW)
    assert event.profile.utm == {
        "utm_source": "google",
        "utm_campaign": "spring-sale",
        "start": "utm_source-google__utm_campaign-spring-sale",
    }
    assert event.raw["context"] == "utm_source-google__utm_campaign-spring-sale"
    assert event.raw["subscribed"] is False
    plain = built("conversation_started", user=SENDER, context="promo42")
    assert parse(plain, NOW)[0].profile.utm == {"start": "promo42"}
    assert parse(built("conversation_started", user=SENDER), NOW)[0].profile.utm == {}


def test_consent_is_said_in_the_conversation() -> None:
    [sub] = parse(built("subscribed", user=SENDER), NOW)
    [unsub] = parse(built("unsubscribed", user_id=USER), NOW)
    assert sub.kind is unsub.kind is MessageKind.SYSTEM
    assert sub.text == CONSENT["subscribed"] and unsub.text == CONSENT["unsubscribed"]
    assert "replies will fail" in unsub.text and "ответы не будут доставлены" in unsub.text
    assert unsub.external_thread_id == USER and sub.profile.display_name == "John McClane"
    assert (sub.consent, unsub.consent) == (True, False)  # bridge.consent records it
    assert parse(message("text", text="hi"), NOW)[0].consent is None
    assert ViberAdapter.consent_by_writing  # a user's message subscribes them again


def test_statuses_name_our_message_by_its_token() -> None:
    for name in ("delivered", "seen", "failed"):
        [status] = parse(built(name, user_id=USER, desc="no device"), NOW)
        assert isinstance(status, OutboundStatus)
        assert status.channel_message_id == str(BIG) and status.bridge_id == ""
        assert status.error == ("no device" if name == "failed" else None)
    assert ViberAdapter.delivery_statuses == {"delivered": "delivered", "seen": "read"}


def test_the_welcome_message_is_the_answer_to_conversation_started() -> None:
    opened = split(built("conversation_started", user=SENDER))
    other = split(message("text", text="hi"))
    welcome = adapter(
        welcome_text="Welcome! / Добро пожаловать!", sender_avatar="https://example.com/a.png"
    ).answer([opened])
    assert welcome.status == 200 and welcome.body == {
        "sender": {"name": "Demo Shop", "avatar": "https://example.com/a.png"},
        "type": "text",
        "text": "Welcome! / Добро пожаловать!",
    }
    assert adapter(welcome_text="Welcome!").answer([other]).body == {
        "status": 0,
        "status_message": "ok",
    }
    assert adapter().answer([opened]).body == {"status": 0, "status_message": "ok"}
