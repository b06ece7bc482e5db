# ruff: noqa: S105, S106, S107  (test secrets)
"""The MAX sandbox behaves like MAX (the contract's FACTS): auth, sends,
uploads, subscriptions, long polling, webhooks with their secret and retry
schedule, the limits, and the UNCONFIRMED switches. Answers are compared
with the MAX examples (corpora ``max/examples``: go-stab fixtures, or
schema-built where no official one exists, as labelled)."""

from __future__ import annotations

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
from flask import Flask, Response, request
from flask.testing import FlaskClient
from werkzeug.serving import make_server

from sandbox.max import DEMO_BOT_ID, DEMO_TOKEN, DIALOG_BASE, create_app

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "tests" / "fixtures" / "corpora" / "max" / "examples"
AUTH = {"Authorization": DEMO_TOKEN}
USER = 123456789


def example(name: str) -> Any:
    return json.loads((EXAMPLES / name).read_bytes())


def wait_for(predicate: Callable[[], Any], timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.02)
    return predicate()


class Receiver:
    """A bridge stand-in: records what it gets, answers ``status``."""

    def __init__(self) -> None:
        self.app = Flask("receiver")
        self.got: list[tuple[dict[str, str], Any]] = []
        self.status = 200
        self.app.add_url_rule("/webhooks/max/k", "hook", self._hook, methods=["POST"])

    def _hook(self) -> Response:
        self.got.append((dict(request.headers), json.loads(request.get_data())))
        return Response('{"ok":true}', status=self.status, mimetype="application/json")


@contextmanager
def serve(app: Any) -> Iterator[str]:
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
    )
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/webhooks/max/k"
    finally:
        server.shutdown()


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    hook = Receiver()
    with serve(hook.app) as url:
        yield hook, url


def make(**config: Any) -> FlaskClient:
    return create_app(config).test_client()


def subscribe(client: FlaskClient, url: str, secret: str = "sec_ret-1") -> None:
    r = client.post("/subscriptions", headers=AUTH, json={"url": url, "secret": secret})
    assert (r.status_code, r.json) == (200, {"success": True})


# -- auth (FACTS §1) ----------------------------------------------------------------------------


def test_auth_is_the_raw_token_in_the_header() -> None:
    client = make()
    me = client.get("/me", headers=AUTH)
    assert me.status_code == 200
    stab = example("go-stab.botInfo.ok.json")  # go-stab: GET /me
    assert set(stab) - {"description", "avatar_url", "full_avatar_url"} <= set(me.json)
    assert me.json["user_id"] == DEMO_BOT_ID and me.json["is_bot"] is True
    missing = client.get("/me")
    assert (missing.status_code, missing.json) == (401, example("go-stab.error.invalid-token.json"))
    bearer = client.get("/me", headers={"Authorization": f"Bearer {DEMO_TOKEN}"})
    assert bearer.status_code == 401  # UNCONFIRMED: refused by default
    query = client.get(f"/me?access_token={DEMO_TOKEN}")
    assert query.status_code == 403 and query.json["code"] == "deprecated.token"
    client.post("/_config", json={"accept_bearer": True, "query_token": "accept"})
    assert client.get("/me", headers={"Authorization": f"Bearer {DEMO_TOKEN}"}).status_code == 200
    assert client.get(f"/me?access_token={DEMO_TOKEN}").status_code == 200


def test_unknown_paths_and_methods_answer_max_errors() -> None:
    client = make()
    r = client.get("/chats", headers=AUTH)  # removed in June 2026 (FACTS §15)
    assert r.status_code == 404 and r.json["code"] == "method.not.found"
    assert "Please check docs at https://dev.max.ru/docs" in r.json["message"]


# -- sending (FACTS §9) -----------------------------------------------------------------------


def test_a_send_answers_a_message_shaped_like_the_schema_example() -> None:
    client = make()
    client.post("/_customer", json={"from": USER, "text": "hi"})
    chat = DIALOG_BASE + USER
    r = client.post(f"/messages?chat_id={chat}", headers=AUTH, json={"text": "Hello"})
    assert r.status_code == 200
    built = example("schema-built-send-message.response.json")  # schema-built
    assert set(r.json) == set(built)
    assert set(r.json["message"]) >= {"sender", "recipient", "timestamp", "body"}
    assert r.json["message"]["recipient"] == {
        "chat_id": chat,
        "chat_type": "dialog",
        "user_id": USER,
    }
    assert r.json["message"]["body"]["seq"] > 2**53  # int64, exact
    by_user = client.post(f"/messages?user_id={USER}", headers=AUTH, json={"text": "Again"})
    assert by_user.status_code == 200
    [one, two] = client.get("/_sent").json["sent"]
    assert (one["text"], two["text"], two["chat_id"]) == ("Hello", "Again", chat)


def test_send_refusals() -> None:
    client = make()
    client.post("/_customer", json={"from": USER, "text": "hi"})
    chat = DIALOG_BASE + USER
    too_long = client.post(f"/messages?chat_id={chat}", headers=AUTH, json={"text": "x" * 4001})
    assert too_long.status_code == 400 and "4000" in too_long.json["message"]
    unknown = client.post("/messages?chat_id=42", headers=AUTH, json={"text": "x"})
    assert unknown.status_code == 404
    nothing = client.post(f"/messages?chat_id={chat}", headers=AUTH, json={})
    assert nothing.status_code == 400
    stop = client.post("/_stop", json={"user": USER}).json
    assert stop["queued"] is True and stop["update"]["update_type"] == "bot_stopped"
    refused = client.post(f"/messages?chat_id={chat}", headers=AUTH, json={"text": "x"})
    # UNCONFIRMED code (FACTS §17): the sandbox's own
    assert (refused.status_code, refused.json["code"]) == (403, "chat.denied")
    client.post("/_start", json={"user": USER, "payload": "promo"})
    assert (
        client.post(f"/messages?chat_id={chat}", headers=AUTH, json={"text": "x"}).status_code
        == 200
    )


def test_the_limits_answer_429_with_the_sandbox_only_body() -> None:
    client = make(rps=1000)
    client.post("/_customer", json={"from": USER, "text": "hi"})
    chat = DIALOG_BASE + USER
    client.post("/_clock", json={"freeze": True})
    codes = [
        client.post(f"/messages?chat_id={chat}", headers=AUTH, json={"text": "x"}).status_code
        for _ in range(3)
    ]
    assert codes == [200, 200, 429]  # 2 per second per chat
    r = client.post(f"/messages?chat_id={chat}", headers=AUTH, json={"text": "x"})
    assert r.json["code"] == "too.many.requests" and "sandbox-only" in r.json["message"]
    client.post("/_clock", json={"advance": 1})
    assert (
        client.post(f"/messages?chat_id={chat}", headers=AUTH, json={"text": "x"}).status_code
        == 200
    )
    rps = make(rps=30)
    rps.post("/_clock", json={"freeze": True})
    got = [rps.get("/me", headers=AUTH).status_code for _ in range(31)]
    assert got.count(200) == 30 and got[-1] == 429


# -- uploads (FACTS §11) ------------------------------------------------------------------------


def test_the_three_step_upload() -> None:
    client = make(attachment_not_ready_times=1)
    client.post("/_customer", json={"from": USER, "text": "hi"})
    chat = DIALOG_BASE + USER
    assert client.post("/uploads?type=photo", headers=AUTH).status_code == 400
    step1 = client.post("/uploads?type=file", headers=AUTH).json
    assert set(step1) == {"url"}
    host = step1["url"].split("localhost", 1)[1]
    step2 = client.post(host, data={"data": (io.BytesIO(b"pdf"), "a.pdf")})
    assert set(step2.json) == {"token"}
    assert client.post(host, data={"data": (io.BytesIO(b"x"), "b")}).status_code == 400
    body = {"attachments": [{"type": "file", "payload": step2.json}]}
    first = client.post(f"/messages?chat_id={chat}", headers=AUTH, json=body)
    assert first.status_code == 400
    assert first.json == {
        **example("go-stab.error.attachment.not.ready.json"),
        "message": first.json["message"],
    }
    assert client.post(f"/messages?chat_id={chat}", headers=AUTH, json=body).status_code == 200
    video = client.post("/uploads?type=video", headers=AUTH).json
    assert set(video) == {"url", "token"}  # schema-built-upload.video.step1.response.json
    answer = client.post(
        video["url"].split("localhost", 1)[1], data={"data": (io.BytesIO(b"mp4"), "v.mp4")}
    )
    assert answer.data.strip().endswith(
        b"<retval>1</retval>"
    )  # like go-stab.upload.video.response.xml
    image = client.post("/uploads?type=image", headers=AUTH).json
    photos = client.post(
        image["url"].split("localhost", 1)[1], data={"data": (io.BytesIO(b"png"), "p.png")}
    ).json
    assert set(photos) == set(example("schema-built-upload.image.upload-response.json"))
    bogus = {"attachments": [{"type": "file", "payload": {"token": "made-up"}}]}
    assert client.post(f"/messages?chat_id={chat}", headers=AUTH, json=bogus).status_code == 400


# -- subscriptions and webhooks (FACTS §2) ----------------------------------------------------


def test_subscriptions_validate_and_list() -> None:
    client = make()
    for bad in (
        {"url": "ftp://x"},
        {"url": "http://bridge.example/h"},
        {"url": "https://bridge.example/h", "secret": "abc"},
        {"url": "https://bridge.example/h", "secret": "no spaces!"},
    ):
        assert client.post("/subscriptions", headers=AUTH, json=bad).status_code == 400, bad
    subscribe(client, "https://bridge.example/h")
    listed = client.get("/subscriptions", headers=AUTH).json
    built = example("schema-built-subscriptions.get.response.json")  # schema-built
    assert set(listed) == set(built)
    assert set(listed["subscriptions"][0]) == set(built["subscriptions"][0])
    r = client.delete("/subscriptions?url=https://bridge.example/h", headers=AUTH)
    assert r.json == {"success": True}
    assert client.get("/subscriptions", headers=AUTH).json == {"subscriptions": []}
    # MAX requires https; the local sandbox also posts to loopback http unless told not to
    client.post("/_config", json={"require_https": True})
    assert (
        client.post(
            "/subscriptions", headers=AUTH, json={"url": "http://127.0.0.1:9/h"}
        ).status_code
        == 400
    )


def test_every_webhook_example_is_posted_with_the_secret(receiver: tuple[Receiver, str]) -> None:
    hook, url = receiver
    client = make()
    subscribe(client, url)
    names = sorted(p.name for p in EXAMPLES.glob("go-stab.webhook.*.json"))
    for name in names:
        answer = client.post("/_deliver", json={"payload": example(name)}).json
        assert (answer["status"], answer["delivered"]) == (200, True), name
    assert len(hook.got) == len(names)
    for headers, body in hook.got:
        assert headers["X-Max-Bot-Api-Secret"] == "sec_ret-1"
        assert headers["Content-Type"] == "application/json"
        assert "update_type" in body and "updates" not in body  # one Update, no wrapper
    # the bot's side is the demo bot's: a press on the bot's message
    press = next(b for _, b in hook.got if b["update_type"] == "message_callback")
    assert press["message"]["sender"]["user_id"] == DEMO_BOT_ID
    created = next(b for _, b in hook.got if b["update_type"] == "message_edited")
    assert created["message"]["recipient"]["user_id"] == DEMO_BOT_ID
    assert created["message"]["body"]["seq"] == 116327994376978687  # exact
    # and the press can be answered (FACTS §10)
    callback_id = press["callback"]["callback_id"]
    ok = client.post(
        f"/answers?callback_id={callback_id}",
        headers=AUTH,
        json=example("docs.post-answers.request.json"),
    )
    assert ok.json == {"success": True}
    assert client.post("/answers?callback_id=nope", headers=AUTH, json={}).status_code == 404


def test_a_failed_delivery_is_retried_then_unsubscribed(receiver: tuple[Receiver, str]) -> None:
    hook, url = receiver
    client = make(time_compression=3600.0)  # 8 h in 8 s
    subscribe(client, url)
    hook.status = 204  # "any other status (204 included)" is a failure
    answer = client.post("/_customer", json={"from": USER, "text": "hi"}).json
    assert (answer["status"], answer["delivered"]) == (204, False)
    state = client.get("/_state").json
    assert state["retries_pending"] == 1
    # the schedule: 60 s x2.5 (compressed); flush runs each retry now
    for _ in range(12):
        client.post("/_flush")
    records = client.get("/_deliveries").json["deliveries"]
    attempts = [d["attempt"] for d in records if d.get("update_type") == "message_created"]
    # retries until the next would fall past 8 h: 60, 210, 585, 1523, 3866, 9726, 24374 s
    assert attempts == [1, 2, 3, 4, 5, 6, 7, 8]
    assert records[-1]["event"] == "unsubscribed"
    assert client.get("/subscriptions", headers=AUTH).json == {"subscriptions": []}
    assert len(hook.got) == 8


# -- long polling (FACTS §3) --------------------------------------------------------------------


def test_updates_with_the_marker_and_405_while_a_webhook_is_set() -> None:
    client = make()
    for n in range(3):
        client.post("/_customer", json={"from": USER, "text": f"m{n}"})
    first = client.get("/updates?timeout=0&limit=2", headers=AUTH).json
    stab = example("go-stab.update.message_created.json")  # go-stab: GET /updates
    assert set(first) == set(stab)
    assert [u["message"]["body"]["text"] for u in first["updates"]] == ["m0", "m1"]
    again = client.get(f"/updates?timeout=0&marker={first['marker'] - 2}", headers=AUTH).json
    assert len(again["updates"]) == 3  # not committed yet: fetched again
    rest = client.get(f"/updates?timeout=0&marker={first['marker']}", headers=AUTH).json
    assert [u["message"]["body"]["text"] for u in rest["updates"]] == ["m2"]
    empty = client.get(f"/updates?timeout=0&marker={rest['marker']}", headers=AUTH).json
    assert empty == {"updates": [], "marker": rest["marker"]}
    typed = client.get("/updates?timeout=0&types=bot_started", headers=AUTH).json
    assert typed["updates"] == []
    subscribe(client, "https://bridge.example/h")
    blocked = client.get("/updates?timeout=0", headers=AUTH)
    assert blocked.status_code == 405


def test_updates_without_a_marker_is_a_switch() -> None:
    client = make(updates_without_marker="latest")
    for n in range(3):
        client.post("/_customer", json={"from": USER, "text": f"m{n}"})
    latest = client.get("/updates?timeout=0", headers=AUTH).json
    assert [u["message"]["body"]["text"] for u in latest["updates"]] == ["m2"]


def test_a_long_poll_wakes_when_an_update_comes() -> None:
    client = make()
    app_client = client

    def later() -> None:
        time.sleep(0.2)
        app_client.post("/_customer", json={"from": USER, "text": "late"})

    threading.Thread(target=later, daemon=True).start()
    got = client.get("/updates?timeout=5", headers=AUTH).json
    assert [u["message"]["body"]["text"] for u in got["updates"]] == ["late"]


# -- contacts and deep links (FACTS §8, §14) ---------------------------------------------------


def test_a_shared_contact_carries_the_hmac_of_its_vcard() -> None:
    client = make()
    update = client.post(
        "/_contact", json={"user": USER, "phone": "79990000000", "name": "John Doe"}
    ).json["update"]
    [node] = update["message"]["body"]["attachments"]
    built = example("schema-built-webhook.message_created.contact.json")  # schema-built
    assert set(node["payload"]) == set(built["message"]["body"]["attachments"][0]["payload"])
    vcf = node["payload"]["vcf_info"]
    assert vcf == built["message"]["body"]["attachments"][0]["payload"]["vcf_info"]
    want = hmac.new(DEMO_TOKEN.encode(), vcf.encode(), hashlib.sha256).hexdigest()
    assert node["payload"]["hash"] == want
    wrong = client.post("/_contact", json={"user": USER, "phone": "7999", "hash": "wrong"}).json
    assert wrong["update"]["message"]["body"]["attachments"][0]["payload"]["hash"] != want
    none = client.post("/_contact", json={"user": USER, "phone": "7999", "hash": "none"}).json
    assert "hash" not in none["update"]["message"]["body"]["attachments"][0]["payload"]


def test_deep_link_payloads_and_repeats() -> None:
    client = make()
    started = client.post("/_start", json={"user": USER, "payload": "a" * 128}).json
    assert started["update"]["payload"] == "a" * 128
    assert started["update"]["chat_id"] == DIALOG_BASE + USER
    too_long = client.post("/_start", json={"user": USER, "payload": "a" * 129}).json
    assert "payload" not in too_long["update"]  # omitted, not passed (FACTS §14)
    client.post("/_config", json={"bot_started_on_repeat": False})
    assert client.post("/_start", json={"user": USER}).json["skipped"] == "already started"


# -- faults and the control API ----------------------------------------------------------------


def test_faults_answer_max_shaped_errors() -> None:
    client = make()
    plan = client.post("/_faults", json={"error_rate": 1.0})
    assert plan.status_code == 200
    r = client.get("/me", headers=AUTH)
    assert r.status_code == 503 and set(r.json) == {"code", "message"}
    client.post("/_faults", json={"error_rate": 0.0, "rate_429": 1.0, "retry_after": 2})
    limited = client.get("/me", headers=AUTH)
    assert limited.status_code == 429 and limited.json["code"] == "too.many.requests"
    # control routes are never faulted
    assert client.get("/_state").status_code == 200


def test_deliver_takes_a_get_updates_answer(receiver: tuple[Receiver, str]) -> None:
    hook, url = receiver
    client = make()
    subscribe(client, url)
    stab = example("go-stab.update.message_created.json")  # go-stab: GET /updates
    stab["updates"].append(example("go-stab.webhook.bot_started.json"))
    answer = client.post("/_deliver", json={"payload": stab}).json
    assert [d["status"] for d in answer["deliveries"]] == [200, 200]
    assert [b["update_type"] for _, b in hook.got] == ["message_created", "bot_started"]
    bad = client.post("/_deliver", json={"payload": {"no": "type"}})
    assert bad.status_code == 400 and bad.json["error"] == "invalid_payload"
