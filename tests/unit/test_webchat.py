# ruff: noqa: S105, S106  (test secrets)
"""The web chat adapter alone: visitor tokens and upload references (signed
with the account's secret; forged, other accounts', other visitors',
expired and tampered ones refused), ``verify`` (token, visitor, origin;
nothing but ``SignatureError`` whatever the input), the edge's journal keys,
``parse`` of full message bodies (profile, first/last-touch UTM, page,
consent, files) and of read receipts, the field checks the widget API
answers with, connecting, and the type sniffing of uploads."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from typing import Any

import itsdangerous.timed
import pytest

from bridge.errors import ConfigError, PayloadError, SignatureError
from bridge.model import (
    ChannelAccountInfo,
    IgnoredEvent,
    InboundMessage,
    MessageKind,
    OutboundMessage,
    OutboundStatus,
    WebhookRequest,
)
from bridge.schema import load
from channel_adapters.webchat import WebChatAdapter, tokens
from channel_adapters.webchat.api import DOCX, XLSX, sniff
from channel_adapters.webchat.inbound import check_message
from channel_adapters.webchat.settings import WebChatConnect

SECRET = "a-test-secret-of-the-widget-0123456789abcdef"
OTHER_SECRET = "another-widgets-secret-0123456789abcdef"
ORIGIN = "https://shop.example"
VISITOR = "visitor-aaaaaaaaaaaaaaaa"
RECEIVED = dt.datetime(2026, 12, 5, 10, 0, tzinfo=dt.UTC)


def _adapter(account_id: int = 7, secret: str = SECRET, **settings: Any) -> WebChatAdapter:
    account = ChannelAccountInfo(
        account_id,
        "webchat",
        "widget-key",
        {"token_secret": secret},
        {"origins": [ORIGIN, "http://localhost:8000"], **settings},
        external_id="shop.example",
    )
    return WebChatAdapter(account)


def _upload(adapter: WebChatAdapter, visitor: str = VISITOR, **kw: Any) -> str:
    ref = tokens.FileRef(
        kw.get("uid", "0b7a3c9e-1111-4222-8333-444455556666"),
        kw.get("name", "photo.png"),
        kw.get("mime", "image/png"),
        kw.get("size", 2048),
    )
    return adapter.file_ref(visitor, ref)


def _message(adapter: WebChatAdapter, visitor: str = VISITOR, **extra: Any) -> dict[str, Any]:
    return {
        "type": "message",
        "visitor": visitor,
        "id": "c-0001-abcdef",
        "text": "Здравствуйте! Is the blue one in stock?",
        "files": [_upload(adapter, visitor)],
        "profile": {"name": "Анна Петрова", "phone": "+7 912 345-67-89", "email": "a@shop.test"},
        "consent": {
            "given": True,
            "version": "2026-01",
            "at": "2026-12-05T13:00:00+03:00",
            "page": "https://shop.example/cart",
        },
        "context": {
            "page_url": "https://shop.example/product/7?utm_source=yandex",
            "page_title": "Blue kettle — Shop",
            "referrer": "https://ya.ru/",
            "language": "ru-RU",
            "timezone": "Europe/Moscow",
            "utm_first": {"utm_source": "google", "utm_campaign": "spring", "gclid": "g-1"},
            "utm_last": {"utm_source": "yandex", "utm_medium": "cpc", "yclid": "y-2"},
        },
        "received_at": RECEIVED.isoformat(),
        **extra,
    }


def _request(
    adapter: WebChatAdapter,
    body: Any,
    *,
    token: str | None = None,
    visitor: str = VISITOR,
    origin: str | None = ORIGIN,
) -> WebhookRequest:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {
        "authorization": f"Bearer {token or adapter.visitor_token(visitor)}",
        "content-type": "application/json",
    }
    if origin is not None:
        headers["origin"] = origin
    return WebhookRequest(
        "POST", "http://bridge.test/widget/widget-key/messages", headers, raw, received_at=RECEIVED
    )


# -- tokens ----------------------------------------------------------------------------


def test_a_visitor_token_names_its_visitor_for_its_account_only() -> None:
    token = tokens.visitor_token(SECRET, 7, VISITOR)
    assert "visitor" not in token and tokens.read_visitor_token(SECRET, 7, token) == VISITOR
    with pytest.raises(tokens.BadToken, match="another widget"):
        tokens.read_visitor_token(SECRET, 8, token)  # same secret, another account
    with pytest.raises(tokens.BadToken, match="no valid visitor token"):
        tokens.read_visitor_token(OTHER_SECRET, 7, token)  # forged: another key
    head, _, tail = token.rpartition(".")
    tampered = f"{head}.{'A' if tail[0] != 'A' else 'B'}{tail[1:]}"
    with pytest.raises(tokens.BadToken):
        tokens.read_visitor_token(SECRET, 7, tampered)
    for junk in ("", "x" * 5000, "ключ", "a.b.c", None, 42):
        with pytest.raises(tokens.BadToken):
            tokens.read_visitor_token(SECRET, 7, junk)  # type: ignore[arg-type]


def test_a_token_older_than_400_days_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    now = itsdangerous.timed.time.time()
    monkeypatch.setattr(itsdangerous.timed.time, "time", lambda: now - 401 * 24 * 3600)
    old = tokens.visitor_token(SECRET, 7, VISITOR)
    monkeypatch.setattr(itsdangerous.timed.time, "time", lambda: now - 399 * 24 * 3600)
    recent = tokens.visitor_token(SECRET, 7, VISITOR)
    monkeypatch.setattr(itsdangerous.timed.time, "time", lambda: now)
    assert tokens.read_visitor_token(SECRET, 7, recent) == VISITOR
    with pytest.raises(tokens.BadToken, match="expired"):
        tokens.read_visitor_token(SECRET, 7, old)


def test_an_empty_secret_signs_and_accepts_nothing() -> None:
    with pytest.raises(tokens.BadToken, match="no signing secret"):
        tokens.visitor_token("", 7, VISITOR)
    token = tokens.visitor_token(SECRET, 7, VISITOR)
    with pytest.raises(tokens.BadToken):
        tokens.read_visitor_token("", 7, token)


def test_a_file_ref_is_this_visitors_upload_to_this_widget() -> None:
    ref = tokens.FileRef("uid-1", "a.pdf", "application/pdf", 10)
    signed = tokens.sign_file_ref(SECRET, 7, VISITOR, ref)
    assert tokens.read_file_ref(SECRET, 7, VISITOR, signed) == ref
    assert ref.file_ref == "file:uid-1"
    with pytest.raises(tokens.BadToken, match="another visitor"):
        tokens.read_file_ref(SECRET, 7, "someone-else-bbbbbbbb", signed)
    with pytest.raises(tokens.BadToken, match="another visitor"):
        tokens.read_file_ref(SECRET, 8, VISITOR, signed)
    with pytest.raises(tokens.BadToken):
        tokens.read_file_ref(OTHER_SECRET, 7, VISITOR, signed)
    # a visitor token is no file ref (salts differ), and the other way round
    with pytest.raises(tokens.BadToken):
        tokens.read_file_ref(SECRET, 7, VISITOR, tokens.visitor_token(SECRET, 7, VISITOR))
    with pytest.raises(tokens.BadToken):
        tokens.read_visitor_token(SECRET, 7, signed)


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc.def", "abc.def"),
        ("bearer   abc ", "abc"),
        ("Basic abc", None),
        ("Bearer", None),
        ("", None),
        (None, None),
    ],
)
def test_the_bearer_header(header: str | None, token: str | None) -> None:
    assert tokens.bearer(header) == token


# -- verify ----------------------------------------------------------------------------


def test_a_visitors_own_request_from_the_widgets_site_verifies() -> None:
    adapter = _adapter()
    adapter.verify(_request(adapter, _message(adapter)))
    adapter.verify(_request(adapter, _message(adapter), origin="http://localhost:8000"))


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"token": tokens.visitor_token(OTHER_SECRET, 7, VISITOR)}, "no valid visitor token"),
        ({"token": tokens.visitor_token(SECRET, 8, VISITOR)}, "another widget"),
        ({"token": "not-a-token"}, "no valid visitor token"),
        ({"visitor": "another-visitor-cccccccc"}, "another visitor's"),
        ({"origin": "https://evil.example"}, "origin"),
        ({"origin": "https://shop.example.evil.example"}, "origin"),
        ({"origin": "null"}, "origin"),
        ({"origin": None}, "origin"),
    ],
    ids=[
        "forged",
        "other-account",
        "junk-token",
        "visitor-mismatch",
        "other-origin",
        "lookalike-origin",
        "null-origin",
        "no-origin",
    ],
)
def test_verify_refuses(change: dict[str, Any], says: str) -> None:
    adapter = _adapter()
    # the body always names VISITOR: a token of another visitor is a mismatch
    request = _request(adapter, _message(adapter), **change)
    with pytest.raises(SignatureError, match=says) as refused:
        adapter.verify(request)
    assert (refused.value.code, refused.value.status_code) == ("forbidden", 403)


def test_a_body_naming_no_visitor_passes_verify_for_the_edge_to_refuse() -> None:
    """A proven body that is not a message (junk, no visitor) is a 400 at
    the edge, not a 403: the token was right."""
    adapter = _adapter()
    for body in (b"not json", b"{}", b'{"visitor": 5}'):
        request = _request(adapter, body)
        adapter.verify(request)
        with pytest.raises(PayloadError):
            adapter.edge(request)


def test_verify_refuses_a_request_without_a_token() -> None:
    adapter = _adapter()
    request = _request(adapter, _message(adapter))
    headers = {k: v for k, v in request.headers.items() if k != "authorization"}
    with pytest.raises(SignatureError, match="Bearer"):
        adapter.verify(dataclasses.replace(request, headers=headers))


@pytest.mark.parametrize(
    "body", [b"", b"not json", b"[]", b"null", b"{}", b'{"visitor": 1}', b"\xff\xfe", b"[" * 5000]
)
def test_verify_raises_only_signature_errors_on_junk(body: bytes) -> None:
    adapter = _adapter()
    adapter.verify(_request(adapter, body))  # the token and origin are right
    with pytest.raises(SignatureError):
        adapter.verify(_request(adapter, body, token="junk"))
    for value in ("", "x" * 10_000, "\ud800", "\x00\r\n", b"\xff", None):
        junk = {"authorization": value, "origin": value}
        with pytest.raises(SignatureError):
            adapter.verify(dataclasses.replace(_request(adapter, body), headers=junk))  # type: ignore[arg-type]


# -- the edge ----------------------------------------------------------------------------


def test_the_edge_keys_a_message_by_visitor_and_client_id_and_keeps_no_token() -> None:
    adapter = _adapter()
    request = _request(adapter, _message(adapter))
    (delivery,) = adapter.edge(request)
    assert delivery.key == f"{VISITOR}:c-0001-abcdef"
    assert delivery.body == request.body and dict(delivery.headers) == {}


def test_the_edge_keys_a_read_receipt_by_its_seq() -> None:
    adapter = _adapter()
    body = {"type": "read", "visitor": VISITOR, "read_up_to": 12, "read": ["u-1", "u-2"]}
    (delivery,) = adapter.edge(_request(adapter, body))
    assert delivery.key == f"{VISITOR}:read:12"


@pytest.mark.parametrize(
    ("patch", "code"),
    [
        ({"type": "typing"}, "invalid_type"),
        ({"id": "short"}, "invalid_id"),
        ({"id": "has spaces in it"}, "invalid_id"),
        ({"text": "x" * 4001, "files": []}, "text_too_long"),
        ({"text": " ", "files": []}, "empty_message"),
        ({"files": ["r"] * 6}, "invalid_files"),
        ({"visitor": "bad visitor!"}, "invalid_visitor"),
    ],
)
def test_the_edge_refuses_what_the_api_would(patch: dict[str, Any], code: str) -> None:
    adapter = _adapter()
    with pytest.raises(PayloadError) as refused:
        adapter.edge(_request(adapter, {**_message(adapter), **patch}))
    assert refused.value.code == code and refused.value.status_code == 400


def test_the_edge_refuses_another_visitors_upload_and_an_old_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    adapter = _adapter()
    theirs = _upload(adapter, "someone-else-dddddddd")
    with pytest.raises(PayloadError, match="another visitor") as refused:
        adapter.edge(_request(adapter, _message(adapter, files=[theirs])))
    assert refused.value.code == "invalid_file"
    # another widget's upload, even with the same uid
    foreign = _upload(_adapter(account_id=9, secret=OTHER_SECRET))
    with pytest.raises(PayloadError):
        adapter.edge(_request(adapter, _message(adapter, files=[foreign])))
    # an upload of two days ago: refused at the edge, still parsed later
    now = itsdangerous.timed.time.time()
    monkeypatch.setattr(itsdangerous.timed.time, "time", lambda: now - 2 * 24 * 3600)
    old = _upload(adapter)
    monkeypatch.setattr(itsdangerous.timed.time, "time", lambda: now)
    request = _request(adapter, _message(adapter, files=[old]))
    with pytest.raises(PayloadError, match="expired"):
        adapter.edge(request)
    (message,) = adapter.parse(request)
    assert isinstance(message, InboundMessage) and len(message.attachments) == 1


# -- parse -------------------------------------------------------------------------------


def test_a_full_message_becomes_one_inbound_message() -> None:
    adapter = _adapter()
    request = _request(adapter, _message(adapter))
    (event,) = adapter.parse(request)
    assert isinstance(event, InboundMessage)
    assert event.channel_kind == "webchat" and event.kind is MessageKind.TEXT
    assert (event.external_id, event.external_thread_id, event.external_user_id) == (
        f"{VISITOR}:c-0001-abcdef",
        VISITOR,
        VISITOR,
    )
    assert event.provider_message_id == "c-0001-abcdef"
    assert event.text == "Здравствуйте! Is the blue one in stock?"
    assert event.sent_at == RECEIVED
    profile = event.profile
    assert (profile.name(), profile.phone, profile.email) == (
        "Анна Петрова",
        "+7 912 345-67-89",
        "a@shop.test",
    )
    assert (profile.language, profile.timezone, profile.referrer) == (
        "ru-RU",
        "Europe/Moscow",
        "https://ya.ru/",
    )
    assert profile.page_url == "https://shop.example/product/7?utm_source=yandex"
    assert profile.page_title == "Blue kettle — Shop"
    # the last touch under the plain keys, the first as first_<key>
    assert dict(profile.utm) == {
        "utm_source": "yandex",
        "utm_medium": "cpc",
        "yclid": "y-2",
        "first_utm_source": "google",
        "first_utm_campaign": "spring",
        "first_gclid": "g-1",
    }
    assert event.consent is True
    assert dict(profile.consent) == {
        "version": "2026-01",
        "at": "2026-12-05T10:00:00Z",
        "page": "https://shop.example/cart",
    }
    (attachment,) = event.attachments
    assert (attachment.kind, attachment.file_ref, attachment.file_name) == (
        MessageKind.PHOTO,
        "file:0b7a3c9e-1111-4222-8333-444455556666",
        "photo.png",
    )
    assert (attachment.mime_type, attachment.size, attachment.url) == ("image/png", 2048, None)
    assert event.raw["visitor"] == VISITOR
    # the journal round trip (no headers kept) parses the same
    (delivery,) = adapter.edge(request)
    assert adapter.parse(delivery.request(RECEIVED)) == [event]


def test_a_phone_or_e_mail_typed_in_the_form_is_never_verified() -> None:
    adapter = _adapter()  # our own widget contract: nothing proves a typed handle
    (event,) = adapter.parse(_request(adapter, _message(adapter)))
    assert isinstance(event, InboundMessage)
    profile = event.profile
    assert (profile.phone, profile.email) == ("+7 912 345-67-89", "a@shop.test")
    assert (profile.phone_verified, profile.email_verified) == (False, False)


def test_the_body_the_api_composes_parses_to_what_the_widget_sent() -> None:
    """The API journals ``CheckedMessage.body``: parsing it again keeps
    every field (consent with no details is consent all the same)."""
    adapter = _adapter()
    sent = {k: v for k, v in _message(adapter).items() if k not in ("type", "visitor")}
    for consent in (sent["consent"], {"given": True}):
        checked = check_message({**sent, "consent": consent})
        body = checked.body(VISITOR, RECEIVED)
        assert check_message(body) == checked
        (event,) = adapter.parse(_request(adapter, body))
        assert isinstance(event, InboundMessage) and event.consent is True
        assert event.profile.email == "a@shop.test" and event.attachments


def test_a_message_without_consent_profile_or_context() -> None:
    adapter = _adapter()
    body = {"type": "message", "visitor": VISITOR, "id": "c-0002-abcdef", "text": "hi"}
    (event,) = adapter.parse(_request(adapter, body))
    assert isinstance(event, InboundMessage)
    assert event.consent is None and dict(event.profile.consent) == {}
    assert event.profile.name() is None and dict(event.profile.utm) == {}
    # consent {"given": false} is no consent either
    (event,) = adapter.parse(_request(adapter, {**body, "consent": {"given": False}}))
    assert isinstance(event, InboundMessage) and event.consent is None


def test_files_only_take_the_first_files_kind() -> None:
    adapter = _adapter()
    pdf = _upload(adapter, name="invoice.pdf", mime="application/pdf", uid="u-pdf")
    body = _message(adapter, text="", files=[pdf, _upload(adapter)])
    (event,) = adapter.parse(_request(adapter, body))
    assert isinstance(event, InboundMessage) and event.kind is MessageKind.DOCUMENT
    assert [a.kind for a in event.attachments] == [MessageKind.DOCUMENT, MessageKind.PHOTO]


def test_a_read_receipt_is_a_read_status_per_reply() -> None:
    adapter = _adapter()
    body = {"type": "read", "visitor": VISITOR, "read_up_to": 12, "read": ["u-1", "u-2"]}
    events = adapter.parse(_request(adapter, body))
    assert events == [
        OutboundStatus("webchat", "read:u-1", "u-1", "read", channel_message_id="u-1"),
        OutboundStatus("webchat", "read:u-2", "u-2", "read", channel_message_id="u-2"),
    ]
    (nothing,) = adapter.parse(_request(adapter, {**body, "read": []}))
    assert isinstance(nothing, IgnoredEvent) and nothing.external_id == f"{VISITOR}:read:12"
    assert WebChatAdapter.delivery_statuses["read"] == "read"


@pytest.mark.parametrize(
    "body", [b"", b"not json", b"[]", b"null", b"{}", b'{"type": "message"}', b"[" * 50_000]
)
def test_parse_of_junk_is_a_payload_error(body: bytes) -> None:
    adapter = _adapter()
    with pytest.raises(PayloadError):
        adapter.parse(_request(adapter, body))


def test_parse_of_an_oversized_body_is_a_payload_error() -> None:
    adapter = _adapter()
    with pytest.raises(PayloadError, match="larger than"):
        adapter.parse(_request(adapter, b" " * (adapter.max_body + 1)))


# -- the field checks the API answers with --------------------------------------------


@pytest.mark.parametrize(
    ("patch", "code", "says"),
    [
        ({"profile": {"name": 5}}, "invalid_profile", "profile.name must be a string"),
        ({"profile": "Anna"}, "invalid_profile", "profile must be an object"),
        ({"consent": {"given": "yes"}}, "invalid_consent", "consent.given"),
        ({"consent": {"given": True, "at": "2026-12-05 10:00"}}, "invalid_consent", "offset"),
        ({"consent": {"given": True, "at": "yesterday"}}, "invalid_consent", "ISO 8601"),
        ({"context": {"utm_first": {"utm_source": "x" * 201}}}, "invalid_context", "200"),
        ({"context": {"page_title": ["a"]}}, "invalid_context", "page_title must be a string"),
        ({"text": "\ud800"}, "invalid_text", "Unicode"),
    ],
)
def test_a_bad_field_is_named(patch: dict[str, Any], code: str, says: str) -> None:
    body = {"id": "c-0003-abcdef", "text": "hi", **patch}
    with pytest.raises(PayloadError) as refused:
        check_message(body)
    assert refused.value.code == code and says in refused.value.message


def test_what_is_left_out_rather_than_refused() -> None:
    checked = check_message(
        {
            "id": "c-0004-abcdef",
            "text": "hi",
            "unknown_key": 1,
            "profile": {"name": "Ann\nOnce\x00", "phone": "call me", "email": "not-an-address"},
            "context": {
                "page_url": "javascript:alert(1)",
                "referrer": "",
                "language": "not a language!",
                "utm_last": {"utm_id": "kept-out", "utm_source": "  ", "fbclid": "fb"},
            },
        }
    )
    assert checked.profile == {"name": "Ann Once"}
    assert checked.context == {"utm_last": {"fbclid": "fb"}}


# -- connecting and sending ---------------------------------------------------------------


def _connect(**values: Any) -> Any:
    return WebChatAdapter.connect(
        load(WebChatConnect, {"origins": "https://Shop.Example/", **values}, strict=True)
    )


def test_connect_keeps_the_sites_and_makes_a_secret() -> None:
    first = _connect(
        origins="https://Shop.Example/, https://m.shop.example:8443 http://localhost:5000"
    )
    assert first.external_id == "shop.example"
    assert first.settings["origins"] == [
        "https://shop.example",
        "https://m.shop.example:8443",
        "http://localhost:5000",
    ]
    assert len(first.credentials["token_secret"]) >= 43
    assert _connect().credentials["token_secret"] != first.credentials["token_secret"]
    assert first.settings["prechat"] == "off" and first.settings["consent"] == "off"
    loaded = load(WebChatAdapter.Settings, first.settings)
    assert loaded.origins == (
        "https://shop.example",
        "https://m.shop.example:8443",
        "http://localhost:5000",
    )


@pytest.mark.parametrize(
    ("values", "says"),
    [
        ({"origins": "http://shop.example"}, "https only"),
        ({"origins": "https://shop.example/page"}, "nothing after it"),
        ({"origins": "shop.example"}, "scheme://host"),
        ({"origins": "https://user:pw@shop.example"}, "scheme://host"),
        ({"origins": " , "}, "--origin is required"),
        ({"color": "blue"}, "--color"),
        ({"privacy_url": "ftp://x"}, "--privacy-url"),
        ({"max_file_bytes": 100 * 1024 * 1024}, "--max-file-bytes"),
    ],
)
def test_connect_says_what_is_wrong(values: dict[str, Any], says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        _connect(**values)


def test_connect_refuses_a_choice_it_does_not_have() -> None:
    with pytest.raises(ValueError, match="prechat: must be one of off, optional, required"):
        _connect(prechat="sometimes")


def test_a_widgets_tokens_are_bound_to_its_own_widget_id() -> None:
    """What a connected widget's tokens name is its ``widget_id`` credential:
    a token can be checked from the credentials alone (whatever the row's
    id), and another widget's id under the same secret is refused."""
    creds = dict(_connect().credentials)
    assert set(creds) == {"token_secret", "widget_id"} and creds["widget_id"]
    account = ChannelAccountInfo(41, "webchat", "k", creds, {"origins": [ORIGIN]})
    adapter = WebChatAdapter(account)
    token = tokens.visitor_token(creds["token_secret"], creds["widget_id"], VISITOR)
    assert adapter.visitor(token) == VISITOR
    with pytest.raises(tokens.BadToken, match="another widget"):
        adapter.visitor(tokens.visitor_token(creds["token_secret"], 41, VISITOR))


def test_an_unread_reply_goes_by_email_after_the_widgets_minutes() -> None:
    adapter = _adapter(title="Acme tea", email_after_minutes=15)
    assert adapter.unread_fallback() == dt.timedelta(minutes=15)
    assert _adapter(email_after_minutes=0).unread_fallback() is None
    assert adapter.unread_texts("ru-RU") == (
        "Ответ от Acme tea",
        "Вам ответили в чате на сайте Acme tea:",
    )
    for language in ("en", None, "de"):
        assert adapter.unread_texts(language) == (
            "Reply from Acme tea",
            "You have a reply in the chat on Acme tea:",
        )
    # no title: the widget's site
    assert _adapter().unread_texts("en")[0] == "Reply from shop.example"
    assert _connect().settings["email_after_minutes"] == 10
    with pytest.raises(ConfigError, match="--email-after-minutes"):
        _connect(email_after_minutes=7 * 24 * 60 + 1)


def test_the_deployments_limits_default_to_the_documented_ones() -> None:
    app = load(WebChatAdapter.App, {})
    assert (app.sessions_per_minute, app.messages_per_minute, app.messages_burst) == (30, 20, 10)
    assert (app.ip_messages_per_minute, app.uploads_per_minute, app.reads_per_minute) == (
        120,
        10,
        120,
    )
    assert (app.stream_seconds, app.held_connections) == (25.0, 0)
    assert load(WebChatAdapter.App, {"stream_seconds": "2.5"}).stream_seconds == 2.5


def test_send_confirms_the_stored_reply_under_its_own_id() -> None:
    adapter = _adapter()
    long_text = "слово " * 3000
    result = adapter.send(OutboundMessage("b-uid-1", VISITOR, long_text))
    assert result.external_ids == ("b-uid-1",)
    assert WebChatAdapter.hosted and WebChatAdapter.idempotent_sends
    assert WebChatAdapter.consent_by_writing
    assert adapter.setup_webhook("http://bridge.test/webhooks/webchat/k") is None


# -- uploads: the type is read from the bytes ---------------------------------------------


ZIP_OF = {
    "docx": b"PK\x03\x04\x14\x00\x00\x00word/document.xml....",
    "xlsx": b"PK\x03\x04\x14\x00\x00\x00xl/workbook.xml....",
}


@pytest.mark.parametrize(
    ("data", "declared", "name", "found"),
    [
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", "image/jpeg", "a.jpg", "image/jpeg"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", "application/octet-stream", "a", "image/png"),
        (b"GIF89a\x01\x00", "image/gif", "a.gif", "image/gif"),
        (b"RIFF\x10\x00\x00\x00WEBPVP8 ", "image/webp", "a.webp", "image/webp"),
        (b"%PDF-1.7\n", "application/pdf", "a.pdf", "application/pdf"),
        (ZIP_OF["docx"], DOCX, "cv.docx", DOCX),
        (ZIP_OF["xlsx"], "application/octet-stream", "sheet.xlsx", XLSX),
        (ZIP_OF["docx"], "application/zip", "files.zip", "application/zip"),
        (b"plain words\n", "text/plain", "notes.txt", "text/plain"),
        (b"plain words\n", "", "notes.txt", "text/plain"),
        # what a browser says is not enough
        (b"<html><script>alert(1)</script>", "image/png", "a.png", None),
        (b"<svg onload=alert(1)>", "image/svg+xml", "a.svg", None),
        (b"MZ\x90\x00", "application/pdf", "a.pdf", None),
        (b"text\x00with a NUL", "text/plain", "a.txt", None),
        (b"no signature", "application/octet-stream", "a.bin", None),
    ],
)
def test_sniff(data: bytes, declared: str, name: str, found: str | None) -> None:
    assert sniff(data, declared, name) == found
