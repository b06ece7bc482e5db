# ruff: noqa: S105  (test secrets)
"""The channel contract for the web chat channel.

A hosted channel has no vendor: the "signed" request is what the widget API
composes and hands to the core (a visitor's bearer token, the page's
origin, the checked body), so the verify/edge/parse duties run on those
requests, the samples being the documented body shapes
(``channel_adapters.webchat.inbound``). The send duties read differently
here: nothing goes to a provider (the widget reads a reply from the bridge
once it is stored), so ``send`` confirms a reply of any length under its
own id, and flood control has no meaning (the widget API's own limits are
tested in ``tests/unit/test_webchat_api.py``).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from bridge.model import ChannelAccountInfo, OutboundMessage, WebhookRequest
from channel_adapters.webchat import WebChatAdapter, tokens
from tests.contracts.channel_contract import ChannelAdapterContract, Sample

SECRET = "contract-widget-secret-0123456789abcdefghij"
ACCOUNT = 3
ORIGIN = "https://shop.example"
VISITOR = "contract-visitor-000001"


def _ref(name: str, mime: str, uid: str) -> str:
    return tokens.sign_file_ref(SECRET, ACCOUNT, VISITOR, tokens.FileRef(uid, name, mime, 1234))


SAMPLES = [
    Sample(
        "docs:text",
        {"type": "message", "visitor": VISITOR, "id": "c-text-0001", "text": "Hello"},
    ),
    Sample(
        "docs:full",
        {
            "type": "message",
            "visitor": VISITOR,
            "id": "c-full-0001",
            "text": "Где мой заказ? 📦",
            "files": [],
            "profile": {"name": "Анна", "phone": "+79161234567", "email": "anna@example.com"},
            "consent": {"given": True, "version": "1", "at": "2026-12-05T10:00:00Z"},
            "context": {
                "page_url": "https://shop.example/cart",
                "page_title": "Cart",
                "referrer": "https://ya.ru/",
                "language": "ru",
                "timezone": "Europe/Moscow",
                "utm_first": {"utm_source": "google"},
                "utm_last": {"utm_source": "yandex", "yclid": "1"},
            },
            "received_at": "2026-12-05T10:00:00+00:00",
        },
    ),
    Sample(
        "docs:files",
        {
            "type": "message",
            "visitor": VISITOR,
            "id": "c-file-0001",
            "text": "",
            "files": [
                _ref("a.pdf", "application/pdf", "11111111-2222-4333-8444-555555555555"),
                _ref("b.png", "image/png", "66666666-7777-4888-9999-000000000000"),
            ],
        },
    ),
    Sample(
        "docs:read-nothing",
        {"type": "read", "visitor": VISITOR, "read_up_to": 4, "read": []},
    ),
]


def _request(payload: Any, token: str | None) -> WebhookRequest:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    headers = {"origin": ORIGIN, "content-type": "application/json"}
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    return WebhookRequest("POST", "https://bridge.example/widget/k/messages", headers, body)


class TestWebChatContract(ChannelAdapterContract):
    splits_long_text = False

    @classmethod
    def sample_payloads(cls) -> list[Sample]:
        return SAMPLES

    @pytest.fixture
    def adapter(self) -> WebChatAdapter:
        account = ChannelAccountInfo(
            ACCOUNT, "webchat", "k", {"token_secret": SECRET}, {"origins": [ORIGIN]}
        )
        return WebChatAdapter(account)

    @pytest.fixture
    def signed_request(self):  # type: ignore[no-untyped-def]
        token = tokens.visitor_token(SECRET, ACCOUNT, VISITOR)
        return lambda payload: _request(payload, token)

    @pytest.fixture
    def forged_request(self):  # type: ignore[no-untyped-def]
        token = tokens.visitor_token("a-guessed-secret-0123456789abcdefghij", ACCOUNT, VISITOR)
        return lambda payload: _request(payload, token)

    # -- send, for a channel the bridge hosts ---------------------------------------

    def test_send_returns_the_id_the_vendor_saw(self, adapter):  # type: ignore[no-untyped-def]
        """The widget reads the stored reply; ``send`` confirms it under its
        own id (what a read receipt names later)."""
        result = adapter.send(OutboundMessage("b-contract-1", VISITOR, "Hello ✓"))
        assert result.external_ids == ("b-contract-1",)

    def test_long_text_goes_out_as_ordered_parts(self, adapter):  # type: ignore[no-untyped-def]
        """No per-message limit: a long reply is one message, one id."""
        result = adapter.send(OutboundMessage("b-contract-2", VISITOR, "слово " * 5000))
        assert result.external_ids == ("b-contract-2",)

    def test_flood_control_is_retryable_with_retry_after(self, adapter):  # type: ignore[no-untyped-def]
        """Hosted: no provider stands between us and the visitor, so no flood
        control can refuse a send — a burst of replies is confirmed whole,
        each under its own id, none waiting (the widget API's own limits,
        429 with Retry-After, are tests/unit/test_webchat_api.py's)."""
        results = [
            adapter.send(OutboundMessage(f"b-burst-{n}", VISITOR, f"reply {n}")) for n in range(200)
        ]
        assert [r.external_ids for r in results] == [(f"b-burst-{n}",) for n in range(200)]
