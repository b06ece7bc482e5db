"""TelegramAdapter unit tests.

Inputs are the real payloads under ``tests/fixtures/corpora/telegram`` (each
test id names its source repository and path from MANIFEST.json); variants
we derived from them say so in their id. HTTP is mocked at the one seam with
``responses``: a call no test registered fails the test (``api`` fixture).
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import re
import traceback
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import requests
import responses
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.errors import (
    AmbiguousError,
    AuthError,
    BridgeError,
    ConfigError,
    PartlySentError,
    PayloadError,
    PermanentError,
    RetryableError,
    SignatureError,
)
from bridge.http import HttpClient
from bridge.model import (
    Attachment,
    ChannelAccountInfo,
    IgnoredEvent,
    InboundMessage,
    MessageKind,
    OutboundMessage,
    Rate,
    ThreadMigrated,
    WebhookRequest,
)
from channel_adapters.telegram import (
    ChatMigratedError,
    PartialSendError,
    TelegramAdapter,
    split_utf16,
    utf16_len,
    utm_from_start,
)
from tests.support.fakes import RecordingLimiter

CORPORA = Path(__file__).resolve().parents[1] / "fixtures" / "corpora"
TELEGRAM = CORPORA / "telegram"
MANIFEST = {e["file"]: e for e in json.loads((CORPORA / "MANIFEST.json").read_text())}

TOKEN = "123456789:AAH-secret_TOKEN-value-0123456789abcdef"  # noqa: S105 (a test value)
SECRET = "s3cr3t-Token_for-tests"  # noqa: S105
BASE = "https://api.telegram.test"
UTC = dt.UTC

#: Files under tests/fixtures/corpora/telegram that are not updates at all,
#: each checked to be rejected by parse() with a PayloadError.
NOT_UPDATES = {
    "telegrambots_resources/ResponseWithError.json": "error envelope (used in send tests)",
    "telegrambots_extracted/TelegramBotsHelper__GetResponseWithError.json": "error envelope",
    "telegrambots_extracted/TelegramBotsHelper__getResponseWithError409.json": "error envelope",
    "telegrambots_resources/ResponsesSetGameScore.json": "setGameScore answer: a Message",
    "telegrambots_extracted/TelegramBotsHelper__GetSetGameScoreMessageResponse.json": (
        "setGameScore answer: a Message"
    ),
    "telegrambots_extracted/TestDeserialization__testDeserializationChatMember.json": (
        "getChatMember answer: a ChatMember"
    ),
    "telegrambots_extracted/TestDeserialization__testDeserializationGetMyCommandsMethod.json": (
        "getMyCommands answer: BotCommands"
    ),
    "updates/illemius_telegram_types/inline_query.json": 'placeholder {"test": "ok"}',
    "updates/illemius_telegram_types/message_with_invoice.json": (
        "a bare Message (no update_id); wrapped into an Update in test_invoice_is_unknown"
    ),
}


# --------------------------------------------------------------------------
# Corpus loading
# --------------------------------------------------------------------------


def _rel(path: Path) -> str:
    return path.relative_to(TELEGRAM).as_posix()


def _source(rel: str) -> str:
    entry = MANIFEST[f"telegram/{rel}"]
    return f"{entry['repo']}@{entry['commit'][:7]}:{entry['path']}"


def _updates_in(rel: str) -> list[dict]:
    data = json.loads((TELEGRAM / rel).read_text(encoding="utf-8"))
    if isinstance(data.get("result"), list):  # a getUpdates envelope
        return [u for u in data["result"] if isinstance(u, dict) and "update_id" in u]
    return [data] if "update_id" in data else []


CORPUS_FILES = sorted(_rel(p) for p in TELEGRAM.rglob("*.json"))
UPDATE_CASES = [
    pytest.param(update, id=f"{_source(rel)}[{i}]")
    for rel in CORPUS_FILES
    if rel not in NOT_UPDATES
    for i, update in enumerate(_updates_in(rel))
]


def load(rel: str, index: int | None = None) -> dict:
    """One update from a corpus file (``index`` into a getUpdates envelope)."""
    data = json.loads((TELEGRAM / rel).read_text(encoding="utf-8"))
    return copy.deepcopy(data["result"][index] if index is not None else data)


ILLEMIUS = "updates/illemius_telegram_types/"
LIST2 = "telegrambots_extracted/TestDeserialization__testListUpdates2.json"
LIST3 = "telegrambots_extracted/TestDeserialization__testListUpdates3.json"
VOICECHAT = "telegrambots_extracted/TestDeserialization__testListUpdatesVoiceChat.json"
CALLBACK = "telegrambots_extracted/TelegramBotsHelper__GetUpdateWithMessageInCallbackQuery.json"


# --------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------


def account(**credentials: Any) -> ChannelAccountInfo:
    creds = {"bot_token": TOKEN, "secret_token": SECRET, **credentials}
    return ChannelAccountInfo(id=1, kind="telegram", key="acct-key", credentials=creds)


@pytest.fixture
def adapter() -> TelegramAdapter:
    return TelegramAdapter(account(), HttpClient(BASE))


@pytest.fixture(autouse=True)
def api():
    """``responses`` at the HTTP seam for every test; an unregistered call
    fails the test even where the adapter turned it into an error."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock
        unmatched = [
            c.request.url
            for c in mock.calls
            if isinstance(c.response, requests.ConnectionError)
            and "match any registered mock" in str(c.response)
        ]
        assert not unmatched, f"unmocked HTTP calls: {len(unmatched)}"


def url(method: str) -> str:
    return f"{BASE}/bot{TOKEN}/{method}"


def request(body: bytes | dict, headers: dict | None = None) -> WebhookRequest:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    hdrs = {"x-telegram-bot-api-secret-token": SECRET} if headers is None else headers
    return WebhookRequest(
        method="POST",
        url="https://bridge.test/webhooks/telegram/acct-key",
        headers=hdrs,
        body=raw,
        received_at=dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    )


def parse_one(adapter: TelegramAdapter, update: dict):
    events = adapter.parse(request(update))
    assert len(events) == 1
    return events[0]


class TelegramApi:
    """A tiny stand-in for sendMessage & co.: records JSON bodies, answers in order."""

    def __init__(self, mock: responses.RequestsMock) -> None:
        self.mock = mock
        self.bodies: list[tuple[str, dict]] = []
        self.answers: dict[str, list[tuple[int, dict]]] = {}
        self.next_id = 100

    def on(self, method: str, *answers: tuple[int, dict]) -> TelegramApi:
        self.answers.setdefault(method, []).extend(answers)
        self.mock.add_callback(responses.POST, url(method), callback=self._reply(method))
        return self

    def _reply(self, method: str):
        def reply(req):
            body = json.loads(req.body)
            self.bodies.append((method, body))
            queue = self.answers.get(method) or []
            if queue:
                status, payload = queue.pop(0)
                if status != 0:
                    return status, {}, json.dumps(payload)
            self.next_id += 1
            result = {"message_id": self.next_id, "date": 1, "chat": {"id": body.get("chat_id")}}
            return 200, {}, json.dumps({"ok": True, "result": result})

        return reply


OK = (0, {})  # "answer normally" in TelegramApi.on(...)


def tg_error(code: int, description: str, **parameters: Any) -> tuple[int, dict]:
    body: dict[str, Any] = {"ok": False, "error_code": code, "description": description}
    if parameters:
        body["parameters"] = parameters
    return code, body


# --------------------------------------------------------------------------
# The corpus: every update parses
# --------------------------------------------------------------------------


def test_every_corpus_file_is_an_update_or_listed_as_not_one():
    assert CORPUS_FILES, "no Telegram corpus found"
    for rel in CORPUS_FILES:
        assert f"telegram/{rel}" in MANIFEST, f"{rel} has no MANIFEST entry"
        assert _updates_in(rel) or rel in NOT_UPDATES, f"{rel}: neither updates nor listed"
        assert not (_updates_in(rel) and rel in NOT_UPDATES), f"{rel} holds updates"


@pytest.mark.parametrize("rel", sorted(NOT_UPDATES))
def test_files_that_are_not_updates_are_rejected(adapter, rel):
    with pytest.raises(PayloadError):
        adapter.parse(request((TELEGRAM / rel).read_bytes()))


@pytest.mark.parametrize("update", UPDATE_CASES)
def test_corpus_update_parses(adapter, update, caplog):
    events = adapter.parse(request(update))
    # read through PTB's types, not the ids-only fallback
    assert "unreadable" not in caplog.text
    again = adapter.parse(request(update))
    assert events == again  # deterministic
    assert len(events) == 1
    event = events[0]
    assert event.channel_kind == "telegram"
    assert event.external_id == str(update["update_id"])
    assert event.raw == update
    if isinstance(event, InboundMessage):
        assert re.fullmatch(r"-?\d+", event.external_thread_id)
        assert re.fullmatch(r"-?\d+", event.external_user_id)
        assert event.sent_at.tzinfo is not None and event.sent_at.utcoffset() == dt.timedelta(0)
        assert event.kind in MessageKind


# --------------------------------------------------------------------------
# Precise mappings
# --------------------------------------------------------------------------


def test_text_message(adapter):
    msg = parse_one(adapter, load(ILLEMIUS + "message.json"))
    assert msg == InboundMessage(
        channel_kind="telegram",
        external_id="128526",
        external_user_id="12345678",
        external_thread_id="12345678",
        kind=MessageKind.TEXT,
        sent_at=dt.datetime(2017, 10, 22, 22, 1, 51, tzinfo=UTC),
        text="Hi, world!",
        profile=msg.profile,
        provider_message_id="11223",
        sequence=11223,
    )
    p = msg.profile
    assert (p.first_name, p.last_name, p.username, p.language) == (
        "FirstName",
        "LastName",
        "username",
        "ru",
    )
    assert p.phone is None and p.utm == {}


def test_photo_picks_the_largest_size_whatever_the_order(adapter):
    update = load(ILLEMIUS + "message_with_photo.json")
    largest = "AgADAgADOagxG8vyeUvsltCem_XPv5A6Sw0ABNXULc5u7jny5VkRAAEC"
    for sizes in (update["message"]["photo"], list(reversed(update["message"]["photo"]))):
        update["message"]["photo"] = sizes
        msg = parse_one(adapter, update)
        assert msg.kind is MessageKind.PHOTO
        assert msg.text == "photo description"  # the caption
        assert msg.attachments == (
            Attachment(kind=MessageKind.PHOTO, file_ref=largest, size=47844, width=950, height=320),
        )


def test_photo_with_file_unique_id(adapter):
    msg = parse_one(adapter, load(LIST2, 2))
    assert msg.kind is MessageKind.PHOTO
    (photo,) = msg.attachments
    assert (photo.width, photo.height, photo.size) == (720, 1280, 114661)


def test_document(adapter):
    msg = parse_one(adapter, load(ILLEMIUS + "message_with_document.json"))
    assert msg.kind is MessageKind.DOCUMENT
    assert msg.text == "doc description"
    assert msg.attachments == (
        Attachment(
            kind=MessageKind.DOCUMENT,
            file_ref="BQADAgADpgADy_JxS66XQTBRHFleAg",
            mime_type="application/vnd.openxmlformats-officedocument.wordprocessingml.document",
            file_name="test.docx",
            size=21331,
        ),
    )


def test_voice(adapter):
    msg = parse_one(adapter, load(LIST2, 3))
    assert msg.kind is MessageKind.VOICE and msg.text == ""
    assert msg.attachments == (
        Attachment(
            kind=MessageKind.VOICE, file_ref="FILEID", mime_type="audio/ogg", size=8386, duration=1
        ),
    )


def test_audio(adapter):
    msg = parse_one(adapter, load(ILLEMIUS + "message_with_audio.json"))
    assert msg.kind is MessageKind.AUDIO
    (audio,) = msg.attachments
    assert (audio.file_ref, audio.mime_type, audio.duration, audio.size) == (
        "CQADAgdwadgawd0ChI_rXPyrAg",
        "audio/mpeg3",
        123,
        12345678,
    )


def test_video(adapter):
    msg = parse_one(adapter, load(ILLEMIUS + "message_with_video.json"))
    assert msg.kind is MessageKind.VIDEO
    assert msg.text == "description"
    assert msg.attachments == (
        Attachment(
            kind=MessageKind.VIDEO,
            file_ref="BAADAgpAADdawy_JxS72kRvV3cortAg",
            mime_type="video/quicktime",
            size=10099782,
            width=853,
            height=480,
            duration=52,
        ),
    )


def test_sticker_animated_and_static(adapter):
    animated = parse_one(adapter, load(LIST3, 7))
    assert animated.kind is MessageKind.STICKER
    assert animated.text == "🤬"  # the sticker's emoji, readable in the CRM
    assert animated.attachments[0].mime_type == "application/x-tgsticker"
    assert (animated.attachments[0].width, animated.attachments[0].height) == (512, 512)
    static = parse_one(adapter, load(ILLEMIUS + "message_with_sticker.json"))
    assert static.text == "🛠"
    assert static.attachments[0].file_ref == "CAADAgADOgADKHr7A36pyyv9e36nAg"
    assert static.attachments[0].mime_type == "image/webp"


def test_video_note_and_animation_derived(adapter):
    base = load(ILLEMIUS + "message.json")
    del base["message"]["text"]
    note = copy.deepcopy(base)
    note["message"]["video_note"] = {
        "file_id": "VN",
        "file_unique_id": "u",
        "length": 240,
        "duration": 7,
    }
    msg = parse_one(adapter, note)
    assert msg.kind is MessageKind.VIDEO_NOTE
    assert msg.attachments[0] == Attachment(
        kind=MessageKind.VIDEO_NOTE, file_ref="VN", width=240, height=240, duration=7
    )
    # an animation also carries "document" (api.json): it stays an animation
    gif = copy.deepcopy(base)
    anim = {"file_id": "AN", "file_unique_id": "u", "width": 1, "height": 2, "duration": 3}
    gif["message"]["animation"] = anim
    gif["message"]["document"] = {"file_id": "AN", "file_unique_id": "u"}
    assert parse_one(adapter, gif).kind is MessageKind.ANIMATION


def test_contact_of_someone_else_is_content_only(adapter):
    # corpus: no contact.user_id at all
    msg = parse_one(adapter, load(LIST3, 10))
    assert msg.kind is MessageKind.CONTACT
    assert msg.text == "👤 FirstName LASNAME: 618490765"
    assert msg.profile.phone is None
    # derived: a card of another Telegram user
    update = load(LIST3, 10)
    update["message"]["contact"]["user_id"] = 999
    assert parse_one(adapter, update).profile.phone is None


def test_own_contact_fills_profile_phone(adapter):
    update = load(LIST3, 10)  # derived: the sender shares their own number
    update["message"]["contact"]["user_id"] = update["message"]["from"]["id"]
    msg = parse_one(adapter, update)
    assert msg.kind is MessageKind.CONTACT
    assert msg.profile.phone == "+618490765"
    update["message"]["contact"]["phone_number"] = "+79991234567"
    assert parse_one(adapter, update).profile.phone == "+79991234567"


def test_only_the_senders_own_shared_contact_is_a_verified_phone(adapter):
    # corpus testListUpdates3 #10: a card without user_id -> no phone at all
    assert parse_one(adapter, load(LIST3, 10)).profile.phone_verified is False
    update = load(LIST3, 10)  # derived: the sender shares their own number
    update["message"]["contact"]["user_id"] = update["message"]["from"]["id"]
    own = parse_one(adapter, update).profile
    assert (own.phone, own.phone_verified) == ("+618490765", True)
    update["message"]["contact"]["user_id"] = 999  # derived: another user's card
    other = parse_one(adapter, update).profile
    assert (other.phone, other.phone_verified) == (None, False)
    # corpus: a plain text message carries no phone, nothing verified
    text = parse_one(adapter, load(ILLEMIUS + "message_with_location.json")).profile
    assert (text.phone, text.phone_verified, text.email_verified) == (None, False, False)


def test_location_and_venue(adapter):
    msg = parse_one(adapter, load(ILLEMIUS + "message_with_location.json"))
    assert msg.kind is MessageKind.LOCATION
    assert msg.text == "📍 55.693416, 37.624605"
    update = load(ILLEMIUS + "message_with_location.json")  # derived: a venue
    update["message"]["venue"] = {
        "location": update["message"]["location"],
        "title": "Gorky Park",
        "address": "Krymsky Val 9",
    }
    venue = parse_one(adapter, update)
    assert venue.kind is MessageKind.VENUE
    assert venue.text == "📍 Gorky Park, Krymsky Val 9 (55.693416, 37.624605)"


def test_poll(adapter):
    msg = parse_one(adapter, load(LIST3, 9))
    assert msg.kind is MessageKind.POLL
    assert msg.text == "📊 My test poll\n• No option\n• Yes option"


def test_edited_message(adapter):
    msg = parse_one(adapter, load(ILLEMIUS + "edited_message.json"))
    assert msg.kind is MessageKind.TEXT and msg.is_edit
    assert msg.text == "hi there (edited)"
    assert msg.provider_message_id == "12345" and msg.sequence == 12345
    assert msg.sent_at == dt.datetime(2017, 10, 24, 6, 9, 39, tzinfo=UTC)  # edit_date


def test_live_location_stream_is_one_message(adapter):
    events = [parse_one(adapter, u) for u in load(LIST3)["result"]]
    starts = [e for e in events if isinstance(e, InboundMessage) and e.kind is MessageKind.LOCATION]
    assert [e.provider_message_id for e in starts] == ["6", "7", "8", "9"]
    assert [e.text.endswith("(live location)") for e in starts] == [False, True, True, True]
    edits = [e for e in events if isinstance(e, IgnoredEvent)]
    assert {e.event_type for e in edits} == {"live_location_update"}
    stream = [u for u in load(LIST3)["result"] if "location" in u.get("edited_message", {})]
    assert len(edits) == len(stream) == 28
    # the one text edit in the same stream is kept
    (text_edit,) = [e for e in events if isinstance(e, InboundMessage) and e.is_edit]
    assert text_edit.text == "Hello, modified"
    assert text_edit.sent_at == dt.datetime(2020, 11, 2, 1, 55, 53, tzinfo=UTC)


def test_reply_to(adapter):
    assert parse_one(adapter, load(ILLEMIUS + "reply_message.json")).reply_to == "12345"
    assert parse_one(adapter, load(LIST3, 39)).reply_to == "11"


def test_callback_query(adapter):
    msg = parse_one(adapter, load(CALLBACK))
    assert msg.kind is MessageKind.CALLBACK
    assert msg.text == "*"
    assert msg.callback_id == "4382bfdwdsb323b2d9"
    assert (msg.external_thread_id, msg.external_user_id) == ("2", "1")
    assert msg.reply_to == "3572"  # the message that carried the keyboard
    assert msg.sent_at == request(b"").received_at  # a callback has no date of its own
    assert msg.profile.language == "en"


def test_callback_query_without_message_uses_the_private_chat(adapter):
    update = load(CALLBACK)  # derived: a button on an inline-mode message
    del update["callback_query"]["message"]
    update["callback_query"]["inline_message_id"] = "1234csdbsk4839"
    msg = parse_one(adapter, update)
    assert msg.kind is MessageKind.CALLBACK
    assert msg.external_thread_id == "1" and msg.reply_to is None


def test_group_to_supergroup_migration(adapter):
    to = parse_one(adapter, load(VOICECHAT, 1))
    assert to == ThreadMigrated("telegram", "259939678", "-552721116", "-1001308316775")
    # the anonymised pair in testListUpdates3 has the same id on both sides
    assert parse_one(adapter, load(LIST3, 5)) == ThreadMigrated(
        "telegram", "259894307", "-10011869112345", "-10011869112345"
    )
    frm = load(LIST3, 6)  # derived: give the pair distinct ids
    frm["message"]["migrate_from_chat_id"] = -552721116
    assert parse_one(adapter, frm) == ThreadMigrated(
        "telegram", "259894308", "-552721116", "-10011869112345"
    )


def test_service_messages_are_system(adapter):
    joined = parse_one(adapter, load(LIST3, 2))
    assert joined.kind is MessageKind.SYSTEM
    assert joined.text == "joined: Testing Telegram Bots"
    assert parse_one(adapter, load(LIST3, 3)).text == "left: Testing Telegram Bots"
    assert parse_one(adapter, load(VOICECHAT, 0)).text == "group created"
    assert parse_one(adapter, load(VOICECHAT, 4)).kind is MessageKind.SYSTEM
    paid = parse_one(adapter, load(ILLEMIUS + "message_with_successful_payment.json"))
    assert (paid.kind, paid.text) == (MessageKind.SYSTEM, "payment received")


def test_big_ids_stay_exact(adapter):
    msg = parse_one(adapter, load(VOICECHAT, 2))
    assert msg.external_user_id == "1111111111111111"
    assert msg.external_thread_id == "-1001308316775"
    update = load(ILLEMIUS + "message.json")  # derived: ids at the 52-bit edge
    update["message"]["from"]["id"] = 2**52 + 1
    update["message"]["chat"]["id"] = -(2**52 + 3)
    update["update_id"] = 2**53 + 5
    msg = parse_one(adapter, update)
    assert msg.external_user_id == str(2**52 + 1)
    assert msg.external_thread_id == str(-(2**52 + 3))
    assert msg.external_id == str(2**53 + 5)


def test_game_is_unknown(adapter):
    msg = parse_one(adapter, load(ILLEMIUS + "message_with_game.json"))
    assert msg.kind is MessageKind.UNKNOWN
    assert msg.text == "[unsupported: game]"
    assert msg.external_thread_id == "12345678"


def test_invoice_is_unknown(adapter):
    # the corpus file is a bare Message: wrapped into an Update here
    update = {"update_id": 42, "message": load(ILLEMIUS + "message_with_invoice.json")}
    msg = parse_one(adapter, update)
    assert (msg.kind, msg.text) == (MessageKind.UNKNOWN, "[unsupported: invoice]")


@pytest.mark.parametrize(
    "field, value",
    [
        ("dice", {"emoji": "🎲", "value": 4}),
        ("story", {"chat": {"id": 1, "type": "channel"}, "id": 7}),
        ("brand_new_content_from_bot_api_11", {"x": 1}),
    ],
)
def test_unmodelled_message_content_is_unknown(adapter, field, value):
    update = load(ILLEMIUS + "message.json")  # derived
    del update["message"]["text"]
    update["message"][field] = value
    msg = parse_one(adapter, update)
    assert (msg.kind, msg.text) == (MessageKind.UNKNOWN, f"[unsupported: {field}]")
    assert msg.external_thread_id == "12345678"


@pytest.mark.parametrize(
    "key",
    [
        "inline_query",
        "chosen_inline_result",
        "shipping_query",
        "pre_checkout_query",
        "poll",
        "poll_answer",
        "my_chat_member",
        "chat_member",
        "chat_join_request",
        "channel_post",
        "edited_channel_post",
        "message_reaction",
        "message_reaction_count",
        "business_connection",
        "business_message",
        "edited_business_message",
        "deleted_business_messages",
        "guest_message",
        "purchased_paid_media",
        "chat_boost",
        "removed_chat_boost",
        "managed_bot",
        "some_kind_from_bot_api_12",
    ],
)
def test_update_kinds_without_a_customer_thread_are_ignored(adapter, key):
    event = parse_one(adapter, {"update_id": 7, key: {"anything": [1, {"x": None}]}})
    assert event == IgnoredEvent("telegram", "7", key)


def test_ignored_corpus_kinds(adapter):
    for rel, kind in [
        (ILLEMIUS + "pre_checkout_query.json", "pre_checkout_query"),
        (ILLEMIUS + "shipping_query.json", "shipping_query"),
    ]:
        assert parse_one(adapter, load(rel)).event_type == kind
    poll_answer = load(
        "telegrambots_extracted/TestDeserialization__testDeserializationPollAnswer.json"
    )
    assert parse_one(adapter, poll_answer["result"][0]).event_type == "poll_answer"


def test_synthetic_update_with_every_kind_does_not_crash(adapter):
    rel = "telegrambots_resources/Update.json"
    update = load(rel)
    assert {"message", "edited_message", "callback_query", "inline_query"} <= set(update)
    msg = parse_one(adapter, update)
    # Telegram sends "at most one" kind; with several, message comes first
    assert isinstance(msg, InboundMessage) and not msg.is_edit
    assert msg.external_id == "10000" and msg.reply_to == "1334"
    assert msg.text == "Bold and italics"


def test_update_with_only_an_id_is_ignored(adapter):
    assert parse_one(adapter, {"update_id": 9}) == IgnoredEvent("telegram", "9", "empty")


def test_unreadable_message_shape_is_kept_as_unknown(adapter, caplog):
    update = load(ILLEMIUS + "message.json")  # derived: a photo PTB cannot build
    del update["message"]["text"]
    update["message"]["photo"] = [{"file_id": "X", "width": "wide"}, "garbage"]
    msg = parse_one(adapter, update)
    assert (msg.kind, msg.text) == (MessageKind.UNKNOWN, "[unsupported: photo]")
    assert (msg.external_thread_id, msg.external_user_id, msg.sequence) == (
        "12345678",
        "12345678",
        11223,
    )
    assert msg.sent_at == dt.datetime(2017, 10, 22, 22, 1, 51, tzinfo=UTC)
    # the log line names the update, never the person
    assert "128526" in caplog.text
    assert "12345678" not in caplog.text and "username" not in caplog.text


def test_fields_we_do_not_read_cannot_break_a_message(adapter):
    update = load(ILLEMIUS + "reply_message.json")  # derived: odd neighbours
    update["message"]["reply_to_message"]["game"] = {"title": "x", "photo": [{"bad": 1}]}
    update["message"]["forward_origin"] = {"type": "from_the_future", "date": "soon"}
    update["message"]["quote"] = ["not", "an", "object"]
    msg = parse_one(adapter, update)
    assert (msg.kind, msg.text, msg.reply_to) == (
        MessageKind.TEXT,
        "Reply to quoted message",
        "12345",
    )


# --------------------------------------------------------------------------
# Deep links
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, utm",
    [
        ("/start", {}),
        ("hello", {}),
        ("/start abc123", {"start": "abc123"}),
        ("/start@ShopBot abc", {"start": "abc"}),
        ("/start promo-2024", {"start": "promo-2024", "promo": "2024"}),
        (
            "/start utm_source-google__utm_campaign-spring-sale",
            {
                "start": "utm_source-google__utm_campaign-spring-sale",
                "utm_source": "google",
                "utm_campaign": "spring-sale",
            },
        ),
        ("/start utm_source-google__junk", {"start": "utm_source-google__junk"}),
        ("/start two words", {}),
    ],
)
def test_start_payload(text, utm):
    assert utm_from_start(text) == utm


def test_deep_link_lands_in_profile(adapter):
    update = load(LIST2, 0)  # derived: the corpus /start with a payload added
    update["message"]["text"] = "/start utm_source-vk__utm_medium-cpc"
    msg = parse_one(adapter, update)
    assert msg.kind is MessageKind.TEXT
    assert msg.profile.utm == {
        "start": "utm_source-vk__utm_medium-cpc",
        "utm_source": "vk",
        "utm_medium": "cpc",
    }
    assert parse_one(adapter, load(LIST2, 0)).profile.utm == {}  # plain /start


# --------------------------------------------------------------------------
# Junk -> PayloadError, and nothing else
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body, problem",
    [
        (b"", "JSON"),
        (b"not json", "JSON"),
        (b"\xff\xfe{}", "UTF-8"),
        (b"[]", "object"),
        (b'"update"', "object"),
        (b"null", "object"),
        (b"{}", "update_id"),
        (b'{"update_id": "1"}', "update_id"),
        (b'{"update_id": true}', "update_id"),
        (b'{"update_id": 1.5}', "update_id"),
        (b'{"update_id": 1, "message": "hi"}', "not an object"),
        (b'{"update_id": 1, "message": {}}', "no chat"),
        (b'{"update_id": 1, "message": {"chat": {"id": "x"}, "date": 1}}', "no chat"),
        (b"[" * 100_000 + b"]" * 100_000, "JSON"),
        (b'{"update_id": 1' + b"9" * 5000 + b"}", "JSON"),
    ],
)
def test_junk_is_a_payload_error(adapter, body, problem):
    with pytest.raises(PayloadError, match=problem):
        adapter.parse(request(body))


def test_oversized_body_is_413(adapter):
    with pytest.raises(PayloadError) as info:
        adapter.parse(request(b" " * (adapter.max_body + 1)))
    assert info.value.status_code == 413


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=10,
)
_message_keys = st.sampled_from(
    [
        "message_id", "from", "chat", "date", "text", "photo", "document", "sticker", "contact",
        "location", "venue", "poll", "reply_to_message", "migrate_to_chat_id", "caption",
        "new_chat_members", "edit_date", "game",
    ]
)  # fmt: skip
_message = st.fixed_dictionaries(
    {"message_id": st.integers(), "chat": st.fixed_dictionaries({"id": st.integers()})},
    optional={"date": st.integers(min_value=-(2**40), max_value=2**40)},
).flatmap(
    lambda base: st.dictionaries(_message_keys, _json, max_size=4).map(lambda d: {**base, **d})
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    update_id=st.integers(min_value=0, max_value=2**62) | _json,
    kind=st.sampled_from(["message", "edited_message", "callback_query", "poll", "zzz"]),
    body=_message | _json,
)
def test_fuzzed_updates_parse_or_raise_payload_error(update_id, kind, body):
    adapter = TelegramAdapter(account(), HttpClient(BASE))
    try:
        events = adapter.parse(request({"update_id": update_id, kind: body}))
    except PayloadError:
        return
    assert len(events) == 1
    assert events[0].external_id == str(update_id)


# --------------------------------------------------------------------------
# verify
# --------------------------------------------------------------------------


def test_verify_accepts_the_secret(adapter):
    adapter.verify(request(b"{}"))
    adapter.verify(request(b"{}", headers={"X-Telegram-Bot-Api-Secret-Token": SECRET}))


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"x-telegram-bot-api-secret-token": ""},
        {"x-telegram-bot-api-secret-token": SECRET + "x"},
        {"x-telegram-bot-api-secret-token": SECRET[:-1]},
        {"x-telegram-bot-api-secret-token": SECRET.upper()},
        {"x-telegram-bot-api-secret-token": "sécret ключ 🔑"},
        {"x-telegram-bot-api-secret-token": "\ud800" + SECRET},
        {"x-telegram-bot-api-secret-token": "A" * 10_000},
        {"x-telegram-bot-api-secret-token": SECRET.encode() + b"\xff"},
        {"x-telegram-bot-api-secret-token": None},
        {"x-telegram-bot-api-secret-token": ["list"]},
        {"authorization": SECRET},
    ],
    ids=lambda h: repr(h)[:40],
)
def test_verify_rejects_wrong_missing_and_junk(adapter, headers):
    with pytest.raises(SignatureError):
        adapter.verify(request(b"\xff junk body", headers=headers))


def test_verify_rejects_everything_when_no_secret_is_configured():
    for creds in ({"secret_token": ""}, {"secret_token": None}):
        adapter = TelegramAdapter(account(**creds), HttpClient(BASE))
        for value in ("", "None"):
            with pytest.raises(SignatureError):
                adapter.verify(request(b"{}", headers={"x-telegram-bot-api-secret-token": value}))


# --------------------------------------------------------------------------
# send
# --------------------------------------------------------------------------


def out(text: str = "", *attachments: Attachment, thread="12345678", reply_to=None):
    return OutboundMessage(
        bridge_id="b-1",
        external_thread_id=thread,
        text=text,
        attachments=tuple(attachments),
        reply_to=reply_to,
    )


def test_send_text(adapter, api):
    tg = TelegramApi(api).on("sendMessage")
    result = adapter.send(out("Hello!", thread="-1001308316775", reply_to="42"))
    assert result.external_ids == ("101",) and result.new_thread_id is None
    assert tg.bodies == [
        (
            "sendMessage",
            {
                "chat_id": -1001308316775,
                "text": "Hello!",
                "reply_parameters": {"message_id": 42, "allow_sending_without_reply": True},
            },
        )
    ]


def test_send_splits_at_4096_utf16_units_keeping_emoji_whole(adapter, api):
    tg = TelegramApi(api).on("sendMessage")
    text = "a" * 4095 + "😀" + "b" * 10  # the emoji straddles unit 4096
    result = adapter.send(out(text, reply_to="5"))
    sent = [body["text"] for _, body in tg.bodies]
    assert sent == ["a" * 4095, "😀" + "b" * 10]
    assert result.external_ids == ("101", "102")
    assert "reply_parameters" in tg.bodies[0][1] and "reply_parameters" not in tg.bodies[1][1]


def test_send_exactly_4096_units_is_one_message(adapter, api):
    tg = TelegramApi(api).on("sendMessage")
    adapter.send(out("😀" * 2048))
    assert len(tg.bodies) == 1


def test_split_prefers_paragraphs_then_lines_then_spaces():
    para = "A" * 3000 + "\n\n" + "B" * 3000
    assert split_utf16(para) == ["A" * 3000 + "\n\n", "B" * 3000]
    line = "A" * 3000 + "\n" + "B" * 3000
    assert split_utf16(line) == ["A" * 3000 + "\n", "B" * 3000]
    words = ("word " * 1000).strip()
    parts = split_utf16(words)
    assert all(p.endswith(" ") or p == parts[-1] for p in parts)
    assert "".join(parts) == words


@settings(max_examples=300, deadline=None)
@given(
    text=st.text(alphabet=st.sampled_from(["a", "é", "😀", "𝄞", " ", "\n", "Я"]), max_size=80),
    limit=st.integers(min_value=2, max_value=12),
)
def test_split_properties(text, limit):
    parts = split_utf16(text, limit)
    assert all(0 < utf16_len(p) <= limit for p in parts)
    assert all(p.strip() for p in parts)
    assert "".join(parts).replace(" ", "").replace("\n", "") == text.replace(" ", "").replace(
        "\n", ""
    )
    for p in parts:
        p.encode("utf-16-le")  # no lone surrogate anywhere


def test_send_photo_with_caption_and_document_without(adapter, api):
    tg = TelegramApi(api).on("sendPhoto").on("sendDocument")
    photo = Attachment(kind=MessageKind.PHOTO, url="https://cdn.test/p.jpg")
    doc = Attachment(kind=MessageKind.DOCUMENT, file_ref="BQADAgADpgADy_JxS66XQTBRHFleAg")
    result = adapter.send(out("Here you go", photo, doc))
    assert [(m, {k: v for k, v in b.items() if k != "chat_id"}) for m, b in tg.bodies] == [
        ("sendPhoto", {"photo": "https://cdn.test/p.jpg", "caption": "Here you go"}),
        ("sendDocument", {"document": "BQADAgADpgADy_JxS66XQTBRHFleAg"}),
    ]
    assert len(result.external_ids) == 2


def test_long_text_goes_before_the_attachment_not_in_its_caption(adapter, api):
    tg = TelegramApi(api).on("sendMessage").on("sendDocument")
    text = "x" * 1025
    adapter.send(out(text, Attachment(kind=MessageKind.VOICE, url="https://cdn.test/v.ogg")))
    assert [m for m, _ in tg.bodies] == ["sendMessage", "sendDocument"]
    assert tg.bodies[0][1]["text"] == text and "caption" not in tg.bodies[1][1]


def test_unsendable_messages_are_permanent_and_send_nothing(adapter, api):
    with pytest.raises(PermanentError, match="nothing to send"):
        adapter.send(out("  "))
    with pytest.raises(PermanentError, match="neither file_ref nor url"):
        adapter.send(out("hi", Attachment(kind=MessageKind.PHOTO)))
    assert not api.calls


def test_flood_control_is_retryable_with_retry_after(adapter, api):
    TelegramApi(api).on(
        "sendMessage", tg_error(429, "Too Many Requests: retry after 7", retry_after=7)
    )
    with pytest.raises(RetryableError) as info:
        adapter.send(out("hi"))
    assert info.value.retry_after == 7.0 and info.value.status == 429
    assert not isinstance(info.value, AmbiguousError)  # nothing went out


def test_migrated_chat_is_resent_once_to_the_new_chat(adapter, api):
    error = json.loads((TELEGRAM / "telegrambots_resources/ResponseWithError.json").read_text())
    # the corpus envelope carries migrate_to_chat_id AND retry_after: like
    # python-telegram-bot, the migration wins
    tg = TelegramApi(api).on("sendMessage", (400, error), OK)
    result = adapter.send(out("hi", thread="-552721116"))
    assert [b["chat_id"] for _, b in tg.bodies] == [-552721116, 12345]
    assert result.new_thread_id == "12345" and result.external_ids == ("101",)


def test_migrated_twice_is_permanent(adapter, api):
    moved = tg_error(400, "Bad Request: group chat was upgraded", migrate_to_chat_id=-100123)
    TelegramApi(api).on("sendMessage", moved, moved)
    with pytest.raises(PermanentError, match="migrated twice"):
        adapter.send(out("hi"))


@pytest.mark.parametrize(
    "answer, error, text",
    [
        (tg_error(403, "Forbidden: bot was blocked by the user"), PermanentError, "blocked"),
        (tg_error(403, "Forbidden: bot was kicked from the group chat"), PermanentError, "kicked"),
        (tg_error(400, "Bad Request: chat not found"), PermanentError, "chat not found"),
        (tg_error(401, "Unauthorized"), AuthError, "Unauthorized"),
        (tg_error(404, "Not Found"), AuthError, "Not Found"),
        (tg_error(502, "Bad Gateway"), AmbiguousError, "502"),
        ((500, {}), AmbiguousError, "500"),
    ],
)
def test_send_error_mapping(adapter, api, answer, error, text):
    TelegramApi(api).on("sendMessage", answer)
    with pytest.raises(error, match=text) as info:
        adapter.send(out("hi"))
    if error is PermanentError:
        assert not isinstance(info.value, RetryableError)
        assert info.value.status == answer[0]


def test_429_without_retry_after_reads_the_header(adapter, api):
    api.add(responses.POST, url("sendMessage"), status=429, headers={"Retry-After": "4"}, body="")
    with pytest.raises(RetryableError) as info:
        adapter.send(out("hi"))
    assert info.value.retry_after == 4.0


def test_later_part_failing_is_a_partial_send(adapter, api):
    tg = TelegramApi(api).on(
        "sendMessage", OK, tg_error(403, "Forbidden: bot was blocked by the user")
    )
    with pytest.raises(PartialSendError) as info:
        adapter.send(out("a" * 4096 + "b" * 4096 + "c"))
    exc = info.value
    assert isinstance(exc, AmbiguousError)
    assert exc.sent_ids == ("101",) and exc.status == 403
    assert "part 2/3" in str(exc) and "blocked" in str(exc)
    assert len(tg.bodies) == 2  # the third part was not attempted


def test_flood_control_between_parts_is_partly_sent_and_resumes_after_them(adapter, api):
    """A later part refused by flood control (nothing of it ran): the core
    gets the parts sent and Telegram's wait, and the next attempt sends
    only the rest (the core waits: one retry module, not a loop here)."""
    flood = tg_error(429, "Too Many Requests: retry after 2", retry_after=2)
    tg = TelegramApi(api).on("sendMessage", OK, flood, OK)
    message = out("a" * 4096 + "b" * 4096)
    with pytest.raises(PartlySentError) as info:
        adapter.send(message)
    assert not isinstance(info.value, AmbiguousError)
    assert info.value.sent_ids == ("101",) and info.value.retry_after == 2.0
    result = adapter.send(replace(message, sent_parts=info.value.sent_ids))
    assert result.external_ids == ("101", "102")
    assert [b["text"][0] for _, b in tg.bodies] == ["a", "b", "b"]  # part 1 sent once


def test_flood_wait_before_the_first_part_is_left_to_the_job(adapter, api):
    TelegramApi(api).on("sendMessage", tg_error(429, "Too Many Requests", retry_after=1))
    with pytest.raises(RetryableError) as info:
        adapter.send(out("a" * 5000))
    assert not isinstance(info.value, (PartialSendError, PartlySentError))


def test_later_part_timing_out_is_a_partial_send(adapter, api):
    TelegramApi(api).on("sendMessage", OK)
    api.add(responses.POST, url("sendMessage"), body=requests.ReadTimeout("read timed out"))
    # responses serves registered mocks in order: the callback, then the timeout
    with pytest.raises(PartialSendError) as info:
        adapter.send(out("a" * 4097))
    assert info.value.sent_ids == ("101",)


def test_send_draws_from_the_bot_bucket():
    limiter = RecordingLimiter()
    adapter = TelegramAdapter(account(), HttpClient(BASE, limiter=limiter))
    with responses.RequestsMock() as mock:
        TelegramApi(mock).on("sendMessage", OK, tg_error(429, "Too Many", retry_after=2))
        adapter.send(out("hi"))
        with pytest.raises(RetryableError):
            adapter.send(out("hi"))
    # both sends drew from the bot's bucket; the 429 blocked it for retry_after
    assert limiter.acquired == [
        ("telegram:123456789", Rate(30, 30)),
        ("telegram:123456789", Rate(30, 30)),
    ]
    assert limiter.penalties == [("telegram:123456789", 2.0)]


def test_api_base_is_configurable(api):
    sandbox = "http://127.0.0.1:8000/sandbox/telegram"
    info = ChannelAccountInfo(
        id=1, kind="telegram", key="k", credentials={"bot_token": TOKEN}, api_base=sandbox
    )
    adapter = TelegramAdapter(info)
    api.add(
        responses.POST,
        f"{sandbox}/bot{TOKEN}/sendMessage",
        json={"ok": True, "result": {"message_id": 5}},
    )
    assert adapter.send(out("hi")).external_ids == ("5",)
    assert TelegramAdapter.default_api_base() == "https://api.telegram.org"


# --------------------------------------------------------------------------
# The token never leaks
# --------------------------------------------------------------------------


def _everything_printable(exc: BaseException) -> str:
    seen, texts, todo = set(), [], [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        texts += [str(e), repr(e), "".join(traceback.format_exception(e))]
        todo += [e.__cause__, e.__context__]
    return "\n".join(texts)


@pytest.mark.parametrize(
    "setup",
    [
        lambda api: api.add(responses.POST, url("sendMessage"), body=requests.ConnectionError(
            f"HTTPSConnectionPool: Max retries exceeded with url: /bot{TOKEN}/sendMessage"
        )),
        lambda api: api.add(responses.POST, url("sendMessage"), body=requests.ConnectTimeout(
            f"timeout on /bot{TOKEN}/sendMessage"
        )),
        lambda api: api.add(responses.POST, url("sendMessage"), body=requests.ReadTimeout(
            f"read timeout on /bot{TOKEN}/sendMessage"
        )),
        lambda api: api.add(responses.POST, url("sendMessage"), status=400, json={
            "ok": False, "error_code": 400, "description": f"Bad Request: echo bot{TOKEN}"
        }),
        lambda api: api.add(responses.POST, url("sendMessage"), status=401, json={
            "ok": False, "error_code": 401, "description": "Unauthorized"
        }),
        lambda api: api.add(responses.POST, url("sendMessage"), status=503, body="<html>"),
        lambda api: api.add(responses.POST, url("sendMessage"), status=200, body="not json"),
    ],
    ids=["conn-error", "connect-timeout", "read-timeout", "400-echo", "401", "503", "200-junk"],
)  # fmt: skip
def test_token_never_appears_in_raised_errors(adapter, api, setup):
    setup(api)
    with pytest.raises(BridgeError) as info:
        adapter.send(out("hi"))
    printable = _everything_printable(info.value)
    assert TOKEN not in printable
    assert TOKEN.split(":")[1] not in printable


def test_token_never_appears_in_partial_send_or_repr(adapter, api):
    TelegramApi(api).on("sendMessage", OK)
    api.add(responses.POST, url("sendMessage"), body=requests.ConnectionError(f"/bot{TOKEN}/x"))
    with pytest.raises(PartialSendError) as info:
        adapter.send(out("a" * 5000))
    assert TOKEN not in _everything_printable(info.value)
    assert TOKEN not in repr(adapter) and TOKEN not in repr(adapter.api)
    assert "123456789" in repr(adapter)  # the public bot id is fine


def test_missing_or_malformed_token_is_an_auth_error(api):
    for token in ("", "no-colon", "123:abc/../../evil", "123:abc?x=1"):
        adapter = TelegramAdapter(account(bot_token=token), HttpClient(BASE))
        with pytest.raises(AuthError) as info:
            adapter.send(out("hi"))
        assert token not in str(info.value) or not token
    assert not api.calls


# --------------------------------------------------------------------------
# acknowledge, setup_webhook, answer
# --------------------------------------------------------------------------


def test_acknowledge_answers_the_callback_query(adapter, api):
    tg = TelegramApi(api).on("answerCallbackQuery")
    press = parse_one(adapter, load(CALLBACK))
    adapter.acknowledge(press)
    assert tg.bodies == [("answerCallbackQuery", {"callback_query_id": "4382bfdwdsb323b2d9"})]
    adapter.acknowledge(parse_one(adapter, load(ILLEMIUS + "message.json")))  # not a press: no call
    assert len(tg.bodies) == 1


def test_acknowledge_ignores_a_query_that_is_too_old(adapter, api):
    stale = tg_error(
        400,
        "Bad Request: query is too old and response timeout expired or query ID is invalid",
    )
    TelegramApi(api).on("answerCallbackQuery", stale, tg_error(400, "Bad Request: other"))
    press = parse_one(adapter, load(CALLBACK))
    adapter.acknowledge(press)
    with pytest.raises(PermanentError, match="other"):
        adapter.acknowledge(press)


def test_setup_webhook(adapter, api):
    tg = TelegramApi(api).on("setWebhook", (200, {"ok": True, "result": True}))
    adapter.setup_webhook("https://bridge.test/webhooks/telegram/acct-key")
    assert tg.bodies == [
        (
            "setWebhook",
            {
                "url": "https://bridge.test/webhooks/telegram/acct-key",
                "secret_token": SECRET,
                "allowed_updates": ["message", "edited_message", "callback_query"],
                "max_connections": 40,
            },
        )
    ]


@pytest.mark.parametrize("secret", ["", None, "has space", "x" * 257, "ключ"])
def test_setup_webhook_refuses_a_bad_secret(api, secret):
    adapter = TelegramAdapter(account(secret_token=secret), HttpClient(BASE))
    with pytest.raises(ConfigError, match="secret_token"):
        adapter.setup_webhook("https://bridge.test/hook")
    assert not api.calls


def test_generated_secret_tokens():
    tokens = {TelegramAdapter.generate_secret_token() for _ in range(50)}
    assert len(tokens) == 50
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{43}", t) for t in tokens)  # 256 bits


def test_the_webhook_answer_is_a_plain_2xx(adapter):
    answer = adapter.answer([])
    assert 200 <= answer.status < 300 and "method" not in answer.body


def test_chat_migrated_error_is_permanent_with_the_new_id():
    exc = ChatMigratedError("moved", new_chat_id="-100", status=400)
    assert isinstance(exc, PermanentError) and exc.new_chat_id == "-100"
