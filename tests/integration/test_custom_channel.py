"""The custom channel through HubSpot, end to end: the sandbox system posts
signed customer messages to the bridge (gunicorn), real RQ workers write
them to HubSpot's sandbox inbox, reps answer there, and the replies reach
the system's callback URL signed, once each, in order — while the receiver
fails 30 % of the calls (503s before it stores anything, and a few that
store the reply and then time out, so the bridge cannot tell).

Also the hostile side of the URL: a forged signature, a stale timestamp, a
replayed request.

On PostgreSQL when the suite has one, else SQLite: the delivery paths'
storage runs on both databases in the unit tier and in the Telegram
end-to-end test.
"""

from __future__ import annotations

import subprocess
import sys
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests

from bench.stack import ROOT
from bench.traffic import wait_until
from bridge.config import Settings
from bridge.runtime import Runtime
from bridge.tables import Tenant
from sandbox.custom import DEMO_SECRET, DEMO_SYSTEM

pytestmark = pytest.mark.integration

FAST_TIER = {"hubspot": {"per_10s": 2000, "search_per_s": 20}}
SENDERS, MESSAGES = 12, 10  # 20 senders until 2026-12-06: the suite's 20-minute budget
OTHER_SECRET = "whsec_" + "b3RoZXItc2VjcmV0LW90aGVyLXNlY3JldC1vdGhlcg=="


def _prepare(stack: Any) -> str:
    """Raise the portal's tier (the suite stays fast) and name the tenant."""
    runtime = Runtime(Settings.from_env(stack.env()))
    try:
        with runtime.transaction() as session:
            tenant = session.get(Tenant, stack.seeded.tenant_id)
            tenant.settings = {**tenant.settings, "rate_per_10s": 2000}
            return tenant.slug
    finally:
        runtime.close()


def _connect(stack: Any, slug: str) -> subprocess.CompletedProcess[str]:
    """``bridge custom connect``, as an admin runs it (the secret from the environment)."""
    return subprocess.run(  # noqa: S603
        [
            sys.executable,
            "-m",
            "bridge.cli",
            "custom",
            "connect",
            "--tenant",
            slug,
            "--system",
            DEMO_SYSTEM,
            "--callback-url",
            f"{stack.sandbox_url}/custom/callbacks/{DEMO_SYSTEM}",
            "--name",
            "Website form",
        ],
        cwd=ROOT,
        env={**stack.env(), "CUSTOM_SIGNING_SECRET": DEMO_SECRET},
        capture_output=True,
        text=True,
        timeout=60,
    )


def _custom(stack: Any, method: str, path: str, **body: Any) -> Any:
    response = requests.request(
        method, f"{stack.sandbox_url}/custom{path}", json=body or None, timeout=30
    )
    response.raise_for_status()
    return response.json()


def _say(stack: Any, sender: int, index: int) -> dict[str, Any]:
    return _custom(
        stack,
        "POST",
        "/_deliver",
        thread_id=f"t-{sender}",
        message_id=f"m-{index}",
        sender={"id": f"visitor-{sender}", "name": f"Посетитель {sender}"},
        text=f"visitor {sender} message {index}",
    )


def _send_conversations(stack: Any) -> None:
    """Each sender writes its messages in order; the senders in parallel."""

    def one(sender: int) -> list[int]:
        return [_say(stack, sender, i)["status"] for i in range(MESSAGES)]

    with ThreadPoolExecutor(8) as pool:
        codes = [c for codes in pool.map(one, range(SENDERS)) for c in codes]
    assert set(codes) == {200}, codes


def _status(stack: Any) -> dict[str, Any]:
    return stack.bridge_status()


def test_12_conversations_of_10_both_ways_with_a_flaky_receiver(make_stack_once):  # type: ignore[no-untyped-def]
    stack = make_stack_once(sandbox_config=FAST_TIER, workers=2)
    slug = _prepare(stack)

    # -- connecting: a secret that is not the standard's shape is refused with the fix
    done = _connect(stack, slug)
    assert done.returncode == 0, done.stderr
    assert "Custom channel connected" in done.stdout
    (system,) = _custom(stack, "GET", f"/_state?account={DEMO_SYSTEM}")["accounts"]
    inbound = system["inbound_url"]
    assert inbound and inbound.startswith(f"{stack.bridge_url}/webhooks/custom/")
    assert DEMO_SECRET not in done.stdout + done.stderr

    # -- hostile input on the account's URL: nothing of it lands
    forged = _custom(stack, "POST", "/_deliver", text="forged", secret=OTHER_SECRET)
    assert forged["status"] == 403 and forged["body"]["error"] == "forbidden", forged
    stale = _custom(stack, "POST", "/_deliver", text="stale", timestamp_offset=-400)
    assert stale["status"] == 403 and "too old" in stale["body"]["message"], stale
    bad = _custom(stack, "POST", "/_deliver", payload={"text": "no sender"})
    assert bad["status"] == 400 and "sender is required" in bad["body"]["message"], bad
    replay = {"text": "replayed", "webhook_id": "msg_replay", "sender": {"id": "visitor-r"}}
    first = _custom(stack, "POST", "/_deliver", **replay)
    again = _custom(stack, "POST", "/_deliver", **replay)
    assert (first["status"], again["status"]) == (200, 200)

    # -- 12 senders x 10 messages -> HubSpot's inbox, each once, in order
    _send_conversations(stack)
    total = SENDERS * MESSAGES + 1  # + the replayed message, once
    assert wait_until(
        lambda: _status(stack)["messages"]["in"].get("synced", 0) == total, timeout=240
    ), _status(stack)
    state = stack.hubspot_state()
    by_thread: dict[str, list[str]] = defaultdict(list)
    for thread in state["threads"]:
        for message in thread["messages"]:
            if message["direction"] == "INCOMING":
                by_thread[thread["id"]].append(message["text"])
    texts = sorted((msgs for msgs in by_thread.values()), key=lambda m: m[0])
    expected = sorted(
        [[f"visitor {s} message {i}" for i in range(MESSAGES)] for s in range(SENDERS)]
        + [["replayed"]],
        key=lambda m: m[0],
    )
    assert texts == expected  # none lost, none twice, each conversation in order
    assert "forged" not in str(state) and "stale" not in str(state)

    # -- reps answer each conversation 10 times; the receiver fails 30 % of calls
    _custom(
        stack,
        "POST",
        "/_faults",
        error_rate=0.25,
        commit_then_timeout_rate=0.05,
        timeout_seconds=3,
        seed=7,
    )
    contacts = {
        c["properties"].get("bridge_custom_id"): c["id"]
        for c in state["contacts"]
        if c["properties"].get("bridge_custom_id")
    }
    assert len(contacts) == SENDERS + 1, sorted(contacts)

    def answer(sender: int) -> None:
        for i in range(MESSAGES):
            reply = stack.reply(contacts[f"visitor-{sender}"], f"reply {i} to visitor {sender}")
            assert reply["webhook"]["status"] == 200, reply

    with ThreadPoolExecutor(6) as pool:
        list(pool.map(answer, range(SENDERS)))
    replies = SENDERS * MESSAGES
    assert wait_until(
        lambda: _status(stack)["messages"]["out"].get("sent", 0) == replies, timeout=420
    ), _status(stack)

    sent = _custom(stack, "GET", "/_sent")["sent"]
    got: dict[str, list[str]] = defaultdict(list)
    for callback in sent:
        got[callback["thread_id"]].append(callback["text"])
    assert dict(got) == {
        f"t-{s}": [f"reply {i} to visitor {s}" for i in range(MESSAGES)] for s in range(SENDERS)
    }  # every reply once, in order, on its own thread
    faults = _custom(stack, "GET", "/_faults")["counters"]
    (system,) = _custom(stack, "GET", f"/_state?account={DEMO_SYSTEM}")["accounts"]
    assert faults.get("5xx", 0) > 30, faults  # the receiver really failed
    assert system["refused_signatures"] == 0
    # a reply stored before a timeout was sent again under its webhook-id and dropped
    assert system["duplicates"] <= faults.get("commit_then_timeout", 0)
    status = _status(stack)
    assert status["parked"] == [] and status["failed"] == [], status
    assert status.get("followup_failed", []) == [], status
