"""Telegram long polling -> HubSpot through the sandbox, a real Redis and two
real ``bridge worker`` processes (each with its pollers process), on SQLite
and PostgreSQL.

Issue 11's proof: the demo bot is switched to polling with the command an
admin types (``bridge telegram set-polling``); one poller runs — the other
worker never fetches, so the sandbox never has to end one long poll for
another; the machine holding the lease is SIGKILLed (worker, pollers,
sweeper, horse: nothing gives the lease up); the other worker takes over
within 10 s; and every update sent through the sandbox lands exactly once
in the journal and in HubSpot's inbox. The takeover time is printed (a
figure, not a speed assertion: the 10 s bound is the issue's requirement).
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections import defaultdict
from typing import Any

import pytest
import requests
from sqlalchemy import func, select

from bench.stack import ROOT, Stack
from bench.traffic import check_hubspot, message_text, telegram_update, wait_until
from bridge.config import Settings
from bridge.pollers import lease_name
from bridge.runtime import Runtime
from bridge.tables import Delivery
from sandbox.telegram import DEMO_BOT_TOKEN
from tests.integration.test_telegram_hubspot import FAST_TIER, _raise_tier

pytestmark = pytest.mark.integration

USERS = [7_100_001, 7_100_002, 7_100_003, 7_100_004]


def _journal(stack: Stack) -> dict[str, int]:
    """Journal rows per delivery key (a key twice would be a second row)."""
    runtime = Runtime(Settings.from_env(stack.env()))
    try:
        with runtime.read_engine.connect() as conn:
            rows = conn.execute(
                select(Delivery.delivery_key, func.count()).group_by(Delivery.delivery_key)
            ).all()
    finally:
        runtime.close()
    return {str(key): int(n) for key, n in rows}


def _bot(stack: Stack) -> dict[str, Any]:
    r = requests.get(
        f"{stack.sandbox_url}/telegram/_state", params={"account": DEMO_BOT_TOKEN}, timeout=10
    )
    r.raise_for_status()
    return dict(r.json()["accounts"][0])


def _holder(stack: Stack, account_id: int) -> int | None:
    """The pid of the worker whose poller holds the account's lease."""
    value = stack.redis().get(lease_name(account_id))
    if value is None:
        return None
    return int(value.decode().rsplit("/", 1)[0].rsplit(":", 1)[1])


def _cli(stack: Stack, *args: str) -> str:
    done = subprocess.run(  # noqa: S603
        [sys.executable, "-m", "bridge.cli", *args],
        cwd=ROOT,
        env=stack.env(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _send(stack: Stack, updates: list[dict[str, Any]]) -> None:
    for update in updates:
        answer = stack.deliver(update)
        assert answer["queued"] is True, answer  # no webhook: it waits for getUpdates


def test_one_poller_runs_the_other_takes_over_within_10_s_and_nothing_is_doubled(
    make_stack_once,  # type: ignore[no-untyped-def]
) -> None:
    # one database (PostgreSQL in CI): the failover is the poller's Redis
    # lease; ingest's deduplication runs on both databases in the unit tier
    stack: Stack = make_stack_once(
        sandbox_config=FAST_TIER, workers=2, env_overrides={"BRIDGE_POLL_TIMEOUT": "10"}
    )
    _raise_tier(stack)
    account = stack.seeded.channel_account_id
    assert _bot(stack)["webhook"] is not None  # the demo connects with a webhook

    out = _cli(stack, "telegram", "set-polling", "--account", str(account))
    assert "webhook removed; polling" in out
    assert _bot(stack)["webhook"] is None

    # one of the two workers' pollers takes the account and waits in getUpdates
    assert wait_until(lambda: _bot(stack)["polling"]["waiting"], timeout=30), _bot(stack)
    first_holder = _holder(stack, account)
    (holding,) = [p for p in stack.worker_procs if p.pid == first_holder]
    (other,) = [p for p in stack.worker_procs if p is not holding]
    (poller,) = stack.bridge_status()["pollers"]
    assert (poller["account"], poller["state"]) == (account, "polling")
    assert poller["worker"].endswith(f":{first_holder}")

    update_id = 930_000_000
    sent: dict[int, list[str]] = defaultdict(list)

    def batch(index: int) -> list[dict[str, Any]]:
        nonlocal update_id
        out = []
        for user in USERS:
            update_id += 1
            out.append(telegram_update(user, index, update_id=update_id))
            sent[user].append(message_text(user, index))
        return out

    first = batch(0) + batch(1)
    _send(stack, first)
    keys = {str(u["update_id"]) for u in first}
    assert wait_until(lambda: keys <= set(_journal(stack)), timeout=30), _journal(stack)
    # while both ran, only one fetched: nobody ended anybody's long poll,
    # and the other worker's pollers never held the account
    assert _bot(stack)["polling"]["conflicts"] == 0
    assert _holder(stack, account) == first_holder
    assert f"polling channel account {account} here" in stack.worker_log(holding)
    assert f"polling channel account {account} here" not in stack.worker_log(other)

    # the machine holding the lease dies: nothing releases it
    killed_at = time.monotonic()
    stack.kill_worker(holding, replace=False, machine=True)
    second = batch(2) + batch(3)
    _send(stack, second)
    assert wait_until(lambda: _holder(stack, account) == other.pid, timeout=15, interval=0.1)
    taken_over = time.monotonic() - killed_at
    keys2 = {str(u["update_id"]) for u in second}
    assert wait_until(lambda: keys2 <= set(_journal(stack)), timeout=15, interval=0.1)
    landed = time.monotonic() - killed_at
    print(
        f"\npoller takeover after SIGKILL: lease {taken_over:.1f} s, updates landed {landed:.1f} s"
    )
    assert landed < 10, f"the other worker took {landed:.1f} s to fetch the new updates"

    # every update once in the journal, and once in HubSpot's inbox
    journal = _journal(stack)
    assert set(journal) == keys | keys2 and set(journal.values()) == {1}

    def synced() -> bool:
        counts = stack.bridge_status()["messages"]["in"]
        return counts.get("synced", 0) == len(journal)

    assert wait_until(synced, timeout=120), stack.bridge_status()
    report = check_hubspot(stack.hubspot_state(), sent, notes=False)
    assert report.summary() == {
        "contacts": len(USERS),
        "deals": len(USERS),
        "entries": 0,
        "lost": 0,
        "duplicated": 0,
        "unexpected": 0,
        "out_of_order": 0,
        "inbox_messages": len(journal),
        "inbox_duplicated": 0,
    }
    (poller,) = stack.bridge_status()["pollers"]
    assert poller["worker"].endswith(f":{other.pid}") and poller["error"] is None


def test_switching_back_to_the_webhook_stops_the_poller(make_stack_once) -> None:  # type: ignore[no-untyped-def]
    """set-webhook on a polled account: the mode goes back first, then
    setWebhook ends the long poll (409 "terminated by setWebhook request",
    not reported as a failure) and the next update comes by webhook."""
    stack: Stack = make_stack_once(
        sandbox_config=FAST_TIER, workers=1, env_overrides={"BRIDGE_POLL_TIMEOUT": "20"}
    )
    account = stack.seeded.channel_account_id
    _cli(stack, "telegram", "set-polling", "--account", str(account))
    assert wait_until(lambda: _bot(stack)["polling"]["waiting"], timeout=30), _bot(stack)
    out = _cli(stack, "telegram", "set-webhook", "--account", str(account))
    assert "webhook set to" in out
    assert wait_until(lambda: not _bot(stack)["polling"]["waiting"], timeout=10)
    assert wait_until(lambda: stack.bridge_status()["pollers"] == [], timeout=10)
    assert wait_until(lambda: _holder(stack, account) is None, timeout=30)
    answer = stack.deliver(telegram_update(USERS[0], 0, update_id=940_000_001))
    assert answer["delivered"] is True and answer["status"] == 200, answer
    assert _journal(stack) == {"940000001": 1}
    (worker,) = stack.worker_procs
    # the switch was not reported as a failure
    assert f"poller of channel account {account}:" not in stack.worker_log(worker)
