"""The VK sandbox behaves like VK (FACTS.md §3, the VK API JSON schema).

The API is driven through Flask's test client; what the sandbox posts (the
Callback API) goes over real HTTP to a small receiver (werkzeug on port 0)
standing in for the bridge: it answers the confirmation string and ``ok``,
and records each POST with its raw body and headers. Every event of the VK
corpus (provenance in the corpus MANIFEST.json) goes through ``/_deliver``.
"""

from __future__ import annotations

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

from sandbox.vk import (
    DEMO_ACCESS_TOKEN,
    DEMO_CONFIRMATION,
    DEMO_GROUP_ID,
    DEMO_SECRET,
    create_app,
)

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "tests" / "fixtures" / "corpora"
V = "5.199"
CUSTOMER = 918650328
OTHER = {
    "group_id": 227000002,
    "access_token": "vk1.a.OtherCommunityToken000000000000",
    "secret": "OtherSecret2",
    "confirmation": "0badc0de",
}
#: retries fast (sandbox-clock seconds), no pause and no rate limit unless a test asks
FAST = {"retry": {"attempts": 0, "base_s": 0.01, "cap_s": 0.05}, "pause_after_failures": 0,
        "rate_limit_per_s": 0}


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
    """The bridge's VK callback endpoint: answers the confirmation string to
    ``confirmation`` and ``ok`` to the rest (or the queued answers), records
    every POST."""

    def __init__(self, confirmation: str = DEMO_CONFIRMATION) -> None:
        self.confirmation = confirmation
        self.posts: list[dict[str, Any]] = []
        #: answers to give to events, then ("ok", 200): (body, status, headers)
        self.answers: list[tuple[str, int, dict[str, str]]] = []
        #: called with each non-confirmation event (a bridge's handler)
        self.handler: Callable[[dict[str, Any]], None] | None = None
        self.app = Flask("vk-receiver")
        self.app.add_url_rule("/webhooks/vk", "hook", self._hook, methods=["POST"])

    def _hook(self) -> Response:
        raw = request.get_data()
        event = json.loads(raw)
        self.posts.append({"raw": raw, "json": event, "headers": dict(request.headers)})
        if event.get("type") == "confirmation":
            return Response(self.confirmation, 200, mimetype="text/plain")
        if self.handler is not None:
            self.handler(event)
        if self.answers:
            body, status, headers = self.answers.pop(0)
            return Response(body, status, headers=headers, mimetype="text/plain")
        return Response("ok", 200, mimetype="text/plain")

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        return [p["json"] for p in self.posts
                if p["json"]["type"] != "confirmation" and (kind is None
                                                             or p["json"]["type"] == kind)]


@contextmanager
def serve(app: Any) -> Iterator[str]:
    """Serve a WSGI app on 127.0.0.1:<free port> (a short poll: quick to stop)."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02},
                              daemon=True)
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
        yield hook, f"{base}/webhooks/vk"


def make(url: str | None = None, **config: Any) -> FlaskClient:
    return create_app({**FAST, "server_url": url, **config}).test_client()


def api(client: FlaskClient, method: str, token: str = DEMO_ACCESS_TOKEN,
        **params: Any) -> dict[str, Any]:
    """A form-encoded call, as VK wants it; the parsed body (always HTTP 200)."""
    data = {"v": V, "access_token": token, **{k: str(v) for k, v in params.items()}}
    answer = client.post(f"/method/{method}", data=data)
    assert answer.status_code == 200, answer.data
    body: dict[str, Any] = answer.json
    return body


def error_code(body: dict[str, Any]) -> int | None:
    return body["error"]["error_code"] if "error" in body else None


def customer_writes(client: FlaskClient, user: int = CUSTOMER, text: str = "hi",
                    **extra: Any) -> dict[str, Any]:
    answer = client.post("/_customer", json={"from": user, "name": "Anna Ivanova",
                                              "text": text, **extra})
    assert answer.status_code == 200, answer.json
    body: dict[str, Any] = answer.json
    return body


# -- the corpus --------------------------------------------------------------------------------


def _manifest() -> dict[str, str]:
    entries = json.loads((CORPUS / "MANIFEST.json").read_text(encoding="utf-8"))
    return {e["file"]: f"{e['repo']}:{e['path']}" for e in entries if e["file"].startswith("vk/")}


def _corpus_events() -> list[Any]:
    sources = _manifest()
    cases = []
    for path in sorted((CORPUS / "vk").rglob("*.json")):
        rel = path.relative_to(CORPUS).as_posix()
        if "/schema/" in rel:
            continue
        data = json.loads(path.read_text(encoding="utf-8"))
        updates = data.get("updates") if isinstance(data, dict) else None
        if not isinstance(updates, list):
            continue  # an API answer, not an event
        for index, update in enumerate(updates):
            label = f"{sources[rel]}#{index}"
            cases.append(pytest.param(update, id=label))
    return cases


CORPUS_EVENTS = _corpus_events()


def test_the_corpus_has_events() -> None:
    assert len(CORPUS_EVENTS) >= 25
    kinds = {case.values[0]["type"] for case in CORPUS_EVENTS}
    assert {"message_new", "message_reply", "message_edit", "message_event"} <= kinds


@pytest.mark.parametrize("update", CORPUS_EVENTS)
def test_every_corpus_event_goes_through_deliver(receiver: tuple[Receiver, str],
                                                 update: dict[str, Any]) -> None:
    hook, url = receiver
    client = make(url)
    answer = client.post("/_deliver", json={"payload": update})
    assert answer.status_code == 200, answer.json
    assert answer.json["status"] == 200 and answer.json["body"] == "ok"
    assert answer.json["delivered"] is True
    # the handshake came first (auto_confirm), then the event
    assert [p["json"]["type"] for p in hook.posts] == ["confirmation", update["type"]]
    post = hook.posts[-1]
    event = post["json"]
    assert post["headers"]["Content-Type"].startswith("application/json")
    assert "X-Retry-Counter" not in post["headers"]
    assert list(event)[:4] == ["type", "object", "group_id", "event_id"]
    assert event["group_id"] == DEMO_GROUP_ID and event["secret"] == DEMO_SECRET
    assert event["event_id"] == update["event_id"]  # kept: new to this sandbox
    assert event["v"] == update.get("v", V)
    assert event["object"] == update["object"]  # untouched
    # VK's JSON: UTF-8 as is, every "/" escaped
    text = post["raw"].decode("utf-8")
    assert "/" not in text.replace("\\/", "")
    if update["type"] == "message_new":
        message = update["object"].get("message", update["object"])
        peer = message["peer_id"]
        if message["from_id"] > 0:
            # the customer wrote: the community may answer in that conversation
            sent = api(client, "messages.send", peer_id=peer, random_id=7, message="Thanks!")
            assert "response" in sent, sent


def test_deliver_takes_a_long_poll_answer_and_makes_event_ids_unique(
        receiver: tuple[Receiver, str]) -> None:
    hook, url = receiver
    client = make(url)
    path = CORPUS / "vk" / "bots_longpoll_events" / "message_new_text_sample_5_110.json"
    page = json.loads(path.read_text(encoding="utf-8"))
    first = client.post("/_deliver", json={"payload": page}).json
    assert first["delivered"] and len(first["deliveries"]) == 1
    again = client.post("/_deliver", json={"payload": page}).json  # "auto": a new event_id
    kept = client.post("/_deliver", json={"payload": page, "event_id": "keep"}).json
    ids = [e["event_id"] for e in hook.events("message_new")]
    assert ids[0] == "aaa" and ids[1] != "aaa" and len(ids[1]) == 40 and ids[2] == "aaa"
    assert again["event_id"] == ids[1] and kept["event_id"] == "aaa"


def test_deliver_needs_a_server(receiver: tuple[Receiver, str]) -> None:
    client = make(None)
    answer = client.post("/_deliver", json={"payload": {"type": "message_new", "object": {}}})
    assert answer.status_code == 409 and answer.json["error"] == "not_connected"
    assert client.post("/_deliver", json={"payload": [1]}).status_code == 400


# -- the confirmation handshake ----------------------------------------------------------------


def test_connect_runs_the_confirmation_handshake(receiver: tuple[Receiver, str]) -> None:
    hook, url = receiver
    client = make(None, auto_confirm=False)
    answer = client.post("/_connect", json={"server_url": url}).json
    assert answer["ok"] is True and answer["status"] == 200 and answer["body"] == DEMO_CONFIRMATION
    assert answer["server"]["status"] == "ok"
    sent = hook.posts[0]["json"]
    assert sent == {"type": "confirmation", "group_id": DEMO_GROUP_ID}  # no secret by default
    # the code the bridge can fetch is the one it must answer
    code = api(client, "groups.getCallbackConfirmationCode", group_id=DEMO_GROUP_ID)
    assert code == {"response": {"code": DEMO_CONFIRMATION}}
    servers = api(client, "groups.getCallbackServers", group_id=DEMO_GROUP_ID)["response"]
    assert servers["items"][0]["url"] == url and servers["items"][0]["status"] == "ok"


def test_a_wrong_confirmation_answer_fails_and_blocks_events(receiver: tuple[Receiver, str]
                                                             ) -> None:
    hook, url = receiver
    hook.confirmation = "ok"  # a bridge answering ok to everything
    client = make(url, auto_confirm=False)
    answer = client.post("/_verify").json
    assert answer["ok"] is False and answer["body"] == "ok"
    assert answer["server"]["status"] == "failed"
    blocked = client.post("/_customer", json={"from": CUSTOMER, "text": "hi"})
    assert blocked.status_code == 409 and blocked.json["error"] == "not_confirmed"
    # auto_confirm retries the handshake, which still fails
    client.post("/_config", json={"auto_confirm": True})
    assert client.post("/_customer", json={"from": CUSTOMER, "text": "hi"}).status_code == 409
    assert hook.events() == []


def test_confirmation_with_secret_is_a_switch(receiver: tuple[Receiver, str]) -> None:
    hook, url = receiver
    client = make(url, confirmation_with_secret=True)
    assert client.post("/_connect").json["ok"] is True
    assert hook.posts[0]["json"] == {"type": "confirmation", "group_id": DEMO_GROUP_ID,
                                     "secret": DEMO_SECRET}


def test_a_changed_server_url_needs_confirming_again(receiver: tuple[Receiver, str]) -> None:
    hook, url = receiver
    client = make(url, rotate_confirmation=True)
    assert client.post("/_connect").json["ok"] is True
    client.post("/_config", json={"server_url": url + "?moved=1"})
    state = client.get("/_state").json["accounts"][0]["server"]
    assert state["status"] == "wait" and state["confirmation"] != DEMO_CONFIRMATION
    code = api(client, "groups.getCallbackConfirmationCode", group_id=DEMO_GROUP_ID)
    assert code["response"]["code"] == state["confirmation"]
    assert client.post("/_connect").json["ok"] is False  # the receiver answers the old one
    hook.confirmation = state["confirmation"]
    assert client.post("/_connect").json["ok"] is True


# -- events: ok expected, retries, pauses ------------------------------------------------------


def test_customer_writes_a_real_shaped_message_new(receiver: tuple[Receiver, str]) -> None:
    hook, url = receiver
    client = make(url)
    answer = customer_writes(client, text="Где мой заказ? https://example.com/o/1",
                             payload={"command": "start"})
    assert answer["status"] == 200 and answer["body"] == "ok"
    event = hook.events("message_new")[0]
    assert set(event) == {"type", "object", "group_id", "event_id", "v", "secret"}
    assert event["v"] == V and len(event["event_id"]) == 40
    message = event["object"]["message"]
    assert message["from_id"] == message["peer_id"] == CUSTOMER and message["out"] == 0
    assert message["text"] == "Где мой заказ? https://example.com/o/1"
    assert message["payload"] == '{"command":"start"}'  # a JSON string, as VK sends it
    assert message["id"] == answer["message_id"]
    assert message["conversation_message_id"] == answer["conversation_message_id"]
    assert event["object"]["client_info"]["keyboard"] is True
    raw = hook.posts[-1]["raw"].decode("utf-8")
    assert "Где мой заказ" in raw and "https:\\/\\/example.com\\/o\\/1" in raw
    # users.get names the customer
    users = api(client, "users.get", user_ids=CUSTOMER)["response"]
    assert users[0]["first_name"] == "Anna" and users[0]["last_name"] == "Ivanova"


def test_before_5_103_the_object_is_the_message(receiver: tuple[Receiver, str]) -> None:
    hook, url = receiver
    client = make(url, v="5.101")
    customer_writes(client)
    event = hook.events("message_new")[0]
    assert event["v"] == "5.101" and event["object"]["from_id"] == CUSTOMER


def test_a_server_must_answer_ok_and_failures_are_retried(receiver: tuple[Receiver, str]
                                                          ) -> None:
    hook, url = receiver
    client = make(url, retry={"attempts": 3, "base_s": 0.01, "cap_s": 0.05})
    hook.answers = [("Internal error", 500, {}), ("OK", 200, {})]  # "OK" is not "ok"
    first = customer_writes(client)
    assert first["status"] == 500 and first["delivered"] is False
    posts = wait_for(lambda: [p for p in hook.posts if p["json"]["type"] == "message_new"]
                     if len([p for p in hook.posts if p["json"]["type"] == "message_new"]) >= 3
                     else None)
    assert [p["headers"].get("X-Retry-Counter") for p in posts] == [None, "1", "2"]
    assert len({p["json"]["event_id"] for p in posts}) == 1  # the same event again
    assert posts[0]["raw"] == posts[2]["raw"]
    # the sandbox logs a delivery once the receiver's answer is back: the
    # third one may still be on its way when the receiver has the post
    deliveries = wait_for(
        lambda: (found if len(found := client.get("/_deliveries?type=message_new").json[
            "deliveries"]) >= 3 else None)
    )
    assert [d["ok"] for d in deliveries] == [False, False, True]
    assert deliveries[1]["error"] == "the body was 'OK', not 'ok'"


def test_retries_stop_after_the_configured_attempts(receiver: tuple[Receiver, str]) -> None:
    hook, url = receiver
    client = make(url, retry={"attempts": 2, "base_s": 0.01, "cap_s": 0.05})
    hook.answers = [("no", 500, {})] * 10
    customer_writes(client)
    wait_for(lambda: len(hook.events("message_new")) >= 3)
    wait_for(lambda: client.get("/_state").json["retries_pending"] == 0
             and client.get("/_state").json["in_flight"] == 0)
    assert len(hook.events("message_new")) == 3


def test_retry_after_is_honoured_on_the_sandbox_clock(receiver: tuple[Receiver, str]) -> None:
    hook, url = receiver
    client = make(url, retry={"attempts": 3, "base_s": 0.01, "cap_s": 0.05})
    hook.answers = [("busy", 503, {"Retry-After": "120"})]
    customer_writes(client)
    assert client.get("/_state").json["retries_pending"] == 1
    assert len(hook.events("message_new")) == 1  # not before 120 sandbox seconds
    client.post("/_clock", json={"advance": 121})
    wait_for(lambda: len(hook.events("message_new")) == 2)
    assert hook.posts[-1]["headers"]["X-Retry-Counter"] == "1"


def test_errors_in_a_row_pause_the_server(receiver: tuple[Receiver, str]) -> None:
    hook, url = receiver
    client = make(url, pause_after_failures=2, pause_s=30)
    hook.answers = [("down", 502, {}), ("down", 502, {})]
    customer_writes(client, text="one")
    customer_writes(client, text="two")
    server = client.get("/_state").json["accounts"][0]["server"]
    assert server["paused"] is True and server["pauses"] == 1
    held = customer_writes(client, text="three")
    assert held["status"] is None and held["delivered"] is False and "paused" in held["error"]
    assert [e["object"]["message"]["text"] for e in hook.events("message_new")] == ["one", "two"]
    client.post("/_clock", json={"advance": 31})
    wait_for(lambda: len(hook.events("message_new")) == 3)
    assert hook.events("message_new")[-1]["object"]["message"]["text"] == "three"


def test_paused_events_may_be_dropped(receiver: tuple[Receiver, str]) -> None:
    hook, url = receiver
    client = make(url, pause_after_failures=1, pause_s=30, paused_events="drop")
    hook.answers = [("down", 500, {})]
    customer_writes(client, text="one")
    dropped = customer_writes(client, text="two")
    assert "dropped" in dropped["error"]
    client.post("/_clock", json={"advance": 31})
    assert client.post("/_flush").json == {"ran": 0}
    assert len(hook.events("message_new")) == 1


# -- messages.send -----------------------------------------------------------------------------


def test_send_answers_the_message_id_and_echoes_a_message_reply(
        receiver: tuple[Receiver, str]) -> None:
    hook, url = receiver
    client = make(url)
    wrote = customer_writes(client)
    keyboard = {"one_time": False, "buttons": [[{"action": {"type": "text", "label": "Yes"}}]]}
    answer = api(client, "messages.send", peer_id=CUSTOMER, random_id=1001,
                 message="Hello, Anna", reply_to=wrote["message_id"],
                 attachment="photo-227000001_457239017", keyboard=json.dumps(keyboard),
                 payload='{"ticket":"T-1"}')
    message_id = answer["response"]
    assert isinstance(message_id, int) and message_id > wrote["message_id"]
    echo = wait_for(lambda: hook.events("message_reply"))[0]
    assert echo["group_id"] == DEMO_GROUP_ID and echo["secret"] == DEMO_SECRET
    obj = echo["object"]
    assert obj["out"] == 1 and obj["from_id"] == -DEMO_GROUP_ID and obj["id"] == message_id
    assert obj["peer_id"] == CUSTOMER and obj["random_id"] == 1001
    assert obj["text"] == "Hello, Anna" and obj["keyboard"] == keyboard
    assert obj["attachments"] == [{"type": "photo",
                                   "photo": {"id": 457239017, "owner_id": -227000001}}]
    assert obj["reply_message"]["id"] == wrote["message_id"]
    assert "admin_author_id" not in obj  # an API send, not an admin
    sent = client.get(f"/_sent?peer_id={CUSTOMER}").json["sent"]
    assert len(sent) == 1
    assert sent[0]["message_id"] == message_id and sent[0]["random_id"] == 1001
    assert sent[0]["message"] == "Hello, Anna" and sent[0]["payload"] == '{"ticket":"T-1"}'
    assert sent[0]["reply_to"] == wrote["message_id"] and "access_token" not in sent[0]["params"]
    wait_for(lambda: client.get("/_sent").json["sent"][0]["echo"])
    assert client.get("/_sent?peer_id=1").json["sent"] == []


def test_echoes_are_a_switch(receiver: tuple[Receiver, str]) -> None:
    hook, url = receiver
    client = make(url, echo_replies=False)
    customer_writes(client)
    assert "response" in api(client, "messages.send", peer_id=CUSTOMER, random_id=1, message="x")
    wait_for(lambda: client.get("/_state").json["in_flight"] == 0)
    assert hook.events("message_reply") == []


def test_random_id_is_deduplicated_over_the_whole_history(receiver: tuple[Receiver, str]
                                                          ) -> None:
    hook, url = receiver
    client = make(url)
    customer_writes(client)
    first = api(client, "messages.send", peer_id=CUSTOMER, random_id=42, message="part 1")
    for n in range(20):  # much later in the conversation
        api(client, "messages.send", peer_id=CUSTOMER, random_id=1000 + n, message=f"m{n}")
    again = api(client, "messages.send", peer_id=CUSTOMER, random_id=42, message="part 1 again")
    assert again == first  # the first send's id, nothing sent
    sent = client.get("/_sent").json["sent"]
    assert len(sent) == 21 and sent[0]["repeats"] == 1 and sent[0]["message"] == "part 1"
    wait_for(lambda: len(hook.events("message_reply")) == 21)
    # a long text split in chunks: a different random_id per chunk -> two messages
    one = api(client, "messages.send", peer_id=CUSTOMER, random_id=5001, message="chunk 1")
    two = api(client, "messages.send", peer_id=CUSTOMER, random_id=5002, message="chunk 2")
    assert one["response"] != two["response"]
    # the same random_id for both chunks: VK drops the second
    three = api(client, "messages.send", peer_id=CUSTOMER, random_id=6000, message="chunk 1")
    four = api(client, "messages.send", peer_id=CUSTOMER, random_id=6000, message="chunk 2")
    assert three == four
    assert [s["message"] for s in client.get("/_sent").json["sent"][-3:]] == [
        "chunk 1", "chunk 2", "chunk 1"]
    # random_id=0 disables the check
    zero = [api(client, "messages.send", peer_id=CUSTOMER, random_id=0, message="z")["response"]
            for _ in range(2)]
    assert zero[0] != zero[1]


def test_random_id_is_per_peer_or_per_sender(receiver: tuple[Receiver, str]) -> None:
    hook, url = receiver
    client = make(url)
    customer_writes(client, user=1001)
    customer_writes(client, user=1002)
    a = api(client, "messages.send", peer_id=1001, random_id=9, message="a")
    b = api(client, "messages.send", peer_id=1002, random_id=9, message="b")
    assert a != b and len(client.get("/_sent").json["sent"]) == 2
    client.post("/_config", json={"random_id_scope": "sender"})
    client.post("/_clock", json={"advance": 2})
    c = api(client, "messages.send", peer_id=1001, random_id=77, message="c")
    d = api(client, "messages.send", peer_id=1002, random_id=77, message="d")
    assert c == d and len(client.get("/_sent").json["sent"]) == 3


def test_random_id_is_required_from_5_90(receiver: tuple[Receiver, str]) -> None:
    hook, url = receiver
    client = make(url)
    customer_writes(client)
    answer = api(client, "messages.send", peer_id=CUSTOMER, message="no random_id")
    assert error_code(answer) == 100
    assert answer["error"]["error_msg"].endswith("random_id is a required parameter")
    old = client.post("/method/messages.send", data={"v": "5.89", "access_token": DEMO_ACCESS_TOKEN,
                                                     "peer_id": CUSTOMER, "message": "old"}).json
    assert isinstance(old["response"], int)


def test_the_ambiguous_send_is_not_sent_twice(receiver: tuple[Receiver, str]) -> None:
    """The send is stored, then the answer hangs past the client's timeout: the
    retry with the same random_id must get the first message, not a second one."""
    hook, url = receiver
    app = create_app({**FAST, "server_url": url})
    client = app.test_client()
    customer_writes(client)
    client.post("/_faults", json={"commit_then_timeout_rate": 1.0, "timeout_seconds": 1.0})
    with serve(app) as base:
        data = {"v": V, "access_token": DEMO_ACCESS_TOKEN, "peer_id": CUSTOMER,
                "random_id": 123456789012, "message": "Your order has shipped"}
        with pytest.raises(requests.Timeout):
            requests.post(f"{base}/method/messages.send", data=data, timeout=0.3)
        sent = wait_for(lambda: client.get("/_sent").json["sent"])
        client.post("/_faults", json={"reset": True})
        retry = requests.post(f"{base}/method/messages.send", data=data, timeout=5).json()
    assert retry == {"response": sent[0]["message_id"]}
    sent = client.get("/_sent").json["sent"]
    assert len(sent) == 1 and sent[0]["repeats"] == 1
    wait_for(lambda: hook.events("message_reply"))
    wait_for(lambda: client.get("/_state").json["in_flight"] == 0)
    assert len(hook.events("message_reply")) == 1


def test_peer_ids_answers_one_item_per_peer(receiver: tuple[Receiver, str]) -> None:
    hook, url = receiver
    client = make(url)
    customer_writes(client, user=1001)
    answer = api(client, "messages.send", peer_ids="1001,1003", random_id=5, message="all")
    items = answer["response"]
    assert items[0]["peer_id"] == 1001 and {"message_id", "conversation_message_id"} <= set(
        items[0])
    assert items[1] == {"peer_id": 1003, "error": {
        "code": 901, "description": "Can't send messages for users without permission"}}


# -- permission: 900, 901, 902, 917 ------------------------------------------------------------


def test_901_for_a_user_who_never_wrote_and_after_a_deny(receiver: tuple[Receiver, str]) -> None:
    hook, url = receiver
    client = make(url)
    never = api(client, "messages.send", peer_id=CUSTOMER, random_id=1, message="hi")
    assert error_code(never) == 901
    assert never["error"]["error_msg"] == "Can't send messages for users without permission"
    params = {p["key"]: p["value"] for p in never["error"]["request_params"]}
    assert params["method"] == "messages.send" and params["peer_id"] == str(CUSTOMER)
    assert "access_token" not in params
    allowed = client.post("/_allow", json={"user": CUSTOMER, "key": "from_site"}).json
    assert allowed["status"] == 200
    assert hook.events("message_allow")[0]["object"] == {"user_id": CUSTOMER, "key": "from_site"}
    assert "response" in api(client, "messages.send", peer_id=CUSTOMER, random_id=2, message="x")
    denied = client.post("/_deny", json={"user": CUSTOMER}).json
    assert denied["body"] == "ok"
    assert hook.events("message_deny")[0]["object"] == {"user_id": CUSTOMER}
    after = api(client, "messages.send", peer_id=CUSTOMER, random_id=3, message="x")
    assert error_code(after) == 901
    customer_writes(client)  # writing again lets the community answer
    assert "response" in api(client, "messages.send", peer_id=CUSTOMER, random_id=4, message="x")


def test_a_corpus_message_deny_changes_the_permission(receiver: tuple[Receiver, str]) -> None:
    hook, url = receiver
    client = make(url)
    customer_writes(client)
    client.post("/_deliver", json={"payload": {"type": "message_deny",
                                               "object": {"user_id": CUSTOMER},
                                               "group_id": 1, "event_id": "e1"}})
    assert error_code(api(client, "messages.send", peer_id=CUSTOMER, random_id=1,
                          message="x")) == 901


def test_blacklist_privacy_and_unknown_chats(receiver: tuple[Receiver, str]) -> None:
    hook, url = receiver
    client = make(url)
    customer_writes(client)
    client.post("/_user", json={"user": CUSTOMER, "blacklisted": True})
    assert error_code(api(client, "messages.send", peer_id=CUSTOMER, random_id=1,
                          message="x")) == 900
    client.post("/_user", json={"user": CUSTOMER, "blacklisted": False, "privacy": True})
    assert error_code(api(client, "messages.send", peer_id=CUSTOMER, random_id=2,
                          message="x")) == 902
    chat = api(client, "messages.send", peer_id=2000000042, random_id=3, message="x")
    assert error_code(chat) == 917
    customer_writes(client, user=1001, peer_id=2000000042)  # the community is in that chat
    assert "response" in api(client, "messages.send", peer_id=2000000042, random_id=4,
                             message="x")


def test_allow_all_users_is_a_switch() -> None:
    client = make(None, allow_all_users=True)
    assert "response" in api(client, "messages.send", peer_id=CUSTOMER, random_id=1, message="x")


# -- limits and validation ---------------------------------------------------------------------


def test_914_above_the_configured_limit(receiver: tuple[Receiver, str]) -> None:
    hook, url = receiver
    client = make(url)
    customer_writes(client)
    ok = api(client, "messages.send", peer_id=CUSTOMER, random_id=1, message="я" * 4096)
    assert "response" in ok
    long = api(client, "messages.send", peer_id=CUSTOMER, random_id=2, message="я" * 4097)
    assert error_code(long) == 914 and long["error"]["error_msg"] == "Message is too long"
    assert client.post("/_config", json={"max_message_chars": 9000}).status_code == 200
    assert "response" in api(client, "messages.send", peer_id=CUSTOMER, random_id=3,
                             message="я" * 9000)
    assert error_code(api(client, "messages.send", peer_id=CUSTOMER, random_id=4,
                          message="я" * 9001)) == 914
    refused = client.post("/_config", json={"max_message_chars": 9001})
    assert refused.status_code == 400 and refused.json["error"] == "invalid_config"


def test_error_6_above_the_rate_per_token() -> None:
    assert create_app().test_client().get("/_config").json["rate_limit_per_s"] == 3  # default
    client = make(None, rate_limit_per_s=3)
    client.post("/_clock", json={"freeze": True})
    answers = [api(client, "users.get", user_ids=1) for _ in range(4)]
    assert [error_code(a) for a in answers] == [None, None, None, 6]
    assert answers[3]["error"]["error_msg"] == "Too many requests per second"
    client.post("/_clock", json={"advance": 1.0})
    assert "response" in api(client, "users.get", user_ids=1)
    # another community's token has its own budget
    other = make(None, communities=[OTHER], rate_limit_per_s=1)
    other.post("/_clock", json={"freeze": True})
    assert "response" in api(other, "users.get", user_ids=1)
    assert error_code(api(other, "users.get", user_ids=1)) == 6
    assert "response" in api(other, "users.get", token=OTHER["access_token"], user_ids=1)
    stats = client.get("/_stats").json
    assert stats["by_error_code"] == {"6": 1} and stats["by_route"] == {"users.get": 5}


def test_flood_control_quota_and_injected_errors(receiver: tuple[Receiver, str]) -> None:
    hook, url = receiver
    client = make(url, flood_control={"count": 2, "window_s": 60},
                  daily_quota={"users.get": 1})
    customer_writes(client)
    codes = [error_code(api(client, "messages.send", peer_id=CUSTOMER, random_id=n, message="x"))
             for n in (1, 2, 3)]
    assert codes == [None, None, 9]
    assert error_code(api(client, "users.get", user_ids=1)) is None
    assert error_code(api(client, "users.get", user_ids=1)) == 29
    client.post("/_inject", json={"method": "groups.getById", "error_code": 10, "times": 1})
    assert error_code(api(client, "groups.getById")) == 10
    assert error_code(api(client, "groups.getById")) is None


def test_auth_errors_and_the_version() -> None:
    client = make(None)
    missing = client.post("/method/users.get", data={"v": V, "user_ids": "1"}).json
    assert missing["error"]["error_code"] == 5
    assert missing["error"]["error_msg"] == "User authorization failed: no access_token passed."
    bad = api(client, "users.get", token="vk1.a.nope", user_ids=1)  # noqa: S106
    assert error_code(bad) == 5 and "invalid access_token" in bad["error"]["error_msg"]
    no_v = client.post("/method/users.get", data={"access_token": DEMO_ACCESS_TOKEN}).json
    assert no_v["error"]["error_code"] == 8 and "v is required" in no_v["error"]["error_msg"]
    old = client.post("/method/users.get", data={"access_token": DEMO_ACCESS_TOKEN,
                                                 "v": "5.68"}).json
    assert old["error"]["error_code"] == 8 and "versions below 5.81" in old["error"]["error_msg"]
    unknown = api(client, "messages.fly")
    assert error_code(unknown) == 3
    # the Bearer header works as well as the parameter
    bearer = client.post("/method/users.get", data={"v": V, "user_ids": "1"},
                         headers={"Authorization": f"Bearer {DEMO_ACCESS_TOKEN}"}).json
    assert "response" in bearer


def test_a_json_body_is_not_read_form_encoding_is_required(receiver: tuple[Receiver, str]
                                                           ) -> None:
    hook, url = receiver
    client = make(url)
    customer_writes(client)
    params = {"v": V, "access_token": DEMO_ACCESS_TOKEN, "peer_id": CUSTOMER,
              "random_id": 1, "message": "hi"}
    as_json = client.post("/method/messages.send", json=params)
    assert as_json.status_code == 200 and as_json.json["error"]["error_code"] == 8
    token_only = client.post(f"/method/messages.send?v={V}&access_token={DEMO_ACCESS_TOKEN}",
                             json={"peer_id": CUSTOMER, "random_id": 1, "message": "hi"}).json
    assert token_only["error"]["error_code"] == 100
    assert client.get("/_sent").json["sent"] == []
    form = client.post("/method/messages.send", data=params).json
    assert isinstance(form["response"], int)
    assert client.get("/_state").json["counters"]["json_bodies_ignored"] == 2


def test_missing_and_invalid_parameters(receiver: tuple[Receiver, str]) -> None:
    hook, url = receiver
    client = make(url)
    customer_writes(client)
    no_peer = api(client, "messages.send", random_id=1, message="x")
    assert error_code(no_peer) == 100 and "peer_id" in no_peer["error"]["error_msg"]
    assert error_code(api(client, "messages.send", peer_id=CUSTOMER, random_id=1)) == 100
    assert error_code(api(client, "messages.send", peer_id="abc", random_id=1, message="x")) == 100
    assert error_code(api(client, "messages.send", peer_id=CUSTOMER, random_id=1, message="x",
                          keyboard='{"rows": []}')) == 911
    assert error_code(api(client, "messages.send", peer_id=CUSTOMER, random_id=1, message="x",
                          attachment="photo_bad")) == 100
    assert error_code(api(client, "messages.send", peer_id=CUSTOMER, random_id=1, message="x",
                          payload="p" * 1001)) == 100
    assert client.get("/_sent").json["sent"] == []


# -- other methods, buttons, faults ------------------------------------------------------------


def test_buttons_and_send_message_event_answer(receiver: tuple[Receiver, str]) -> None:
    hook, url = receiver
    client = make(url)
    customer_writes(client)
    pressed = client.post("/_button", json={"user": CUSTOMER, "payload": {"cmd": "rate", "v": 5}})
    assert pressed.status_code == 200 and pressed.json["body"] == "ok"
    obj = hook.events("message_event")[0]["object"]
    assert obj["user_id"] == obj["peer_id"] == CUSTOMER
    assert obj["payload"] == {"cmd": "rate", "v": 5}
    assert len(obj["event_id"]) == 12
    answer = api(client, "messages.sendMessageEventAnswer", event_id=obj["event_id"],
                 user_id=CUSTOMER, peer_id=CUSTOMER,
                 event_data=json.dumps({"type": "show_snackbar", "text": "Thanks!"}))
    assert answer == {"response": 1}
    events = client.get("/_state").json["accounts"][0]["button_events"]
    assert events[0]["answers"][0]["event_data"]["text"] == "Thanks!"
    wrong = api(client, "messages.sendMessageEventAnswer",
                event_id=hook.events("message_event")[0]["event_id"],  # the envelope's id
                user_id=CUSTOMER, peer_id=CUSTOMER)
    assert error_code(wrong) == 100
    client.post("/_config", json={"event_payload": "string"})
    client.post("/_button", json={"user": CUSTOMER, "payload": {"cmd": "x"}})
    assert hook.events("message_event")[1]["object"]["payload"] == '{"cmd":"x"}'


def test_groups_users_and_history(receiver: tuple[Receiver, str]) -> None:
    hook, url = receiver
    client = make(url,
                  users=[{"id": 1001, "first_name": "Ivan", "last_name": "Petrov",
                          "screen_name": "ivan_p"}])
    group = api(client, "groups.getById")["response"]
    assert group["groups"][0]["id"] == DEMO_GROUP_ID and group["profiles"] == []
    legacy = client.post("/method/groups.getById", data={"v": "5.131",
                                                         "access_token": DEMO_ACCESS_TOKEN}).json
    assert legacy["response"][0]["screen_name"] == "sandbox_demo_shop"
    users = api(client, "users.get", user_ids="1001,ivan_p,42", fields="screen_name")["response"]
    assert [u["first_name"] for u in users[:2]] == ["Ivan", "Ivan"]
    assert users[0]["screen_name"] == "ivan_p" and users[2]["id"] == 42
    assert error_code(api(client, "users.get", user_ids="nobody_here")) == 113
    customer_writes(client, user=1001, text="q1")
    api(client, "messages.send", peer_id=1001, random_id=1, message="a1")
    history = api(client, "messages.getHistory", peer_id=1001)["response"]
    assert history["count"] == 2 and [m["text"] for m in history["items"]] == ["a1", "q1"]
    assert error_code(api(client, "groups.getCallbackConfirmationCode", group_id=1)) == 15


def test_faults_look_like_vk(receiver: tuple[Receiver, str]) -> None:
    hook, url = receiver
    client = make(url)
    customer_writes(client)
    client.post("/_faults", json={"error_rate": 1.0})
    internal = api(client, "messages.send", peer_id=CUSTOMER, random_id=1, message="x")
    assert error_code(internal) == 10 and internal["error"]["error_msg"].startswith(
        "Internal server error")
    client.post("/_config", json={"fault_5xx": "http"})
    gateway = client.post("/method/messages.send", data={"v": V})
    assert gateway.status_code == 502 and b"nginx" in gateway.data
    client.post("/_faults", json={"reset": True, "rate_429": 1.0})
    assert error_code(api(client, "users.get", user_ids=1)) == 6
    client.post("/_faults", json={"reset": True})
    assert client.get("/_sent").json["sent"] == []  # nothing was committed


def test_a_bridge_may_send_while_it_handles_an_event(receiver: tuple[Receiver, str]) -> None:
    """The handler calls messages.send before answering ok: no deadlock, the
    reply is sent and echoed."""
    hook, url = receiver
    app = create_app({**FAST, "server_url": url})
    client = app.test_client()
    with serve(app) as base:
        def answer(event: dict[str, Any]) -> None:
            if event["type"] == "message_new":
                message = event["object"]["message"]
                requests.post(f"{base}/method/messages.send", timeout=5, data={
                    "v": V, "access_token": DEMO_ACCESS_TOKEN, "peer_id": message["peer_id"],
                    "random_id": message["conversation_message_id"], "message": "Got it"})

        hook.handler = answer
        delivered = customer_writes(client)
        assert delivered["body"] == "ok"
        echo = wait_for(lambda: hook.events("message_reply"))
    assert echo[0]["object"]["text"] == "Got it"
    assert [s["message"] for s in client.get("/_sent").json["sent"]] == ["Got it"]


def test_state_reset_and_the_mount(receiver: tuple[Receiver, str]) -> None:
    hook, url = receiver
    client = make(url, communities=[OTHER])
    customer_writes(client)
    api(client, "messages.send", peer_id=CUSTOMER, random_id=1, message="x")
    state = client.get(f"/_state?account={DEMO_GROUP_ID}").json
    account = state["accounts"][0]
    assert account["account"] == str(DEMO_GROUP_ID) and account["sent"] == 1
    assert account["permissions"] == {str(CUSTOMER): "allowed"}
    assert client.get("/_state?account=club227000002").json["accounts"][0]["group_id"] == 227000002
    assert client.get("/_state?account=999").status_code == 404
    assert client.post("/_reset").json == {"ok": True}
    assert client.get("/_sent").json["sent"] == []
    assert client.get("/_state").json["accounts"][0]["server"]["status"] == "wait"

    from sandbox.server import build

    root = build()
    with serve(root) as base:
        body = requests.post(f"{base}/sandbox/vk/method/users.get",
                             data={"v": V, "access_token": DEMO_ACCESS_TOKEN, "user_ids": "1"},
                             timeout=5).json()
    assert body["response"][0]["id"] == 1
