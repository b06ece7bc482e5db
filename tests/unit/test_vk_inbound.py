# ruff: noqa: S105, S106  (test secrets)
"""VK Callback API inbound: verify -> edge -> parse, and the answer.

Inputs are the real Bots Long Poll updates under
``tests/fixtures/corpora/vk`` (copied verbatim, with their entries in
MANIFEST.json): a Long Poll update is a Callback API event without ``v``
and ``secret`` (schema ``callback_base``), so each is posted here as VK's
Callback API would post it: the update with the version its file name
gives (``..._5_110.json``: 5.110; the kotlin-vk-api captures: 5.103;
otherwise the adapter's 5.199) and the community's secret added. Every row
of the table names its source from MANIFEST.json. Bodies built here say so.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.errors import PayloadError, SignatureError, WebhookError
from bridge.model import (
    ChannelAccountInfo,
    IgnoredEvent,
    InboundEvent,
    InboundMessage,
    MessageKind,
    RawDelivery,
    WebhookRequest,
)
from channel_adapters.vk import VkAdapter
from channel_adapters.vk.inbound import parse, split

ROOT = Path(__file__).resolve().parents[2]
CORPORA = ROOT / "tests" / "fixtures" / "corpora"
VK = CORPORA / "vk"
MANIFEST: dict[str, dict[str, Any]] = {
    e["file"]: e for e in json.loads((CORPORA / "MANIFEST.json").read_text())
}

NOW = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)
SECRET = "s3cretKey42"
CONFIRMATION = "1a2b3c4d"
GROUP = 886761559  # the community of the 5.118 captures

# --------------------------------------------------------------------------
# The table: every file that holds Callback / Long Poll events -> the events
# of its updates, in order. "text", "photo"...: a customer message of that
# kind (+ " edit"); "callback": a button press; "system": a consent event;
# "ignored <event_type>". Written by reading the payloads.
# --------------------------------------------------------------------------

LONGPOLL = "vk/bots_longpoll_events"
KOTLIN = "vk/kotlin_vk_api_extracted"

EXPECTED: dict[str, tuple[str, ...]] = {
    f"{LONGPOLL}/group_change_settings_sample_5_110.json": ("ignored group_change_settings",),
    # an admin's edit of the community's own message (out: 1, from_id < 0)
    f"{LONGPOLL}/message_edit_sample_5_110.json": ("ignored message_edit:outgoing",),
    f"{LONGPOLL}/message_event_payload_sample_5_118.json": ("callback",),
    f"{LONGPOLL}/message_new_audio_message_sample_5_110.json": ("voice",),
    f"{LONGPOLL}/message_new_audio_sample_5_110.json": ("audio",),
    # a group chat message with a self-destruct timer (expire_ttl)
    f"{LONGPOLL}/message_new_bomb_sample_5_118.json": ("text",),
    f"{LONGPOLL}/message_new_doc_no_preview_sample_5_118.json": ("document",),
    f"{LONGPOLL}/message_new_doc_photo_sample_5_110.json": ("document",),
    f"{LONGPOLL}/message_new_fwd_attachments_sample_5_118.json": ("document",),
    f"{LONGPOLL}/message_new_fwd_sample_5_110.json": ("text",),
    f"{LONGPOLL}/message_new_geo_sample_5_110.json": ("location",),
    f"{LONGPOLL}/message_new_graffiti_sample_5_110.json": ("photo",),
    f"{LONGPOLL}/message_new_payload_sample_5_118.json": ("text",),
    f"{LONGPOLL}/message_new_photo_sample_5_110.json": ("photo",),
    f"{LONGPOLL}/message_new_reply_attachment_sample_5_118.json": ("text",),
    f"{LONGPOLL}/message_new_reply_sample_5_110.json": ("text",),
    f"{LONGPOLL}/message_new_start_button_sample_5_110.json": ("text",),
    f"{LONGPOLL}/message_new_sticker_sample_5_110.json": ("sticker",),
    f"{LONGPOLL}/message_new_text_sample_5_110.json": ("text",),
    f"{LONGPOLL}/message_new_video_sample_5_110.json": ("video",),
    f"{LONGPOLL}/message_new_wall_reply_sample_5_110.json": ("text",),
    f"{LONGPOLL}/message_new_wall_sample_5_110.json": ("text",),
    f"{LONGPOLL}/message_reply_sample_5_110.json": ("ignored message_reply:outgoing",),
    f"{LONGPOLL}/message_typing_state_sample_5_111.json": ("ignored message_typing_state",),
    f"{LONGPOLL}/updates_message_new__attached_link.json": ("text",),
    f"{LONGPOLL}/updates_message_new__poll.json": ("poll",),
    f"{LONGPOLL}/wall_reply_new_sample_5_110.json": ("ignored wall_reply_new",),
    f"{KOTLIN}/deserialize_message_with_image_attachment.json": ("photo",),
    f"{KOTLIN}/deserialize_message_with_photos_list_attachment.json": ("text",),
    f"{KOTLIN}/deserialize_message_with_voice_attachment.json": ("voice",),
}

#: the corpus files that are not events, and where they are used instead
NOT_EVENTS: dict[str, str] = {
    f"{LONGPOLL}/get_long_poll_server_response_error_sample_5_110.json": "an API error (outbound)",
    f"{LONGPOLL}/get_updates_failed_1_5_110.json": "a Long Poll failure, no updates",
    f"{LONGPOLL}/message_send_responses_sample_5_110.json": "a messages.send answer (outbound)",
    "vk/schema/callback__objects.json": "the schema",
    "vk/schema/errors.json": "the schema",
    "vk/schema/messages__methods.json": "the schema",
    "vk/schema/messages__objects.json": "the schema",
    "vk/schema/messages__responses.json": "the schema",
}


def _source(name: str) -> str:
    entry = MANIFEST[name]
    return f"{entry['repo']}:{entry['path']}"


def _updates(name: str) -> list[dict[str, Any]]:
    return list(json.loads((CORPORA / name).read_text())["updates"])


def _version(name: str) -> str:
    found = re.search(r"_5_(\d+)\.json$", name)
    if found:
        return f"5.{found.group(1)}"
    return "5.103" if name.startswith(KOTLIN) else "5.199"


def as_callback(update: dict[str, Any], version: str = "5.199") -> dict[str, Any]:
    """A Long Poll update as the Callback API posts it."""
    return {**update, "v": version, "secret": SECRET}


def account(group: int | str = GROUP, **settings: Any) -> ChannelAccountInfo:
    return ChannelAccountInfo(
        id=1,
        kind="vk",
        key="acct-key",
        credentials={"access_token": "vk1.a.token", "secret": SECRET},
        settings={"confirmation": CONFIRMATION, **settings},
        external_id=str(group),
    )


def adapter(group: int | str = GROUP, **settings: Any) -> VkAdapter:
    return VkAdapter(account(group, **settings))


def request(body: bytes | dict[str, Any]) -> WebhookRequest:
    raw = body if isinstance(body, bytes) else dumps(body)
    return WebhookRequest(
        method="POST",
        url="https://bridge.example/webhooks/vk/acct-key",
        headers={"content-type": "application/json"},
        body=raw,
        received_at=NOW,
    )


def dumps(obj: Any) -> bytes:
    return json.dumps(obj).encode()  # ASCII escapes: a lone surrogate stays JSON


def deliver(body: dict[str, Any], vk: VkAdapter | None = None) -> tuple[RawDelivery, list[Any]]:
    """As the core does it: verify, edge, journal, then parse in the worker."""
    vk = vk or adapter(body.get("group_id", GROUP))
    req = request(body)
    vk.verify(req)
    (delivery,) = vk.edge(req)
    return delivery, vk.parse(delivery.request(NOW))


def events_of(body: dict[str, Any]) -> list[InboundEvent]:
    return deliver(body)[1]


def one_message(body: dict[str, Any]) -> InboundMessage:
    (event,) = events_of(body)
    assert isinstance(event, InboundMessage), event
    return event


def describe(event: InboundEvent) -> str:
    if isinstance(event, IgnoredEvent):
        return f"ignored {event.event_type}"
    assert isinstance(event, InboundMessage)
    return event.kind.value + (" edit" if event.is_edit else "")


# --------------------------------------------------------------------------
# The corpus
# --------------------------------------------------------------------------


def test_table_covers_every_vk_corpus_file() -> None:
    files = {str(p.relative_to(CORPORA)) for p in VK.rglob("*.json")}
    assert files == set(EXPECTED) | set(NOT_EVENTS)
    assert not set(EXPECTED) & set(NOT_EVENTS)
    assert {f for f in files if f in MANIFEST} == files  # every one has its source
    for name in NOT_EVENTS:
        data = json.loads((CORPORA / name).read_text())
        assert not (isinstance(data, dict) and isinstance(data.get("updates"), list)), name


@pytest.mark.parametrize(
    ("name", "expected"),
    [pytest.param(n, e, id=f"{n.split('/')[-1]} <- {_source(n)}") for n, e in EXPECTED.items()],
)
def test_corpus_event(name: str, expected: tuple[str, ...]) -> None:
    found: list[str] = []
    for update in _updates(name):
        body = as_callback(update, _version(name))
        delivery, events = deliver(body)
        assert delivery.key == update["event_id"]
        assert b"secret" not in delivery.body
        assert [e.external_id for e in events] == [delivery.key]
        found += [describe(e) for e in events]
        assert adapter(body["group_id"]).answer([delivery]).body == "ok"
    assert tuple(found) == expected


def _corpus(name: str, version: str = "5.199") -> dict[str, Any]:
    (update,) = _updates(f"{LONGPOLL}/{name}" if "/" not in name else name)
    return as_callback(update, version)


def test_corpus_messages_read_right() -> None:
    # bivashy/java-vk-bots-long-poll-api message_new_text_sample_5_110.json
    text = one_message(_corpus("message_new_text_sample_5_110.json"))
    assert (text.text, text.external_user_id, text.external_thread_id) == ("test", "111", "222")
    assert text.provider_message_id == "c4392"  # id 0: known by conversation_message_id
    assert text.sequence == 4392
    assert text.sent_at == dt.datetime.fromtimestamp(1593092311, dt.UTC)
    assert text.raw["group_id"] == 333

    # message_new_audio_message_sample_5_110.json: link_mp3, else link_ogg
    voice = one_message(_corpus("message_new_audio_message_sample_5_110.json"))
    (clip,) = voice.attachments
    assert clip.url is not None and clip.url.endswith(".mp3") and clip.mime_type == "audio/mpeg"
    assert clip.duration == 2 and clip.file_ref == "audio_message444_333_aaa"

    doc = one_message(_corpus("message_new_doc_no_preview_sample_5_118.json"))
    (file,) = doc.attachments
    assert (file.file_name, file.size, file.url) == ("canvas.rar", 2325, "https://vk.com/doc1234")
    assert doc.provider_message_id == "578"

    sticker = one_message(_corpus("message_new_sticker_sample_5_110.json"))
    (image,) = sticker.attachments
    assert (image.url, image.width, image.file_ref) == (
        "https://vk.com/sticker/1-9012-512",
        512,
        "sticker9012",
    )

    geo = one_message(_corpus("message_new_geo_sample_5_110.json"))
    assert geo.text == "📍 23.431881, 7.031246"

    video = one_message(_corpus("message_new_video_sample_5_110.json"))
    assert "https://vk.com/video555_444" in video.text
    assert video.attachments[0].duration == 360

    wall = one_message(_corpus("message_new_wall_sample_5_110.json"))
    assert wall.text.startswith("📝 wall post https://vk.com/wall-555_333\nФото")
    assert wall.attachments == ()  # the post's photo is the post's, not the customer's

    link = one_message(_corpus("updates_message_new__attached_link.json"))
    assert link.text.endswith(": https://github.com/bivashy/java-vk-bots-long-poll-api")

    poll = one_message(_corpus("updates_message_new__poll.json"))
    assert poll.text.splitlines() == [
        "📊 What is better?",
        "• Google drive",
        "• One drive",
        "• Drop box",
        "• Other",
    ]
    audio = one_message(_corpus("message_new_audio_sample_5_110.json"))
    assert audio.text == "🎵 Linkin Park — In the End"
    assert audio.attachments[0].url is None  # "url": "" is VK's "none"


def test_vk_gives_no_phone_or_e_mail_to_verify() -> None:
    # bivashy/java-vk-bots-long-poll-api message_new_text_sample_5_110.json
    profile = one_message(_corpus("message_new_text_sample_5_110.json")).profile
    assert (profile.phone, profile.email) == (None, None)
    assert (profile.phone_verified, profile.email_verified) == (False, False)


def test_group_chats_thread_by_peer_and_name_the_sender() -> None:
    # Anton3/kotlin-vk-api GroupLongPollEventSourceTest.kt#L76 (a real chat, peer 2000000279)
    msg = one_message(_corpus(f"{KOTLIN}/deserialize_message_with_image_attachment.json"))
    assert (msg.external_thread_id, msg.external_user_id) == ("2000000279", "555644284")
    assert msg.raw["chat"] is True
    assert msg.provider_message_id == "c241661"
    # message_new__poll.json: the same in another chat
    poll = one_message(_corpus("updates_message_new__poll.json"))
    assert (poll.external_thread_id, poll.external_user_id) == ("2000000008", "918650328")


def test_a_customer_message_in_a_chat_from_another_community_is_ignored() -> None:
    body = _corpus("message_new_bomb_sample_5_118.json")  # derived: a bot wrote in the chat
    body["object"]["message"]["from_id"] = -77
    (event,) = events_of(body)
    assert isinstance(event, IgnoredEvent) and event.event_type == "message_new:from_community"


# --------------------------------------------------------------------------
# verify, the answer, the version
# --------------------------------------------------------------------------


def confirmation(**extra: Any) -> dict[str, Any]:
    return {"type": "confirmation", "group_id": GROUP, **extra}


def test_confirmation_is_answered_with_the_confirmation_string() -> None:
    vk = adapter()
    for body in (
        confirmation(),
        confirmation(secret=SECRET),
        confirmation(event_id="abc", v="5.199"),
    ):
        delivery, events = deliver(body, vk)
        assert delivery.key.startswith("confirmation:")
        answer = vk.answer([delivery])
        assert (answer.body, answer.status) == (CONFIRMATION, 200)
        assert answer.content_type.startswith("text/plain")
        assert [describe(e) for e in events] == ["ignored confirmation"]
    # a redelivered confirmation has the same key (journaled once)
    assert deliver(confirmation(), vk)[0].key == deliver(confirmation(), vk)[0].key


def test_confirmation_checks_the_group_and_a_secret_it_carries() -> None:
    with pytest.raises(SignatureError):
        adapter().verify(request(confirmation(group_id=GROUP + 1)))
    with pytest.raises(SignatureError):
        adapter().verify(request(confirmation(secret="wrong")))


def test_a_confirmation_without_a_stored_string_is_refused() -> None:
    vk = adapter(confirmation="")
    vk.verify(request(confirmation()))
    with pytest.raises(WebhookError) as caught:
        vk.edge(request(confirmation()))
    assert caught.value.status_code == 409 and "--confirmation" in caught.value.message


def test_every_other_event_is_answered_ok() -> None:
    delivery, _ = deliver(_corpus("message_new_text_sample_5_110.json"), adapter(333))
    answer = adapter(333).answer([delivery])
    assert (answer.body, answer.status) == ("ok", 200)
    assert answer.content_type.startswith("text/plain")


@pytest.mark.parametrize(
    "secret",
    [
        pytest.param("wrong", id="wrong"),
        pytest.param(None, id="missing"),
        pytest.param(SECRET + " ", id="trailing-space"),
        pytest.param(SECRET[:-1], id="prefix"),
        pytest.param(7, id="not-a-string"),
        pytest.param(["s3cretKey42"], id="a-list"),
        pytest.param("\ud800", id="lone-surrogate"),
    ],
)
def test_secret_mismatch_is_a_signature_error(secret: Any) -> None:
    body = _corpus("message_new_payload_sample_5_118.json")
    body.pop("secret")
    if secret is not None:
        body["secret"] = secret
    with pytest.raises(SignatureError):
        adapter().verify(request(body))


@pytest.mark.parametrize(
    "group",
    [GROUP + 1, -GROUP, str(GROUP), None, True, float(GROUP), [GROUP]],
    ids=["other", "negative", "a-string", "missing", "bool", "float", "list"],
)
def test_a_group_that_is_not_ours_is_a_signature_error(group: Any) -> None:
    body = _corpus("message_new_payload_sample_5_118.json")
    body["group_id"] = group
    with pytest.raises(SignatureError):
        adapter().verify(request(body))


@pytest.mark.parametrize(
    "body",
    [b"", b"nope", b"[]", b"null", b'"x"', b"\xff\xfe{", b"[" * 100_000, b"{" + b"1" * 5000],
    ids=["empty", "text", "list", "null", "string", "bad-bytes", "deep", "huge"],
)
def test_verify_only_ever_raises_signature_error(body: bytes) -> None:
    with pytest.raises(SignatureError):
        adapter().verify(request(body))


@pytest.mark.parametrize("version", ["5.50", "5.102", "4.999", "abc", "", None, 5])
def test_an_old_or_unreadable_version_is_a_payload_error_naming_the_fix(version: Any) -> None:
    body = _corpus("message_new_text_sample_5_110.json")
    body["v"] = version
    with pytest.raises(PayloadError) as caught:
        deliver(body)
    assert "5.103 or later" in caught.value.message
    assert "Callback API" in caught.value.message
    with pytest.raises(PayloadError):
        parse(dumps(body), NOW)


@pytest.mark.parametrize("version", ["5.103", "5.199", "5.1000", 5.131])
def test_versions_from_5_103_are_taken(version: Any) -> None:
    body = _corpus("message_new_text_sample_5_110.json")
    body["v"] = version
    assert describe(one_message(body)) == "text"


def test_the_shape_before_5_103_is_refused_without_v_too() -> None:
    """Derived from message_new_text_sample_5_110: ``object`` is the message."""
    body = _corpus("message_new_text_sample_5_110.json")
    body["object"] = body["object"]["message"]
    body.pop("v")
    with pytest.raises(PayloadError) as caught:
        deliver(body)
    assert "5.103 or later" in caught.value.message


# --------------------------------------------------------------------------
# What each event becomes
# --------------------------------------------------------------------------


def test_our_own_outgoing_messages_are_never_the_customers() -> None:
    # message_reply_sample_5_110.json: out 1, admin_author_id
    (reply,) = events_of(_corpus("message_reply_sample_5_110.json"))
    assert isinstance(reply, IgnoredEvent) and reply.event_type == "message_reply:outgoing"
    # derived: a message_new with out: 1 (the community's own, e.g. in a chat)
    body = _corpus("message_new_text_sample_5_110.json")
    body["object"]["message"]["out"] = 1
    (new,) = events_of(body)
    assert isinstance(new, IgnoredEvent) and new.event_type == "message_new:outgoing"
    # message_edit_sample_5_110.json: an admin edited the community's message
    (edit,) = events_of(_corpus("message_edit_sample_5_110.json"))
    assert isinstance(edit, IgnoredEvent) and edit.event_type == "message_edit:outgoing"


def test_a_customer_edit_names_the_message_as_the_original_did() -> None:
    """Derived from the corpus: the customer's own messages, edited."""
    for name, ref in (
        ("message_new_text_sample_5_110.json", "c4392"),  # id 0: conversation_message_id
        ("message_new_payload_sample_5_118.json", "844"),  # id
    ):
        original = one_message(_corpus(name))
        edited = dict(_corpus(name)["object"]["message"], text="fixed", update_time=1700000000)
        body = {**_corpus(name), "type": "message_edit", "object": edited, "event_id": "ed1"}
        edit = one_message(body)
        assert edit.is_edit and not original.is_edit
        assert edit.provider_message_id == original.provider_message_id == ref
        assert (edit.text, edit.external_id) == ("fixed", "ed1")
        assert edit.sent_at == dt.datetime.fromtimestamp(1700000000, dt.UTC)


def test_photo_takes_the_largest_size_of_the_ladder() -> None:
    # message_new_photo_sample_5_110.json: m o p q r s x y z -> z (1080x1078)
    (photo,) = one_message(_corpus("message_new_photo_sample_5_110.json")).attachments
    assert (photo.kind, photo.width, photo.height) == (MessageKind.PHOTO, 1080, 1078)
    assert photo.url is not None and photo.url.startswith("https://sun9-13.userapi.com/Bue-eUHzRJ")
    assert photo.file_ref == "photo444_333_abc"
    # kotlin-vk-api image capture: the ladder goes up to w (945x2048), listed mid-way
    name = f"{KOTLIN}/deserialize_message_with_image_attachment.json"
    (big,) = one_message(_corpus(name)).attachments
    assert (big.width, big.height) == (945, 2048)


def test_photo_sizes_without_dimensions_go_by_type_and_bad_urls_are_skipped() -> None:
    body = _corpus("message_new_photo_sample_5_110.json")
    photo = body["object"]["message"]["attachments"][0]["photo"]
    photo["sizes"] = [
        {"type": "x", "url": "https://sun9-1.userapi.com/x.jpg", "width": 0, "height": 0},
        {"type": "w", "url": "javascript:alert(1)", "width": 0, "height": 0},
        {"type": "y", "url": "https://sun9-1.userapi.com/y.jpg"},
        {"type": "s", "url": "https://sun9-1.userapi.com/s.jpg", "width": 0, "height": 0},
    ]
    (chosen,) = one_message(body).attachments
    assert chosen.url == "https://sun9-1.userapi.com/y.jpg" and chosen.width is None
    photo["sizes"] = [{"type": "z", "url": ""}, "junk", None]
    msg = one_message(body)
    assert msg.kind is MessageKind.UNKNOWN and msg.text == "[unsupported attachment: photo]"


def test_forwarded_messages_are_quoted_with_their_files() -> None:
    # message_new_fwd_sample_5_110.json
    fwd = one_message(_corpus("message_new_fwd_sample_5_110.json"))
    assert fwd.text == "↪ forwarded from vk.com/id333:\n> testFwd"
    assert fwd.raw["forwarded"] == 1
    # message_new_fwd_attachments_sample_5_118.json: the file is in the forwarded one
    files = one_message(_corpus("message_new_fwd_attachments_sample_5_118.json"))
    assert files.kind is MessageKind.DOCUMENT
    assert files.text == "↪ forwarded from vk.com/id1234:\n> 📎 my_file.docx"
    assert [a.file_name for a in files.attachments] == ["my_file.docx"]


def test_forwarded_nesting_is_bounded() -> None:
    """Derived: forwarded 50 deep, and 100 side by side."""
    body = _corpus("message_new_fwd_sample_5_110.json")
    node: dict[str, Any] = {"from_id": 1, "text": "deepest"}
    for depth in range(50):
        node = {"from_id": -depth - 1, "text": f"level {depth}", "fwd_messages": [node]}
    wide = [{"from_id": 7, "text": f"side {i}"} for i in range(100)]
    body["object"]["message"]["fwd_messages"] = [node, *wide]
    msg = one_message(body)
    assert "deepest" not in msg.text and "level 49" in msg.text and "level 46" not in msg.text
    assert "side 18" in msg.text and "side 19" not in msg.text  # 20 per level
    assert "vk.com/club50" in msg.text


def test_replies_name_the_message_they_answer() -> None:
    # message_new_reply_sample_5_110.json: reply_message id 555
    reply = one_message(_corpus("message_new_reply_sample_5_110.json"))
    assert reply.reply_to == "555" and reply.raw["reply_text"] == "test"
    # message_new_reply_attachment_sample_5_118.json: reply_message id 607
    assert one_message(_corpus("message_new_reply_attachment_sample_5_118.json")).reply_to == "607"
    # derived: in a group chat the answered message has id 0: its conversation_message_id
    body = _corpus("message_new_reply_sample_5_110.json")
    body["object"]["message"]["reply_message"]["id"] = 0
    assert one_message(body).reply_to == "c4392"


def test_keyboard_payload_is_kept() -> None:
    # message_new_start_button_sample_5_110.json: the Start button
    start = one_message(_corpus("message_new_start_button_sample_5_110.json"))
    assert (start.text, start.raw["payload"], start.raw["command"]) == (
        "Начать",
        '{"command":"start"}',
        "start",
    )
    # message_new_payload_sample_5_118.json: a payload without a command
    payload = one_message(_corpus("message_new_payload_sample_5_118.json"))
    assert json.loads(payload.raw["payload"])["data"] == "clicked"
    assert "command" not in payload.raw
    assert payload.profile.language == "ru"  # client_info.lang_id 0


def test_callback_button_is_a_callback_message_answered_by_its_event_id() -> None:
    # message_event_payload_sample_5_118.json
    press = one_message(_corpus("message_event_payload_sample_5_118.json"))
    assert press.kind is MessageKind.CALLBACK
    assert press.callback_id == "5bba1af2abf1"  # the button's event_id
    assert press.external_id == "e82ea61c19c93ee32c8f4a26886b139009539d02"
    assert (press.external_user_id, press.external_thread_id) == ("918650328", "918650328")
    assert json.loads(press.text)["values"] == [11, 22, 33]
    assert press.reply_to == "c833"
    # derived: in a group chat the thread does not name the user: it rides along
    body = _corpus("message_event_payload_sample_5_118.json")
    body["object"]["peer_id"] = 2000000008
    body["object"]["payload"] = '{"buy":7}'  # the schema's string form
    chat = one_message(body)
    assert chat.callback_id == "5bba1af2abf1:918650328" and chat.text == '{"buy":7}'


@pytest.mark.parametrize(
    ("etype", "text"),
    [
        ("message_allow", "(the client allowed messages from the community)"),
        (
            "message_deny",
            "(the client no longer allows messages from the community: replies will fail)",
        ),
    ],
)
def test_consent_events_are_system_messages_on_the_timeline(etype: str, text: str) -> None:
    """Built from the schema (``callback_message_allow`` / ``_deny``)."""
    obj: dict[str, Any] = {"user_id": 918650328}
    if etype == "message_allow":
        obj["key"] = "subscribe-widget"
    body = as_callback({"type": etype, "object": obj, "group_id": GROUP, "event_id": "c0ffee"})
    msg = one_message(body)
    assert (msg.kind, msg.text) == (MessageKind.SYSTEM, text)
    assert (msg.external_user_id, msg.external_thread_id) == ("918650328", "918650328")
    assert msg.sent_at == NOW
    # the core records it on the conversation (bridge.consent)
    assert msg.consent is (etype == "message_allow")


def test_other_event_types_are_ignored_by_name() -> None:
    for etype in ("group_join", "wall_post_new", "message_read", "a" * 200, "x\ny"):
        body = as_callback({"type": etype, "object": {}, "group_id": GROUP, "event_id": "e1"})
        (event,) = events_of(body)
        assert isinstance(event, IgnoredEvent)
        assert len(event.event_type) <= 64 and event.event_type.isprintable()


# --------------------------------------------------------------------------
# The journal key
# --------------------------------------------------------------------------


def test_event_id_is_the_dedupe_key_and_the_secret_is_not_journaled() -> None:
    body = _corpus("message_new_payload_sample_5_118.json")
    first, _ = deliver(body)
    again, _ = deliver(copy.deepcopy(body))
    assert first.key == again.key == "1a44b4b4ee2612d41e2860bbfda03201081b125d"
    assert SECRET.encode() not in first.body and "secret" not in json.loads(first.body)
    # what the worker reads back is the same event
    (event,) = parse(first.body, NOW)
    assert event.external_id == first.key


@pytest.mark.parametrize(
    "event_id",
    [None, "", 7, "a b", "x" * 129, "../etc", "confirmation:1"],
    ids=["missing", "empty", "int", "space", "long", "path", "colon"],
)
def test_an_event_without_a_usable_event_id_is_a_payload_error(event_id: Any) -> None:
    body = _corpus("message_new_text_sample_5_110.json")
    body["event_id"] = event_id
    with pytest.raises(PayloadError):
        deliver(body)


# --------------------------------------------------------------------------
# Hostile shapes: a PayloadError or events, nothing else
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"{}", id="no-type"),
        pytest.param(dumps({"type": 5, "group_id": GROUP}), id="type-int"),
        pytest.param(
            dumps(as_callback({"type": "message_new", "group_id": 1, "event_id": "e"})),
            id="no-object",
        ),
        pytest.param(
            dumps(as_callback({"type": "message_new", "object": {"message": []}, "event_id": "e"})),
            id="message-list",
        ),
        pytest.param(
            dumps(as_callback({"type": "message_new", "object": {"message": {}}, "event_id": "e"})),
            id="message-no-ids",
        ),
        pytest.param(
            dumps(
                as_callback(
                    {
                        "type": "message_new",
                        "object": {"message": {"peer_id": "1", "from_id": True}},
                        "event_id": "e",
                    }
                )
            ),
            id="ids-wrong-types",
        ),
        pytest.param(
            dumps(
                as_callback({"type": "message_event", "object": {"user_id": 1}, "event_id": "e"})
            ),
            id="event-no-peer",
        ),
        pytest.param(
            dumps(as_callback({"type": "message_deny", "object": [], "event_id": "e"})),
            id="deny-no-user",
        ),
        pytest.param(
            dumps(as_callback({"type": "message_edit", "object": "x", "event_id": "e"})),
            id="edit-no-object",
        ),
    ],
)
def test_bodies_that_are_not_events_are_payload_errors(body: bytes) -> None:
    with pytest.raises(PayloadError):
        parse(body, NOW)


SEED = as_callback(
    {
        "type": "message_new",
        "group_id": GROUP,
        "event_id": "seed",
        "object": {
            "message": {
                "date": 1622383770,
                "from_id": 918650328,
                "id": 0,
                "out": 0,
                "peer_id": 2000000008,
                "text": "hi",
                "conversation_message_id": 820,
                "payload": '{"command":"start"}',
                "geo": {
                    "coordinates": {"latitude": 1.5, "longitude": 2.5},
                    "place": {"title": "t"},
                },
                "action": {"type": "chat_invite_user", "member_id": 1},
                "reply_message": {"id": 5, "conversation_message_id": 4, "text": "q"},
                "fwd_messages": [
                    {
                        "from_id": 1,
                        "text": "f",
                        "attachments": [{"type": "doc", "doc": {"title": "a", "ext": "pdf"}}],
                        "fwd_messages": [{"from_id": -2, "text": "g"}],
                    }
                ],
                "attachments": [
                    {"type": t, t: body}
                    for t, body in (
                        (
                            "photo",
                            {
                                "id": 1,
                                "owner_id": 2,
                                "sizes": [
                                    {"type": "x", "url": "https://a/b", "width": 1, "height": 2}
                                ],
                            },
                        ),
                        (
                            "doc",
                            {
                                "id": 1,
                                "owner_id": 2,
                                "title": "t.pdf",
                                "url": "https://a/d",
                                "size": 3,
                                "type": 3,
                            },
                        ),
                        (
                            "audio_message",
                            {"link_ogg": "https://a/o", "duration": 1, "transcript": "tr"},
                        ),
                        (
                            "sticker",
                            {"sticker_id": 1, "images": [{"url": "https://a/s", "width": 1}]},
                        ),
                        ("graffiti", {"url": "https://a/g", "width": 1, "height": 1}),
                        ("video", {"id": 1, "owner_id": 2, "title": "v", "duration": 3}),
                        ("audio", {"artist": "a", "title": "b", "url": ""}),
                        ("wall", {"id": 1, "owner_id": -2, "text": "w"}),
                        ("wall_reply", {"id": 1, "owner_id": -2, "post_id": 3, "text": "r"}),
                        ("link", {"url": "https://a/l", "title": "l"}),
                        ("poll", {"question": "q", "answers": [{"text": "a"}]}),
                        (
                            "market",
                            {"id": 1, "owner_id": -2, "title": "m", "price": {"text": "1 ₽"}},
                        ),
                        ("gift", {"id": 1}),
                        ("unheard_of", {}),
                    )
                ],
            },
            "client_info": {"lang_id": 3},
        },
    }
)


def _paths(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [path]
    if isinstance(node, dict):
        for key, value in node.items():
            out += _paths(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            out += _paths(value, (*path, index))
    return out


SEED_PATHS = [p for p in _paths(SEED) if p]
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def test_the_seed_reads_whole() -> None:
    msg = one_message(SEED)
    assert msg.kind is MessageKind.PHOTO and msg.reply_to == "5"
    assert msg.profile.language == "en"
    assert [a.kind for a in msg.attachments] == [
        MessageKind.PHOTO,
        MessageKind.ANIMATION,
        MessageKind.VOICE,
        MessageKind.STICKER,
        MessageKind.PHOTO,
        MessageKind.VIDEO,
        MessageKind.AUDIO,
        MessageKind.DOCUMENT,  # the forwarded message's
    ]
    for part in (
        "hi",
        "🗣 tr",
        "📍 t (1.5, 2.5)",
        "(a member was added to the chat)",
        "> f",
        "> 📎 a.pdf",
        "[unsupported attachment: unheard_of]",
        "🛍 m, 1 ₽",
        "🎁 gift",
    ):
        assert part in msg.text, part


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(SEED_PATHS), JSON)
def test_any_value_anywhere_never_raises_anything_but_payload_error(
    path: tuple[Any, ...], value: Any
) -> None:
    """Replace one node of a varied event with any JSON value: verify says
    yes or SignatureError, edge and parse give events or PayloadError."""
    body = copy.deepcopy(SEED)
    node: Any = body
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value
    try:
        raw = json.dumps(body).encode()
    except ValueError:
        return  # not JSON at all (NaN is, by Python's default)
    vk = adapter()
    req = request(raw)
    try:
        vk.verify(req)
    except SignatureError:
        pass
    try:
        (delivery,) = vk.edge(req)
    except PayloadError:
        return
    except WebhookError as exc:  # a confirmation: the string is stored here
        raise AssertionError(exc) from None
    try:
        events = vk.parse(delivery.request(NOW))
    except PayloadError:
        return
    assert [e.external_id for e in events] == [delivery.key]
    for event in events:
        if isinstance(event, InboundMessage):
            assert "\x00" not in event.text
            event.text.encode("utf-8")  # no lone surrogate
    vk.answer([delivery])


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_are_refused_or_read(body: bytes) -> None:
    vk = adapter()
    try:
        vk.verify(request(body))
    except SignatureError:
        pass
    try:
        split(body)
        parse(body, NOW)
    except PayloadError:
        pass
