# ruff: noqa: S105, S106  (fake bot tokens are test fixtures)
"""Pollers (``bridge.pollers``) and the Telegram adapter's ``poll`` on real
SQLite/PostgreSQL and a real Redis, with the Bot API mocked at the one seam
(``responses``): what a poll journals, that the cursor moves only after the
journal commit (a crash in between fetches again and adds no second row),
the lease (one poller per account; a dead holder's account taken over once
its lease expires), failures reported instead of spinning, the switch
between webhook and polling on the command line, and ``bridge status``.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
import responses
from sqlalchemy import select

import crm_adapters
from bridge import admin, pollers
from bridge.errors import AmbiguousError, PermanentError, RetryableError
from bridge.http import HttpClient
from bridge.locks import ConversationLock
from bridge.model import ChannelAccountInfo, ReceiveMode, utcnow
from bridge.pollers import HOOKS, AccountPoller, Pollers, backoff, lease_name, pulled_accounts
from bridge.runtime import Runtime
from bridge.tables import ChannelAccount, Delivery
from channel_adapters.telegram import TelegramAdapter
from tests.support import fakes
from tests.support.fakes import RecordingLimiter
from tests.support.harness import tg_update
from tests.unit.test_cli import Cli, cli  # noqa: F401 — the `cli` fixture

API = "https://api.telegram.org/bot1:x"
GET_UPDATES = f"{API}/getUpdates"
WEBHOOK_ACTIVE = (
    "Conflict: can't use getUpdates method while webhook is active; "
    "use deleteWebhook to delete the webhook first"
)
MAPPING = """
crm: fake
channels:
  telegram:
    object: none
    timeline: note
"""


def ok(result: Any) -> dict[str, Any]:
    return {"ok": True, "result": result}


def refused(status: int, description: str, **parameters: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"ok": False, "error_code": status, "description": description}
    if parameters:
        body["parameters"] = parameters
    return body


def sent_json(call: Any) -> dict[str, Any]:
    return dict(json.loads(call.request.body))


# -- the Telegram adapter's poll (getUpdates) ---------------------------------------------


def adapter(limiter: RecordingLimiter | None = None) -> TelegramAdapter:
    info = ChannelAccountInfo(
        id=1,
        kind="telegram",
        key="k",
        credentials={"bot_token": "1:x", "secret_token": "s"},
        settings={"mode": "polling"},
    )
    return TelegramAdapter(info, HttpClient("https://api.telegram.org", limiter=limiter))


@responses.activate
def test_poll_asks_from_the_cursor_and_the_next_cursor_is_the_last_id_plus_one() -> None:
    limiter = RecordingLimiter()
    updates = [tg_update(42, text="a"), tg_update(43, text="b")]
    responses.post(GET_UPDATES, json=ok(updates))
    tg = adapter(limiter)
    assert tg.pulled and tg.receive_mode(tg.account.settings) is ReceiveMode.POLLING
    result = tg.poll("42", 25)
    (call,) = responses.calls
    assert sent_json(call) == {
        "timeout": 25,
        "limit": 100,
        "allowed_updates": ["message", "edited_message", "callback_query"],
        "offset": 42,
    }
    # the HTTP read waits longer than the long poll; a poll draws no send token
    assert call.request.req_kwargs["timeout"] == (5.0, 35.0)
    assert limiter.acquired == []
    assert [d.key for d in result.deliveries] == ["42", "43"]
    assert result.cursor == "44"
    # each delivery is what the webhook's edge would have journaled
    for delivery, update in zip(result.deliveries, updates, strict=True):
        assert json.loads(delivery.body) == update
        (msg,) = tg.parse(delivery.request(utcnow()))
        assert msg.external_id == delivery.key


@responses.activate
def test_poll_without_a_cursor_and_without_updates_keeps_the_cursor() -> None:
    responses.post(GET_UPDATES, json=ok([]))
    first = adapter().poll(None, 80)  # capped at the server's 50 s
    assert (first.deliveries, first.cursor) == ((), None)
    assert "offset" not in sent_json(responses.calls[0])
    assert sent_json(responses.calls[0])["timeout"] == 50
    assert adapter().poll("7", 0).cursor == "7"


@responses.activate
def test_an_update_without_an_id_is_kept_by_its_hash_and_moves_nothing() -> None:
    responses.post(GET_UPDATES, json=ok([{"message": {"text": "no id"}}]))
    result = adapter().poll("5", 1)
    (delivery,) = result.deliveries
    assert len(delivery.key) == 64 and result.cursor == "5"


@responses.activate
def test_poll_errors_are_sorted_for_the_poller() -> None:
    responses.post(GET_UPDATES, status=409, json=refused(409, WEBHOOK_ACTIVE))
    with pytest.raises(PermanentError) as conflict:
        adapter().poll(None, 1)
    assert conflict.value.status == 409 and WEBHOOK_ACTIVE in conflict.value.message
    responses.replace(
        responses.POST,
        GET_UPDATES,
        status=429,
        json=refused(429, "Too Many Requests: retry after 3", retry_after=3),
    )
    with pytest.raises(RetryableError) as flood:
        adapter().poll(None, 1)
    assert flood.value.retry_after == 3
    responses.replace(responses.POST, GET_UPDATES, body=requests.ReadTimeout())
    with pytest.raises(RetryableError) as timeout:
        adapter().poll(None, 1)
    assert not isinstance(timeout.value, AmbiguousError)  # getUpdates writes nothing
    responses.replace(responses.POST, GET_UPDATES, status=401, json=refused(401, "Unauthorized"))
    with pytest.raises(Exception) as revoked:
        adapter().poll(None, 1)
    assert "1:x" not in str(revoked.value)


# -- the poller core on a real database and Redis ----------------------------------------


@pytest.fixture
def fake_crm(monkeypatch: pytest.MonkeyPatch) -> fakes.FakeCrmState:
    monkeypatch.setitem(crm_adapters.REGISTRY, "fake", "tests.support.fakes:FakeCrm")
    fakes.STATE = fakes.FakeCrmState()
    return fakes.STATE


@pytest.fixture
def tenant(runtime: Runtime, fake_crm: fakes.FakeCrmState) -> int:
    (runtime.settings.mappings_dir / "fake.yaml").write_text(MAPPING)
    return admin.create_tenant(runtime, slug="acme", crm_kind="fake", mapping="fake.yaml")


def add_bot(runtime: Runtime, tenant: int, *, mode: str = "polling", bot: str = "1") -> int:
    return admin.add_channel_account(
        runtime,
        tenant,
        kind="telegram",
        credentials={"bot_token": f"{bot}:x", "secret_token": "s"},
        external_id=bot,
        settings={"mode": mode},
    )


@pytest.fixture
def account(runtime: Runtime, tenant: int) -> int:
    return add_bot(runtime, tenant)


@pytest.fixture
def fast(runtime: Runtime) -> Runtime:
    """Short long polls and a two-second lease."""
    runtime.settings = dataclasses.replace(runtime.settings, poll_timeout=1.0, poll_lease_ttl=2.0)
    return runtime


@pytest.fixture
def no_hooks() -> Iterator[None]:
    yield
    HOOKS.after_record.clear()


def journal(runtime: Runtime) -> list[str]:
    with runtime.transaction() as s:
        return list(s.scalars(select(Delivery.delivery_key).order_by(Delivery.id)))


def cursor_of(runtime: Runtime, account_id: int) -> str | None:
    with runtime.transaction() as s:
        row = s.get(ChannelAccount, account_id)
        assert row is not None
        return row.poll_cursor


def test_pulled_accounts_are_the_active_ones_in_polling_mode(runtime: Runtime, tenant: int) -> None:
    polled = add_bot(runtime, tenant, bot="1")
    add_bot(runtime, tenant, mode="webhook", bot="2")
    gone = add_bot(runtime, tenant, bot="3")
    with runtime.transaction() as s:
        row = s.get(ChannelAccount, gone)
        assert row is not None
        row.status = "disconnected"
    assert pulled_accounts(runtime) == {polled: "telegram"}
    assert pulled_accounts(runtime, tenant_id=tenant + 1) == {}


@responses.activate
def test_a_poll_journals_then_stores_the_cursor(runtime: Runtime, account: int) -> None:
    responses.post(GET_UPDATES, json=ok([tg_update(10, text="a"), tg_update(11, text="b")]))
    poller = AccountPoller(runtime, account, worker="here:1")
    assert poller.step() == 2
    assert journal(runtime) == ["10", "11"]
    assert cursor_of(runtime, account) == "12"
    responses.replace(responses.POST, GET_UPDATES, json=ok([]))
    assert poller.step() == 0
    assert sent_json(responses.calls[-1])["offset"] == 12
    assert cursor_of(runtime, account) == "12"


@responses.activate
def test_a_crash_between_journal_and_cursor_refetches_without_a_second_row(
    runtime: Runtime, account: int, no_hooks: None
) -> None:
    updates = [tg_update(20, text="a"), tg_update(21, text="b")]
    responses.post(GET_UPDATES, json=ok(updates))

    def crash() -> None:
        raise RuntimeError("the process died here")

    HOOKS.after_record.append(crash)
    poller = AccountPoller(runtime, account, worker="here:1")
    with pytest.raises(RuntimeError):
        poller.step()
    assert journal(runtime) == ["20", "21"]  # committed ...
    assert cursor_of(runtime, account) is None  # ... but the cursor never moved
    HOOKS.after_record.clear()
    # a new process: the same poll again (Telegram confirmed nothing) ...
    again = AccountPoller(runtime, account, worker="there:2")
    assert again.step() == 2
    assert "offset" not in sent_json(responses.calls[-1])
    assert journal(runtime) == ["20", "21"]  # ... and no second row
    assert cursor_of(runtime, account) == "22"


@responses.activate
def test_a_poller_that_lost_its_lease_cannot_move_the_cursor_back(
    runtime: Runtime, account: int
) -> None:
    responses.post(GET_UPDATES, json=ok([tg_update(30, text="a")]))
    stale = AccountPoller(runtime, account, worker="old:1")
    loaded = stale._load()
    assert loaded is not None and loaded.cursor is None
    # meanwhile the successor stored a later cursor
    assert pollers._store_cursor(runtime, account, None, "40")
    assert not pollers._store_cursor(runtime, account, None, "31")
    assert cursor_of(runtime, account) == "40"


@responses.activate
def test_a_switched_or_disconnected_account_is_not_polled(runtime: Runtime, account: int) -> None:
    poller = AccountPoller(runtime, account, worker="here:1")
    with runtime.transaction() as s:
        row = s.get(ChannelAccount, account)
        assert row is not None
        row.settings = {**row.settings, "mode": "webhook"}
    assert poller.step() is None
    assert len(responses.calls) == 0


def test_backoff_never_spins() -> None:
    assert backoff(RetryableError("flood", retry_after=7), 1) == 7
    transient = [backoff(RetryableError("5xx"), n) for n in range(1, 9)]
    assert 0.8 <= transient[0] <= 1.0 and max(transient) <= 30
    person = [backoff(PermanentError("409"), n) for n in range(1, 9)]
    assert person[0] >= 24 and max(person) <= 300 and person[-1] >= 240
    assert 4 <= backoff(OSError("db away"), 1) <= 5


# -- the lease: one poller per account -------------------------------------------------


def _waiting_get_updates(seen: list[int], updates: Callable[[], list[Any]]) -> Callable[..., Any]:
    """A getUpdates that waits a little, as a long poll without news does,
    and records which thread called it."""

    def callback(request: Any) -> tuple[int, dict[str, str], str]:
        seen.append(threading.get_ident())
        threading.Event().wait(0.05)
        return 200, {}, json.dumps(ok(updates()))

    return callback


def _wait(predicate: Callable[[], bool], what: str, seconds: float = 20.0) -> None:
    done = threading.Event()
    for _ in range(int(seconds / 0.02)):
        if predicate():
            return
        done.wait(0.02)
    raise AssertionError(f"never: {what}")


def holder(runtime: Runtime, account_id: int) -> str | None:
    value = runtime.redis.get(lease_name(account_id))
    return value.decode().rsplit("/", 1)[0] if value else None


@responses.activate
def test_two_pollers_one_polls_and_the_other_takes_over_once_it_is_gone(
    fast: Runtime, account: int
) -> None:
    seen: list[int] = []
    responses.add_callback(responses.POST, GET_UPDATES, _waiting_get_updates(seen, list))
    a = AccountPoller(fast, account, worker="host-a:1")
    b = AccountPoller(fast, account, worker="host-b:2")
    a.start()
    _wait(lambda: holder(fast, account) == "host-a:1" and len(seen) >= 3, "a polls")
    b.start()
    calls = len(seen)
    _wait(lambda: len(seen) >= calls + 5, "a keeps polling")
    assert holder(fast, account) == "host-a:1"
    assert set(seen) == {a._thread.ident}  # type: ignore[union-attr]  # b never fetched
    a.release()  # a's process exits: its lease goes with it
    a.join(5)
    _wait(lambda: holder(fast, account) == "host-b:2", "b takes over")
    calls = len(seen)
    _wait(lambda: len(seen) >= calls + 3, "b polls")
    assert b._thread is not None and seen[-1] == b._thread.ident
    b.release()
    b.join(5)


@responses.activate
def test_a_dead_holders_lease_expires_and_the_account_is_taken_over(
    fast: Runtime, account: int
) -> None:
    seen: list[int] = []
    pending = [tg_update(50, text="after the crash")]
    responses.add_callback(
        responses.POST, GET_UPDATES, _waiting_get_updates(seen, lambda: list(pending))
    )
    # a machine that died holding the lease: nobody renews it
    dead = ConversationLock(fast.redis, lease_name(account), fast.settings.poll_lease_ttl)
    dead.token = "dead-host:9/abc"
    assert dead.acquire()
    survivor = AccountPoller(fast, account, worker="alive:3")
    survivor.start()
    _wait(lambda: holder(fast, account) == "alive:3", "the survivor holds the lease")
    _wait(lambda: journal(fast) == ["50"] and cursor_of(fast, account) == "51", "journaled")
    survivor.release()
    survivor.join(5)


# -- failures are reported, not spun on ---------------------------------------------------


@responses.activate
def test_a_refusing_channel_is_reported_by_status(fast: Runtime, account: int) -> None:
    responses.post(GET_UPDATES, status=409, json=refused(409, WEBHOOK_ACTIVE))
    poller = AccountPoller(fast, account, worker="host-a:1")
    poller.start()

    def failing() -> bool:
        (entry,) = pollers.report(fast)
        return entry["state"] == "failing"

    _wait(failing, "the status says failing")
    (entry,) = pollers.report(fast)
    assert entry["worker"] == "host-a:1" and entry["kind"] == "telegram"
    assert WEBHOOK_ACTIVE in entry["error"] and "1:x" not in entry["error"]
    assert entry["retry_in_s"] >= 20  # waits for a person, does not spin
    assert admin.status(fast)["pollers"][0]["state"] == "failing"
    poller.release()
    poller.join(5)
    (gone,) = pollers.report(fast)
    assert (gone["worker"], gone["state"]) == (None, "stopped")


def test_rescan_starts_and_stops_pollers(fast: Runtime, tenant: int) -> None:
    group = Pollers(fast, worker="here:1")
    first = add_bot(fast, tenant, bot="1")
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.add_callback(responses.POST, GET_UPDATES, _waiting_get_updates([], list))
        assert group.rescan() == {first}
        second = add_bot(fast, tenant, bot="2")
        mock.add_callback(
            responses.POST,
            "https://api.telegram.org/bot2:x/getUpdates",
            _waiting_get_updates([], list),
        )
        assert group.rescan() == {first, second}
        with fast.transaction() as s:
            row = s.get(ChannelAccount, first)
            assert row is not None
            row.settings = {**row.settings, "mode": "webhook"}
        assert group.rescan() == {second}
        assert set(group.pollers) == {second}
        group.stop()
    assert holder(fast, first) is None and holder(fast, second) is None


# -- the command line: connect --polling, set-polling, set-webhook, status ----------------


def _tenant_for(cli_: Cli) -> Runtime:
    rt = cli_.runtime()
    admin.create_tenant(rt, slug="acme", crm_kind="fake", mapping="fake.yaml")
    return rt


def _methods() -> list[str]:
    return [c.request.url.rsplit("/", 1)[1] for c in responses.calls]


def _mode(rt: Runtime) -> str:
    with rt.transaction() as s:
        (row,) = s.scalars(select(ChannelAccount)).all()
        return str(row.settings.get("mode"))


@responses.activate
def test_connect_polling_deletes_the_webhook_and_the_modes_switch_both_ways(cli: Cli) -> None:  # noqa: F811
    rt = _tenant_for(cli)
    api = "https://api.telegram.org/bot77:secret"
    responses.post(f"{api}/deleteWebhook", json={"ok": True, "result": True})
    done = cli.run(
        "telegram", "connect", "--tenant", "acme", "--polling", TELEGRAM_BOT_TOKEN="77:secret"
    )
    assert done.exit_code == 0, done.output
    assert "polling: a running `bridge worker` fetches its messages" in done.stdout
    assert _methods() == ["deleteWebhook"]  # getUpdates works only without a webhook
    assert _mode(rt) == "polling"
    with rt.transaction() as s:
        (account,) = s.scalars(select(ChannelAccount.id)).all()
    assert pulled_accounts(rt) == {account: "telegram"}
    status = cli.run("status")
    assert f"POLLER of telegram channel account {account}: not running" in status.stdout

    # back to the webhook: the mode first (the poller stops), then setWebhook
    responses.post(f"{api}/setWebhook", status=500, json=refused(500, "Internal Server Error"))
    failed = cli.run("telegram", "set-webhook", "--account", str(account))
    assert failed.exit_code == 1 and _mode(rt) == "polling"  # unchanged when Telegram refused
    responses.replace(responses.POST, f"{api}/setWebhook", json={"ok": True, "result": True})
    switched = cli.run("telegram", "set-webhook", "--account", str(account))
    assert switched.exit_code == 0, switched.output
    assert _mode(rt) == "webhook" and pulled_accounts(rt) == {}
    assert sent_json(responses.calls[-1])["url"].startswith("http://bridge.test/webhooks/telegram/")

    polling = cli.run("telegram", "set-polling", "--account", str(account))
    assert polling.exit_code == 0, polling.output
    assert _methods()[-1] == "deleteWebhook" and _mode(rt) == "polling"


def test_connect_polling_is_offered_only_where_a_channel_can_be_pulled(cli: Cli) -> None:  # noqa: F811
    assert "--polling" in cli.run("telegram", "connect", "--help").stdout
    assert "--polling" not in cli.run("custom", "connect", "--help").stdout
    assert cli.run("custom", "set-polling", "--help").exit_code == 2  # no such command
