# ruff: noqa: S105, S106  (test secrets)
"""VK outbound: ``messages.send`` (form-encoded, ``random_id`` per part),
the one error mapping, the shared bucket, ``sendMessageEventAnswer`` for a
button press, and connecting a community.

HTTP is mocked at the one seam with ``responses``: a call no test
registered fails the test. VK answers errors with HTTP 200 and an
``error`` object (corpus ``get_long_poll_server_response_error_sample_
5_110.json``, used as is below); the other bodies are built here from the
schema (``vk/schema/errors.json``, ``messages__responses.json``).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

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
from bridge.model import (
    Attachment,
    ChannelAccountInfo,
    InboundMessage,
    MessageKind,
    OutboundMessage,
    Rate,
)
from bridge.schema import load
from channel_adapters.vk import VkAdapter
from channel_adapters.vk.outbound import TEXT_LIMIT, random_id, split_text
from channel_adapters.vk.settings import VkConnect
from tests.support.fakes import RecordingLimiter

CORPORA = Path(__file__).resolve().parents[1] / "fixtures" / "corpora"
LONGPOLL = CORPORA / "vk" / "bots_longpoll_events"
BASE = "https://api.vk.com"
SEND = f"{BASE}/method/messages.send"
ANSWER = f"{BASE}/method/messages.sendMessageEventAnswer"
CODE = f"{BASE}/method/groups.getCallbackConfirmationCode"
GROUP = "886761559"
TOKEN = "vk1.a.community-token"
PEER = "918650328"
NOW = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)


def account(**settings: Any) -> ChannelAccountInfo:
    return ChannelAccountInfo(
        id=1,
        kind="vk",
        key="acct-key",
        credentials={"access_token": TOKEN, "secret": "s3cretKey42"},
        settings={"confirmation": "1a2b3c4d", **settings},
        external_id=GROUP,
    )


def adapter(limiter: RecordingLimiter | None = None, **settings: Any) -> VkAdapter:
    return VkAdapter(account(**settings), HttpClient(BASE, limiter=limiter))


@pytest.fixture
def api() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


def form(call: Any) -> dict[str, str]:
    """The form a mocked call sent (one value per field)."""
    assert call.request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    body = call.request.body
    text = body.decode() if isinstance(body, bytes) else str(body)
    return {k: v[0] for k, v in parse_qs(text, keep_blank_values=True).items()}


def sent(mock: responses.RequestsMock) -> list[dict[str, str]]:
    return [form(c) for c in mock.calls if c.request.url == SEND]


def reply(text: str = "hello", **extra: Any) -> OutboundMessage:
    return OutboundMessage(bridge_id="7d6c1f3e-msg", external_thread_id=PEER, text=text, **extra)


def error(code: int, msg: str = "x") -> dict[str, Any]:
    return {"error": {"error_code": code, "error_msg": msg, "request_params": []}}


# --------------------------------------------------------------------------
# messages.send
# --------------------------------------------------------------------------


def test_send_is_one_form_encoded_messages_send(api: responses.RequestsMock) -> None:
    api.add(responses.POST, SEND, json={"response": 287})
    result = adapter().send(reply("Здравствуйте!"))
    assert result.external_ids == ("287",)
    (params,) = sent(api)
    assert params == {
        "peer_id": PEER,
        "message": "Здравствуйте!",
        "random_id": str(random_id("7d6c1f3e-msg", 0)),
        "access_token": TOKEN,
        "v": "5.199",
    }
    assert TOKEN not in api.calls[0].request.url  # the token rides in the body
    assert adapter().idempotent_sends is True


def test_random_id_is_deterministic_distinct_per_part_and_the_same_on_a_retry(
    api: responses.RequestsMock,
) -> None:
    api.add(responses.POST, SEND, json={"response": 1})
    text = "word " * 2000  # 10000 characters: three parts
    adapter().send(reply(text))
    adapter().send(reply(text))  # the job sends it again (an unknown outcome)
    ids = [int(p["random_id"]) for p in sent(api)]
    assert len(ids) == 6 and ids[:3] == ids[3:]
    assert len(set(ids[:3])) == 3
    assert all(0 < i < 2**63 for i in ids)
    assert ids[:3] == [random_id("7d6c1f3e-msg", i) for i in range(3)]
    other = [random_id("another-message", i) for i in range(3)]
    assert not set(other) & set(ids)


def test_long_text_is_split_at_4096(api: responses.RequestsMock) -> None:
    api.add(responses.POST, SEND, json={"response": 1})
    text = ("a" * 100 + "\n") * 90  # 9090 characters, line breaks to cut at
    adapter().send(reply(text))
    parts = [p["message"] for p in sent(api)]
    assert len(parts) == 3 and all(len(p) <= TEXT_LIMIT for p in parts)
    assert "".join(parts).replace("\n", "") == text.replace("\n", "")
    assert split_text("x" * 5000) == ["x" * 4096, "x" * 904]  # no break: hard cut
    assert split_text("  ") == []


def test_a_part_refused_after_others_went_out_is_partly_sent(
    api: responses.RequestsMock,
) -> None:
    api.add(responses.POST, SEND, json={"response": 11})
    api.add(responses.POST, SEND, json=error(6, "Too many requests per second"))
    api.add(responses.POST, SEND, json={"response": 13})
    message = reply("z" * 9000)
    with pytest.raises(PartlySentError) as caught:
        adapter().send(message)
    assert caught.value.sent_ids == ("11",) and caught.value.retry_after == 1.0
    # the core sends the rest: the parts not sent yet, with their own random_ids
    result = adapter().send(
        OutboundMessage(**{**message.__dict__, "sent_parts": caught.value.sent_ids})
    )
    assert result.external_ids == ("11", "13", "13")
    ids = [p["random_id"] for p in sent(api)]
    assert ids[1] == ids[2]  # the refused part again, with the same key


def test_a_permanent_refusal_after_a_part_says_which(api: responses.RequestsMock) -> None:
    api.add(responses.POST, SEND, json={"response": 11})
    api.add(responses.POST, SEND, json=error(901))
    with pytest.raises(PermanentError) as caught:
        adapter().send(reply("z" * 5000))
    assert caught.value.message.startswith("VK 901: the client does not allow messages")
    assert "part 2/2" in caught.value.message


def test_reply_to_a_message_by_id_or_conversation_message_id(
    api: responses.RequestsMock,
) -> None:
    api.add(responses.POST, SEND, json={"response": 1})
    adapter().send(reply("a", reply_to="844"))
    adapter().send(reply("b", reply_to="c4392"))
    adapter().send(reply("c", reply_to="not-an-id"))
    by_id, by_cmid, neither = sent(api)
    assert by_id["reply_to"] == "844" and "forward" not in by_id
    assert json.loads(by_cmid["forward"]) == {
        "peer_id": int(PEER),
        "conversation_message_ids": [4392],
        "is_reply": True,
    }
    assert "reply_to" not in neither and "forward" not in neither


def test_reply_to_goes_on_the_first_part_only(api: responses.RequestsMock) -> None:
    api.add(responses.POST, SEND, json={"response": 1})
    adapter().send(reply("y" * 5000, reply_to="844"))
    first, second = sent(api)
    assert first["reply_to"] == "844" and "reply_to" not in second


def test_attachments_go_as_links_in_the_text(api: responses.RequestsMock) -> None:
    api.add(responses.POST, SEND, json={"response": 1})
    files = (
        Attachment(MessageKind.DOCUMENT, url="https://crm.example/f/1", file_name="offer.pdf"),
        Attachment(MessageKind.PHOTO, url="https://crm.example/f/2"),
    )
    adapter().send(reply("See attached", attachments=files))
    adapter().send(reply("", attachments=files[:1]))
    with_text, alone = sent(api)
    assert with_text["message"] == (
        "See attached\n\n📎 offer.pdf: https://crm.example/f/1\n📎 photo: https://crm.example/f/2"
    )
    assert alone["message"] == "📎 offer.pdf: https://crm.example/f/1"


@pytest.mark.parametrize(
    "message",
    [
        reply(""),
        reply("hi", attachments=(Attachment(MessageKind.PHOTO, file_ref="photo1_2"),)),
        OutboundMessage(bridge_id="b", external_thread_id="not-a-peer", text="hi"),
    ],
    ids=["empty", "attachment-without-link", "bad-peer"],
)
def test_what_cannot_be_sent_is_permanent_without_a_call(
    api: responses.RequestsMock, message: OutboundMessage
) -> None:
    with pytest.raises(PermanentError):
        adapter().send(message)
    assert not api.calls


def test_group_chat_peers_and_the_peer_ids_answer(api: responses.RequestsMock) -> None:
    # corpus message_send_responses_sample_5_110.json: the peer_ids answer shape
    answer = json.loads((LONGPOLL / "message_send_responses_sample_5_110.json").read_text())
    api.add(responses.POST, SEND, json=answer)
    message = OutboundMessage(bridge_id="b", external_thread_id="2000000008", text="hi all")
    assert adapter().send(message).external_ids == ("287",)
    assert sent(api)[0]["peer_id"] == "2000000008"


# --------------------------------------------------------------------------
# The one error mapping
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "pause", "refused"),
    [(6, 1.0, True), (9, 5.0, True), (10, 1.0, False), (29, 60.0, True)],
    ids=["6-too-many", "9-flood", "10-internal", "29-rate-limit"],
)
def test_retryable_errors_carry_a_pause(
    api: responses.RequestsMock, code: int, pause: float, refused: bool
) -> None:
    api.add(responses.POST, SEND, json=error(code, "VK says so"))
    with pytest.raises(RetryableError) as caught:
        adapter().send(reply())
    exc = caught.value
    assert not isinstance(exc, AmbiguousError)
    assert (exc.retry_after, exc.nothing_written, exc.vendor_code) == (pause, refused, str(code))
    assert exc.message == f"VK {code}: VK says so" and exc.status == 200


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (900, "VK 900: the client has blacklisted the community"),
        (901, "VK 901: the client does not allow messages from the community"),
        (902, "VK 902: the client's privacy settings do not allow messages from the community"),
        (914, "VK 914: the message is too long"),
        (100, "VK 100: One of the parameters specified was missing or invalid"),
        (14, "VK 14: Captcha needed"),
    ],
)
def test_permanent_errors_say_why_in_english(
    api: responses.RequestsMock, code: int, text: str
) -> None:
    words = "One of the parameters specified was missing or invalid" if code == 100 else ""
    api.add(responses.POST, SEND, json=error(code, words or "Captcha needed"))
    with pytest.raises(PermanentError) as caught:
        adapter().send(reply())
    assert caught.value.message == text


def test_an_auth_error_from_the_corpus_is_an_auth_error(api: responses.RequestsMock) -> None:
    # bivashy/java-vk-bots-long-poll-api get_long_poll_server_response_error_sample_5_110.json
    body = (LONGPOLL / "get_long_poll_server_response_error_sample_5_110.json").read_text()
    api.add(responses.POST, SEND, body=body, content_type="application/json")
    with pytest.raises(AuthError) as caught:
        adapter().send(reply())
    assert caught.value.message.startswith("VK 5: the access token was rejected")
    assert TOKEN not in caught.value.message


@pytest.mark.parametrize(
    ("mock", "error_type"),
    [
        (lambda m: m.add(responses.POST, SEND, body=requests.ReadTimeout("t")), AmbiguousError),
        (lambda m: m.add(responses.POST, SEND, body=requests.ConnectTimeout("t")), RetryableError),
        (lambda m: m.add(responses.POST, SEND, status=502, body="<html>"), AmbiguousError),
        (lambda m: m.add(responses.POST, SEND, body="not json"), AmbiguousError),
        (lambda m: m.add(responses.POST, SEND, json={"nothing": 1}), AmbiguousError),
        (lambda m: m.add(responses.POST, SEND, json={"response": "x"}), AmbiguousError),
        (lambda m: m.add(responses.POST, SEND, status=400, json=error(901)), PermanentError),
    ],
    ids=["read-timeout", "connect-timeout", "502", "not-json", "no-response", "odd", "400"],
)
def test_transport_failures(api: responses.RequestsMock, mock: Any, error_type: type) -> None:
    mock(api)
    with pytest.raises(error_type):
        adapter().send(reply())


# --------------------------------------------------------------------------
# The shared bucket
# --------------------------------------------------------------------------


def test_every_call_draws_from_the_communitys_bucket(api: responses.RequestsMock) -> None:
    limiter = RecordingLimiter()
    api.add(responses.POST, SEND, json={"response": 1})
    adapter(limiter).send(reply("q" * 5000))
    assert limiter.acquired == [(f"vk:{GROUP}", Rate(capacity=3, per_second=3.0))] * 2
    limiter = RecordingLimiter()
    adapter(limiter, per_second=10).send(reply())
    assert limiter.acquired == [(f"vk:{GROUP}", Rate(capacity=10, per_second=10.0))]
    slow = RecordingLimiter()
    adapter(slow, per_second=0.5).send(reply())
    assert slow.acquired == [(f"vk:{GROUP}", Rate(capacity=1, per_second=0.5))]


@pytest.mark.parametrize(("code", "pause"), [(6, 1.0), (9, 5.0), (29, 60.0)])
def test_a_refusal_pauses_the_shared_bucket(
    api: responses.RequestsMock, code: int, pause: float
) -> None:
    limiter = RecordingLimiter()
    api.add(responses.POST, SEND, json=error(code))
    with pytest.raises(RetryableError):
        adapter(limiter).send(reply())
    assert limiter.penalties == [(f"vk:{GROUP}", pause)]


def test_other_errors_leave_the_bucket_alone(api: responses.RequestsMock) -> None:
    limiter = RecordingLimiter()
    api.add(responses.POST, SEND, json=error(10))
    api.add(responses.POST, SEND, json=error(901))
    for _ in range(2):
        with pytest.raises((RetryableError, PermanentError)):
            adapter(limiter).send(reply())
    assert limiter.penalties == []


# --------------------------------------------------------------------------
# A button press: messages.sendMessageEventAnswer
# --------------------------------------------------------------------------


def press(callback_id: str, thread: str = PEER, user: str = "") -> InboundMessage:
    """As the core hands it back (``Acknowledgements``: no user id)."""
    return InboundMessage(
        channel_kind="vk",
        external_id="e82ea61c19c93ee32c8f4a26886b139009539d02",
        external_user_id=user,
        external_thread_id=thread,
        kind=MessageKind.CALLBACK,
        sent_at=NOW,
        callback_id=callback_id,
    )


def test_a_button_press_is_answered(api: responses.RequestsMock) -> None:
    api.add(responses.POST, ANSWER, json={"response": 1})
    adapter().acknowledge(press("5bba1af2abf1"))
    adapter().acknowledge(press("5bba1af2abf1:918650328", thread="2000000008"))
    private, chat = (form(c) for c in api.calls)
    assert (private["event_id"], private["user_id"], private["peer_id"]) == (
        "5bba1af2abf1",
        PEER,
        PEER,
    )
    assert (chat["event_id"], chat["user_id"], chat["peer_id"]) == (
        "5bba1af2abf1",
        PEER,
        "2000000008",
    )
    assert "event_data" not in private and private["access_token"] == TOKEN


def test_only_button_presses_are_answered(api: responses.RequestsMock) -> None:
    text = InboundMessage(
        channel_kind="vk",
        external_id="x",
        external_user_id=PEER,
        external_thread_id=PEER,
        kind=MessageKind.TEXT,
        sent_at=NOW,
    )
    adapter().acknowledge(text)
    adapter().acknowledge(press(""))
    assert not api.calls


def test_a_refused_answer_is_raised(api: responses.RequestsMock) -> None:
    api.add(responses.POST, ANSWER, json=error(100, "event_id is expired"))
    with pytest.raises(PermanentError):
        adapter().acknowledge(press("5bba1af2abf1"))


# --------------------------------------------------------------------------
# Connecting: bridge vk connect, setup_webhook, the callback listing
# --------------------------------------------------------------------------


def connect_values(**given: Any) -> VkConnect:
    return load(VkConnect, {"group_id": GROUP, "access_token": TOKEN, **given}, strict=True)


def test_connect_reads_the_confirmation_string_and_generates_a_secret(
    api: responses.RequestsMock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("VK_API_BASE", raising=False)
    api.add(responses.POST, CODE, json={"response": {"code": "a1b2c3d4"}})
    connected = VkAdapter.connect(connect_values(group_id="club886761559"))
    assert connected.external_id == GROUP
    assert connected.settings == {
        "confirmation": "a1b2c3d4",
        "api_version": "5.199",
        "per_second": 3.0,
    }
    secret = connected.credentials["secret"]
    assert len(secret) == 32 and secret.isalnum()
    assert connected.credentials["access_token"] == TOKEN
    assert form(api.calls[0])["group_id"] == GROUP
    again = VkAdapter.connect(connect_values())
    assert again.credentials["secret"] != secret  # from the CSPRNG each time


def test_connect_with_everything_given_makes_no_call(api: responses.RequestsMock) -> None:
    connected = VkAdapter.connect(
        connect_values(
            group_id="-886761559",
            confirmation="a1b2c3d4",
            secret="MySecret42",
            per_second="5",
            api_version="5.131",
        )
    )
    assert connected.credentials == {"access_token": TOKEN, "secret": "MySecret42"}
    assert connected.settings == {
        "confirmation": "a1b2c3d4",
        "api_version": "5.131",
        "per_second": 5.0,
    }
    assert not api.calls


def test_connect_names_the_fix_when_the_token_cannot_read_the_string(
    api: responses.RequestsMock,
) -> None:
    api.add(responses.POST, CODE, json=error(15, "Access denied: no access to call this method"))
    with pytest.raises(ConfigError) as caught:
        VkAdapter.connect(connect_values())
    assert "--confirmation" in str(caught.value)
    api.replace(responses.POST, CODE, json=error(5, "User authorization failed"))
    with pytest.raises(ConfigError) as refused:
        VkAdapter.connect(connect_values())
    assert "VK refused the token" in str(refused.value) and TOKEN not in str(refused.value)


@pytest.mark.parametrize(
    "given",
    [
        {"group_id": "vk.com/acme"},
        {"group_id": "0"},
        {"access_token": "  "},
        {"confirmation": "has space", "secret": "a"},
        {"secret": "not-alnum!", "confirmation": "x"},
        {"secret": "a" * 51, "confirmation": "x"},
        {"api_version": "5.92", "confirmation": "x"},
        {"per_second": "0", "confirmation": "x"},
    ],
    ids=["group-name", "group-0", "no-token", "confirmation", "secret", "long", "old-v", "rate"],
)
def test_connect_refuses_what_cannot_work(
    api: responses.RequestsMock, given: dict[str, str]
) -> None:
    with pytest.raises(ConfigError):
        VkAdapter.connect(connect_values(**given))
    assert not api.calls


def test_setup_webhook_refreshes_the_confirmation_string(api: responses.RequestsMock) -> None:
    api.add(responses.POST, CODE, json={"response": {"code": "1a2b3c4d"}})
    assert adapter().setup_webhook("https://bridge.example/webhooks/vk/acct-key") is None
    api.replace(responses.POST, CODE, json={"response": {"code": "99ffee00"}})
    changed = adapter().setup_webhook("https://bridge.example/webhooks/vk/acct-key")
    assert changed == {"confirmation": "99ffee00"}
    api.replace(responses.POST, CODE, json=error(15, "Access denied"))
    # no manage right: the stored string stands
    assert adapter().setup_webhook("https://bridge.example/webhooks/vk/acct-key") is None
    api.replace(responses.POST, CODE, json=error(5, "User authorization failed"))
    with pytest.raises(AuthError):
        adapter().setup_webhook("https://bridge.example/webhooks/vk/acct-key")


def test_the_callback_listing_says_what_to_type_into_vk(api: responses.RequestsMock) -> None:
    api.add(responses.POST, CODE, json=error(15, "Access denied"))
    rows = {r["setting"]: r["value"] for r in adapter().listing("callback")}
    assert rows["Secret key"] == "s3cretKey42"
    assert rows["API version"] == "5.199"
    assert rows["Confirmation string (stored)"] == "1a2b3c4d"
    assert rows["Confirmation string (VK now)"].startswith("(not readable: VK 15")
    assert "message_new" in rows["Event types"] and "message_event" in rows["Event types"]
    with pytest.raises(NotImplementedError):
        adapter().listing("templates")


def test_the_api_base_is_vks_and_the_adapter_prints_no_token() -> None:
    assert VkAdapter.default_api_base() == "https://api.vk.com"
    vk = adapter()
    assert TOKEN not in repr(vk) and TOKEN not in repr(vk.api)


def test_set_webhook_stores_the_new_confirmation_string_and_answers_with_it(  # type: ignore[no-untyped-def]
    runtime, api: responses.RequestsMock
) -> None:
    """``bridge vk set-webhook``: VK changed the string (a server edited);
    the account keeps the new one and the next confirmation is answered
    with it."""
    from bridge import admin, create_app
    from bridge.setup import set_channel_webhook
    from bridge.tables import ChannelAccount

    mapping = Path(__file__).parents[2] / "mappings" / "amocrm.yaml"
    (runtime.settings.mappings_dir / "amocrm.yaml").write_text(mapping.read_text())
    tenant_id = admin.create_tenant(runtime, slug="acme", crm_kind="amocrm", mapping="amocrm.yaml")
    account_id = admin.add_channel_account(
        runtime,
        tenant_id,
        kind="vk",
        credentials={"access_token": "vk1.a.test", "secret": "s3cretKey42"},
        external_id="227000001",
        settings={"confirmation": "1a2b3c4d"},
    )
    api.add(responses.POST, CODE, json={"response": {"code": "99ffee00"}})
    url = set_channel_webhook(runtime, account_id)
    with runtime.transaction() as session:
        account = session.get(ChannelAccount, account_id)
        assert account is not None
        assert account.settings["confirmation"] == "99ffee00"
    body = {"type": "confirmation", "group_id": 227000001, "secret": "s3cretKey42"}
    client = create_app(runtime=runtime).test_client()
    answer = client.post(urlsplit(url).path, json=body)
    assert (answer.status_code, answer.get_data(as_text=True)) == (200, "99ffee00")
