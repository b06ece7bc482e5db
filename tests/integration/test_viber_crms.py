# ruff: noqa: S106  (message_token="keep" is no password)
"""Viber -> amoCRM -> Viber through the sandboxes, a real Redis and real RQ
worker processes, on the demo mapping's ``viber`` rule; one stack, the whole
scenario in one test (``make_stack_once``: PostgreSQL when the suite has one):

1. 20 users × 10 ``message`` callbacks (real-shaped, each with its own
   ``message_token`` beyond 2^53 and the user's millisecond ``timestamp``)
   posted by the Viber sandbox's ``_deliver``, signed with the bot's token as
   Viber signs them; each burst shuffled and 10 % posted twice (the same body
   and token: Viber's retry) -> exactly 20 contacts and 200 chat messages,
   each once, each user's in order.
2. A rep answers every user in amoCRM's chat -> each answer goes out once
   through ``send_message`` (the sandbox's ``_sent``) with ``tracking_data``
   = the bridge's message id; the sandbox fires ``delivered`` and ``seen``
   (some twice, some seen first): the bridge holds every answer read, and
   amoCRM shows it read.
3. Consent: a user unsubscribes (``_unsubscribe``) -> amoCRM shows it in the
   conversation and the bridge refuses the rep's next answer itself; another
   user's unsubscribe never reaches the bridge -> Viber refuses the send
   (status 6). amoCRM shows both answers failed, and why.
4. A new user opens the chat from a deep link (``conversation_started``):
   the bridge's answer is the bot's welcome message, the sandbox records it.
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from bench.traffic import message_text, wait_until
from channel_adapters.viber.inbound import CONSENT
from tests.support.crm_views import AmoCrmView, Vendor, bridge_replies, crm_view, fast_stack

pytestmark = pytest.mark.integration

USERS, PER_USER = 20, 10
TOTAL = USERS * PER_USER
#: message tokens of today's range (the corpus': 4912661846655238145)
FIRST_TOKEN = 4_912_661_846_655_238_145


def _user(u: int) -> str:
    """A Viber user id: base64 of 16 bytes, as Viber's look."""
    return f"vb{u:05d}Q+h7mZ3kRr/Aw=="


def _replies(stack) -> dict[str, list[dict[str, Any]]]:  # type: ignore[no-untyped-def]
    """The bridge's outbound rows by Viber user, oldest first."""
    return bridge_replies(stack)


def _viber(stack, path: str, **body: Any) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    return Vendor(stack, "viber").post(path, **body)


def _viber_get(stack, path: str, **params: Any) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    return Vendor(stack, "viber").get(path, **params)


def _sent(stack, user: str | None = None) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    params = {"receiver": user} if user else {}
    return _viber_get(stack, "_sent", **params)["sent"]  # type: ignore[no-any-return]


def _message(u: int, index: int, stamp_ms: int) -> dict[str, Any]:
    """A ``message`` callback as Viber posts it (the corpus' shape)."""
    return {
        "event": "message",
        "timestamp": stamp_ms,
        "message_token": FIRST_TOKEN + u * PER_USER + index,
        "sender": {
            "id": _user(u),
            "name": f"Viber User {u}",
            "avatar": None,
            "language": "ru",
            "country": "RU",
            "api_version": 10,
        },
        "message": {"type": "text", "text": message_text(u, index)},
        "silent": False,
    }


def _traffic(seed: int) -> list[tuple[int, dict[str, Any], bool]]:
    """(user, body, duplicate): bursts shuffled, 10 % posted twice, interleaved."""
    rng = random.Random(seed)  # noqa: S311 (test traffic, not crypto)
    base = (int(time.time()) - 3600) * 1000
    bursts = []
    for u in range(USERS):
        items = [
            (u, _message(u, i, base + (u * PER_USER + i) * 1000), False) for i in range(PER_USER)
        ]
        rng.shuffle(items)
        for dup in [(a, b, True) for a, b, _ in items if rng.random() < 0.1]:
            items.insert(rng.randrange(len(items) + 1), dup)
        bursts.append(items)
    out = []
    while any(bursts):
        for burst in bursts:
            if burst:
                out.append(burst.pop(0))
    return out


def _chats(amo: AmoCrmView) -> dict[str, list[dict[str, Any]]]:
    """Messages per Viber user (the chat's client id), in amoCRM's order:
    direction, text, delivery status (amojo: 1 delivered, 2 read, -1 error)
    and the message's own id (``ref``: a redelivery would be a second one)."""
    codes = {1: "delivered", 2: "read", -1: "failed"}
    out: dict[str, list[dict[str, Any]]] = {}
    for chat in amo.state()["chats"]:
        user = str((chat.get("client") or {}).get("client_id"))
        for m in sorted(chat["messages"], key=lambda m: int(m.get("timestamp") or 0)):
            last = (m.get("delivery_statuses") or [{}])[-1]
            out.setdefault(user, []).append(
                {
                    "direction": m["direction"],
                    "text": m["text"],
                    "status": codes.get(int(last.get("status") or 0), "sent"),
                    "error": last.get("error"),
                    "ref": m.get("ref_id") or m["id"],
                }
            )
    return out


def test_viber_20_users_replies_with_statuses_and_an_unsubscribed_user(  # type: ignore[no-untyped-def]
    make_stack_once,
):
    stack = fast_stack(
        make_stack_once,
        "amocrm",
        ("viber",),
        workers=2,
        sandbox_config={
            "viber": {"status_duplicate_rate": 0.3, "status_reorder_rate": 0.3, "seed": 14}
        },
    )
    assert stack.seeded.viber_account_id is not None  # connected: set_webhook's check passed
    checks = _viber_get(stack, "_deliveries", event="webhook")["deliveries"]
    assert [(d["kind"], d["status"]) for d in checks] == [("webhook_check", 200)]
    amo = crm_view(stack, "viber", USERS, PER_USER)
    assert isinstance(amo, AmoCrmView)

    # 1. 20 users x 10 messages, shuffled within each burst, 10 % posted twice
    traffic = _traffic(seed=14)
    duplicates = sum(dup for *_, dup in traffic)
    assert USERS // 2 < duplicates < USERS * 2

    def deliver(item: tuple[int, dict[str, Any], bool]) -> dict[str, Any]:
        return _viber(stack, "_deliver", payload=item[1], message_token="keep")

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(deliver, traffic))
    assert {(a["status"], a["delivered"]) for a in answers} == {(200, True)}, answers[:3]
    assert Counter(a["payload"]["message_token"] for a in answers) == Counter(
        body["message_token"] for _, body, _ in traffic
    )
    assert wait_until(
        lambda: stack.bridge_status()["messages"]["in"].get("synced", 0) == TOTAL, timeout=120
    ), stack.bridge_status()
    users = [_user(u) for u in range(USERS)]
    expected = {_user(u): [message_text(u, i) for i in range(PER_USER)] for u in range(USERS)}

    def inbound_ok() -> bool:
        chats = _chats(amo)
        got = {u: [m["text"] for m in ms if m["direction"] == "in"] for u, ms in chats.items()}
        return got == expected

    assert wait_until(inbound_ok, timeout=60), _chats(amo)
    account = amo.state()
    assert len([c for c in account["contacts"] if not c.get("is_deleted")]) == USERS
    refs = Counter(m["ref"] for ms in _chats(amo).values() for m in ms)
    assert all(n == 1 for n in refs.values())  # a redelivery is no second message
    status = stack.bridge_status()
    assert status["messages"]["in"] == {"synced": TOTAL}
    assert status["parked"] == [] and status["failed"] == []

    # 2. a rep answers each user -> sent once with tracking_data, then read
    def answer(user: str) -> str:
        return f"Спасибо! Your order {user[:7]} ships today."

    for user in users:
        assert amo.reply(user, answer(user))["webhook"]["status"] == 200
    assert wait_until(lambda: len(_sent(stack)) >= USERS, timeout=60), _sent(stack)
    assert wait_until(
        lambda: all([r["status"] for r in _replies(stack).get(u, [])] == ["sent"] for u in users),
        timeout=60,
    ), _replies(stack)
    rows = _replies(stack)
    sent = _sent(stack)
    assert sorted((s["receiver"], s["text"]) for s in sent) == sorted((u, answer(u)) for u in users)
    for s in sent:
        [row] = rows[s["receiver"]]
        assert s["tracking_data"] == row["uid"]  # our id rides with the message
        assert s["sender"]["name"] == "Demo Shop" and s["message_token"] > 2**53

    def not_read() -> dict[str, Any]:
        """Users whose reply the bridge does not hold read (its own rows)."""
        rows = _replies(stack)
        return {
            u: rows.get(u)
            for u in users
            if [(r["status"], r["delivery"]) for r in rows.get(u, [])] != [("sent", "read")]
        }

    # the bridge moved every reply to read, whatever order the reports came in
    assert wait_until(lambda: not not_read(), timeout=60), not_read()
    posted = _viber_get(stack, "_deliveries", kind="status")["deliveries"]
    by_event = Counter(d["event"] for d in posted)
    assert by_event["delivered"] >= USERS and by_event["seen"] >= USERS
    assert len(posted) > 2 * USERS  # some statuses came twice
    assert all(d["status"] == 200 for d in posted)

    # 3. consent: a user unsubscribes -> the bridge refuses the next reply
    # itself (bridge.consent); another's unsubscribe never reached the bridge
    # (the callback lost) -> Viber refuses the send with status 6. Both
    # replies fail, and amoCRM shows why.
    gone, lost = users[1], users[2]
    unsub = _viber(stack, "_unsubscribe", user=gone)
    assert unsub["status"] == 200, unsub
    _viber(stack, "_unsubscribe", user=lost, callback=False)
    notice = CONSENT["unsubscribed"]
    assert wait_until(
        lambda: any(m["text"] == notice for m in _chats(amo).get(gone, [])), timeout=60
    ), _chats(amo).get(gone)
    refused = "Your refund is on its way."
    assert amo.reply(gone, refused)["webhook"]["status"] == 200
    assert amo.reply(lost, refused)["webhook"]["status"] == 200

    def not_sent() -> bool:
        rows = _replies(stack)
        return [r["status"] for r in rows.get(gone, [])] == ["sent", "refused"] and [
            r["status"] for r in rows.get(lost, [])
        ] == ["sent", "failed"]

    assert wait_until(not_sent, timeout=60), (_replies(stack).get(gone), _replies(stack).get(lost))
    reason = _replies(stack)[gone][1]["error"]
    assert reason.startswith(
        (
            "Not sent: the client no longer allows messages from you on Viber",
            "Не отправлено: клиент запретил сообщения от вас в Viber",
        )
    ), reason
    status_6 = _replies(stack)[lost][1]["error"]
    assert status_6.startswith("Viber 6: the user is not subscribed"), status_6
    assert len(_sent(stack, gone)) == 1 and len(_sent(stack, lost)) == 1

    def crm_failed(user: str, why: str) -> bool:
        out = [m for m in _chats(amo).get(user, []) if m["direction"] == "out"]
        return [m["text"] for m in out] == [answer(user), refused] and (
            out[1]["status"] == "failed" and why[:40] in (out[1]["error"] or "")
        )

    assert wait_until(lambda: crm_failed(gone, reason), timeout=60), _chats(amo).get(gone)
    assert wait_until(lambda: crm_failed(lost, status_6), timeout=60), _chats(amo).get(lost)

    # 4. a new user opens the chat from a deep link: the answer is the welcome
    opened = _viber(
        stack,
        "_open",
        user=_user(99),
        name="Newcomer",
        context="utm_source-qr__utm_campaign-winter",
    )
    assert opened["status"] == 200, opened
    welcome = json.loads(opened["body"])
    assert welcome["type"] == "text" and "Здравствуйте" in welcome["text"], welcome
    assert welcome["sender"] == {"name": "Demo Shop"}
    state = _viber_get(stack, "_state")
    assert [w["receiver"] for w in state["welcomes"]] == [_user(99)]
    assert wait_until(lambda: _user(99) in _chats(amo), timeout=60), _chats(amo).keys()

    # in the end: nothing lost, nothing twice
    final = _chats(amo)
    for user in users:
        texts = [m["text"] for m in final[user] if m["direction"] == "in"]
        assert texts == expected[user] + ([notice] if user == gone else []), (user, texts)
    assert len(_sent(stack)) == USERS

    def unread() -> str:
        """Users whose first reply amoCRM does not show read, and why."""
        chats, rows = _chats(amo), _replies(stack)
        wrong = []
        for u in users:
            out = [m for m in chats.get(u, []) if m["direction"] == "out"]
            if not out or (out[0]["text"], out[0]["status"]) != (answer(u), "read"):
                statuses = [(x["status"], x["ok"]) for x in _sent(stack, u)[0].get("statuses", [])]
                wrong.append(
                    f"{u}: crm {[m['status'] for m in out]} bridge "
                    f"{[(r['status'], r['delivery']) for r in rows[u]]} sandbox {statuses}"
                )
        return "; ".join(wrong)

    # amoCRM shows every first reply read: the last report of a reply whose
    # status changed while its report job was finishing was once lost (the
    # core's follow-up race, fixed in 39de0f3; this test met it about 1 run
    # in 5 on PostgreSQL)
    assert wait_until(lambda: not unread(), timeout=30), unread()
