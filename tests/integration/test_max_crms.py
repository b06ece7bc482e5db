"""MAX -> Bitrix24 -> MAX through the sandboxes, a real Redis and real RQ
worker processes, on the demo mapping (the ``max`` rule); one stack, the
whole scenario in one test:

1. 12 users x 10 ``message_created`` updates (real-shaped: the go-stab
   fixtures' shape, each message's ``mid``, ``seq`` above 2**53 and
   millisecond ``timestamp`` in the user's order) posted by the MAX
   sandbox's ``_deliver`` to the subscription the bridge made when the bot
   was connected (with its secret header); each burst shuffled and 10 %
   posted twice (MAX retries the same update, with no event id) -> exactly
   12 contacts and 120 entries, each once, each user's in order.
2. An operator answers every user in Open Lines -> each answer goes out
   once through ``POST /messages`` (the sandbox's ``_sent``) and the CRM
   shows it delivered.
3. A user stops the bot (``bot_stopped``) -> the conversation shows it and
   the bridge records the withdrawn consent; the operator's next answer is
   refused before it reaches MAX and the CRM shows the reply failed, and
   why.
4. A user shares their contact (a ``request_contact`` answer whose hash
   the sandbox makes with the bot token) -> the Bitrix24 contact has the
   phone, verified.
5. The bot is switched to long polling (its subscription deleted): a new
   message waits in ``GET /updates`` and the worker's poller brings it in.
"""

from __future__ import annotations

import random
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from bench.traffic import Delivery, arrivals, check_bitrix24, message_text, wait_until
from bridge.model import ReceiveMode
from bridge.setup import set_channel_mode
from channel_adapters.max.inbound import STOPPED
from sandbox.max import DEMO_BOT_ID, DIALOG_BASE
from tests.support.crm_views import (
    Bitrix24View,
    Vendor,
    bridge_replies,
    crm_view,
    fast_stack,
    runtime_of,
)

pytestmark = pytest.mark.integration

USERS, PER_USER = 12, 10  # 20 until 2026-12-06: the suite's 20-minute budget
TOTAL = USERS * PER_USER
#: MAX user ids of the fixtures' size
FIRST = 712_000_001


def _replies(stack) -> dict[str, list[dict[str, Any]]]:  # type: ignore[no-untyped-def]
    """The bridge's outbound rows by thread (a dialog's: the user id), oldest first."""
    return bridge_replies(stack)


def _synced(stack) -> int:  # type: ignore[no-untyped-def]
    return int(stack.bridge_status()["messages"]["in"].get("synced", 0))


def _max(stack, path: str, **body: Any) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    return Vendor(stack, "max").post(path, **body)


def _max_get(stack, path: str, **params: Any) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    return Vendor(stack, "max").get(path, **params)


def _chat(user: int) -> int:
    return DIALOG_BASE + user


def _created(user: int, index: int, base_ms: int) -> dict[str, Any]:
    """A user's message ``index`` in their dialog, as MAX posts it (the
    go-stab ``webhook.message_created`` shape; built here)."""
    ms = base_ms + index * 1000
    return {
        "message": {
            "recipient": {"chat_id": _chat(user), "chat_type": "dialog", "user_id": DEMO_BOT_ID},
            "timestamp": ms,
            "body": {
                "mid": f"mid.{user:016x}{index:016x}",
                "seq": 116_328_147_937_082_782 + user * 100 + index,
                "text": message_text(user, index),
            },
            "sender": {
                "user_id": user,
                "first_name": f"User{user}",
                "is_bot": False,
                "last_activity_time": ms,
                "name": f"User{user}",
            },
        },
        "timestamp": ms + 40,
        "user_locale": "ru",
        "update_type": "message_created",
    }


def _traffic(seed: int) -> list[Delivery]:
    """Each user's messages (their clock an hour ago), every burst shuffled
    and 10 % posted twice (the same body), the bursts interleaved."""
    base = int(time.time() * 1000) - 3_600_000
    bursts = [
        [Delivery(user, i, _created(user, i, base + u * 20_000)) for i in range(PER_USER)]
        for u, user in enumerate(range(FIRST, FIRST + USERS))
    ]
    return arrivals(bursts, random.Random(seed))  # noqa: S311 (test traffic)


def _outgoing(
    b24: Bitrix24View, user: int, portal: dict[str, Any] | None = None
) -> list[tuple[str, str, str | None]]:
    """(text, status, the failure shown) of the operator's messages to ``user``."""
    return [
        (m["text"], m["status"], m["error"])
        for m in b24.messages(user, portal)
        if m["direction"] == "out"
    ]


def _incoming(b24: Bitrix24View, user: int) -> list[str]:
    return [m["text"] for m in b24.messages(user) if m["direction"] == "in"]


def test_max_12_users_replies_a_stopped_bot_a_contact_and_polling(  # type: ignore[no-untyped-def]
    make_stack_once,
):
    started = time.monotonic()
    stack = fast_stack(
        make_stack_once,
        "bitrix24",
        ("max",),
        workers=2,
        env_overrides={"BRIDGE_POLL_TIMEOUT": "2"},
    )
    account = stack.seeded.max_account_id
    assert account is not None  # the demo bot, connected: subscribed with a secret
    [sub] = _max_get(stack, "_state")["accounts"][0]["subscriptions"]
    assert sub["secret_set"] and sub["url"].startswith(f"{stack.bridge_url}/webhooks/max/")
    # MAX has no read receipts: Open Lines' "read" says nothing
    b24 = crm_view(stack, "max", USERS, PER_USER, read_receipts=False)
    assert isinstance(b24, Bitrix24View)

    # 1. 12 users x 10 messages, shuffled within each burst, 10 % posted twice
    traffic = _traffic(seed=14)
    duplicates = sum(d.duplicate for d in traffic)
    assert USERS // 2 < duplicates < USERS * 2

    def deliver(delivery: Delivery) -> dict[str, Any]:
        return _max(stack, "_deliver", payload=delivery.update)

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(deliver, traffic))
    assert {(a["status"], a["delivered"]) for a in answers} == {(200, True)}, answers[:3]
    assert wait_until(lambda: _synced(stack) == TOTAL, timeout=120), stack.bridge_status()
    users = sorted({d.user for d in traffic})
    expected = {user: [message_text(user, i) for i in range(PER_USER)] for user in users}
    assert b24.check(expected).summary() == b24.expected_summary
    status = stack.bridge_status()
    assert status["messages"]["in"] == {"synced": TOTAL}  # a redelivery is no message
    assert status["parked"] == [] and status["failed"] == []

    # 2. an operator answers each user -> each answer sent once, the CRM told
    def answer(user: int) -> str:
        return f"Спасибо, {user}! Your order ships today."

    for user in users:
        assert b24.reply(user, answer(user))["webhook"]["status"] == 200
    assert wait_until(lambda: len(_max_get(stack, "_sent")["sent"]) >= USERS, timeout=60)
    assert wait_until(
        lambda: all(
            [r["status"] for r in _replies(stack).get(str(u), [])] == ["sent"] for u in users
        ),
        timeout=60,
    ), _replies(stack)
    sent = _max_get(stack, "_sent")["sent"]
    assert sorted((s["chat_id"], s["text"]) for s in sent) == sorted(
        (_chat(u), answer(u)) for u in users
    )

    def shown_delivered() -> list[int]:
        """Users whose Open Lines chat does not show the answer delivered, once."""
        portal = b24.state()
        return [u for u in users if _outgoing(b24, u, portal) != [(answer(u), "delivered", None)]]

    assert wait_until(lambda: not shown_delivered(), timeout=60), shown_delivered()

    # 3. a user stops the bot: shown in the conversation; the next answer refused
    stopped = users[1]
    stop = _max(stack, "_stop", user=stopped)
    assert (stop["status"], stop["delivered"]) == (200, True), stop
    assert wait_until(lambda: _synced(stack) == TOTAL + 1, timeout=60), stack.bridge_status()
    assert wait_until(lambda: STOPPED in _incoming(b24, stopped), timeout=30), _incoming(
        b24, stopped
    )
    refused = "Your refund is on its way."
    assert b24.reply(stopped, refused)["webhook"]["status"] == 200

    def refused_here() -> bool:
        return [r["status"] for r in _replies(stack)[str(stopped)]] == ["sent", "refused"]

    assert wait_until(refused_here, timeout=60), _replies(stack)[str(stopped)]
    reason = _replies(stack)[str(stopped)][1]["error"]
    assert reason.startswith(
        (
            "Not sent: the client no longer allows messages from you on MAX",
            "Не отправлено: клиент запретил сообщения от вас в MAX",
        )
    ), reason
    assert len(_max_get(stack, "_sent", user_id=stopped)["sent"]) == 1  # nothing more went

    def crm_failed() -> bool:
        out = _outgoing(b24, stopped)
        return [(t, s) for t, s, _ in out] == [(answer(stopped), "delivered"), (refused, "failed")]

    assert wait_until(crm_failed, timeout=60), _outgoing(b24, stopped)
    shown = _outgoing(b24, stopped)[1][2]
    assert shown and reason[:60] in shown, shown

    # 4. a user shares their contact: the phone is the contact's, verified
    sharer = users[2]
    shared = _max(stack, "_contact", user=sharer, phone="79991234567", name=f"User{sharer}")
    assert shared["status"] == 200, shared
    assert wait_until(lambda: _synced(stack) == TOTAL + 2, timeout=60), stack.bridge_status()
    assert wait_until(
        lambda: any(
            "+79991234567" in str(p.get("VALUE"))
            for p in (b24.contact(sharer).get("multifields") or {}).get("PHONE") or []
        ),
        timeout=30,
    ), b24.contact(sharer)
    assert any("verified by MAX" in t for t in _incoming(b24, sharer)), _incoming(b24, sharer)

    # 5. long polling: the subscription deleted, a new message fetched by the poller
    runtime = runtime_of(stack)
    try:
        assert set_channel_mode(runtime, account, ReceiveMode.POLLING) is None
    finally:
        runtime.close()
    assert _max_get(stack, "_state")["accounts"][0]["subscriptions"] == []
    polled_user = users[3]
    late = _created(polled_user, PER_USER, int(time.time() * 1000))
    queued = _max(stack, "_deliver", payload=late)
    assert queued["queued"] is True and queued["status"] is None
    assert wait_until(lambda: _synced(stack) == TOTAL + 3, timeout=60), stack.bridge_status()
    assert wait_until(
        lambda: message_text(polled_user, PER_USER) in _incoming(b24, polled_user), timeout=30
    )
    polling = _max_get(stack, "_state")["accounts"][0]["polling"]
    assert polling["kept"] == 0  # fetched and committed with the next marker

    # in the end: every message once and in order, the replies as sent
    status = stack.bridge_status()
    assert status["messages"]["out"] == {"sent": USERS, "refused": 1}
    # a refused reply holds nothing back: no conversation waits on it
    assert status["failed"] == [] and status["parked"] == []
    assert status["consent_withdrawn"] == 1  # recorded on the user's conversation
    final = dict(expected)
    final[stopped] = [*final[stopped], STOPPED]
    final[polled_user] = [*final[polled_user], message_text(polled_user, PER_USER)]
    report = check_bitrix24(b24.state(), final, comments=False, channel="max")
    assert (report.lost, report.out_of_order, report.inbox_duplicated) == ([], [], [])
    assert [u for u in report.unexpected if not u.startswith(f"{sharer}:")] == []
    print(f"test_max_crms wall time: {time.monotonic() - started:.1f} s")
