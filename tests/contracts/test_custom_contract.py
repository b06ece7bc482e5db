"""The channel contract for the custom channel against its sandbox
(``sandbox.custom``), over real HTTP.

The sandbox plays the system on the other side: a "signed" request is what
it POSTs when asked to deliver a customer message (``POST /_deliver``, signed
with the standard's own library), captured by a tiny receiver; replies go
to the sandbox's callback receiver, which checks their signatures the same
way and records them once each (``GET /_sent``).
"""

from __future__ import annotations

import dataclasses
import json
import threading
from typing import Any

import pytest
import requests
from werkzeug.wrappers import Request, Response

from bridge.errors import PermanentError, SignatureError
from bridge.model import ChannelAccountInfo, InboundMessage, OutboundMessage, WebhookRequest
from channel_adapters.custom import CustomAdapter
from sandbox.custom import DEMO_SECRET, DEMO_SYSTEM, create_app
from tests.contracts.channel_contract import ChannelAdapterContract, Sample, SentPart
from tests.support.servers import serve_wsgi

#: Payloads in the documented shape (channel_adapters.custom), written for
#: this contract: the custom channel's contract is ours, there is no corpus.
SAMPLES = [
    Sample("docs:text", {"sender": {"id": "v-1", "name": "Anna"}, "text": "Hello"}),
    Sample(
        "docs:full",
        {
            "type": "message",
            "thread_id": "order-42",
            "message_id": "m-1001",
            "text": "Где мой заказ? 📦",
            "sent_at": "2026-12-05T10:00:00Z",
            "reply_to": "m-1000",
            "sender": {
                "id": "visitor-17",
                "name": "Анна Петрова",
                "email": "anna@example.com",
                "phone": "+79161234567",
                "language": "ru",
                "page_url": "https://shop.example.com/cart",
                "utm": {"utm_source": "google"},
            },
        },
    ),
    Sample(
        "docs:attachment",
        {
            "sender": {"id": 17},
            "attachments": [
                {
                    "url": "https://files.example.com/a.pdf",
                    "file_name": "a.pdf",
                    "mime_type": "application/pdf",
                    "size": 1234,
                }
            ],
        },
    ),
    Sample("docs:other-type", {"type": "typing", "sender": {"id": "v-1"}}),
]


class Receiver:
    """Stands in for the bridge's URL: records what the sandbox POSTs."""

    def __init__(self) -> None:
        self.requests: list[WebhookRequest] = []
        self.lock = threading.Lock()

    def __call__(self, environ, start_response):  # type: ignore[no-untyped-def]
        request = Request(environ)
        captured = WebhookRequest(
            method=request.method,
            url=request.url,
            headers={k.lower(): v for k, v in request.headers.items()},
            body=request.get_data(),
        )
        with self.lock:
            self.requests.append(captured)
        return Response(json.dumps({"ok": True}), mimetype="application/json")(
            environ, start_response
        )


class SandboxSystem:
    """The contract's :class:`~tests.contracts.channel_contract.Vendor`."""

    def __init__(self, url: str, hook: str, receiver: Receiver) -> None:
        self.url, self.hook, self.receiver = url, hook, receiver
        self.threads = 0

    def control(self, method: str, path: str, **body: Any) -> Any:
        response = requests.request(method, f"{self.url}{path}", json=body or None, timeout=10)
        assert response.status_code < 300, response.text
        return response.json()

    def deliver(self, payload: Any, **extra: Any) -> WebhookRequest:
        before = len(self.receiver.requests)
        answer = self.control("POST", "/_deliver", payload=payload, url=f"{self.hook}/in", **extra)
        assert answer["status"] == 200, answer
        assert len(self.receiver.requests) == before + 1
        return self.receiver.requests[-1]

    def thread(self) -> str:
        self.threads += 1
        return f"thread-{self.threads}"

    def sent(self, thread: str) -> list[SentPart]:
        entries = self.control("GET", f"/_sent?thread_id={thread}")["sent"]
        return [SentPart(e["id"], e["text"]) for e in entries]

    def rate_limit(self, thread: str) -> None:
        self.control("POST", "/_faults", rate_429=1.0, retry_after=2)


@pytest.fixture(scope="module")
def servers():  # type: ignore[no-untyped-def]
    receiver = Receiver()
    with serve_wsgi(create_app()) as sandbox, serve_wsgi(receiver) as hook:
        yield sandbox.url, hook.url, receiver


def _account(sandbox_url: str) -> ChannelAccountInfo:
    return ChannelAccountInfo(
        id=1,
        kind="custom",
        key="acct-key",
        credentials={"signing_secret": DEMO_SECRET},
        settings={"callback_url": f"{sandbox_url}/callbacks/{DEMO_SYSTEM}"},
        external_id=DEMO_SYSTEM,
    )


class TestCustomContract(ChannelAdapterContract):
    splits_long_text = False

    @classmethod
    def sample_payloads(cls) -> list[Sample]:
        return SAMPLES

    @pytest.fixture
    def vendor(self, servers):  # type: ignore[no-untyped-def]
        sandbox_url, hook_url, receiver = servers
        vendor = SandboxSystem(sandbox_url, hook_url, receiver)
        vendor.control("POST", "/_reset")
        vendor.control("POST", "/_faults", reset=True)
        yield vendor
        vendor.control("POST", "/_faults", reset=True)

    @pytest.fixture
    def adapter(self, servers, vendor):  # type: ignore[no-untyped-def]
        return CustomAdapter(_account(servers[0]))

    @pytest.fixture
    def signed_request(self, vendor):  # type: ignore[no-untyped-def]
        return lambda payload: vendor.deliver(payload)

    @pytest.fixture
    def forged_request(self, vendor):  # type: ignore[no-untyped-def]
        other = "whsec_" + "Zm9yZ2VkLXNlY3JldC1mb3JnZWQtc2VjcmV0LWZvcmdlZA=="
        return lambda payload: vendor.deliver(payload, secret=other)

    # -- the custom channel over the same wire ---------------------------------------

    def test_a_stale_or_replayed_delivery_is_refused(self, adapter, vendor):  # type: ignore[no-untyped-def]
        payload = SAMPLES[0].payload
        stale = vendor.deliver(payload, timestamp_offset=-301)
        with pytest.raises(SignatureError, match="too old"):
            adapter.verify(stale)
        fresh = vendor.deliver(payload, webhook_id="msg_same")
        again = vendor.deliver(payload, webhook_id="msg_same")
        adapter.verify(fresh)
        adapter.verify(again)
        # the same delivery id within the window: one key, stored once by ingest
        assert adapter.parse(fresh)[0].external_id == adapter.parse(again)[0].external_id

    def test_the_receiver_verifies_our_signature_with_the_standards_library(  # type: ignore[no-untyped-def]
        self, servers, vendor
    ):
        wrong = dataclasses.replace(
            _account(servers[0]),
            credentials={
                "signing_secret": "whsec_" + "d3Jvbmctc2VjcmV0LXdyb25nLXNlY3JldC13cm9uZw=="
            },
        )
        with pytest.raises(PermanentError, match="refused the signature"):
            CustomAdapter(wrong).send(OutboundMessage("b-9", "t-9", "hi"))
        (system,) = vendor.control("GET", f"/_state?account={DEMO_SYSTEM}")["accounts"]
        assert system["refused_signatures"] == 1 and system["received"] == 0

    def test_endpoint_connected_tells_the_system_where_to_post(self, adapter, vendor):  # type: ignore[no-untyped-def]
        adapter.setup_webhook("http://bridge.test/webhooks/custom/acct-key")
        (system,) = vendor.control("GET", f"/_state?account={DEMO_SYSTEM}")["accounts"]
        assert system["inbound_url"] == "http://bridge.test/webhooks/custom/acct-key"
        assert system["events"] == ["endpoint.connected"]

    def test_a_repeated_send_is_dropped_by_the_receiver(self, adapter, vendor):  # type: ignore[no-untyped-def]
        thread = vendor.thread()
        first = adapter.send(OutboundMessage("b-10", thread, "once"))
        again = adapter.send(OutboundMessage("b-10", thread, "once"))
        assert [p.external_id for p in vendor.sent(thread)] == list(first.external_ids)
        assert again.external_ids == first.external_ids
        (system,) = vendor.control("GET", f"/_state?account={DEMO_SYSTEM}")["accounts"]
        assert system["duplicates"] == 1

    def test_a_customer_message_through_the_sandbox(self, adapter, vendor):  # type: ignore[no-untyped-def]
        request = vendor.deliver(SAMPLES[1].payload)
        adapter.verify(request)
        (message,) = adapter.parse(request)
        assert isinstance(message, InboundMessage)
        assert (message.external_thread_id, message.text) == ("order-42", "Где мой заказ? 📦")
