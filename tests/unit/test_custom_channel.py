"""The custom channel's adapter in isolation: Standard Webhooks signatures
(checked against an HMAC computed here by hand, not through the library the
adapter uses), the payload shape and its 400s, connecting, and how the
callback receiver's answers map onto the error tree (HTTP mocked with
``responses``)."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
from typing import Any

import pytest
import responses

from bridge.errors import (
    AmbiguousError,
    ConfigError,
    PayloadError,
    PermanentError,
    RetryableError,
    SignatureError,
)
from bridge.fetch import FetchRefused
from bridge.model import (
    Attachment,
    ChannelAccountInfo,
    IgnoredEvent,
    InboundMessage,
    MessageKind,
    OutboundMessage,
    WebhookRequest,
)
from bridge.schema import SettingsError, load
from channel_adapters.custom import CustomAdapter, signing

SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()
CALLBACK = "https://hooks.example.com/bridge"


def _now() -> dt.datetime:
    """Read when a request is made: a constant taken at import goes stale in
    a long run (the window is 5 minutes)."""
    return dt.datetime.now(dt.UTC)


def _adapter(**settings: Any) -> CustomAdapter:
    account = ChannelAccountInfo(
        7,
        "custom",
        "key",
        {"signing_secret": SECRET},
        {"callback_url": CALLBACK, "attachment_hosts": ["files.example.com"], **settings},
        external_id="site-form",
    )
    return CustomAdapter(account)


def _by_hand(secret: str, msg_id: str, stamp: int, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    digest = hmac.new(key, f"{msg_id}.{stamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def _request(
    payload: Any,
    *,
    msg_id: str = "msg_1",
    ago: dt.timedelta = dt.timedelta(0),
    secret: str = SECRET,
) -> WebhookRequest:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    stamp = int((_now() - ago).timestamp())
    headers = {
        "webhook-id": msg_id,
        "webhook-timestamp": str(stamp),
        "webhook-signature": _by_hand(secret, msg_id, stamp, body),
        "content-type": "application/json",
    }
    return WebhookRequest("POST", "https://bridge/webhooks/custom/key", headers, body)


MESSAGE = {
    "thread_id": "order-42",
    "message_id": "m-1",
    "text": "Здравствуйте! Where is my order?",
    "sender": {"id": "visitor-17", "name": "Анна", "email": "anna@example.com"},
}


# -- signatures ------------------------------------------------------------------


def test_the_adapter_signs_as_the_standard_says() -> None:
    body = b'{"type":"message.created"}'
    now = _now()
    headers = signing.sign(SECRET, "msg_abc", body, now)
    stamp = int(now.timestamp())
    assert headers == {
        "webhook-id": "msg_abc",
        "webhook-timestamp": str(stamp),
        "webhook-signature": _by_hand(SECRET, "msg_abc", stamp, body),
    }


def test_a_request_signed_by_hand_verifies() -> None:
    _adapter().verify(_request(MESSAGE))


def test_any_one_of_several_signatures_is_enough() -> None:
    """During a key rotation the sender signs with both keys."""
    request = _request(MESSAGE)
    other = "v1," + base64.b64encode(b"x" * 32).decode()
    headers = {
        **request.headers,
        "webhook-signature": f"{other} {request.headers['webhook-signature']}",
    }
    _adapter().verify(WebhookRequest("POST", request.url, headers, request.body))


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"secret": "whsec_" + base64.b64encode(b"z" * 32).decode()}, "No matching signature"),
        ({"ago": dt.timedelta(minutes=6)}, "too old"),
        ({"ago": -dt.timedelta(minutes=6)}, "too new"),
    ],
    ids=["wrong-secret", "stale", "future"],
)
def test_forged_and_replayed_requests_are_refused(change: dict[str, Any], reason: str) -> None:
    with pytest.raises(SignatureError) as refused:
        _adapter().verify(_request(MESSAGE, **change))
    assert reason in str(refused.value)
    assert refused.value.status_code == 403


def test_a_timestamp_inside_the_window_is_accepted() -> None:
    _adapter().verify(_request(MESSAGE, ago=dt.timedelta(minutes=4)))


def test_a_changed_body_breaks_the_signature() -> None:
    request = _request(MESSAGE)
    tampered = request.body.replace(b"order-42", b"order-43")
    with pytest.raises(SignatureError):
        _adapter().verify(WebhookRequest("POST", request.url, request.headers, tampered))


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"webhook-id": "a", "webhook-timestamp": "1"},
        {"webhook-id": "a", "webhook-timestamp": "nan", "webhook-signature": "v1,xx"},
        {"webhook-id": "a", "webhook-timestamp": "1e400", "webhook-signature": "v1,xx"},
        {"webhook-id": "a" * 300, "webhook-timestamp": "1", "webhook-signature": "v1,xx"},
        {"webhook-id": "\ud800", "webhook-timestamp": "1", "webhook-signature": "v1,xx"},
        {"webhook-id": "a", "webhook-timestamp": "1", "webhook-signature": "ключ"},
        {"webhook-id": "a\r\nb", "webhook-timestamp": "1", "webhook-signature": "v1,xx"},
    ],
)
def test_junk_headers_are_signature_errors_only(headers: dict[str, str]) -> None:
    request = WebhookRequest("POST", "https://b/w", headers, b"{}")
    with pytest.raises(SignatureError):
        _adapter().verify(request)


# -- the payload ---------------------------------------------------------------


def test_a_message_becomes_one_inbound_message() -> None:
    request = _request({**MESSAGE, "sent_at": "2026-12-05T13:00:00+03:00", "reply_to": "m-0"})
    (event,) = _adapter().parse(request)
    assert isinstance(event, InboundMessage)
    assert (event.external_id, event.external_thread_id, event.external_user_id) == (
        "order-42:m-1",
        "order-42",
        "visitor-17",
    )
    assert event.text == MESSAGE["text"] and event.kind is MessageKind.TEXT
    assert event.sent_at == dt.datetime(2026, 12, 5, 10, 0, tzinfo=dt.UTC)
    assert event.profile.name() == "Анна" and event.profile.email == "anna@example.com"
    assert event.reply_to == "m-0" and event.provider_message_id == "m-1"


@pytest.mark.parametrize(
    ("said", "verified"),
    [
        ({}, (False, False)),  # unsaid: unproven
        ({"phone_verified": True}, (True, False)),
        ({"email_verified": True, "phone_verified": False}, (False, True)),
        ({"phone_verified": True, "email_verified": True}, (True, True)),
        ({"phone_verified": None}, (False, False)),
    ],
)
def test_the_business_says_which_handles_it_verified(
    said: dict[str, Any], verified: tuple[bool, bool]
) -> None:
    sender = {"id": "v", "phone": "+79991234567", "email": "a@example.com", **said}
    (event,) = _adapter().parse(_request({"sender": sender, "text": "hi"}))
    assert isinstance(event, InboundMessage)
    assert (event.profile.phone_verified, event.profile.email_verified) == verified


def test_a_verified_flag_without_its_handle_verifies_nothing() -> None:
    sender = {"id": "v", "phone_verified": True, "email_verified": True}
    (event,) = _adapter().parse(_request({"sender": sender, "text": "hi"}))
    assert isinstance(event, InboundMessage)
    assert (event.profile.phone_verified, event.profile.email_verified) == (False, False)


def test_without_ids_the_thread_is_the_sender_and_the_key_the_delivery() -> None:
    body = {"sender": {"id": 17}, "text": "hi"}
    (event,) = _adapter().parse(_request(body, msg_id="msg_77"))
    assert isinstance(event, InboundMessage)
    assert (event.external_thread_id, event.external_id) == ("17", "delivery:msg_77")
    assert event.sent_at.utcoffset() is not None


def test_attachments_only() -> None:
    body = {
        "sender": {"id": "v"},
        "attachments": [
            {"url": "https://files.example.com/a.png", "mime_type": "image/png", "size": 10},
            {"url": "https://files.example.com/b.pdf", "file_name": "b.pdf"},
        ],
    }
    (event,) = _adapter().parse(_request(body))
    assert isinstance(event, InboundMessage)
    assert event.kind is MessageKind.PHOTO
    assert [a.kind for a in event.attachments] == [MessageKind.PHOTO, MessageKind.DOCUMENT]


def test_another_type_is_recorded_and_ignored() -> None:
    (event,) = _adapter().parse(_request({"type": "typing", "sender": {"id": "v"}}))
    assert isinstance(event, IgnoredEvent) and event.event_type == "typing"


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"not json", "not JSON"),
        (b"[1]", "JSON object"),
        ({"text": "hi"}, "sender is required"),
        ({"sender": {"id": ""}, "text": "hi"}, "sender.id is required"),
        ({"sender": {"id": {"x": 1}}, "text": "hi"}, "sender.id must be"),
        ({"sender": {"id": "v"}}, "needs a text or attachments"),
        ({"sender": {"id": "v"}, "text": "  "}, "needs a text or attachments"),
        ({"sender": {"id": "v"}, "text": 5}, "text must be a string"),
        ({"sender": {"id": "v"}, "text": "x" * 70_000}, "longer than"),
        ({"sender": {"id": "v"}, "text": "hi", "sent_at": "yesterday"}, "ISO 8601"),
        ({"sender": {"id": "v"}, "text": "hi", "sent_at": "2026-12-05T10:00:00"}, "offset"),
        ({"sender": {"id": "v"}, "text": "hi", "thread_id": "t" * 300}, "thread_id must be"),
        ({"sender": {"id": "v", "email": 5}, "text": "hi"}, "sender.email"),
        ({"sender": {"id": "v", "utm": {"a": 1}}, "text": "hi"}, "sender.utm"),
        (
            {"sender": {"id": "v", "phone": "+7", "phone_verified": "yes"}, "text": "hi"},
            "sender.phone_verified must be true or false",
        ),
        ({"sender": {"id": "v", "email_verified": 1}, "text": "hi"}, "sender.email_verified"),
        ({"sender": {"id": "v"}, "attachments": [{"url": "ftp://x"}]}, "attachments[0].url"),
        ({"sender": {"id": "v"}, "attachments": "x"}, "attachments must be a list"),
        ({"sender": {"id": "v"}, "text": "hi", "type": 3}, "type must be"),
    ],
)
def test_a_bad_body_is_a_400_that_names_the_field(body: Any, says: str) -> None:
    with pytest.raises(PayloadError) as bad:
        _adapter().parse(_request(body))
    assert says in str(bad.value)
    assert bad.value.status_code == 400


def test_an_oversized_body_is_refused() -> None:
    adapter = _adapter()
    with pytest.raises(PayloadError):
        adapter.parse(_request(b" " * (adapter.max_body + 1)))


# -- connecting -------------------------------------------------------------------


def _connect(**values: Any) -> Any:
    base = {"system": "site-form", "callback_url": CALLBACK, "signing_secret": SECRET}
    return CustomAdapter.connect(load(CustomAdapter.Connect, {**base, **values}, strict=True))


def test_connect_keeps_the_secret_encrypted_and_the_url_as_a_setting() -> None:
    connected = _connect(attachment_hosts="files.example.com, cdn.example.com")
    assert connected.external_id == "site-form"
    assert dict(connected.credentials) == {"signing_secret": SECRET}
    assert dict(connected.settings) == {
        "callback_url": CALLBACK,
        "attachment_hosts": ["files.example.com", "cdn.example.com"],
    }
    assert _connect().settings["attachment_hosts"] == ["hooks.example.com"]


@pytest.mark.parametrize(
    ("values", "says"),
    [
        ({"system": "two words"}, "--system"),
        ({"callback_url": "hooks.example.com"}, "absolute https"),
        ({"callback_url": "http://hooks.example.com/x"}, "plain http"),
        ({"callback_url": "https://u:p@hooks.example.com/x"}, "user or password"),
        ({"signing_secret": "hunter2"}, "starts with whsec_"),
        ({"signing_secret": "whsec_***"}, "must be base64"),
        ({"signing_secret": "whsec_" + base64.b64encode(b"short").decode()}, "24-64"),
    ],
)
def test_connect_refuses_with_the_fix(values: dict[str, Any], says: str) -> None:
    with pytest.raises(ConfigError) as refused:
        _connect(**values)
    assert says in str(refused.value)
    assert SECRET not in str(refused.value)


def test_plain_http_only_when_allowed_or_on_this_machine() -> None:
    assert _connect(callback_url="http://10.0.0.5/cb", allow_http="yes").settings["callback_url"]
    assert _connect(callback_url="http://127.0.0.1:9000/cb").settings["callback_url"]


def test_an_unknown_connect_option_is_named() -> None:
    with pytest.raises(SettingsError, match="callback"):
        load(CustomAdapter.Connect, {"system": "x", "callbak_url": "y"}, strict=True)


# -- sending replies to the callback ----------------------------------------------

REPLY = OutboundMessage(
    bridge_id="3f2c-uuid", external_thread_id="order-42", text="Ваш заказ в пути", reply_to="m-1"
)


@responses.activate
def test_a_reply_is_posted_signed_with_its_own_id_as_webhook_id() -> None:
    responses.post(CALLBACK, json={"ok": True, "id": "their-9"})
    result = _adapter().send(REPLY)
    assert result.external_ids == ("their-9",)
    call = responses.calls[0].request
    body = call.body if isinstance(call.body, bytes) else str(call.body).encode()
    event = json.loads(body)
    assert event["type"] == "message.created"
    assert event["data"] == {
        "id": "3f2c-uuid",
        "thread_id": "order-42",
        "text": "Ваш заказ в пути",
        "attachments": [],
        "reply_to": "m-1",
    }
    assert call.headers["webhook-id"] == "3f2c-uuid"
    stamp = int(call.headers["webhook-timestamp"])
    assert call.headers["webhook-signature"] == _by_hand(SECRET, "3f2c-uuid", stamp, body)


@responses.activate
def test_the_same_reply_sent_again_carries_the_same_webhook_id() -> None:
    responses.post(CALLBACK, body="")
    adapter = _adapter()
    assert adapter.send(REPLY).external_ids == ("3f2c-uuid",)
    adapter.send(REPLY)
    assert {c.request.headers["webhook-id"] for c in responses.calls} == {"3f2c-uuid"}


@responses.activate
def test_attachments_go_as_links() -> None:
    responses.post(CALLBACK, json={})
    picture = Attachment(MessageKind.PHOTO, url="https://cdn/x.png", file_name="x.png")
    _adapter().send(OutboundMessage("id-2", "t", attachments=(picture,)))
    sent = json.loads(responses.calls[0].request.body)
    assert sent["data"]["attachments"] == [
        {"kind": "photo", "url": "https://cdn/x.png", "file_name": "x.png"}
    ]


@pytest.mark.parametrize(
    ("status", "headers", "error", "says"),
    [
        (503, {}, AmbiguousError, "HTTP 503"),
        (500, {"Retry-After": "7"}, AmbiguousError, "HTTP 500"),
        (429, {"Retry-After": "3"}, RetryableError, "HTTP 429"),
        (408, {}, RetryableError, "HTTP 408"),
        (401, {}, PermanentError, "same secret"),
        (403, {}, PermanentError, "same secret"),
        (302, {"Location": "https://elsewhere"}, PermanentError, "redirects"),
        (400, {}, PermanentError, "HTTP 400"),
        (410, {}, PermanentError, "HTTP 410"),
    ],
)
@responses.activate
def test_the_receivers_answer_maps_onto_the_error_tree(
    status: int, headers: dict[str, str], error: type[Exception], says: str
) -> None:
    responses.post(CALLBACK, status=status, headers=headers, json={"error": "x"})
    with pytest.raises(error) as raised:
        _adapter().send(REPLY)
    assert type(raised.value) is error
    assert says in str(raised.value)
    if "Retry-After" in headers and isinstance(raised.value, RetryableError):
        assert raised.value.retry_after == float(headers["Retry-After"])


@responses.activate
def test_connecting_posts_endpoint_connected_and_fails_with_the_receivers_answer() -> None:
    responses.post(CALLBACK, json={"ok": True})
    _adapter().setup_webhook("https://bridge.example.com/webhooks/custom/abc")
    event = json.loads(responses.calls[0].request.body)
    assert event["type"] == "endpoint.connected"
    assert event["data"] == {
        "inbound_url": "https://bridge.example.com/webhooks/custom/abc",
        "system": "site-form",
    }
    responses.replace(responses.POST, CALLBACK, status=401, json={"error": "bad signature"})
    with pytest.raises(ConfigError, match="did not accept a signed endpoint.connected"):
        _adapter().setup_webhook("https://bridge.example.com/webhooks/custom/abc")


def test_attachments_download_only_from_the_allowed_hosts() -> None:
    """SSRF: a host the admin did not allow, or an allowed name for a private
    address, is refused before any connection."""
    with pytest.raises(FetchRefused, match="host is not one of"):
        _adapter().download(Attachment(MessageKind.PHOTO, url="https://169.254.169.254/latest"))
    inside = _adapter(attachment_hosts=["10.0.0.5"])
    with pytest.raises(FetchRefused):
        inside.download(Attachment(MessageKind.PHOTO, url="https://10.0.0.5/a.png"))
