# ruff: noqa: S105, S106  (test secrets)
"""MAX inbound: verify -> edge -> parse, polling, and the contact hash.

Inputs are the MAX examples under ``tests/fixtures/corpora/max/examples``
(copied verbatim, with their MANIFEST.json entries). Every row of the
table names its source: ``go-stab`` (the official Go client's fixtures,
max-messenger/max-bot-api-client-go ``stabs/``), ``docs`` (an example in
the dev.max.ru documentation, extracted from the schema's text), or
``schema-built`` (written by the contract's authors from the schema: not a
capture). Bodies built in this file say so.
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import responses

from bridge.errors import PayloadError, PermanentError, SignatureError
from bridge.http import HttpClient
from bridge.model import (
    ChannelAccountInfo,
    IgnoredEvent,
    InboundEvent,
    InboundMessage,
    MessageKind,
    WebhookRequest,
)
from channel_adapters.max import MaxAdapter
from channel_adapters.max.adapter import SECRET_HEADER
from channel_adapters.max.inbound import (
    check_contact_hash,
    delivery_key,
    parse,
    read_vcard,
    utm_from_payload,
)

ROOT = Path(__file__).resolve().parents[2]
CORPORA = ROOT / "tests" / "fixtures" / "corpora"
EXAMPLES = CORPORA / "max" / "examples"
MANIFEST: dict[str, dict[str, Any]] = {
    e["file"]: e for e in json.loads((CORPORA / "MANIFEST.json").read_text())
}

NOW = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)
SECRET = "wh_Secret-0123456789"
#: the fake token the schema-built contact example's hash was made with (FACTS §8)
TOKEN = "sandbox-bot-token"
BOT = "229229229"  # the bot of the go-stab fixtures (UniBot)
BASE = "https://platform-api2.max.ru"


def adapter(**settings: Any) -> MaxAdapter:
    account = ChannelAccountInfo(
        id=7,
        kind="max",
        key="acct-key",
        credentials={"access_token": TOKEN, "secret": SECRET},
        settings=settings,
        external_id=BOT,
    )
    return MaxAdapter(account, HttpClient(BASE))


def request(body: bytes, secret: str | None = SECRET) -> WebhookRequest:
    headers = {"content-type": "application/json"}
    if secret is not None:
        headers[SECRET_HEADER.lower()] = secret
    return WebhookRequest(
        "POST", "https://bridge.example/webhooks/max/acct-key", headers, body, received_at=NOW
    )


def events(body: bytes) -> list[InboundEvent]:
    a = adapter()
    req = request(body)
    a.verify(req)
    [delivery] = a.edge(req)
    return a.parse(delivery.request(NOW))


def describe(event: InboundEvent) -> str:
    if isinstance(event, IgnoredEvent):
        return f"ignored {event.event_type}"
    assert isinstance(event, InboundMessage)
    return (
        event.kind.value
        + (" edit" if event.is_edit else "")
        + (" removed" if event.revoked else "")
    )


# --------------------------------------------------------------------------
# The table: every example holding updates -> (source, the events of its
# updates in order). Written by reading the payloads.
# --------------------------------------------------------------------------

GO, DOCS, BUILT = (
    "go-stab (official Go client fixture)",
    "docs (dev.max.ru example)",
    ("schema-built (written from the schema, not a capture)"),
)
EXPECTED: dict[str, tuple[str, tuple[str, ...]]] = {
    # webhook bodies (one Update per POST)
    "go-stab.webhook.bot_added.json": (GO, ("ignored bot_added",)),
    "go-stab.webhook.bot_removed.json": (GO, ("ignored bot_removed",)),
    "go-stab.webhook.bot_started.json": (GO, ("system",)),
    "go-stab.webhook.bot_stopped.json": (GO, ("system",)),
    "go-stab.webhook.chat_title_changed.json": (GO, ("ignored chat_title_changed",)),
    "go-stab.webhook.dialog_cleared.json": (GO, ("ignored dialog_cleared",)),
    "go-stab.webhook.dialog_muted.json": (GO, ("ignored dialog_muted",)),
    "go-stab.webhook.dialog_removed.json": (GO, ("system",)),
    "go-stab.webhook.dialog_unmuted.json": (GO, ("ignored dialog_unmuted",)),
    "go-stab.webhook.message_callback.json": (GO, ("callback",)),
    # a group chat message forwarding another's
    "go-stab.webhook.message_created.json": (GO, ("text",)),
    "go-stab.webhook.message_edited.json": (GO, ("text edit",)),
    "go-stab.webhook.message_removed.json": (GO, ("text edit removed",)),
    "go-stab.webhook.user_added.json": (GO, ("ignored user_added",)),
    "go-stab.webhook.user_removed.json": (GO, ("ignored user_removed",)),
    "schema-built-webhook.message_created.contact.json": (BUILT, ("contact",)),
    "schema-built-webhook.message_created.reply.json": (BUILT, ("text",)),
    "docs.info.deeplink.bot_started.update.json": (DOCS, ("system",)),
    # GET /updates answers ({"updates": [...], "marker"})
    "go-stab.update.bot_added.json": (GO, ("ignored bot_added",)),
    "go-stab.update.bot_removed.json": (GO, ("ignored bot_removed",)),
    "go-stab.update.bot_started.json": (GO, ("system",)),
    "go-stab.update.bot_stopped.json": (GO, ("system",)),
    "go-stab.update.chat_title_changed.json": (GO, ("ignored chat_title_changed",)),
    "go-stab.update.dialog_cleared.json": (GO, ("ignored dialog_cleared",)),
    "go-stab.update.dialog_muted.json": (GO, ("ignored dialog_muted",)),
    "go-stab.update.dialog_removed.json": (GO, ("system",)),
    "go-stab.update.dialog_unmuted.json": (GO, ("ignored dialog_unmuted",)),
    "go-stab.update.message_callback.json": (GO, ("callback",)),
    "go-stab.update.message_created.json": (GO, ("text",)),
    "go-stab.update.message_edited.json": (GO, ("text edit",)),
    "go-stab.update.message_removed.json": (GO, ("text edit removed",)),
    "go-stab.update.user_added.json": (GO, ("ignored user_added",)),
    "go-stab.update.user_removed.json": (GO, ("ignored user_removed",)),
}


def _updates(name: str) -> list[bytes]:
    data = json.loads((EXAMPLES / name).read_bytes())
    if "updates" in data:
        return [json.dumps(u, ensure_ascii=False).encode() for u in data["updates"]]
    return [(EXAMPLES / name).read_bytes()]


def test_every_update_example_is_in_the_table() -> None:
    holding = {
        p.name
        for p in EXAMPLES.glob("*.json")
        if "webhook." in p.name or ".update." in p.name or p.name.endswith(".update.json")
    }
    assert holding == set(EXPECTED)
    # each row's label is what MANIFEST.json says of the file
    for name, (source, _) in EXPECTED.items():
        entry = MANIFEST[f"max/examples/{name}"]
        if source == BUILT:
            assert entry["how"].startswith("schema-built") and entry["repo"] is None, entry
        elif source == GO:
            assert entry["repo"] == "max-messenger/max-bot-api-client-go", entry
        else:
            assert entry["path"].startswith("schema_2026_07_01.json#"), entry


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_example_parses_into_its_events(name: str) -> None:
    _, expected = EXPECTED[name]
    got = tuple(describe(e) for body in _updates(name) for e in events(body))
    assert got == expected


def test_message_created_in_a_group_reads_the_forward_and_big_ints() -> None:
    [event] = events((EXAMPLES / "go-stab.webhook.message_created.json").read_bytes())
    assert isinstance(event, InboundMessage)
    assert event.external_thread_id == "-70801090403050"  # a group's chat id is negative
    assert event.external_user_id == "123456789"
    assert event.text == "...\n↪ forwarded from Tod V:\n> Лада седан - баклажан"
    # seq exceeds 2**53 and is kept exactly (never through a float)
    assert event.sequence == 116327994376978687 > 2**53
    assert event.raw["seq"] == 116327994376978687
    # timestamps are milliseconds
    assert event.sent_at == dt.datetime(2026, 4, 1, 14, 20, 55, 737000, tzinfo=dt.UTC)
    assert event.provider_message_id == "mid.ffffbdb48e6c3775019d496b34394b84"
    assert event.external_id == "message_created:mid.ffffbdb48e6c3775019d496b34394b84"
    assert event.profile.first_name == "John" and event.profile.last_name == "Doe"


def test_a_reply_names_the_message_it_answers() -> None:
    """schema-built-webhook.message_created.reply.json (schema-built)."""
    [event] = events((EXAMPLES / "schema-built-webhook.message_created.reply.json").read_bytes())
    assert isinstance(event, InboundMessage)
    data = json.loads((EXAMPLES / "schema-built-webhook.message_created.reply.json").read_bytes())
    assert event.reply_to == data["message"]["link"]["message"]["mid"]
    # a dialog's thread is the user (its chat id kept in raw)
    assert event.external_thread_id == "123456789" and event.raw["chat_id"] == 182182182
    assert event.profile.language == "ru"


def test_the_callback_is_answerable_and_the_edit_is_timed_by_the_update() -> None:
    [press] = events((EXAMPLES / "go-stab.webhook.message_callback.json").read_bytes())
    assert isinstance(press, InboundMessage) and press.kind is MessageKind.CALLBACK
    assert press.callback_id and len(press.callback_id) == 116
    assert press.text == "picture" and press.external_thread_id == "123456789"
    assert press.external_id == f"message_callback:{press.callback_id}"
    [edit] = events((EXAMPLES / "go-stab.webhook.message_edited.json").read_bytes())
    assert isinstance(edit, InboundMessage) and edit.is_edit
    assert edit.sent_at == dt.datetime.fromtimestamp(1775025604.499, dt.UTC)
    assert edit.external_id == "message_edited:mid.000000000adf429c019d47b1ce4600ff:1775025604499"


def test_bot_stopped_is_recorded_as_the_client_s_system_message() -> None:
    [stop] = events((EXAMPLES / "go-stab.webhook.bot_stopped.json").read_bytes())
    assert isinstance(stop, InboundMessage) and stop.kind is MessageKind.SYSTEM
    assert "stopped the bot" in stop.text and "replies will fail" in stop.text
    assert (stop.external_user_id, stop.external_thread_id) == ("123456789", "123456789")
    assert stop.raw["chat_id"] == 182182182
    assert stop.consent is False  # recorded on the conversation: replies refused
    [start] = events((EXAMPLES / "go-stab.webhook.bot_started.json").read_bytes())
    assert isinstance(start, InboundMessage) and start.consent is True
    [gone] = events((EXAMPLES / "go-stab.webhook.dialog_removed.json").read_bytes())
    assert isinstance(gone, InboundMessage) and gone.consent is None


# --------------------------------------------------------------------------
# Deep links (bot_started.payload) -> utm, Telegram's /start convention
# --------------------------------------------------------------------------


def test_deep_link_payload_is_kept_like_telegram_start() -> None:
    body = json.loads((EXAMPLES / "go-stab.webhook.bot_started.json").read_bytes())
    body["payload"] = "utm_source-google__utm_campaign-spring-sale"  # built here
    [event] = events(json.dumps(body).encode())
    assert isinstance(event, InboundMessage)
    assert dict(event.profile.utm) == {
        "utm_source": "google",
        "utm_campaign": "spring-sale",
        "start": "utm_source-google__utm_campaign-spring-sale",
    }
    assert "link parameter utm_source-google" in event.text
    # the docs' own example payload is free text: kept as start only
    [docs] = events((EXAMPLES / "docs.info.deeplink.bot_started.update.json").read_bytes())
    assert isinstance(docs, InboundMessage)
    assert dict(docs.profile.utm) == {"start": "any data meaningful to bot"}
    assert docs.profile.display_name == "Boris" and docs.profile.username == "borisd84"
    assert utm_from_payload("x" * 513) == {} and utm_from_payload(None) == {}


# --------------------------------------------------------------------------
# Contacts: the phone identity and its hash (FACTS §8)
# --------------------------------------------------------------------------


def test_shared_contact_with_a_valid_hash_is_a_verified_phone_identity() -> None:
    [event] = events((EXAMPLES / "schema-built-webhook.message_created.contact.json").read_bytes())
    assert isinstance(event, InboundMessage) and event.kind is MessageKind.CONTACT
    assert event.profile.phone == "+79990000000"
    assert event.raw["phone_verified"] is True
    assert event.text == "📇 John Doe +79990000000 (verified by MAX)"


def _contact_update(vcf: str, digest: str | None, owner: int = 123456789) -> bytes:
    """A message_created with a contact, built here from the schema-built one."""
    data = json.loads((EXAMPLES / "schema-built-webhook.message_created.contact.json").read_bytes())
    payload = data["message"]["body"]["attachments"][0]["payload"]
    payload["vcf_info"], payload["hash"] = vcf, digest
    payload["max_info"]["user_id"] = owner
    return json.dumps(data).encode()


@pytest.mark.parametrize(
    "how",
    ["wrong hash", "no hash", "someone else's card", "hash under another token"],
)
def test_a_contact_that_is_not_proven_is_shown_unverified_and_is_no_identity(how: str) -> None:
    vcf = (
        "BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Jane Roe\r\n"
        "TEL;TYPE=cell:+7 999 000-00-01\r\nEND:VCARD\r\n"
    )
    good = hmac.new(TOKEN.encode(), vcf.encode(), hashlib.sha256).hexdigest()
    body = {
        "wrong hash": _contact_update(vcf, good[:-1] + ("0" if good[-1] != "0" else "1")),
        "no hash": _contact_update(vcf, None),
        "someone else's card": _contact_update(vcf, good, owner=555),
        "hash under another token": _contact_update(
            vcf, hmac.new(b"other", vcf.encode(), hashlib.sha256).hexdigest()
        ),
    }[how]
    [event] = events(body)
    assert isinstance(event, InboundMessage) and event.kind is MessageKind.CONTACT
    assert event.profile.phone is None
    assert event.raw["phone_verified"] is False
    assert event.text == "📇 Jane Roe +79990000001 (not verified)"


def test_only_a_proven_contact_is_a_verified_phone() -> None:
    # schema-built example (contracts max/FACTS §8): its hash checks under the token
    [own] = events((EXAMPLES / "schema-built-webhook.message_created.contact.json").read_bytes())
    assert isinstance(own, InboundMessage)
    assert (own.profile.phone, own.profile.phone_verified) == ("+79990000000", True)
    vcf = "BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Jane Roe\r\nTEL;TYPE=cell:79990000001\r\nEND:VCARD\r\n"
    good = hmac.new(TOKEN.encode(), vcf.encode(), hashlib.sha256).hexdigest()
    for body in (_contact_update(vcf, None), _contact_update(vcf, good, owner=555)):
        [card] = events(body)  # built here: unchecked, or someone else's
        assert isinstance(card, InboundMessage)
        assert (card.profile.phone, card.profile.phone_verified) == (None, False)


def test_the_hash_is_hex_hmac_sha256_of_the_vcard_under_the_token() -> None:
    data = json.loads((EXAMPLES / "schema-built-webhook.message_created.contact.json").read_bytes())
    payload = data["message"]["body"]["attachments"][0]["payload"]
    assert check_contact_hash(TOKEN, payload["vcf_info"], payload["hash"])
    assert check_contact_hash(TOKEN, payload["vcf_info"], payload["hash"].upper())
    assert not check_contact_hash("", payload["vcf_info"], payload["hash"])
    assert not check_contact_hash(TOKEN, payload["vcf_info"], 42)
    assert not check_contact_hash(TOKEN, payload["vcf_info"] + " ", payload["hash"])


@pytest.mark.parametrize(
    ("vcf", "expected"),
    [
        ("BEGIN:VCARD\r\nFN:A B\r\nTEL:79990000000\r\nEND:VCARD", ("A B", "79990000000")),
        (
            "BEGIN:VCARD\nVERSION:4.0\nFN:A\nTEL;VALUE=uri;TYPE=home:tel:+44-20-7946-0123\n"
            "TEL;TYPE=cell:+7 (999) 111-22-33\nEND:VCARD",
            ("A", "+7 (999) 111-22-33"),
        ),
        (
            "BEGIN:VCARD\r\nFN:Long\r\n  Name\r\nitem1.TEL:tel:+1 202 555 0100\r\nEND:VCARD",
            ("Long Name", "+1 202 555 0100"),
        ),
        ("no vcard at all", (None, None)),
        ("", (None, None)),
    ],
)
def test_vcards_are_read_leniently(vcf: str, expected: tuple[str | None, str | None]) -> None:
    assert read_vcard(vcf) == expected


# --------------------------------------------------------------------------
# Every incoming attachment type (schema-built-attachments.incoming.catalog.json)
# --------------------------------------------------------------------------


def test_every_incoming_attachment_type() -> None:
    catalog = json.loads((EXAMPLES / "schema-built-attachments.incoming.catalog.json").read_bytes())
    base = json.loads((EXAMPLES / "go-stab.webhook.message_edited.json").read_bytes())
    base["update_type"] = "message_created"  # built here: one message per attachment
    seen = {}
    for node in catalog:
        body = copy.deepcopy(base)
        body["message"]["body"] = {"mid": f"mid.{node['type']}", "seq": 1, "attachments": [node]}
        [event] = events(json.dumps(body).encode())
        assert isinstance(event, InboundMessage)
        seen[node["type"]] = event
    kinds = {k: e.kind for k, e in seen.items()}
    assert kinds == {
        "image": MessageKind.PHOTO,
        "video": MessageKind.VIDEO,
        "audio": MessageKind.VOICE,
        "file": MessageKind.DOCUMENT,
        "sticker": MessageKind.STICKER,
        "contact": MessageKind.CONTACT,
        "share": MessageKind.TEXT,
        "location": MessageKind.LOCATION,
        # the bot's own buttons: nothing the client sent
        "inline_keyboard": MessageKind.UNKNOWN,
    }
    [photo] = seen["image"].attachments
    assert (photo.url, photo.file_ref) == (
        "https://i.example.invalid/photo.jpg",
        "image-token-example",
    )
    [doc] = seen["file"].attachments
    assert (doc.file_name, doc.size, doc.mime_type) == ("invoice.pdf", 48213, "application/pdf")
    [video] = seen["video"].attachments
    assert (video.width, video.height, video.duration) == (1280, 720, 15)
    assert seen["share"].text == "🔗 Article title: https://example.com/article"
    assert seen["location"].text == "📍 55.751244, 37.618423"
    # an unverified card (no hash, no max_info): shown, not an identity
    assert seen["contact"].profile.phone is None and "not verified" in seen["contact"].text
    assert seen["inline_keyboard"].text == "[empty message]"


# --------------------------------------------------------------------------
# Never the customer's: the bot's own messages, channel posts
# --------------------------------------------------------------------------


def test_the_bot_s_own_message_and_channel_posts_are_never_the_customer_s() -> None:
    data = json.loads((EXAMPLES / "schema-built-send-message.response.json").read_bytes())
    own = {"update_type": "message_created", "timestamp": 1, "message": data["message"]}
    [event] = events(json.dumps(own).encode())
    assert isinstance(event, IgnoredEvent) and event.event_type == "message_created:from_bot"
    # our bot's id, even without is_bot (built here)
    own["message"]["sender"]["is_bot"] = False
    assert describe(events(json.dumps(own).encode())[0]) == "ignored message_created:from_bot"
    post = {
        "update_type": "message_created",
        "timestamp": 1,
        "message": {
            "recipient": {"chat_id": -5, "chat_type": "channel"},
            "body": {"mid": "mid.post", "seq": 1, "text": "news"},
        },
    }  # built here
    assert describe(events(json.dumps(post).encode())[0]) == "ignored message_created:channel_post"


# --------------------------------------------------------------------------
# The secret header, the edge, dedupe keys
# --------------------------------------------------------------------------


BODY = (EXAMPLES / "go-stab.webhook.message_edited.json").read_bytes()


@pytest.mark.parametrize(
    "given", [None, "", SECRET[:-1], SECRET + "x", SECRET.upper(), "wh_Secret-012345678\u0669"]
)
def test_a_missing_or_wrong_secret_is_refused(given: str | None) -> None:
    with pytest.raises(SignatureError) as caught:
        adapter().verify(request(BODY, given))
    assert caught.value.status_code == 403
    assert caught.value.to_json()["error"] == "forbidden"


def test_the_secret_is_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr("channel_adapters.max.adapter.hmac.compare_digest", spy)
    adapter().verify(request(BODY))
    assert calls == [(SECRET.encode(), SECRET.encode())]


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"not json", "not JSON"),
        (b"[1]", "JSON object"),
        (b'{"timestamp": 1}', "update_type"),
        (b'{"update_type": "message_created"}', "timestamp"),
        (b'{"update_type": "message_created", "timestamp": 1.5}', "timestamp"),
        (b'{"update_type": "message_created", "timestamp": 1, "message": {}}', "mid"),
        (b'{"update_type": "message_callback", "timestamp": 1, "callback": {}}', "callback_id"),
        (b'{"update_type": "message_removed", "timestamp": 1}', "message_id"),
    ],
)
def test_bad_bodies_are_a_400_saying_what_is_wrong(body: bytes, words: str) -> None:
    with pytest.raises(PayloadError) as caught:
        adapter().edge(request(body))
    assert caught.value.status_code == 400 and words in caught.value.message


def test_dedupe_keys_follow_facts_section_2() -> None:
    created = json.loads(BODY)
    created["update_type"] = "message_created"
    mid = created["message"]["body"]["mid"]
    assert delivery_key(created) == f"message_created:{mid}"
    # a retry (same body) has the same key; a later edit of the message another
    edit = json.loads(BODY)
    later = {**edit, "timestamp": edit["timestamp"] + 5000}
    assert delivery_key(edit) == delivery_key(json.loads(BODY)) != delivery_key(later)
    started = json.loads((EXAMPLES / "go-stab.webhook.bot_started.json").read_bytes())
    assert delivery_key(started) == "bot_started:182182182:123456789:1775025604499"
    removed = json.loads((EXAMPLES / "go-stab.webhook.message_removed.json").read_bytes())
    assert delivery_key(removed) == "message_removed:mid.000000000adf429c019d47b1ce4600ff"
    assert all(len(delivery_key(json.loads(b))) <= 255 for n in EXPECTED for b in _updates(n))


def test_the_answer_is_a_plain_200() -> None:
    answer = adapter().answer([])
    assert answer.status == 200


def test_parse_reads_without_the_adapter_too() -> None:
    [event] = parse(BODY, NOW)
    assert isinstance(event, InboundMessage) and event.is_edit


# --------------------------------------------------------------------------
# Long polling: GET /updates with the marker (go-stab update files)
# --------------------------------------------------------------------------


@responses.activate
def test_poll_passes_the_marker_and_returns_the_next_one() -> None:
    stab = json.loads((EXAMPLES / "go-stab.update.message_created.json").read_bytes())
    responses.get(f"{BASE}/updates", json=stab)
    result = adapter(mode="polling").poll("25493969", timeout=20)
    [call] = responses.calls
    assert call.request.headers["Authorization"] == TOKEN  # raw, no Bearer
    query = dict(parse_qsl(urlsplit(call.request.url).query))
    assert query["marker"] == "25493969" and query["timeout"] == "20"
    assert "message_created" in query["types"] and "access_token" not in query
    assert result.cursor == "25493970"
    [delivery] = result.deliveries
    assert delivery.key == "message_created:mid.ffffbdb48e6c3775019d496b34394b84"
    # the journaled body keeps seq exact
    assert json.loads(delivery.body)["message"]["body"]["seq"] == 116327994376978687
    # the same update through the webhook is the same journal key
    assert (
        adapter()
        .edge(request((EXAMPLES / "go-stab.webhook.message_created.json").read_bytes()))[0]
        .key
        == delivery.key
    )


@responses.activate
def test_poll_without_a_stored_marker_and_with_a_webhook_set() -> None:
    responses.get(f"{BASE}/updates", json={"updates": [], "marker": None})
    result = adapter(mode="polling").poll(None, timeout=0)
    assert "marker" not in responses.calls[0].request.url
    assert result.deliveries == () and result.cursor is None
    responses.replace(
        responses.GET,
        f"{BASE}/updates",
        status=405,
        json={"code": "method.not.allowed", "message": "webhook active"},
    )
    with pytest.raises(PermanentError) as caught:
        adapter(mode="polling").poll("1", timeout=0)
    assert "webhook subscription is active" in caught.value.message
    with pytest.raises(PermanentError):
        adapter(mode="polling").poll("not-a-number", timeout=0)
