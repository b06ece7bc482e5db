# ruff: noqa: S105, S106  (test secrets)
"""The Viber sandbox behaves like Viber (FACTS.md §4, the REST bot API docs).

The API is driven through Flask's test client; what the sandbox posts (the
callbacks) goes over real HTTP to a small receiver (werkzeug on port 0)
standing in for the bridge: it answers 200 (or the queued answers) and
records each POST with its raw body and headers, so the signature is
checked on the bytes that travelled.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, Response, request
from flask.testing import FlaskClient
from werkzeug.serving import make_server

from sandbox.viber import DEMO_AUTH_TOKEN, DEMO_BOT_ID, create_app
from sandbox.viber.state import FIRST_TOKEN

CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "corpora" / "viber"
AUTH = {"X-Viber-Auth-Token": DEMO_AUTH_TOKEN}
USER = "01234567890A="
FAST = {
    "retry": {"attempts": 2, "base_s": 60.0, "cap_s": 3600.0},
    "seen": False,
    "delivered": False,
}


def wait_for(predicate: Callable[[], Any], timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


class Receiver:
    """The bridge's Viber webhook: answers 200 ``{}`` (or the queued answers)."""

    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        self.answers: list[tuple[str, int]] = []
        self.app = Flask("viber-receiver")
        self.app.add_url_rule("/hook", "hook", self._hook, methods=["POST"])

    def _hook(self) -> Response:
        raw = request.get_data()
        self.posts.append({"raw": raw, "json": json.loads(raw), "headers": dict(request.headers)})
        if self.answers:
            body, status = self.answers.pop(0)
            return Response(body, status, mimetype="application/json")
        return Response("{}", 200, mimetype="application/json")

    def events(self, name: str) -> list[dict[str, Any]]:
        return [p["json"] for p in self.posts if p["json"].get("event") == name]


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    rec = Receiver()
    server = make_server("127.0.0.1", 0, rec.app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield rec, f"http://127.0.0.1:{server.server_port}/hook"
    finally:
        server.shutdown()


def _client(**config: Any) -> FlaskClient:
    return create_app({**FAST, **config}).test_client()


def _api(client: FlaskClient, name: str, body: Any, token: str = DEMO_AUTH_TOKEN) -> Any:
    r = client.post(f"/pa/{name}", json=body, headers={"X-Viber-Auth-Token": token})
    assert r.status_code == 200, r.data  # Viber answers 200, errors included
    return r.get_json()


def _hooked(client: FlaskClient, url: str) -> None:
    assert _api(client, "set_webhook", {"url": url})["status"] == 0


def _text(receiver: str = USER, text: str = "Hello") -> dict[str, Any]:
    return {
        "receiver": receiver,
        "sender": {"name": "Shop"},
        "type": "text",
        "text": text,
        "tracking_data": "bridge-1",
    }


def test_set_webhook_checks_the_url_with_a_signed_webhook_event(receiver: Any) -> None:
    rec, url = receiver
    client = _client()
    answer = _api(client, "set_webhook", {"url": url, "event_types": ["delivered", "seen"]})
    assert answer["status"] == 0 and answer["event_types"] == ["delivered", "seen"]
    [post] = rec.posts
    assert post["json"]["event"] == "webhook"
    assert post["json"]["message_token"] >= FIRST_TOKEN > 2**53
    expected = hmac.new(DEMO_AUTH_TOKEN.encode(), post["raw"], hashlib.sha256).hexdigest()
    assert post["headers"]["X-Viber-Content-Signature"] == expected
    assert _api(client, "get_account_info", {})["webhook"] == url


def test_set_webhook_fails_with_status_1_when_the_url_does_not_answer_200(
    receiver: Any,
) -> None:
    rec, url = receiver
    rec.answers.append(("nope", 500))
    client = _client()
    answer = _api(client, "set_webhook", {"url": url})
    assert answer["status"] == 1 and answer["status_message"].startswith("invalidUrl")
    assert _api(client, "get_account_info", {})["webhook"] == ""
    # no webhook: a delivery is refused by the control API
    r = client.post("/_deliver", json={"payload": {"event": "message"}})
    assert r.status_code == 409 and r.get_json()["error"] == "no_webhook"


def test_a_wrong_token_is_status_2_with_http_200() -> None:
    client = _client()
    assert _api(client, "get_account_info", {}, token="nope") == {
        "status": 2,
        "status_message": "invalidAuthToken",
    }
    r = client.post("/pa/send_message", data=b"{", headers=AUTH)
    assert r.status_code == 200 and r.get_json()["status"] == 3


def test_the_corpus_message_is_delivered_signed_and_subscribes_its_sender(
    receiver: Any,
) -> None:
    rec, url = receiver
    client = _client()
    _hooked(client, url)
    payload = json.loads((CORPUS / "unicode_request.json").read_text("utf-8"))
    r = client.post("/_deliver", json={"payload": payload, "message_token": "keep"})
    answer = r.get_json()
    assert answer["status"] == 200 and answer["delivered"] is True
    post = rec.posts[-1]
    assert post["json"]["message_token"] == 4912661846655238145  # exact, beyond 2^53
    assert b"4912661846655238145" in post["raw"]
    assert (
        post["headers"]["X-Viber-Content-Signature"]
        == hmac.new(DEMO_AUTH_TOKEN.encode(), post["raw"], hashlib.sha256).hexdigest()
    )
    state = client.get("/_state").get_json()["accounts"][0]
    assert state["subscriptions"] == {"01234567890A=": "subscribed"}  # no subscribed callback


def test_send_message_needs_a_subscribed_receiver_and_valid_fields(receiver: Any) -> None:
    rec, url = receiver
    client = _client(text_limit=10)
    _hooked(client, url)
    assert _api(client, "send_message", _text())["status"] == 5  # never seen
    client.post("/_customer", json={"from": USER, "text": "hi"})
    assert _api(client, "send_message", _text())["status"] == 0
    assert _api(client, "send_message", _text(text="x" * 11))["status"] == 3  # text_limit
    long_name = {**_text(), "sender": {"name": "n" * 29}}
    assert _api(client, "send_message", long_name)["status"] == 3
    assert _api(client, "send_message", {**_text(), "sender": {}})["status"] == 4
    file_without_size = {
        **_text(),
        "type": "file",
        "media": "https://x/f.pdf",
        "file_name": "f.pdf",
    }
    assert _api(client, "send_message", file_without_size)["status"] == 4
    client.post("/_unsubscribe", json={"user": USER})
    assert rec.events("unsubscribed")[-1]["user_id"] == USER
    answer = _api(client, "send_message", _text())
    assert answer == {"status": 6, "status_message": "receiverNotSubscribed"}
    client.post("/_customer", json={"from": USER, "text": "back"})  # writing subscribes again
    assert _api(client, "send_message", _text())["status"] == 0
    posted = len(rec.posts)
    quiet = client.post("/_unsubscribe", json={"user": USER, "callback": False}).get_json()
    assert quiet["delivered"] is False and len(rec.posts) == posted  # nothing told
    assert _api(client, "send_message", _text())["status"] == 6
    client.post("/_customer", json={"from": USER, "text": "again"})
    assert _api(client, "send_message", _text())["status"] == 0
    sent = client.get(f"/_sent?receiver={USER}").get_json()["sent"]
    assert [s["tracking_data"] for s in sent] == ["bridge-1"] * 3
    assert all(s["message_token"] > 2**53 for s in sent)


def test_statuses_follow_each_send_and_can_be_duplicated_or_reordered(receiver: Any) -> None:
    rec, url = receiver
    client = _client(
        delivered=True, seen=True, status_duplicate_rate=1.0, status_reorder_rate=1.0, seed=1
    )
    _hooked(client, url)
    client.post("/_customer", json={"from": USER, "text": "hi"})
    token = _api(client, "send_message", _text())["message_token"]
    wait_for(lambda: len(rec.events("delivered")) + len(rec.events("seen")) == 4)
    # The sandbox records a status on the send after the receiver's answer is back: the
    # receiver can hold the fourth post before the record holds it.
    wait_for(lambda: len(client.get("/_sent").get_json()["sent"][0].get("statuses", [])) == 4)
    [record] = client.get("/_sent").get_json()["sent"]
    assert sorted(x["status"] for x in record["statuses"]) == [
        "delivered",
        "delivered",
        "seen",
        "seen",
    ]
    for name in ("delivered", "seen"):
        assert {e["message_token"] for e in rec.events(name)} == {token}
        assert all(e["user_id"] == USER for e in rec.events(name))


def test_an_unanswered_callback_is_retried_on_the_sandbox_clock(receiver: Any) -> None:
    rec, url = receiver
    client = _client()
    _hooked(client, url)
    rec.answers.append(("down", 503))
    answer = client.post("/_customer", json={"from": USER, "text": "hi"}).get_json()
    assert answer["status"] == 503 and answer["delivered"] is False
    assert client.get("/_state").get_json()["retries_pending"] == 1
    client.post("/_flush")
    retried = rec.events("message")
    assert len(retried) == 2 and retried[0] == retried[1]  # same body, same token
    log = client.get("/_deliveries?event=message").get_json()["deliveries"]
    assert [d["attempt"] for d in log] == [1, 2] and log[-1]["ok"] is True


def test_conversation_started_records_a_welcome_answer(receiver: Any) -> None:
    rec, url = receiver
    client = _client()
    _hooked(client, url)
    welcome = {"sender": {"name": "Shop"}, "type": "text", "text": "Welcome!"}
    rec.answers.append((json.dumps(welcome), 200))
    answer = client.post("/_open", json={"user": USER, "context": "utm_source-ads"}).get_json()
    assert answer["delivered"] is True
    event = rec.events("conversation_started")[0]
    assert event["context"] == "utm_source-ads" and event["subscribed"] is False
    assert event["user"]["id"] == USER
    state = client.get("/_state").get_json()
    assert state["welcomes"][0]["message"] == welcome
    assert state["welcomes"][0]["receiver"] == USER


def test_faults_show_as_viber_does(receiver: Any) -> None:
    client = _client(faults={"rate_429": 1.0})
    assert _api(client, "get_account_info", {})["status"] == 12
    client = _client(rate_limit_per_s=1)
    rec, url = receiver
    _hooked(client, url)
    client.post("/_customer", json={"from": USER, "text": "hi"})
    statuses = [_api(client, "send_message", _text())["status"] for _ in range(3)]
    assert statuses[0] == 0 and 12 in statuses[1:]
    stats = client.get("/_stats").get_json()
    assert stats["total"] >= 4


def test_broadcast_and_user_details(receiver: Any) -> None:
    rec, url = receiver
    client = _client()
    _hooked(client, url)
    client.post("/_customer", json={"from": USER, "name": "Anna", "text": "hi"})
    body = {**_text(), "broadcast_list": [USER, "unknown="]}
    body.pop("receiver")
    answer = _api(client, "broadcast_message", body)
    assert answer["status"] == 0
    assert answer["failed_list"] == [
        {"receiver": "unknown=", "status": 5, "status_message": "receiverNotRegistered"}
    ]
    user = _api(client, "get_user_details", {"id": USER})
    assert user["user"]["name"] == "Anna"
    assert _api(client, "get_user_details", {"id": "nobody="})["status"] == 5
    info = _api(client, "get_account_info", {})
    assert info["id"] == DEMO_BOT_ID and info["subscribers_count"] == 1
