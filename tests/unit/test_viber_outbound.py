# ruff: noqa: S105, S106  (test secrets)
"""Viber outbound: ``send_message`` (JSON, ``X-Viber-Auth-Token``, the
sender, ``tracking_data`` = our id, text split at the bot's limit, pictures
and files by URL), the one status mapping, the bot's shared bucket,
``set_webhook`` and connecting a bot.

HTTP is mocked at the one seam with ``responses``: a call no test
registered fails the test. Viber answers errors with HTTP 200 and a
``status`` (built here from the REST docs' status table).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import responses

from bridge.errors import (
    AmbiguousError,
    AuthError,
    ConfigError,
    PartlySentError,
    PermanentError,
    RetryableError,
)
from bridge.http import HttpClient
from bridge.model import Attachment, ChannelAccountInfo, MessageKind, OutboundMessage, Rate
from bridge.schema import load
from channel_adapters.viber import ViberAdapter
from channel_adapters.viber.adapter import EVENT_TYPES
from channel_adapters.viber.outbound import split_text
from channel_adapters.viber.settings import ViberConnect
from tests.support.fakes import RecordingLimiter

BASE = "https://chatapi.viber.com/pa"
SEND = f"{BASE}/send_message"
HOOK = f"{BASE}/set_webhook"
INFO = f"{BASE}/get_account_info"
TOKEN = "44dafb7e0f40021e-61a47a1e6778d187-f2c5a676a07050b3"
BOT = "pa:5704351212117413530"
USER = "01234567890A="
BIG = 4912661846655238145  # the corpus' token, beyond 2^53


def account(**settings: Any) -> ChannelAccountInfo:
    return ChannelAccountInfo(
        id=1,
        kind="viber",
        key="acct-key",
        credentials={"auth_token": TOKEN},
        settings={"sender_name": "Demo Shop", **settings},
        external_id=BOT,
    )


def adapter(limiter: RecordingLimiter | None = None, **settings: Any) -> ViberAdapter:
    return ViberAdapter(account(**settings), HttpClient(BASE, limiter=limiter))


@pytest.fixture
def api() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


def sent(mock: responses.RequestsMock) -> list[dict[str, Any]]:
    bodies = []
    for call in mock.calls:
        if call.request.url == SEND:
            assert call.request.headers["X-Viber-Auth-Token"] == TOKEN
            assert call.request.headers["Content-Type"] == "application/json"
            bodies.append(json.loads(call.request.body))
    return bodies


def reply(text: str = "hello", **extra: Any) -> OutboundMessage:
    return OutboundMessage(bridge_id="7d6c1f3e-msg", external_thread_id=USER, text=text, **extra)


def ok(token: int = BIG) -> dict[str, Any]:
    return {
        "status": 0,
        "status_message": "ok",
        "message_token": token,
        "chat_hostname": "SN-CHAT-01_",
    }


def status(code: int, words: str = "x") -> dict[str, Any]:
    return {"status": code, "status_message": words}


def test_send_is_one_json_send_message_with_the_sender_and_our_id(
    api: responses.RequestsMock,
) -> None:
    api.add(responses.POST, SEND, json=ok())
    result = adapter(sender_avatar="https://example.com/a.png").send(reply("Здравствуйте!"))
    assert result.external_ids == (str(BIG),)  # the exact token, as a string
    assert sent(api) == [
        {
            "receiver": USER,
            "sender": {"name": "Demo Shop", "avatar": "https://example.com/a.png"},
            "tracking_data": "7d6c1f3e-msg",
            "type": "text",
            "text": "Здравствуйте!",
        }
    ]


def test_a_token_beyond_2_53_is_never_rounded(api: responses.RequestsMock) -> None:
    api.add(
        responses.POST,
        SEND,
        body=b'{"status":0,"status_message":"ok","message_token":5100000000000000001}',
        content_type="application/json",
    )
    assert adapter().send(reply()).external_ids == ("5100000000000000001",)
    assert float("5100000000000000001") != 5100000000000000001  # a float would lose it


def test_long_text_is_split_at_the_bots_limit(api: responses.RequestsMock) -> None:
    api.add(responses.POST, SEND, json=ok(1))
    api.add(responses.POST, SEND, json=ok(2))
    api.add(responses.POST, SEND, json=ok(3))
    result = adapter(text_limit=10).send(reply("aaaa bbbb cccc dddd eeee"))
    assert [b["text"] for b in sent(api)] == ["aaaa bbbb", "cccc dddd", "eeee"]
    assert result.external_ids == ("1", "2", "3")
    assert all(b["tracking_data"] == "7d6c1f3e-msg" for b in sent(api))
    assert split_text("x" * 14001) == ["x" * 7000, "x" * 7000, "x"]  # the default 7000


def test_a_picture_carries_a_short_text_and_files_go_by_url(api: responses.RequestsMock) -> None:
    api.add(responses.POST, SEND, json=ok())
    photo = Attachment(
        kind=MessageKind.PHOTO,
        url="https://bridge.example/files/u/t/a.jpg",
        mime_type="image/jpeg",
        file_name="a.jpg",
    )
    adapter().send(reply("Here it is", attachments=(photo,)))
    [picture] = sent(api)
    assert picture["type"] == "picture" and picture["text"] == "Here it is"
    assert picture["media"] == photo.url
    api.calls.reset()
    pdf = Attachment(
        kind=MessageKind.DOCUMENT,
        url="https://bridge.example/files/u/t/inv.pdf",
        mime_type="application/pdf",
        file_name="inv.pdf",
        size=2048,
    )
    video = Attachment(
        kind=MessageKind.VIDEO, url="https://bridge.example/files/u/t/v.mp4", size=10_000
    )
    adapter().send(reply("x" * 121, attachments=(pdf, video)))
    text, file, clip = sent(api)
    assert text["type"] == "text" and len(text["text"]) == 121
    assert file == {**file, "type": "file", "media": pdf.url, "size": 2048, "file_name": "inv.pdf"}
    assert clip == {**clip, "type": "video", "media": video.url, "size": 10_000}


def test_what_cannot_be_sent_is_permanent_without_a_call(api: responses.RequestsMock) -> None:
    with pytest.raises(PermanentError, match="no public link"):
        adapter().send(reply(attachments=(Attachment(kind=MessageKind.DOCUMENT),)))
    with pytest.raises(PermanentError, match="nothing to send"):
        adapter().send(reply("  "))
    assert not api.calls


@pytest.mark.parametrize(
    ("code", "error", "words"),
    [
        (5, PermanentError, "not registered"),
        (6, PermanentError, "not subscribed"),
        (11, PermanentError, "device"),
        (2, AuthError, "auth token was rejected"),
        (7, AuthError, "blocked"),
        (8, AuthError, "not belong to a bot"),
        (9, AuthError, "suspended"),
        (3, PermanentError, "badData"),
        (13, PermanentError, "apiVersionNotSupported"),
    ],
)
def test_statuses_map_onto_the_error_tree_in_one_place(
    api: responses.RequestsMock, code: int, error: type, words: str
) -> None:
    api.add(
        responses.POST,
        SEND,
        json=status(code, {3: "badData", 13: "apiVersionNotSupported"}.get(code, "x")),
    )
    with pytest.raises(error, match=words) as caught:
        adapter().send(reply())
    assert caught.value.vendor_code == str(code)
    assert TOKEN not in str(caught.value)


def test_too_many_requests_is_retryable_and_pauses_the_bucket(
    api: responses.RequestsMock,
) -> None:
    limiter = RecordingLimiter()
    api.add(responses.POST, SEND, json=status(12, "tooManyRequests"))
    with pytest.raises(RetryableError) as caught:
        adapter(limiter).send(reply())
    assert caught.value.retry_after == 1.0 and caught.value.nothing_written
    assert limiter.penalties == [(f"viber:{BOT}", 1.0)]
    assert limiter.acquired == [(f"viber:{BOT}", Rate(capacity=5, per_second=5.0))]


def test_a_refusal_after_a_part_went_out(api: responses.RequestsMock) -> None:
    api.add(responses.POST, SEND, json=ok(1))
    api.add(responses.POST, SEND, json=status(12, "tooManyRequests"))
    with pytest.raises(PartlySentError) as caught:
        adapter(text_limit=5).send(reply("aaaa bbbb"))
    assert caught.value.sent_ids == ("1",)
    api.calls.reset()
    api.replace(responses.POST, SEND, json=ok(2))
    again = adapter(text_limit=5).send(reply("aaaa bbbb", sent_parts=("1",)))
    assert again.external_ids == ("1", "2") and [b["text"] for b in sent(api)] == ["bbbb"]
    api.replace(responses.POST, SEND, body=requests.ConnectionError("reset"))
    with pytest.raises(AmbiguousError):
        adapter().send(reply())


def test_set_webhook_proves_the_token_then_sets_the_url(api: responses.RequestsMock) -> None:
    api.add(responses.POST, INFO, json={**status(0, "ok"), "id": BOT, "name": "Demo Shop"})
    api.add(responses.POST, HOOK, json={**status(0, "ok"), "event_types": list(EVENT_TYPES)})
    adapter().setup_webhook("https://bridge.example/webhooks/viber/k")
    assert [c.request.url for c in api.calls] == [INFO, HOOK]
    body = json.loads(api.calls[1].request.body)
    assert body["url"] == "https://bridge.example/webhooks/viber/k"
    assert set(body["event_types"]) == {
        "delivered",
        "seen",
        "failed",
        "subscribed",
        "unsubscribed",
        "conversation_started",
    }
    api.replace(responses.POST, HOOK, json=status(1, "invalidUrl"))
    with pytest.raises(ConfigError, match="BRIDGE_PUBLIC_URL"):
        adapter().setup_webhook("https://bridge.example/webhooks/viber/k")
    api.replace(responses.POST, INFO, json=status(2, "invalidAuthToken"))
    with pytest.raises(ConfigError, match="refused the token"):
        adapter().setup_webhook("https://bridge.example/webhooks/viber/k")
    api.replace(responses.POST, HOOK, json=status(0, "ok"))
    adapter().remove_webhook()
    assert json.loads(api.calls[-1].request.body) == {"url": ""}


def test_connect_stores_the_token_and_the_sender_without_a_call(
    api: responses.RequestsMock,
) -> None:
    connected = ViberAdapter.connect(
        load(
            ViberConnect, {"auth_token": TOKEN, "sender_name": "Demo Shop", "welcome_text": " Hi! "}
        )
    )
    assert connected.external_id.startswith("bot:") and TOKEN not in connected.external_id
    assert (
        connected.external_id
        == ViberAdapter.connect(
            load(ViberConnect, {"auth_token": TOKEN, "sender_name": "Other"})
        ).external_id
    )
    assert connected.credentials == {"auth_token": TOKEN}
    assert connected.settings == {
        "sender_name": "Demo Shop",
        "sender_avatar": "",
        "welcome_text": "Hi!",
        "text_limit": 7000,
        "per_second": 5.0,
    }
    assert not api.calls


@pytest.mark.parametrize(
    ("values", "words"),
    [
        ({"auth_token": " ", "sender_name": "Shop"}, "auth token"),
        ({"auth_token": "a b", "sender_name": "Shop"}, "app key"),
        ({"auth_token": TOKEN, "sender_name": " "}, "sender-name is required"),
        ({"auth_token": TOKEN, "sender_name": "n" * 29}, "28"),
        ({"auth_token": TOKEN, "sender_name": "Shop", "sender_avatar": "http://x/a.png"}, "https"),
        ({"auth_token": TOKEN, "sender_name": "Shop", "per_second": 0}, "per-second"),
        ({"auth_token": TOKEN, "sender_name": "Shop", "text_limit": 0}, "text-limit"),
    ],
)
def test_connect_refuses_what_cannot_work(values: dict[str, Any], words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        ViberAdapter.connect(load(ViberConnect, values))


def test_the_api_base_is_vibers_and_the_adapter_prints_no_token() -> None:
    assert ViberAdapter.default_api_base() == BASE
    assert TOKEN not in repr(adapter()) and TOKEN not in repr(adapter().api)
