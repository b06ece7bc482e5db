# ruff: noqa: S105, S106  (test secrets)
"""MAX outbound (HTTP mocked with ``responses``): POST /messages, the
3-step upload, the contact keyboard, the error mapping, ``success:
false``, the limits, subscriptions and connecting. Answers are shaped like
the MAX examples (corpora ``max/examples``: the go-stab error bodies, the
schema-built send-message response and upload answers, the go-stab video
upload's XML) or built here, which says so."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import responses

from bridge.errors import (
    AmbiguousError,
    AuthError,
    ConfigError,
    NotFoundError,
    PartlySentError,
    PermanentError,
    RetryableError,
)
from bridge.http import HttpClient
from bridge.model import (
    Attachment,
    ChannelAccountInfo,
    InboundMessage,
    MessageKind,
    OutboundMessage,
    Rate,
)
from channel_adapters.max import MaxAdapter
from channel_adapters.max.adapter import UPDATE_TYPES
from channel_adapters.max.client import CHAT_RATE
from channel_adapters.max.outbound import TEXT_LIMIT, split_text

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "tests" / "fixtures" / "corpora" / "max" / "examples"
BASE = "https://platform-api2.max.ru"
TOKEN = "max-token-0001"
SECRET = "wh_Secret-0123456789"
USER = 123456789  # the go-stab user: a dialog's thread (answered with ?user_id=)


def example(name: str) -> Any:
    return json.loads((EXAMPLES / name).read_bytes())


SENT = example("schema-built-send-message.response.json")  # schema-built
INVALID_TOKEN = example("go-stab.error.invalid-token.json")  # go-stab
NOT_READY = example("go-stab.error.attachment.not.ready.json")  # go-stab
VIDEO_XML = (EXAMPLES / "go-stab.upload.video.response.xml").read_bytes()  # go-stab


class Limiter:
    """Records what was drawn from which shared bucket."""

    def __init__(self) -> None:
        self.acquired: list[tuple[str, Rate]] = []
        self.penalised: list[tuple[str, float]] = []

    def acquire(self, key: str, rate: Rate, cost: float = 1.0) -> None:
        self.acquired.append((key, rate))

    def penalise(self, key: str, seconds: float) -> None:
        self.penalised.append((key, seconds))


def adapter(
    limiter: Limiter | None = None, app: dict[str, str] | None = None, **settings: Any
) -> MaxAdapter:
    account = ChannelAccountInfo(
        id=3,
        kind="max",
        key="acct-key",
        credentials={"access_token": TOKEN, "secret": SECRET},
        settings=settings,
        external_id="229229229",
        app=app or {},
    )
    a = MaxAdapter(account, HttpClient(BASE, limiter=limiter))
    a.not_ready_waits = (0.0, 0.0)  # type: ignore[misc]  # no waiting in tests
    return a


def reply(text: str = "Hello", **kw: Any) -> OutboundMessage:
    return OutboundMessage(bridge_id="b-1", external_thread_id=str(USER), text=text, **kw)


def sent(mid: str = "mid.000000000adf429c019d47d58f2b3d9e") -> dict[str, Any]:
    body = json.loads(json.dumps(SENT))
    body["message"]["body"]["mid"] = mid
    return body


def bodies(path: str = "/messages") -> list[dict[str, Any]]:
    return [
        json.loads(c.request.body)
        for c in responses.calls
        if urlsplit(c.request.url).path == path and c.request.method == "POST"
    ]


def query(call: Any) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(call.request.url).query))


# -- text --------------------------------------------------------------------------------------


def test_split_at_4000() -> None:
    assert TEXT_LIMIT == 4000
    text = ("word " * 1999).strip()  # 9994 characters
    parts = split_text(text)
    assert all(len(p) <= 4000 for p in parts) and len(parts) == 3
    assert " ".join(parts) == text
    assert split_text("x" * 8001) == ["x" * 4000, "x" * 4000, "x"]
    para = "p" * 3000 + "\n\n" + "q" * 3000
    assert split_text(para) == ["p" * 3000, "q" * 3000]
    assert split_text("   ") == []


@responses.activate
def test_a_long_reply_is_sent_in_parts_with_the_raw_token() -> None:
    responses.post(f"{BASE}/messages", json=sent("mid.1"))
    responses.post(f"{BASE}/messages", json=sent("mid.2"))
    result = adapter().send(reply("x" * 4001, reply_to="mid.000000000adf429c019d47b1ce4600ff"))
    assert result.external_ids == ("mid.1", "mid.2")
    first, second = bodies()
    assert (len(first["text"]), second["text"]) == (4000, "x")
    # the first part answers the customer's message
    assert first["link"] == {"type": "reply", "mid": "mid.000000000adf429c019d47b1ce4600ff"}
    assert "link" not in second
    for call in responses.calls:
        assert call.request.headers["Authorization"] == TOKEN  # raw: no "Bearer "
        assert query(call) == {"user_id": str(USER)}
        assert TOKEN not in call.request.url


@responses.activate
def test_a_group_chat_is_answered_by_chat_id() -> None:
    responses.post(f"{BASE}/messages", json=sent())
    group = "-70801090403050"  # the go-stab group chat
    adapter().send(OutboundMessage(bridge_id="b", external_thread_id=group, text="Hi"))
    assert query(responses.calls[0]) == {"chat_id": group}
    with pytest.raises(PermanentError):
        adapter().send(OutboundMessage(bridge_id="b", external_thread_id="chat-x", text="Hi"))


@responses.activate
def test_the_contact_button_rides_on_the_last_message() -> None:
    responses.post(f"{BASE}/messages", json=sent())
    adapter(contact_button="Share my phone").send(reply("Please share your number"))
    [body] = bodies()
    assert body["attachments"] == [
        {
            "type": "inline_keyboard",
            "payload": {"buttons": [[{"type": "request_contact", "text": "Share my phone"}]]},
        }
    ]
    # the shape of the schema-built request_contact example
    built = example("schema-built-send-message.request-contact.request.json")
    button = built["attachments"][0]["payload"]["buttons"][0][0]
    assert button["type"] == body["attachments"][0]["payload"]["buttons"][0][0]["type"]


# -- uploads -----------------------------------------------------------------------------------


UPLOAD_HOST = "https://fu.oneme.ru/upload.do?id=1"


@responses.activate
def test_a_file_goes_through_the_three_step_upload() -> None:
    responses.get("https://crm.example/files/invoice.pdf", body=b"%PDF-1.7 invoice")
    responses.post(f"{BASE}/uploads", json={"url": UPLOAD_HOST})
    responses.post(UPLOAD_HOST, json={"token": "file-token-1"})
    responses.post(f"{BASE}/messages", json=sent())
    pdf = Attachment(
        kind=MessageKind.DOCUMENT,
        url="https://crm.example/files/invoice.pdf",
        file_name="invoice.pdf",
        mime_type="application/pdf",
    )
    a = adapter()
    a.http.fetcher = _plain_fetcher  # type: ignore[method-assign]  # no DNS here
    a.send(reply("", attachments=(pdf,)))
    calls = [(c.request.method, c.request.url.split("?")[0]) for c in responses.calls]
    assert calls[1:] == [
        ("POST", f"{BASE}/uploads"),
        ("POST", UPLOAD_HOST.split("?")[0]),
        ("POST", f"{BASE}/messages"),
    ]
    assert query(responses.calls[1]) == {"type": "file"}
    upload = responses.calls[2].request
    assert "Authorization" not in upload.headers  # no token to the upload host
    assert b'name="data"; filename="invoice.pdf"' in upload.body
    assert b"%PDF-1.7 invoice" in upload.body
    [body] = bodies()
    assert body["attachments"] == [{"type": "file", "payload": {"token": "file-token-1"}}]


@responses.activate
def test_video_takes_the_step_one_token_and_images_go_by_url_or_photos() -> None:
    step1 = example("schema-built-upload.video.step1.response.json")  # schema-built
    responses.post(f"{BASE}/uploads", json=step1)
    responses.post(step1["url"].split("?")[0], body=VIDEO_XML, content_type="application/xml")
    responses.post(f"{BASE}/messages", json=sent())
    video = Attachment(kind=MessageKind.VIDEO, content=b"\x00\x00mp4", file_name="clip.mp4")
    adapter().send(reply("", attachments=(video,)))
    [body] = bodies()
    assert body["attachments"] == [{"type": "video", "payload": {"token": step1["token"]}}]

    responses.calls.reset()
    responses.post(f"{BASE}/messages", json=sent())
    photo = Attachment(kind=MessageKind.PHOTO, url="https://crm.example/p.jpg")
    adapter().send(reply("", attachments=(photo,)))
    assert bodies()[-1]["attachments"] == [
        {"type": "image", "payload": {"url": "https://crm.example/p.jpg"}}
    ]
    assert not [c for c in responses.calls if "/uploads" in c.request.url]

    photos = example("schema-built-upload.image.upload-response.json")  # schema-built
    responses.calls.reset()
    responses.replace(responses.POST, f"{BASE}/uploads", json={"url": "https://iu.oneme.ru/u"})
    responses.post("https://iu.oneme.ru/u", json=photos)
    kept = Attachment(kind=MessageKind.PHOTO, content=b"\x89PNG", file_name="p.png")
    adapter().send(reply("", attachments=(kept,)))
    assert bodies()[-1]["attachments"] == [{"type": "image", "payload": photos}]


@responses.activate
def test_attachment_not_ready_is_retried_then_sent() -> None:
    responses.post(f"{BASE}/uploads", json={"url": UPLOAD_HOST})
    responses.post(UPLOAD_HOST, json={"token": "t"})
    responses.post(f"{BASE}/messages", status=400, json=NOT_READY)
    responses.post(f"{BASE}/messages", status=400, json=NOT_READY)
    responses.post(f"{BASE}/messages", json=sent("mid.ok"))
    doc = Attachment(kind=MessageKind.DOCUMENT, content=b"data", file_name="a.txt")
    assert adapter().send(reply("", attachments=(doc,))).external_ids == ("mid.ok",)
    assert len(bodies()) == 3
    # still not ready after the tries: retryable, nothing written
    responses.calls.reset()
    for _ in range(3):
        responses.post(f"{BASE}/messages", status=400, json=NOT_READY)
    with pytest.raises(RetryableError) as caught:
        adapter().send(reply("", attachments=(doc,)))
    assert caught.value.nothing_written and caught.value.vendor_code == "attachment.not.ready"


# -- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "error", "words"),
    [
        (401, INVALID_TOKEN, AuthError, "verify.token"),
        (
            403,
            {
                "code": "deprecated.token",
                "message": "Query parameter access_token is deprecated, use Authorization header",
            },
            AuthError,
            "deprecated.token",
        ),
        # the code MAX gives a stopped bot is UNCONFIRMED (FACTS §9): any 403
        (
            403,
            {"code": "chat.denied", "message": "stopped"},
            PermanentError,
            "the client stopped the bot",
        ),
        (
            404,
            {"code": "chat.not.found", "message": "Chat 1 not found"},
            NotFoundError,
            "chat.not.found",
        ),
        (
            400,
            {"code": "proto.payload", "message": "text: size must be between 0 and 4000"},
            PermanentError,
            "size must be",
        ),
        (429, {"code": "too.many.requests", "message": "slow down"}, RetryableError, "429"),
        (503, {"code": "service.unavailable", "message": "later"}, AmbiguousError, "503"),
        (400, {"message": "no code"}, PermanentError, "MAX 400 ?"),
        (418, b"<html>teapot</html>", PermanentError, "MAX 418 ?"),
    ],
)
@responses.activate
def test_max_errors_map_into_the_tree(status: int, body: Any, error: type, words: str) -> None:
    if isinstance(body, bytes):
        responses.post(f"{BASE}/messages", status=status, body=body)
    else:
        responses.post(f"{BASE}/messages", status=status, json=body)
    with pytest.raises(error) as caught:
        adapter().send(reply())
    assert words in caught.value.message
    assert type(caught.value) is error or isinstance(caught.value, error)
    assert TOKEN not in caught.value.message


@responses.activate
def test_a_429_pauses_the_bot_s_shared_bucket() -> None:
    limiter = Limiter()
    responses.post(f"{BASE}/messages", status=429, json={"code": "too.many.requests"})
    with pytest.raises(RetryableError) as caught:
        adapter(limiter).send(reply())
    assert caught.value.nothing_written and caught.value.retry_after == 1.0
    assert limiter.penalised == [("max:229229229", 1.0)]


@responses.activate
def test_success_false_with_http_200_is_a_failure() -> None:
    body = {"success": False, "message": "Message not found"}  # SimpleQueryResult, built here
    responses.post(f"{BASE}/answers", json=body)
    press = InboundMessage(
        channel_kind="max",
        external_id="message_callback:cb",
        external_user_id="1",
        external_thread_id=str(USER),
        kind=MessageKind.CALLBACK,
        sent_at=dt.datetime.now(dt.UTC),
        callback_id="cb-1",
    )
    with pytest.raises(PermanentError) as caught:
        adapter().acknowledge(press)
    assert "Message not found" in caught.value.message and caught.value.status == 200
    [call] = responses.calls
    assert query(call) == {"callback_id": "cb-1"}
    assert json.loads(call.request.body) == {"notification": "✓"}
    # a press answered too late (400): harmless
    responses.replace(
        responses.POST,
        f"{BASE}/answers",
        status=400,
        json={"code": "proto.payload", "message": "too late"},
    )
    adapter().acknowledge(press)


@responses.activate
def test_a_send_answer_without_a_mid_is_ambiguous() -> None:
    responses.post(f"{BASE}/messages", json={"success": True})
    with pytest.raises(AmbiguousError):
        adapter().send(reply())


@responses.activate
def test_a_failure_after_a_part_went_out() -> None:
    responses.post(f"{BASE}/messages", json=sent("mid.1"))
    responses.post(f"{BASE}/messages", status=429, json={"code": "too.many.requests"})
    with pytest.raises(PartlySentError) as caught:
        adapter().send(reply("y" * 4500))
    assert caught.value.sent_ids == ("mid.1",)
    # the retry sends only the rest
    responses.calls.reset()
    responses.replace(responses.POST, f"{BASE}/messages", json=sent("mid.2"))
    result = adapter().send(reply("y" * 4500, sent_parts=("mid.1",)))
    assert result.external_ids == ("mid.1", "mid.2") and len(bodies()) == 1
    responses.calls.reset()
    responses.replace(responses.POST, f"{BASE}/messages", json=sent("mid.1"))
    responses.add(responses.POST, f"{BASE}/messages", status=403, json={"code": "chat.denied"})
    with pytest.raises(PermanentError) as refused:
        adapter().send(reply("y" * 4500))
    assert "part 2/2" in refused.value.message


# -- limits, TLS -------------------------------------------------------------------------------


@responses.activate
def test_every_send_waits_for_the_bot_and_the_chat_bucket() -> None:
    limiter = Limiter()
    responses.post(f"{BASE}/messages", json=sent())
    adapter(limiter).send(reply("z" * 4001))
    keys = [(k, r) for k, r in limiter.acquired]
    chat = (f"max:229229229:chat:{USER}", CHAT_RATE)
    bot = ("max:229229229", Rate(capacity=30, per_second=30.0))
    assert keys == [chat, bot, chat, bot]
    assert CHAT_RATE.per_second == 2.0 and CHAT_RATE.capacity == 1


def test_the_ca_bundle_setting_is_requests_verify(tmp_path: Path) -> None:
    bundle = tmp_path / "russian_trusted_root_ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    assert adapter(app={"ca_bundle": str(bundle)}).http.session.verify == str(bundle)
    assert adapter().http.session.verify is True


# -- subscriptions, connecting ------------------------------------------------------------------


@responses.activate
def test_setup_webhook_subscribes_with_the_secret_and_drops_an_old_url() -> None:
    url = "https://bridge.example/webhooks/max/acct-key"
    old = "https://old.example/webhooks/max/acct-key"
    responses.post(f"{BASE}/subscriptions", json={"success": True})
    subs = example("schema-built-subscriptions.get.response.json")  # schema-built
    other = subs["subscriptions"][0]["url"]
    subs["subscriptions"] += [
        {"url": url, "time": 1, "update_types": None},
        {"url": old, "time": 1, "update_types": None},
    ]
    responses.get(f"{BASE}/subscriptions", json=subs)
    responses.delete(f"{BASE}/subscriptions", json={"success": True})
    adapter().setup_webhook(url)
    body = json.loads(responses.calls[0].request.body)
    assert body == {"url": url, "update_types": list(UPDATE_TYPES), "secret": SECRET}
    assert set(body) <= set(example("docs.post-subscriptions.request.json"))
    deleted = [query(c)["url"] for c in responses.calls if c.request.method == "DELETE"]
    assert deleted == [old]  # another system's subscription of the bot stays: other
    assert other not in deleted
    responses.calls.reset()
    adapter().remove_webhook()
    deleted = [query(c)["url"] for c in responses.calls if c.request.method == "DELETE"]
    assert deleted == [url, old]


@responses.activate
def test_connect_reads_the_bot_id_and_generates_the_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    from channel_adapters.max.settings import MaxConnect

    monkeypatch.setenv("MAX_API_BASE", BASE)
    responses.get(f"{BASE}/me", json=example("go-stab.botInfo.ok.json"))  # go-stab
    connected = MaxAdapter.connect(MaxConnect(access_token=f" {TOKEN} "))
    assert connected.external_id == "123123123"
    assert connected.credentials["access_token"] == TOKEN
    secret = connected.credentials["secret"]
    assert 5 <= len(secret) <= 256 and set(secret) <= set(
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"
    )
    assert MaxAdapter.connect(MaxConnect(access_token=TOKEN)).credentials["secret"] != secret
    responses.replace(responses.GET, f"{BASE}/me", status=401, json=INVALID_TOKEN)
    with pytest.raises(ConfigError, match="refused the token"):
        MaxAdapter.connect(MaxConnect(access_token=TOKEN))
    with pytest.raises(ConfigError):
        MaxAdapter.connect(MaxConnect(access_token="  "))


def _plain_fetcher(allowed_hosts: tuple[str, ...], *, max_bytes: int) -> Any:
    """A fetcher through ``requests`` (mocked) that still checks the host."""

    class Fetcher:
        def fetch(self, url: str) -> bytes:
            import requests

            assert urlsplit(url).hostname in allowed_hosts
            return requests.get(url, timeout=5).content[:max_bytes]

    return Fetcher()
