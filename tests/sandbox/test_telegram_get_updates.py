"""The Telegram sandbox's ``getUpdates`` behaves like the Bot API server's
(api.json getUpdates; the 409 descriptions as tdlib/telegram-bot-api words
them): refused while a webhook is set, ``offset`` confirms, ``limit`` and
``timeout`` clamp, a long poll waits for an update and is ended by a second
poll or by ``setWebhook``, and what was queued goes to a webhook set later.

Long polls run over real HTTP (a threaded werkzeug server on port 0): two
clients at once is the point of several tests. No test asserts a duration.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from sandbox.telegram import DEMO_BOT_TOKEN, create_app
from tests.sandbox.test_telegram_sandbox import FAST, Receiver, api, serve

TOKEN = DEMO_BOT_TOKEN
WEBHOOK_ACTIVE = (
    "Conflict: can't use getUpdates method while webhook is active; "
    "use deleteWebhook to delete the webhook first"
)
TERMINATED = (
    "Conflict: terminated by other getUpdates request; "
    "make sure that only one bot instance is running"
)


@pytest.fixture
def client() -> Any:
    return create_app(dict(FAST)).test_client()


@pytest.fixture
def base() -> Iterator[str]:
    with serve(create_app(dict(FAST))) as url:
        yield url


def text_update(user: int, text: str, update_id: int | None = None) -> dict[str, Any]:
    update: dict[str, Any] = {
        "message": {
            "message_id": 1,
            "date": 1_700_000_000,
            "text": text,
            "chat": {"id": user, "type": "private", "first_name": "Ann"},
            "from": {"id": user, "is_bot": False, "first_name": "Ann"},
        }
    }
    if update_id is not None:
        update["update_id"] = update_id
    return update


def get_updates(client: Any, **params: Any) -> Any:
    return api(client, "getUpdates", **params).get_json()


def bot_state(client: Any) -> dict[str, Any]:
    (bot,) = client.get("/_state", query_string={"account": TOKEN}).get_json()["accounts"]
    return dict(bot)


def test_refused_with_409_while_a_webhook_is_set(client: Any) -> None:
    api(client, "setWebhook", url="https://bridge.example/hook")
    refused = api(client, "getUpdates", timeout=0)
    assert refused.status_code == 409
    assert refused.get_json() == {"ok": False, "error_code": 409, "description": WEBHOOK_ACTIVE}
    assert api(client, "deleteWebhook").get_json()["description"] == "Webhook was deleted"
    assert get_updates(client, timeout=0) == {"ok": True, "result": []}


def test_updates_queue_once_polled_and_offset_confirms_them(client: Any) -> None:
    # nobody listens yet: the control API says so
    assert client.post("/_deliver", json={"update": text_update(5, "lost")}).status_code == 409
    assert get_updates(client)["result"] == []  # the bot polls from now on
    ids = []
    for text in ("one", "two", "three"):
        answer = client.post("/_deliver", json={"update": text_update(5, text)}).get_json()
        assert answer["queued"] is True and answer["delivered"] is False
        ids.append(answer["update_id"])
    assert ids == [ids[0], ids[0] + 1, ids[0] + 2]
    assert api(client, "getWebhookInfo").get_json()["result"]["pending_update_count"] == 3

    first = get_updates(client)["result"]
    assert [u["update_id"] for u in first] == ids
    assert [u["message"]["text"] for u in first] == ["one", "two", "three"]
    # not confirmed yet: the same call returns the same updates
    assert get_updates(client)["result"] == first
    # an offset above an update_id confirms it, and it is gone for good
    assert [u["update_id"] for u in get_updates(client, offset=ids[1])["result"]] == ids[1:]
    assert get_updates(client)["result"] == first[1:]
    assert get_updates(client, offset=ids[2] + 1)["result"] == []
    assert bot_state(client)["polling"]["pending_update_count"] == 0


def test_limit_clamps_to_1_100_and_a_negative_offset_keeps_the_last(client: Any) -> None:
    get_updates(client)
    for n in range(5):
        client.post("/_deliver", json={"update": text_update(6, f"m{n}")})
    assert len(get_updates(client, limit=2)["result"]) == 2
    assert len(get_updates(client, limit=0)["result"]) == 1  # clamped up to 1
    assert len(get_updates(client, limit=500)["result"]) == 5  # clamped down to 100
    last_two = get_updates(client, offset=-2)["result"]
    assert [u["message"]["text"] for u in last_two] == ["m3", "m4"]
    assert [u["message"]["text"] for u in get_updates(client)["result"]] == ["m3", "m4"]


def test_allowed_updates_sticks_and_filters_what_arrives(client: Any) -> None:
    get_updates(client, allowed_updates=["callback_query"])
    answer = client.post("/_deliver", json={"update": text_update(7, "hi")}).get_json()
    assert answer["filtered"] is True and answer["queued"] is False
    get_updates(client)  # not given: the previous setting stays
    assert client.post("/_deliver", json={"update": text_update(7, "hi")}).get_json()["filtered"]
    get_updates(client, allowed_updates=["message"])
    assert client.post("/_deliver", json={"update": text_update(7, "hi")}).get_json()["queued"]


def test_updates_older_than_24_hours_are_dropped(client: Any) -> None:
    get_updates(client)
    client.post("/_deliver", json={"update": text_update(8, "old")})
    client.post("/_clock", json={"advance": 24 * 3600 + 1})
    client.post("/_deliver", json={"update": text_update(8, "new")})
    assert [u["message"]["text"] for u in get_updates(client)["result"]] == ["new"]


def _poll(base: str, into: list[Any], **params: Any) -> threading.Thread:
    def run() -> None:
        response = requests.post(f"{base}/bot{TOKEN}/getUpdates", json=params, timeout=30)
        into.append((response.status_code, response.json()))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _wait_until_waiting(base: str) -> None:
    for _ in range(500):
        state = requests.get(f"{base}/_state", params={"account": TOKEN}, timeout=5).json()
        if state["accounts"][0]["polling"]["waiting"]:
            return
        threading.Event().wait(0.01)
    raise AssertionError("the long poll never started waiting")


def test_a_long_poll_waits_for_the_next_update(base: str) -> None:
    requests.post(f"{base}/bot{TOKEN}/getUpdates", json={}, timeout=5)
    answers: list[Any] = []
    poll = _poll(base, answers, timeout=20)
    _wait_until_waiting(base)
    assert answers == []
    requests.post(f"{base}/_deliver", json={"update": text_update(9, "wake up")}, timeout=5)
    poll.join(timeout=20)
    ((status, body),) = answers
    assert status == 200 and [u["message"]["text"] for u in body["result"]] == ["wake up"]


def test_a_second_poll_ends_the_waiting_one_with_409(base: str) -> None:
    requests.post(f"{base}/bot{TOKEN}/getUpdates", json={}, timeout=5)
    first: list[Any] = []
    waiting = _poll(base, first, timeout=20)
    _wait_until_waiting(base)
    second = requests.post(f"{base}/bot{TOKEN}/getUpdates", json={"timeout": 0}, timeout=5)
    assert second.status_code == 200 and second.json()["result"] == []
    waiting.join(timeout=20)
    assert first == [(409, {"ok": False, "error_code": 409, "description": TERMINATED})]
    state = requests.get(f"{base}/_state", params={"account": TOKEN}, timeout=5).json()
    assert state["accounts"][0]["polling"]["conflicts"] == 1


def test_set_webhook_ends_the_waiting_poll_and_takes_the_queue() -> None:
    hook = Receiver()
    with serve(create_app(dict(FAST))) as base, serve(hook.app) as hook_base:
        url = f"{hook_base}/hook"
        requests.post(f"{base}/bot{TOKEN}/getUpdates", json={}, timeout=5)
        answers: list[Any] = []
        waiting = _poll(base, answers, timeout=20)
        _wait_until_waiting(base)
        requests.post(f"{base}/bot{TOKEN}/setWebhook", json={"url": url}, timeout=5)
        waiting.join(timeout=20)
        assert answers == [
            (
                409,
                {
                    "ok": False,
                    "error_code": 409,
                    "description": "Conflict: terminated by setWebhook request",
                },
            )
        ]
        # back to polling: two updates wait, the poller takes one and confirms nothing
        requests.post(f"{base}/bot{TOKEN}/deleteWebhook", json={}, timeout=5)
        for text in ("queued 1", "queued 2"):
            answer = requests.post(
                f"{base}/_deliver", json={"update": text_update(10, text)}, timeout=5
            ).json()
            assert answer["queued"] is True
        taken = requests.post(f"{base}/bot{TOKEN}/getUpdates", json={"limit": 1}, timeout=5)
        assert [u["message"]["text"] for u in taken.json()["result"]] == ["queued 1"]
        # the webhook is set again: what getUpdates did not confirm is posted to it
        requests.post(f"{base}/bot{TOKEN}/setWebhook", json={"url": url}, timeout=5)
        for _ in range(500):
            if len(hook.requests) == 2:
                break
            threading.Event().wait(0.01)
        texts = [json.loads(r["body"])["message"]["text"] for r in hook.requests]
        assert texts == ["queued 1", "queued 2"]
        info = requests.post(f"{base}/bot{TOKEN}/getWebhookInfo", timeout=5).json()["result"]
        assert info["pending_update_count"] == 0


def test_set_webhook_can_drop_the_queue(client: Any) -> None:
    get_updates(client)
    client.post("/_deliver", json={"update": text_update(11, "stale")})
    api(client, "setWebhook", url="https://bridge.example/hook", drop_pending_updates=True)
    info = api(client, "getWebhookInfo").get_json()["result"]
    assert info["pending_update_count"] == 0
