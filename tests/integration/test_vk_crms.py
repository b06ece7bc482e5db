"""VK -> CRM -> VK through the sandboxes, a real Redis and real RQ worker
processes, against HubSpot on its demo mapping (the ``vk`` rule); one
stack, the whole scenario in one test. The three new messengers share the
CRMs out between them (MAX against Bitrix24, Viber against amoCRM: their
own end-to-end tests), the canary run takes VK through all three, and the
test itself is written for any CRM (``tests/support/crm_views``: add it to
``CRMS`` to run it there):

1. 12 users × 10 ``message_new`` events (real-shaped Callback API bodies,
   each message's ``date`` and ``conversation_message_id`` in the user's
   order) posted by the VK sandbox's ``_deliver`` with their ``event_id``
   kept; each burst shuffled and 10 % posted twice (VK redelivers with the
   same ``event_id``) -> exactly 12 contacts and 120 entries, each once,
   each user's in order.
2. A rep answers every user in the CRM (the CRM sandbox's ``_reply``) ->
   each answer goes out once through ``messages.send`` (the VK sandbox's
   ``_sent``), with a ``random_id``, and the CRM is told it was delivered.
   The sandbox echoes each send back as ``message_reply`` (as VK does): the
   bridge answers ``ok`` and files nothing.
3. An ambiguous send: ``messages.send`` stores the message, then hangs past
   the bridge's read timeout (the sandbox's ``commit_then_timeout`` fault)
   -> the bridge sends again with the same ``random_id``, VK drops the
   repeat, the user has the message once, the CRM shows it delivered.
4. Consent: the user forbids the community's messages (``_deny``: a
   ``message_deny`` event) -> the CRM shows it as the adapter's system
   message, the bridge records it on the conversation; the rep's next
   answer is refused before it reaches VK and the CRM shows why.

The CRMs run at the fast tiers of the Telegram tests (the CRM's limit is not
what is tested here); on PostgreSQL when the suite has one.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from bench.traffic import (
    Delivery,
    message_text,
    wait_until,
)
from channel_adapters.vk.inbound import CONSENT
from channel_adapters.vk.outbound import random_id
from sandbox.vk import DEMO_GROUP_ID
from sandbox.vk.control import CLIENT_INFO
from tests.support.crm_views import Vendor, bridge_replies, crm_view, fast_stack

pytestmark = pytest.mark.integration

USERS, PER_USER = 12, 10  # 20 until 2026-12-06: the suite's 20-minute budget
#: VK user ids of today's range
FIRST = 712_000_001
TOTAL = USERS * PER_USER


# -- the stack --------------------------------------------------------------------


def _replies(stack) -> dict[int, list[dict[str, Any]]]:  # type: ignore[no-untyped-def]
    """The bridge's outbound rows by VK peer, oldest first."""
    return {int(peer): rows for peer, rows in bridge_replies(stack).items()}


def _counts(stack) -> dict[str, dict[str, int]]:  # type: ignore[no-untyped-def]
    return stack.bridge_status()["messages"]


# -- the VK sandbox ----------------------------------------------------------------------


def _vk(stack, path: str, **body: Any) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    return Vendor(stack, "vk").post(path, **body)


def _vk_get(stack, path: str, **params: Any) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    return Vendor(stack, "vk").get(path, **params)


def _sent(stack, peer: int | None = None) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    params = {"peer_id": str(peer)} if peer is not None else {}
    return _vk_get(stack, "_sent", **params)["sent"]


def _event_id(user: int, index: int) -> str:
    """A Callback API event id (40 hex digits), the same for the same message."""
    return hashlib.sha256(f"vk:{user}:{index}".encode()).hexdigest()[:40]


def _message_new(user: int, index: int, *, message_id: int, date: int) -> dict[str, Any]:
    """A ``message_new`` Callback API body as VK posts it at v5.199 (the
    corpus's ``message_new_*_5_118`` shape: ``{message, client_info}``): the
    user's message ``index`` in a personal dialog (``peer_id`` is the user)."""
    return {
        "type": "message_new",
        "object": {
            "message": {
                "date": date,
                "from_id": user,
                "id": message_id,
                "out": 0,
                "peer_id": user,
                "text": message_text(user, index),
                "conversation_message_id": index + 1,
                "fwd_messages": [],
                "important": False,
                "random_id": 0,
                "attachments": [],
                "is_hidden": False,
            },
            "client_info": dict(CLIENT_INFO),
        },
        "group_id": DEMO_GROUP_ID,
        "event_id": _event_id(user, index),
        "v": "5.199",
    }


def _vk_traffic(seed: int) -> list[Delivery]:
    """USERS × PER_USER messages, each user's one second apart on their own
    clock (an hour ago); every burst shuffled and redelivered in part (the
    same body, the same event_id), the bursts interleaved."""
    rng = random.Random(seed)  # noqa: S311 (test traffic, not crypto)
    base = int(time.time()) - 3600
    bursts = []
    for u in range(USERS):
        user = FIRST + u
        items = [
            Delivery(
                user,
                i,
                _message_new(
                    user, i, message_id=1 + u * PER_USER + i, date=base + u * PER_USER + i
                ),
            )
            for i in range(PER_USER)
        ]
        rng.shuffle(items)
        dups = [Delivery(d.user, d.index, d.update, True) for d in items if rng.random() < 0.1]
        for dup in dups:
            items.insert(rng.randrange(len(items) + 1), dup)
        bursts.append(items)
    out = []
    while any(bursts):
        for burst in bursts:
            if burst:
                out.append(burst.pop(0))
    return out


def _deliver_all(stack, deliveries: list[Delivery]) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    """Each body through ``_deliver`` with its event_id kept (a redelivery
    is VK's: the same id), 8 at a time; the sandbox's answers, in order."""

    def one(delivery: Delivery) -> dict[str, Any]:
        return _vk(stack, "_deliver", payload=delivery.update, event_id="keep")

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, deliveries))


# -- the test --------------------------------------------------------------------------


#: the CRMs this test runs against (any of ``VIEWS``)
CRMS = ("hubspot",)


@pytest.mark.parametrize("crm", CRMS)
def test_vk_12_users_replies_an_ambiguous_send_and_a_denied_user(  # type: ignore[no-untyped-def]
    make_stack_once, crm: str
):
    stack = fast_stack(make_stack_once, crm, ("vk",), workers=2)
    assert stack.seeded.vk_account_id is not None  # the demo community, connected
    # VK has no read receipts: the CRM's "read" says nothing
    side = crm_view(stack, "vk", USERS, PER_USER, read_receipts=False)

    # 1. 12 users x 10 messages, shuffled within each burst, 10 % posted twice
    traffic = _vk_traffic(seed=23)
    duplicates = sum(d.duplicate for d in traffic)
    assert USERS // 2 < duplicates < USERS * 2  # ~10 % redelivered
    answers = _deliver_all(stack, traffic)
    assert {(a["status"], a["body"]) for a in answers} == {(200, "ok")}, answers[:3]
    # the sandbox posted each body as given: a redelivery has its first post's event_id
    posted = Counter(a["event_id"] for a in answers)
    assert posted == Counter(d.update["event_id"] for d in traffic)
    assert sum(n - 1 for n in posted.values()) == duplicates
    assert wait_until(lambda: _counts(stack)["in"].get("synced", 0) == TOTAL, timeout=120), (
        stack.bridge_status()
    )
    users = sorted({d.user for d in traffic})
    expected = {user: [message_text(user, i) for i in range(PER_USER)] for user in users}
    assert side.check(expected).summary() == side.expected_summary
    status = stack.bridge_status()
    assert status["parked"] == [] and status["failed"] == []
    assert status["messages"]["in"] == {"synced": TOTAL}  # a redelivery is no message

    # 2. a rep answers each user in the CRM -> each answer sent once, the CRM told
    def answer(user: int) -> str:
        return f"Спасибо, {user}! Your order ships today."

    for user in users:
        assert side.reply(user, answer(user))["webhook"]["status"] == 200
    assert wait_until(lambda: len(_sent(stack)) >= len(users), timeout=60), _sent(stack)
    assert wait_until(
        lambda: all([r["status"] for r in _replies(stack).get(u, [])] == ["sent"] for u in users),
        timeout=60,
    ), _replies(stack)
    rows = _replies(stack)
    sent = _sent(stack)
    # exactly once each, to its user, with the random_id of the bridge's reply
    assert sorted((s["peer_id"], s["message"]) for s in sent) == sorted(
        (u, answer(u)) for u in users
    )
    assert all(s["repeats"] == 0 for s in sent)
    for s in sent:
        [row] = rows[s["peer_id"]]
        assert s["random_id"] == random_id(row["uid"], 0), (s, row)
    assert len({s["random_id"] for s in sent}) == len(users)

    def shown(wanted: dict[int, str], status: str) -> dict[int, list[dict[str, Any]]]:
        """Users whose conversation in the CRM does not show, as its one
        outgoing message, the reply ``wanted`` names with ``status``."""
        wrong = {}
        for user, text in wanted.items():
            out = [m for m in side.messages(user) if m["direction"] == "out"]
            if [(m["text"], m["status"]) for m in out] != [(text, status)]:
                wrong[user] = out
        return wrong

    replied = {user: answer(user) for user in users}
    assert wait_until(lambda: not shown(replied, side.delivered), timeout=60), shown(
        replied, side.delivered
    )

    # the sandbox echoed every send as message_reply (out: 1), and the bridge
    # answered "ok" to each ...
    assert wait_until(
        lambda: all(any(e["ok"] for e in s["echo"]) for s in _sent(stack)), timeout=60
    ), [s["echo"] for s in _sent(stack)]
    echoes = _vk_get(stack, "_deliveries", type="message_reply")["deliveries"]
    assert len({d["payload"]["object"]["id"] for d in echoes}) == len(users)
    assert {(d["status"], d["answer"]) for d in echoes} == {(200, "ok")}
    # ... and filed none of them: no customer message, no second outgoing one
    time.sleep(1)
    assert side.check(expected).summary() == side.expected_summary
    assert not shown(replied, side.delivered)
    status = stack.bridge_status()
    assert status["messages"]["in"] == {"synced": TOTAL}
    assert status["messages"]["out"] == {"sent": len(users)}
    assert status["parked"] == [] and status["failed"] == []

    # 3. an ambiguous send: messages.send stores the message, then hangs past
    # the bridge's read timeout (2 s in the stack)
    late = users[0]
    again = "One more thing: the courier calls an hour before."
    faults = _vk(
        stack,
        "_faults",
        timeout_seconds=4,
        routes=[{"path": r"^/method/messages\.send$", "commit_then_timeout_rate": 1.0}],
    )
    assert faults["routes"][0]["commit_then_timeout_rate"] == 1.0
    assert side.reply(late, again)["webhook"]["status"] == 200
    # the first attempt stored the message (and is still hanging): the fault
    # is switched off so that the retry is answered
    assert wait_until(lambda: len(_sent(stack, late)) == 2, timeout=30, interval=0.1)
    faults = _vk_get(stack, "_faults")
    assert faults["routes"][0]["counters"] == {"commit_then_timeout": 1}, faults
    _vk(stack, "_faults", routes=[])

    def resent() -> bool:
        rows = _replies(stack)[late]
        return [r["status"] for r in rows] == ["sent", "sent"]

    assert wait_until(resent, timeout=60), _replies(stack)[late]
    row = _replies(stack)[late][1]
    [first, second] = _sent(stack, late)
    assert first["message"] == answer(late)
    # the user has it once: the retry carried the same random_id, VK dropped it
    assert (second["message"], second["random_id"]) == (again, random_id(row["uid"], 0))
    assert second["repeats"] >= 1, second
    assert len(second["echo"]) <= 1  # a repeat is not echoed (nothing was sent)
    assert _vk_get(stack, "_state")["counters"].get("random_id_repeats", 0) >= 1

    # ... and the CRM shows both replies delivered, each once
    def both_shown() -> bool:
        out = [m for m in side.messages(late) if m["direction"] == "out"]
        return [(m["text"], m["status"]) for m in out] == [
            (answer(late), side.delivered),
            (again, side.delivered),
        ]

    assert wait_until(both_shown, timeout=30), side.messages(late)

    # 4. consent: the user forbids messages from the community
    denied = users[1]
    deny = _vk(stack, "_deny", user=denied)
    assert (deny["status"], deny["body"]) == (200, "ok"), deny
    assert wait_until(lambda: _counts(stack)["in"].get("synced", 0) == TOTAL + 1, timeout=60), (
        stack.bridge_status()
    )
    notice = CONSENT["message_deny"]
    assert wait_until(lambda: any(notice in t for t in side.timeline(denied)), timeout=30), (
        side.timeline(denied)
    )
    # once in the conversation, as the user's (system) message
    assert [m["direction"] for m in side.messages(denied) if m["text"] == notice] == ["in"]
    refused = "Your refund is on its way."
    assert side.reply(denied, refused)["webhook"]["status"] == 200

    # the bridge knows the user withdrew consent: the reply is refused
    # before anything reaches VK, and the CRM says why
    def not_sent() -> bool:
        rows = _replies(stack).get(denied, [])
        return [r["status"] for r in rows] == ["sent", "refused"]

    assert wait_until(not_sent, timeout=60), _replies(stack).get(denied)
    reason = _replies(stack)[denied][1]["error"]
    # (in the demo mapping's language)
    assert reason.startswith(
        (
            "Not sent: the client no longer allows messages from you on VK",
            "Не отправлено: клиент запретил сообщения от вас в VK",
        )
    ), reason
    assert len(_sent(stack, denied)) == 1  # nothing more went to the user

    def crm_failed() -> bool:
        out = [m for m in side.messages(denied) if m["direction"] == "out"]
        return [(m["text"], m["status"]) for m in out] == [
            (answer(denied), side.delivered),
            (refused, "failed"),
        ]

    assert wait_until(crm_failed, timeout=60), side.messages(denied)
    shown_reason = [m for m in side.messages(denied) if m["direction"] == "out"][1]["error"]
    assert shown_reason and reason[:60] in shown_reason, shown_reason

    # in the end: every user's messages still once and in order (the deny
    # notice last), the replies as sent
    assert len(_sent(stack)) == len(users) + 1
    expected[denied] = [*expected[denied], notice]
    summary = dict(side.expected_summary)
    summary["inbox_messages"] += 1
    if summary["entries"]:
        summary["entries"] += 1
    extra = side.report_entries(shown_reason)
    summary["entries"] += len(extra) if summary["entries"] else 0
    summary["unexpected"] = len(extra)
    report = side.check(expected)
    assert report.summary() == summary, report
    assert report.unexpected == [f"{denied}:{line}" for line in extra]
    status = stack.bridge_status()
    assert status["messages"]["out"] == {"sent": len(users) + 1, "refused": 1}
    assert status["followup_failed"] == []
    # a refused reply holds nothing back: no conversation waits on it
    assert status["failed"] == [] and status["parked"] == []
    assert status["consent_withdrawn"] == 1  # recorded on the user's conversation
    # every message_reply echo journaled and ignored (with the confirmation
    # handshake): one per message sent, none for the dropped repeat
    assert status["journal"]["by_state"]["ignored"] == len(users) + 2, status["journal"]
