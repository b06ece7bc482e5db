"""The WhatsApp Cloud API sandbox behaves like Meta's (FACTS.md §2).

The Graph API is driven through Flask's test client; the webhooks the sandbox
posts go over real HTTP to a small receiver (werkzeug on port 0) standing in
for the bridge, which checks the signature on the raw bytes as a bridge must.
Every payload of the WhatsApp corpus (pywa's update fixtures, provenance in
the corpus MANIFEST.json) goes through ``/_deliver``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask, Response, request
from flask.testing import FlaskClient
from werkzeug.serving import make_server

from sandbox.whatsapp import (
    DEMO_ACCESS_TOKEN,
    DEMO_APP_SECRET,
    DEMO_DISPLAY_PHONE_NUMBER,
    DEMO_PHONE_NUMBER_ID,
    DEMO_VERIFY_TOKEN,
    DEMO_WABA_ID,
    create_app,
)

ROOT = Path(__file__).resolve().parents[2]
AUTH = {"Authorization": f"Bearer {DEMO_ACCESS_TOKEN}"}
SEND = f"/v21.0/{DEMO_PHONE_NUMBER_ID}/messages"
CUSTOMER = "79990001234"
OTHER = {
    "phone_number_id": "200000000000001",
    "display_phone_number": "4915112345678",
    "waba_id": "300000000000001",
    "access_token": "EAAOtherTenantToken0000000000",
}
FAST = {"status_delay_s": 0, "redelivery": {"attempts": 0, "base_s": 1, "cap_s": 1}}


# -- helpers -----------------------------------------------------------------------------------


def wait_for(predicate: Callable[[], Any], timeout: float = 5.0) -> Any:
    """Poll until ``predicate()`` is truthy (its value), or fail at the deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


class Receiver:
    """The bridge's webhook: answers Meta's handshake, records each POST with
    its raw body and whether its X-Hub-Signature-256 is valid."""

    def __init__(self, secret: str = DEMO_APP_SECRET, token: str = DEMO_VERIFY_TOKEN) -> None:
        self.secret, self.token = secret, token
        self.posts: list[dict[str, Any]] = []
        self.statuses: list[int] = []  # answers to give, then 200
        self.app = Flask("whatsapp-receiver")
        self.app.add_url_rule("/webhooks/whatsapp/app", "hook", self._hook, methods=["GET", "POST"])

    def _hook(self) -> Response:
        if request.method == "GET":
            if (
                request.args.get("hub.mode") == "subscribe"
                and request.args.get("hub.verify_token") == self.token
            ):
                return Response(request.args.get("hub.challenge", ""), 200)
            return Response("forbidden", 403)
        raw = request.get_data()
        expected = "sha256=" + hmac.new(self.secret.encode(), raw, hashlib.sha256).hexdigest()
        self.posts.append(
            {
                "raw": raw,
                "json": json.loads(raw),
                "headers": dict(request.headers),
                "signed": hmac.compare_digest(
                    request.headers.get("X-Hub-Signature-256", ""), expected
                ),
            }
        )
        return Response("EVENT_RECEIVED", self.statuses.pop(0) if self.statuses else 200)

    def statuses_of(self, wamid: str) -> list[dict[str, Any]]:
        return [
            s
            for p in self.posts
            for e in p["json"]["entry"]
            for c in e["changes"]
            for s in c["value"].get("statuses", [])
            if s["id"] == wamid
        ]


@contextmanager
def serve(app: Any) -> Iterator[str]:
    """Serve a WSGI app on 127.0.0.1:<free port> (a short poll: quick to stop)."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
    )
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=5)


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    hook = Receiver()
    with serve(hook.app) as base:
        yield hook, f"{base}/webhooks/whatsapp/app"


def make(url: str | None = None, **config: Any) -> FlaskClient:
    return create_app({**FAST, "webhook_url": url, **config}).test_client()


def customer_writes(client: FlaskClient, sender: str = CUSTOMER, **extra: Any) -> dict[str, Any]:
    answer = client.post("/_customer", json={"from": sender, "name": "Anna", "text": "hi", **extra})
    assert answer.status_code == 200, answer.json
    body: dict[str, Any] = answer.json
    return body


def text(to: str = CUSTOMER, body: str = "Hello from the CRM", **extra: Any) -> dict[str, Any]:
    return {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": to,
        "type": "text",
        "text": {"body": body},
        **extra,
    }


def template(
    name: str = "order_update", code: str = "en", params: tuple[str, ...] = ("#1001", "shipped")
) -> dict[str, Any]:
    return {
        "messaging_product": "whatsapp",
        "to": CUSTOMER,
        "type": "template",
        "template": {
            "name": name,
            "language": {"code": code},
            "components": [
                {"type": "body", "parameters": [{"type": "text", "text": p} for p in params]}
            ],
        },
    }


def error_of(response: Any) -> dict[str, Any]:
    """Meta's error body, its shape asserted."""
    body = response.json
    assert set(body) == {"error"}
    error: dict[str, Any] = body["error"]
    assert error["type"] == "OAuthException"
    assert isinstance(error["code"], int) and isinstance(error["fbtrace_id"], str)
    assert set(error) <= {"message", "type", "code", "error_subcode", "error_data", "fbtrace_id"}
    if "error_data" in error:
        assert error["error_data"]["messaging_product"] == "whatsapp"
        assert isinstance(error["error_data"]["details"], str)
    return error


# -- auth --------------------------------------------------------------------------------------


def test_missing_or_wrong_token_is_401_code_190() -> None:
    client = make()
    for headers in ({}, {"Authorization": "Bearer EAAnot-a-token"}, {"Authorization": "Basic x"}):
        response = client.post(SEND, json=text(), headers=headers)
        assert response.status_code == 401
        error = error_of(response)
        assert error["code"] == 190
        assert "access token" in error["message"]
        assert "invalid_token" in response.headers["WWW-Authenticate"]
    assert client.get("/_sent").json == {"sent": []}


def test_a_token_opens_only_its_own_number() -> None:
    client = make(
        accounts=[
            {
                "phone_number_id": DEMO_PHONE_NUMBER_ID,
                "display_phone_number": DEMO_DISPLAY_PHONE_NUMBER,
                "waba_id": DEMO_WABA_ID,
                "access_token": DEMO_ACCESS_TOKEN,
            },
            OTHER,
        ]
    )
    response = client.post(f"/v21.0/{OTHER['phone_number_id']}/messages", json=text(), headers=AUTH)
    assert response.status_code == 400
    error = error_of(response)
    assert (error["code"], error["error_subcode"]) == (100, 33)
    assert OTHER["phone_number_id"] in error["message"]


def test_old_graph_versions_are_refused_and_v17_up_accepted(receiver: Any) -> None:
    _, url = receiver
    client = make(url)
    customer_writes(client)
    assert (
        error_of(client.post(f"/v16.0/{DEMO_PHONE_NUMBER_ID}/messages", json=text(), headers=AUTH))[
            "code"
        ]
        == 2635
    )
    for version in ("17.0", "21.0", "23.0"):
        response = client.post(
            f"/v{version}/{DEMO_PHONE_NUMBER_ID}/messages", json=text(), headers=AUTH
        )
        assert response.status_code == 200, response.json


# -- sending -----------------------------------------------------------------------------------


def test_send_answers_meta_success_shape_and_is_in_sent(receiver: Any) -> None:
    _, url = receiver
    client = make(url, status_webhooks="off")
    customer_writes(client)
    response = client.post(
        SEND, json=text(to="+7 999 000-12-34", biz_opaque_callback_data="job-7"), headers=AUTH
    )
    assert response.status_code == 200
    body = response.json
    wamid = body["messages"][0]["id"]
    assert body == {
        "messaging_product": "whatsapp",
        "contacts": [{"input": "+7 999 000-12-34", "wa_id": CUSTOMER}],
        "messages": [{"id": wamid}],
    }
    assert wamid.startswith("wamid.")
    (sent,) = client.get(f"/_sent?to={CUSTOMER}").json["sent"]
    assert sent["id"] == wamid and sent["to"] == "+7 999 000-12-34"
    assert sent["body"]["text"] == {"body": "Hello from the CRM"}
    assert sent["phone_number_id"] == DEMO_PHONE_NUMBER_ID and sent["time"] > 0
    assert client.get("/_sent?to=15550000000").json == {"sent": []}


def test_text_is_limited_to_4096_characters(receiver: Any) -> None:
    _, url = receiver
    client = make(url, status_webhooks="off")
    customer_writes(client)
    assert client.post(SEND, json=text(body="я" * 4096), headers=AUTH).status_code == 200
    response = client.post(SEND, json=text(body="я" * 4097), headers=AUTH)
    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == 100 and error["message"] == "(#100) Invalid parameter"
    assert "4096" in error["error_data"]["details"]
    assert len(client.get("/_sent").json["sent"]) == 1


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"messaging_product": "whatsapp", "to": CUSTOMER, "type": "fax", "fax": {}}, 100),
        ({"to": CUSTOMER, "type": "text", "text": {"body": "x"}}, 131008),
        ({"messaging_product": "whatsapp", "to": CUSTOMER, "type": "text", "text": {}}, 131008),
        ({"messaging_product": "whatsapp", "type": "text", "text": {"body": "x"}}, 131008),
        ({"messaging_product": "whatsapp", "to": "not a number", "text": {"body": "x"}}, 131009),
        ({"messaging_product": "whatsapp", "to": CUSTOMER, "type": "image", "image": {}}, 131008),
        (
            {
                "messaging_product": "whatsapp",
                "to": CUSTOMER,
                "type": "image",
                "image": {"link": "ftp://x/y.jpg"},
            },
            131009,
        ),
        (
            {
                "messaging_product": "whatsapp",
                "to": CUSTOMER,
                "type": "location",
                "location": {"latitude": 91, "longitude": 0},
            },
            131009,
        ),
        (
            {
                "messaging_product": "whatsapp",
                "to": CUSTOMER,
                "type": "template",
                "template": {"name": "order_update"},
            },
            131008,
        ),
    ],
    ids=[
        "unknown-type",
        "no-product",
        "no-body",
        "no-to",
        "bad-to",
        "media-without-id-or-link",
        "media-bad-link",
        "latitude-out-of-range",
        "template-without-language",
    ],
)
def test_invalid_bodies_get_meta_error_codes(
    receiver: Any, body: dict[str, Any], code: int
) -> None:
    _, url = receiver
    client = make(url)
    customer_writes(client)
    response = client.post(SEND, json=body, headers=AUTH)
    assert response.status_code == 400
    assert error_of(response)["code"] == code


def test_other_message_types_are_accepted_in_the_window(receiver: Any) -> None:
    _, url = receiver
    client = make(url, status_webhooks="off", fetch_media_links=False)
    inbound = customer_writes(client)
    bodies = [
        {"type": "image", "image": {"link": "https://example.com/a.jpg", "caption": "look"}},
        {"type": "location", "location": {"latitude": 55.75, "longitude": "37.61"}},
        {"type": "reaction", "reaction": {"message_id": inbound["message_id"], "emoji": "👍"}},
        {
            "type": "interactive",
            "interactive": {
                "type": "button",
                "body": {"text": "Pick one"},
                "action": {"buttons": [{"type": "reply", "reply": {"id": "yes", "title": "Yes"}}]},
            },
        },
        {"type": "text", "text": {"body": "re"}, "context": {"message_id": inbound["message_id"]}},
    ]
    for extra in bodies:
        response = client.post(
            SEND, json={"messaging_product": "whatsapp", "to": CUSTOMER, **extra}, headers=AUTH
        )
        assert response.status_code == 200, (extra["type"], response.json)
    assert [s["type"] for s in client.get("/_sent").json["sent"]] == [
        "image",
        "location",
        "reaction",
        "interactive",
        "text",
    ]


def test_mark_as_read_of_a_received_message(receiver: Any) -> None:
    _, url = receiver
    client = make(url)
    wamid = customer_writes(client)["message_id"]
    read = {"messaging_product": "whatsapp", "status": "read", "message_id": wamid}
    response = client.post(SEND, json=read, headers=AUTH)
    assert (response.status_code, response.json) == (200, {"success": True})
    (account,) = client.get(f"/_state?account={DEMO_PHONE_NUMBER_ID}").json["accounts"]
    assert account["read"] == [wamid]
    unknown = client.post(SEND, json={**read, "message_id": "wamid.nope"}, headers=AUTH)
    assert error_of(unknown)["code"] == 100
    assert client.get("/_sent").json == {"sent": []}  # a read receipt is not a message


# -- the 24-hour window and templates ----------------------------------------------------------


def test_free_form_outside_the_window_is_131047_and_templates_pass(receiver: Any) -> None:
    _, url = receiver
    client = make(url, status_webhooks="off")
    response = client.post(SEND, json=text(), headers=AUTH)
    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == 131047 and error["message"] == "(#131047) Re-engagement message"
    assert "24 hours" in error["error_data"]["details"]

    response = client.post(SEND, json=template(), headers=AUTH)
    assert response.status_code == 200, response.json
    assert response.json["messages"][0]["message_status"] == "accepted"
    assert (
        client.post(
            SEND, json=template(code="ru", params=("#7", "в пути")), headers=AUTH
        ).status_code
        == 200
    )

    customer_writes(client)  # the customer writes: the window opens ...
    assert client.post(SEND, json=text(), headers=AUTH).status_code == 200
    assert client.post("/_clock", json={"advance": 86400 - 60}).status_code == 200
    assert client.post(SEND, json=text(), headers=AUTH).status_code == 200
    client.post("/_clock", json={"advance": 120})  # ... for 24 hours of the sandbox clock
    assert error_of(client.post(SEND, json=text(), headers=AUTH))["code"] == 131047
    customer_writes(client)
    assert client.post(SEND, json=text(), headers=AUTH).status_code == 200


def test_the_window_is_per_number_and_customer(receiver: Any) -> None:
    _, url = receiver
    client = make(
        url,
        status_webhooks="off",
        accounts=[
            {
                "phone_number_id": DEMO_PHONE_NUMBER_ID,
                "display_phone_number": DEMO_DISPLAY_PHONE_NUMBER,
                "waba_id": DEMO_WABA_ID,
                "access_token": DEMO_ACCESS_TOKEN,
            },
            OTHER,
        ],
    )
    customer_writes(client, account=OTHER["phone_number_id"])
    other_auth = {"Authorization": f"Bearer {OTHER['access_token']}"}
    assert (
        client.post(
            f"/v21.0/{OTHER['phone_number_id']}/messages", json=text(), headers=other_auth
        ).status_code
        == 200
    )
    assert error_of(client.post(SEND, json=text(), headers=AUTH))["code"] == 131047
    customer_writes(client, sender="79990009999")
    assert error_of(client.post(SEND, json=text(), headers=AUTH))["code"] == 131047


def test_window_error_as_a_failed_status(receiver: Any) -> None:
    hook, url = receiver
    client = make(url, window_error="status")
    response = client.post(SEND, json=text(), headers=AUTH)
    assert response.status_code == 200
    wamid = response.json["messages"][0]["id"]
    (status,) = wait_for(lambda: hook.statuses_of(wamid))
    assert status["status"] == "failed"
    assert status["errors"][0]["code"] == 131047
    assert status["errors"][0]["title"] == "Re-engagement message"


@pytest.mark.parametrize(
    ("name", "code"),
    [("no_such_template", "en"), ("order_update", "de"), ("spring_sale", "en")],
    ids=["unknown", "no-translation", "rejected"],
)
def test_template_must_exist_and_be_approved_132001(name: str, code: str) -> None:
    client = make()
    response = client.post(SEND, json=template(name=name, code=code), headers=AUTH)
    assert response.status_code == 404
    error = error_of(response)
    assert error["code"] == 132001
    assert error["message"] == "(#132001) Template name does not exist in the translation"
    assert f"({name}) does not exist in {code}" in error["error_data"]["details"]


def test_template_parameters_must_match_its_placeholders() -> None:
    client = make(status_webhooks="off")
    response = client.post(SEND, json=template(params=("#1001",)), headers=AUTH)
    assert error_of(response)["code"] == 132000
    no_params = {
        "messaging_product": "whatsapp",
        "to": CUSTOMER,
        "type": "template",
        "template": {"name": "hello_world", "language": {"code": "en_US"}},
    }
    assert client.post(SEND, json=no_params, headers=AUTH).status_code == 200


# -- limits ------------------------------------------------------------------------------------


def test_throughput_per_number_is_130429() -> None:
    client = make(status_webhooks="off", throughput_per_s=3)
    client.post("/_clock", json={"freeze": True})
    answers = [client.post(SEND, json=template(), headers=AUTH) for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 400]
    error = error_of(answers[-1])
    assert error["code"] == 130429 and error["message"] == "(#130429) Rate limit hit"
    client.post("/_clock", json={"advance": 1})
    assert client.post(SEND, json=template(), headers=AUTH).status_code == 200
    client.post("/_config", json={"throughput_http_status": 429})
    client.post("/_clock", json={"advance": 0.0})
    statuses = [client.post(SEND, json=template(), headers=AUTH).status_code for _ in range(4)]
    assert 429 in statuses
    stats = client.get("/_stats?requests=0").json
    assert stats["by_error_code"]["130429"] >= 2


def test_pair_limit_131056_only_when_enforced() -> None:
    client = make(status_webhooks="off")
    client.post("/_clock", json={"freeze": True})
    assert all(
        client.post(SEND, json=template(), headers=AUTH).status_code == 200 for _ in range(5)
    )  # default: not enforced

    client.post(
        "/_config", json={"enforce_pair_limit": True, "pair_interval_s": 6, "pair_burst": 2}
    )
    client.post("/_reset")
    answers = [client.post(SEND, json=template(), headers=AUTH) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    error = error_of(answers[-1])
    assert error["code"] == 131056
    assert "pair rate limit hit" in error["message"]
    other = {**template(), "to": "79990005555"}
    assert client.post(SEND, json=other, headers=AUTH).status_code == 200  # others unaffected
    client.post("/_clock", json={"advance": 6})
    assert client.post(SEND, json=template(), headers=AUTH).status_code == 200
    assert error_of(client.post(SEND, json=template(), headers=AUTH))["code"] == 131056


# -- media -------------------------------------------------------------------------------------


def test_inbound_media_downloads_in_two_steps(receiver: Any) -> None:
    hook, url = receiver
    client = make(url, media_url_ttl_s=300)
    payload = _corpus_payloads()["message.json"]["document"] if _corpus_payloads() else None
    if payload is None:
        pytest.skip("the WhatsApp corpus is not available")
    answer = client.post("/_deliver", json={"payload": payload}).json
    assert answer["status"] == 200 and answer["media"] == ["1234567890987654321"]

    described = client.get("/v21.0/1234567890987654321", headers=AUTH)
    assert described.status_code == 200
    info = described.json
    assert set(info) == {"messaging_product", "url", "mime_type", "sha256", "file_size", "id"}
    assert info["mime_type"] == "application/pdf" and info["id"] == "1234567890987654321"
    media_path = info["url"].removeprefix("http://localhost")
    assert media_path.startswith("/_media/1234567890987654321?")

    assert client.get(media_path).status_code == 401  # no Bearer header
    assert client.get(f"{media_path}&access_token={DEMO_ACCESS_TOKEN}").status_code == 401
    assert client.get(media_path, headers={"Authorization": "Bearer nope"}).status_code == 401
    got = client.get(media_path, headers=AUTH)
    assert got.status_code == 200 and got.mimetype == "application/pdf"
    assert got.data.startswith(b"%PDF-")
    assert hashlib.sha256(got.data).hexdigest() == info["sha256"]
    assert len(got.data) == info["file_size"]

    client.post("/_clock", json={"advance": 301})  # the URL expires; a new one works
    assert client.get(media_path, headers=AUTH).status_code == 404
    fresh = client.get("/v21.0/1234567890987654321", headers=AUTH).json["url"]
    assert client.get(fresh.removeprefix("http://localhost"), headers=AUTH).status_code == 200

    unknown = client.get("/v21.0/999", headers=AUTH)
    assert unknown.status_code == 400 and error_of(unknown)["error_subcode"] == 33
    assert hook.posts[0]["signed"]


def test_customer_media_carries_its_bytes_and_inline_urls_point_at_the_sandbox(
    receiver: Any,
) -> None:
    hook, url = receiver
    client = make(url)
    content = b"\x89PNG\r\n\x1a\n-the-customer's-picture"
    answer = customer_writes(
        client,
        media={
            "type": "image",
            "mime_type": "image/png",
            "content_base64": base64.b64encode(content).decode(),
            "caption": "broken",
        },
    )
    image = hook.posts[-1]["json"]["entry"][0]["changes"][0]["value"]["messages"][0]["image"]
    assert image["caption"] == "broken" and answer["media"] == [image["id"]]
    assert base64.b64decode(image["sha256"]) == hashlib.sha256(content).digest()
    info = client.get(f"/v21.0/{image['id']}", headers=AUTH).json
    assert client.get(info["url"].removeprefix("http://localhost"), headers=AUTH).data == content

    payloads = _corpus_payloads()
    if payloads:
        with_url = client.post(
            "/_deliver", json={"payload": payloads["message.json"]["media_with_url"]}
        ).json["payload"]
        medium = with_url["entry"][0]["changes"][0]["value"]["messages"][0]["image"]
        assert medium["url"].startswith("http://localhost/_media/65463453?")


def test_upload_then_send_by_id_and_delete(receiver: Any) -> None:
    _, url = receiver
    client = make(url, status_webhooks="off")
    customer_writes(client)
    upload = client.post(
        f"/v21.0/{DEMO_PHONE_NUMBER_ID}/media",
        headers=AUTH,
        data={
            "messaging_product": "whatsapp",
            "type": "application/pdf",
            "file": (io.BytesIO(b"%PDF-1.4 invoice"), "invoice.pdf"),
        },
    )
    assert upload.status_code == 200
    media_id = upload.json["id"]
    assert set(upload.json) == {"id"}
    sent = client.post(
        SEND,
        headers=AUTH,
        json={
            "messaging_product": "whatsapp",
            "to": CUSTOMER,
            "type": "document",
            "document": {"id": media_id, "filename": "invoice.pdf"},
        },
    )
    assert sent.status_code == 200
    assert client.delete(f"/v21.0/{media_id}", headers=AUTH).json == {"success": True}
    again = client.post(
        SEND,
        headers=AUTH,
        json={
            "messaging_product": "whatsapp",
            "to": CUSTOMER,
            "type": "document",
            "document": {"id": media_id},
        },
    )
    assert error_of(again)["code"] == 100


# -- templates ---------------------------------------------------------------------------------


def test_message_templates_listing() -> None:
    client = make()
    listing = client.get(f"/v21.0/{DEMO_WABA_ID}/message_templates", headers=AUTH).json
    names = {(t["name"], t["language"], t["status"]) for t in listing["data"]}
    assert {
        ("order_update", "en", "APPROVED"),
        ("order_update", "ru", "APPROVED"),
        ("spring_sale", "en", "REJECTED"),
    } <= names
    for item in listing["data"]:
        assert {"name", "language", "status", "category", "components", "id"} <= set(item)
    assert set(listing["paging"]["cursors"]) == {"before", "after"}

    first = client.get(f"/v21.0/{DEMO_WABA_ID}/message_templates?limit=2", headers=AUTH).json
    assert len(first["data"]) == 2 and "next" in first["paging"]
    after = first["paging"]["cursors"]["after"]
    rest = client.get(
        f"/v21.0/{DEMO_WABA_ID}/message_templates?limit=2&after={after}", headers=AUTH
    ).json
    assert [t["id"] for t in first["data"] + rest["data"]] == [t["id"] for t in listing["data"]]
    approved = client.get(
        f"/v21.0/{DEMO_WABA_ID}/message_templates?status=APPROVED", headers=AUTH
    ).json["data"]
    assert all(t["status"] == "APPROVED" for t in approved) and len(approved) == 3

    foreign = client.get("/v21.0/300000000000001/message_templates", headers=AUTH)
    assert foreign.status_code == 400 and error_of(foreign)["error_subcode"] == 33
    assert client.get(f"/v21.0/{DEMO_WABA_ID}/message_templates").status_code == 401


# -- status webhooks ---------------------------------------------------------------------------


def _signed_statuses(hook: Receiver, wamid: str, count: int) -> list[dict[str, Any]]:
    statuses: list[dict[str, Any]] = wait_for(
        lambda: len(hook.statuses_of(wamid)) >= count and hook.statuses_of(wamid)
    )
    for post in hook.posts:
        assert post["signed"], "X-Hub-Signature-256 must be the HMAC of the raw body"
        assert post["headers"]["X-Hub-Signature"].startswith("sha1=")
        assert post["headers"]["Content-Type"] == "application/json"
    return statuses


def test_statuses_are_signed_meta_envelopes_in_order(receiver: Any) -> None:
    hook, url = receiver
    client = make(url)
    customer_writes(client)
    response = client.post(SEND, json=text(biz_opaque_callback_data="ticket-42"), headers=AUTH)
    wamid = response.json["messages"][0]["id"]
    statuses = _signed_statuses(hook, wamid, 3)
    assert [s["status"] for s in statuses] == ["sent", "delivered", "read"]
    post = next(
        p for p in hook.posts if p["json"]["entry"][0]["changes"][0]["value"].get("statuses")
    )
    assert post["json"]["object"] == "whatsapp_business_account"
    (entry,) = post["json"]["entry"]
    assert entry["id"] == DEMO_WABA_ID
    (change,) = entry["changes"]
    assert change["field"] == "messages"
    assert change["value"]["messaging_product"] == "whatsapp"
    assert change["value"]["metadata"] == {
        "display_phone_number": DEMO_DISPLAY_PHONE_NUMBER,
        "phone_number_id": DEMO_PHONE_NUMBER_ID,
    }
    for status in statuses:
        assert status["recipient_id"] == CUSTOMER
        assert isinstance(status["timestamp"], str) and status["timestamp"].isdigit()
        assert status["biz_opaque_callback_data"] == "ticket-42"
        assert status["conversation"]["origin"] == {"type": "service"}
        assert status["pricing"] == {
            "billable": True,
            "pricing_model": "CBP",
            "category": "service",
        }
    assert "expiration_timestamp" in statuses[0]["conversation"]
    assert len({s["conversation"]["id"] for s in statuses}) == 1
    wait_for(lambda: len(client.get("/_sent").json["sent"][0]["statuses"]) == 3)
    # a template opens a conversation of its own category
    tpl = client.post(SEND, json=template(), headers=AUTH).json["messages"][0]["id"]
    assert _signed_statuses(hook, tpl, 3)[0]["conversation"]["origin"] == {"type": "utility"}


def test_statuses_shuffled(receiver: Any) -> None:
    hook, url = receiver
    client = make(url, status_webhooks="shuffled", seed=3)
    customer_writes(client)
    wamid = client.post(SEND, json=text(), headers=AUTH).json["messages"][0]["id"]
    statuses = _signed_statuses(hook, wamid, 3)
    order = [s["status"] for s in statuses]
    assert sorted(order) == ["delivered", "read", "sent"] and order != ["sent", "delivered", "read"]


def test_statuses_duplicated(receiver: Any) -> None:
    hook, url = receiver
    client = make(url, status_webhooks="duplicated", duplicate_rate=0.0)
    customer_writes(client)
    wamid = client.post(SEND, json=text(), headers=AUTH).json["messages"][0]["id"]
    statuses = _signed_statuses(hook, wamid, 4)
    names = [s["status"] for s in statuses]
    assert len(names) == 4 and set(names) == {"sent", "delivered", "read"}
    assert names.count("sent") == 2  # at least one status comes twice


def test_statuses_off_and_failed_rate(receiver: Any) -> None:
    hook, url = receiver
    client = make(url, status_webhooks="off")
    customer_writes(client)
    client.post(SEND, json=text(), headers=AUTH)
    client.post("/_config", json={"status_webhooks": "in_order", "failed_rate": 1.0})
    wamid = client.post(SEND, json=text(), headers=AUTH).json["messages"][0]["id"]
    (failed,) = _signed_statuses(hook, wamid, 1)
    assert failed["status"] == "failed" and failed["errors"][0]["code"] == 131026
    assert set(failed["errors"][0]) == {"code", "title", "message", "error_data", "href"}
    # both sends' status jobs are done; the first one (statuses off) posted nothing
    wait_for(lambda: client.get("/_state").json["in_flight"] == 0)
    assert (
        sum(1 for p in hook.posts if p["json"]["entry"][0]["changes"][0]["value"].get("statuses"))
        == 1
    )


def test_a_failed_link_download_fails_the_message(receiver: Any) -> None:
    hook, url = receiver
    client = make(url)
    customer_writes(client)
    missing = url.replace("/webhooks/whatsapp/app", "/missing.jpg")
    wamid = client.post(
        SEND,
        headers=AUTH,
        json={
            "messaging_product": "whatsapp",
            "to": CUSTOMER,
            "type": "image",
            "image": {"link": missing},
        },
    ).json["messages"][0]["id"]
    (failed,) = _signed_statuses(hook, wamid, 1)
    assert failed["errors"][0]["code"] == 131053
    assert client.get("/_sent").json["sent"][0]["media_fetch"]["status"] == 404


def test_a_refused_webhook_is_redelivered_on_the_sandbox_clock(receiver: Any) -> None:
    hook, url = receiver
    client = make(url, redelivery={"attempts": 3, "base_s": 60, "cap_s": 600})
    hook.statuses[:] = [500]
    answer = customer_writes(client)
    assert answer["status"] == 500 and answer["delivered"] is False
    assert client.get("/_state").json["redeliveries_pending"] == 1
    client.post("/_clock", json={"advance": 61})
    wait_for(lambda: len(hook.posts) == 2)
    assert hook.posts[0]["raw"] == hook.posts[1]["raw"] and hook.posts[1]["signed"]
    # The sandbox logs a delivery once the receiver's answer is back, after the receiver
    # already holds the post.
    deliveries = wait_for(
        lambda: (d if len(d := client.get("/_deliveries?kind=customer").json["deliveries"]) == 2
                 else None)
    )
    assert [(d["attempt"], d["status"]) for d in deliveries] == [(1, 500), (2, 200)]


# -- /_deliver ---------------------------------------------------------------------------------


def _corpus_dir() -> Path | None:
    for candidate in (ROOT / "tests" / "fixtures" / "corpora", ROOT.parent / "shared" / "corpora"):
        if (candidate / "whatsapp").is_dir():
            return candidate
    return None


def _corpus_payloads() -> dict[str, dict[str, Any]]:
    base = _corpus_dir()
    if base is None:
        return {}
    return {
        path.name: json.loads(path.read_text())
        for path in sorted((base / "whatsapp").rglob("*.json"))
    }


def _corpus_cases() -> list[Any]:
    base = _corpus_dir()
    if base is None:
        return [
            pytest.param(
                None,
                None,
                None,
                marks=pytest.mark.skip(reason="the WhatsApp corpus is not available"),
                id="no-corpus",
            )
        ]
    manifest = (
        {item["file"]: item for item in json.loads((base / "MANIFEST.json").read_text())}
        if (base / "MANIFEST.json").exists()
        else {}
    )
    cases = []
    for path in sorted((base / "whatsapp").rglob("*.json")):
        rel = path.relative_to(base).as_posix()
        source = manifest.get(rel)
        label = f"{source['repo']}:{source['path']}" if source else rel
        for name, payload in json.loads(path.read_text()).items():
            cases.append(pytest.param(label, name, payload, id=f"{path.stem}-{name}"))
    return cases


@pytest.mark.parametrize(("source", "name", "payload"), _corpus_cases())
def test_deliver_moves_every_corpus_payload_onto_the_account(
    receiver: Any, source: str, name: str, payload: dict[str, Any]
) -> None:
    """Each payload (``source``: where it comes from) reaches the bridge signed,
    with the business's ids rewritten and nothing else changed."""
    hook, url = receiver
    client = make(
        url,
        status_webhooks="off",
        accounts=[
            {
                "phone_number_id": DEMO_PHONE_NUMBER_ID,
                "display_phone_number": DEMO_DISPLAY_PHONE_NUMBER,
                "waba_id": DEMO_WABA_ID,
                "access_token": DEMO_ACCESS_TOKEN,
            },
            OTHER,
        ],
    )
    for account in (None, OTHER["phone_number_id"]):
        token = OTHER["access_token"] if account else DEMO_ACCESS_TOKEN
        auth = {"Authorization": f"Bearer {token}"}
        answer = client.post("/_deliver", json={"payload": payload, "account": account})
        assert answer.status_code == 200, (source, name, answer.json)
        result = answer.json
        assert result["status"] == 200 and result["body"] == "EVENT_RECEIVED", source
        got = hook.posts[-1]
        assert got["signed"], source
        assert got["json"] == result["payload"]
        target = (
            OTHER
            if account
            else {
                "phone_number_id": DEMO_PHONE_NUMBER_ID,
                "display_phone_number": DEMO_DISPLAY_PHONE_NUMBER,
                "waba_id": DEMO_WABA_ID,
            }
        )
        expected = json.loads(json.dumps(payload))
        for entry in expected["entry"]:
            entry["id"] = target["waba_id"]
            for change in entry["changes"]:
                value = change["value"]
                if "metadata" in value:
                    value["metadata"] = {
                        **value["metadata"],
                        "display_phone_number": target["display_phone_number"],
                        "phone_number_id": target["phone_number_id"],
                    }
        _drop_media_urls(got["json"])
        _drop_media_urls(expected)
        assert got["json"] == expected, source
        # the customers who wrote can be answered (24-hour window), media downloaded
        for customer in (c for c in result["customers"] if c.isdigit()):  # not "<…>"
            sent = client.post(
                f"/v21.0/{target['phone_number_id']}/messages", json=text(to=customer), headers=auth
            )
            assert sent.status_code == 200, (source, sent.json)
        for media_id in result["media"]:
            assert client.get(f"/v21.0/{media_id}", headers=auth).status_code == 200, source


def _drop_media_urls(node: Any) -> None:
    """Inline media URLs are the sandbox's (checked elsewhere)."""
    if isinstance(node, dict):
        if "mime_type" in node and "url" in node:
            node.pop("url")
        for value in node.values():
            _drop_media_urls(value)
    elif isinstance(node, list):
        for item in node:
            _drop_media_urls(item)


def test_customer_payload_is_real_shaped_and_escaped(receiver: Any) -> None:
    hook, url = receiver
    client = make(url)
    answer = customer_writes(client, name="Анна Žofie", text="Привет 👋", user_id="US.1234")
    raw = hook.posts[-1]["raw"]
    assert raw.isascii() and b"\\u041f" in raw  # Meta escapes non-ASCII, and signs that
    value = hook.posts[-1]["json"]["entry"][0]["changes"][0]["value"]
    assert value["contacts"] == [
        {"profile": {"name": "Анна Žofie"}, "wa_id": CUSTOMER, "user_id": "US.1234"}
    ]
    (message,) = value["messages"]
    assert message == {
        "from": CUSTOMER,
        "id": answer["message_id"],
        "type": "text",
        "timestamp": message["timestamp"],
        "text": {"body": "Привет 👋"},
    }
    assert message["timestamp"].isdigit()
    # the business-scoped user id reaches the same customer and window
    response = client.post(SEND, json=text(to="US.1234"), headers=AUTH)
    assert response.status_code == 200
    assert response.json["contacts"] == [{"input": "US.1234", "wa_id": CUSTOMER}]


def test_deliver_needs_a_webhook_and_a_payload(receiver: Any) -> None:
    _, url = receiver
    client = make()
    assert client.post("/_deliver", json={"payload": {"entry": []}}).status_code == 409
    client.post("/_config", json={"webhook_url": url})
    assert client.post("/_deliver", json={}).status_code == 400
    assert (
        client.post("/_deliver", json={"payload": {"object": "x"}}).json["error"]
        == "invalid_payload"
    )
    assert (
        client.post("/_deliver", json={"payload": {"entry": []}, "account": "1"}).status_code == 404
    )


# -- handshake, control, faults ----------------------------------------------------------------


def test_verify_handshake(receiver: Any) -> None:
    _, url = receiver
    client = make(url)
    result = client.post("/_verify").json
    assert result["ok"] is True and result["status"] == 200
    assert result["body"] == str(result["challenge"])
    wrong = client.post("/_verify", json={"verify_token": "not-it"}).json
    assert wrong["ok"] is False and wrong["status"] == 403
    assert client.get("/_state").json["webhook"]["verification"]["ok"] is False


def test_config_and_state() -> None:
    client = make()
    config = client.get("/_config").json
    assert config["accounts"][0] == {
        "phone_number_id": "106540352242922",
        "display_phone_number": "15550783881",
        "waba_id": "102290129340398",
        "access_token": DEMO_ACCESS_TOKEN,
        "verified_name": "Demo Company",
    }
    assert config["app_secret"] == DEMO_APP_SECRET and config["verify_token"] == DEMO_VERIFY_TOKEN
    for bad in (
        {"status_webhooks": "sideways"},
        {"webhook_url": "ftp://x"},
        {"nope": 1},
        {"accounts": []},
        {"faults": {"error_rate": 1}},
    ):
        response = client.post("/_config", json=bad)
        assert response.status_code == 400 and response.json["error"] == "invalid_config"
    state = client.get("/_state?account=%2B15550783881").json
    assert state["accounts"][0]["account"] == DEMO_PHONE_NUMBER_ID
    assert client.get("/_state?account=nobody").status_code == 404


def test_faults_answer_in_meta_shape_and_stats_count_them() -> None:
    client = make(status_webhooks="off")
    client.post("/_faults", json={"error_rate": 1.0})
    response = client.post(SEND, json=template(), headers=AUTH)
    assert response.status_code == 503 and error_of(response)["code"] == 131016
    client.post("/_faults", json={"error_rate": 0.0, "rate_429": 1.0})
    response = client.post(SEND, json=template(), headers=AUTH)
    assert response.status_code == 429 and error_of(response)["code"] == 4
    client.post("/_faults", json={"reset": True})
    assert client.post(SEND, json=template(), headers=AUTH).status_code == 200
    assert client.get("/_sent").json["sent"][0]["type"] == "template"
    stats = client.get("/_stats").json
    assert stats["by_route"] == {"POST /v{N}/{phone-number-id}/messages": 3}
    assert stats["by_status"] == {"503": 1, "429": 1, "200": 1}
    assert stats["by_error_code"] == {"131016": 1, "4": 1}


def test_dropped_connection_after_accept_leaves_the_outcome_unknown(receiver: Any) -> None:
    hook, url = receiver
    app = create_app({**FAST, "webhook_url": url, "drop_after_accept_rate": 1.0})
    client = app.test_client()
    customer_writes(client)
    with serve(app) as base:
        with pytest.raises(requests.ConnectionError):
            requests.post(f"{base}{SEND}", json=text(), headers=AUTH, timeout=5)
    (sent,) = client.get("/_sent").json["sent"]
    assert sent["dropped_connection"] is True
    assert [s["status"] for s in _signed_statuses(hook, sent["id"], 3)] == [
        "sent",
        "delivered",
        "read",
    ]  # the message went out all the same


def test_reset_forgets_messages_and_windows(receiver: Any) -> None:
    _, url = receiver
    client = make(url, status_webhooks="off")
    customer_writes(client)
    client.post(SEND, json=text(), headers=AUTH)
    client.post("/_reset")
    assert client.get("/_sent").json == {"sent": []}
    assert error_of(client.post(SEND, json=text(), headers=AUTH))["code"] == 131047
    assert client.get("/_config").json["webhook_url"] == url  # settings are kept


def test_mounted_with_the_other_sandboxes() -> None:
    from werkzeug.test import Client

    from sandbox.server import build

    client = Client(build())
    response = client.get("/sandbox/whatsapp/")
    assert response.status_code == 200 and response.json["sandbox"] == "whatsapp"
    sent = client.post(f"/sandbox/whatsapp{SEND}", json=template(), headers=AUTH)
    assert sent.status_code == 200
