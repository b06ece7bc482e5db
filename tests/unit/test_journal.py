"""The ingest journal on real SQLite/PostgreSQL and a real Redis: what the
webhook stores (raw, once), what the normaliser makes of it (in journal
order, exactly once, crash or not), ``bridge reparse`` after a parser fix,
the sweeper's wake-up and retention, and what ``bridge status`` shows."""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any

import pytest
from rq import Queue
from sqlalchemy import select, update

import channel_adapters
import crm_adapters
from bridge import admin
from bridge.jobs import INGEST_QUEUE, SYNC_QUEUE
from bridge.locks import ConversationLock
from bridge.model import InboundEvent, RawDelivery, WebhookRequest, utcnow
from bridge.pipeline.inbound import AccountRef, journal, run_inbound
from bridge.pipeline.inbound.journal import (
    HOOKS,
    counts,
    delivery_key,
    drop_old_bodies,
    normalise_pending,
    record,
    reparse,
    run_normaliser,
    sweep_journal,
)
from bridge.tables import Delivery, IgnoredEventRow, Message
from channel_adapters.telegram.adapter import TelegramAdapter
from tests.support import fakes
from tests.support.harness import body, tg_update

MAPPING = """
crm: fake
channels:
  telegram:
    object: none
    timeline: note
"""


@pytest.fixture
def fake_crm(monkeypatch: pytest.MonkeyPatch) -> fakes.FakeCrmState:
    monkeypatch.setitem(crm_adapters.REGISTRY, "fake", "tests.support.fakes:FakeCrm")
    fakes.STATE = fakes.FakeCrmState()
    return fakes.STATE


@pytest.fixture
def account(runtime, fake_crm) -> AccountRef:  # type: ignore[no-untyped-def]
    tenant_id, account_id = fakes.telegram_tenant(runtime, MAPPING)
    return AccountRef(account_id, tenant_id, "telegram")


def update_delivery(update_id: int, **kw: Any) -> RawDelivery:
    return RawDelivery(str(update_id), body(tg_update(update_id, **kw)))


def journal_rows(runtime) -> list[tuple[str, str, str | None]]:  # type: ignore[no-untyped-def]
    with runtime.transaction() as s:
        rows = s.execute(
            select(Delivery.delivery_key, Delivery.state, Delivery.reason).order_by(Delivery.id)
        ).all()
    return [(str(k), str(st), r) for k, st, r in rows]


def texts(runtime) -> list[str]:  # type: ignore[no-untyped-def]
    with runtime.transaction() as s:
        return list(s.scalars(select(Message.text).order_by(Message.seq)))


# -- record: the webhook's one write ------------------------------------------------------


def test_a_delivery_key_is_unique_per_account_and_a_redelivery_is_a_no_op(runtime, account):  # type: ignore[no-untyped-def]
    assert record(runtime, account, [update_delivery(1, text="a")]) == 1
    assert record(runtime, account, [update_delivery(1, text="changed?")]) == 0
    assert record(runtime, account, [update_delivery(2, text="b"), update_delivery(1)]) == 1
    assert journal_rows(runtime) == [("1", "new", None), ("2", "new", None)]
    with runtime.transaction() as s:
        first = s.scalars(select(Delivery).order_by(Delivery.id)).first()
    assert first is not None and first.body == body(tg_update(1, text="a"))  # the first one kept
    # the same key on another account is another delivery
    other = admin.add_channel_account(
        runtime,
        account.tenant_id,
        kind="telegram",
        credentials={"bot_token": "2:x", "secret_token": "s"},
        external_id="2",
    )
    assert record(runtime, AccountRef(other, account.tenant_id, "telegram"), [update_delivery(1)])
    assert len(journal_rows(runtime)) == 3


def test_one_wake_up_per_burst_and_none_for_a_redelivery(runtime, account, redis_conn):  # type: ignore[no-untyped-def]
    for i in range(5):
        record(runtime, account, [update_delivery(i, text=str(i))])
    record(runtime, account, [update_delivery(0)])
    (job_id,) = Queue(INGEST_QUEUE, connection=redis_conn).job_ids
    assert job_id.startswith(f"normalise-{account.id}-")
    # the normaliser clears the flag first: the next delivery wakes it again
    run_normaliser(runtime, account.id)
    record(runtime, account, [update_delivery(9, text="later")])
    assert len(Queue(INGEST_QUEUE, connection=redis_conn).job_ids) == 2


def test_the_web_processs_waker_sends_one_wake_up_for_many_threads_deliveries(
    runtime, account, redis_conn, monkeypatch
):  # type: ignore[no-untyped-def]
    """Request threads only name the account; the waker's thread sends the
    wake-up after their commits, and survives a wake-up that failed."""
    waker = journal.Waker(runtime)
    sent: list[int] = []
    real_wake = journal.wake

    def counted(rt, account_id, **kw):  # type: ignore[no-untyped-def]
        sent.append(account_id)
        if len(sent) == 1:
            raise ConnectionError("Redis away")  # the thread must outlive it
        return real_wake(rt, account_id, **kw)

    monkeypatch.setattr(journal, "wake", counted)
    record(runtime, account, [update_delivery(0, text="first")], waker=waker)
    assert waker.flush()
    assert sent == [account.id] and Queue(INGEST_QUEUE, connection=redis_conn).job_ids == []

    threads = [
        threading.Thread(
            target=record,
            args=(runtime, account, [update_delivery(i, text=str(i))]),
            kwargs={"waker": waker},
        )
        for i in range(1, 21)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert waker.flush()
    assert 2 <= len(sent) <= 21  # one per account and pass, not per delivery
    (job_id,) = Queue(INGEST_QUEUE, connection=redis_conn).job_ids  # the flag dedupes the rest
    assert job_id.startswith(f"normalise-{account.id}-")
    assert run_normaliser(runtime, account.id) == "normalised 21"

    # a forked web worker inherits the object, not its thread: a new one starts
    waker._pid = -1
    record(runtime, account, [update_delivery(99, text="after fork")], waker=waker)
    assert waker.flush() and len(Queue(INGEST_QUEUE, connection=redis_conn).job_ids) == 2


def test_a_key_longer_than_the_column_is_stored_hashed_and_still_unique(runtime, account):  # type: ignore[no-untyped-def]
    long_a, long_b = "k" * 300 + "a", "k" * 300 + "b"
    assert delivery_key("short") == "short"
    assert delivery_key(long_a) != delivery_key(long_b) and len(delivery_key(long_a)) <= 255
    raw = body(tg_update(1, text="x"))
    assert record(runtime, account, [RawDelivery(long_a, raw), RawDelivery(long_b, raw)]) == 2
    assert record(runtime, account, [RawDelivery(long_a, raw)]) == 0


# -- the normaliser -----------------------------------------------------------------------


def test_the_normaliser_keeps_arrival_order_and_marks_every_row(runtime, account, redis_conn):  # type: ignore[no-untyped-def]
    for update_id, text in ((30, "third?"), (10, "first?"), (20, "second?")):
        record(runtime, account, [update_delivery(update_id, text=text)])
    record(runtime, account, [RawDelivery("40", body({"update_id": 40, "poll": {"id": "p"}}))])
    record(runtime, account, [RawDelivery("50", body({"update_id": 50, "message": []}))])
    assert run_normaliser(runtime, account.id) == "normalised 5"
    # arrival order, not update_id order: the journal is the record of arrival
    assert texts(runtime) == ["third?", "first?", "second?"]
    assert journal_rows(runtime) == [
        ("30", "normalised", None),
        ("10", "normalised", None),
        ("20", "normalised", None),
        ("40", "ignored", "poll"),
        ("50", "rejected", "unparseable"),
    ]
    with runtime.transaction() as s:
        assert s.scalars(select(IgnoredEventRow.event_type)).all() == ["poll"]
    assert len(Queue(SYNC_QUEUE, connection=redis_conn).job_ids) == 1
    assert run_normaliser(runtime, account.id) == "normalised 0"


def test_one_batch_of_mixed_deliveries_keeps_each_conversations_order(runtime, account):  # type: ignore[no-untyped-def]
    """The normaliser writes a batch's messages together (lookups before the
    transaction, one INSERT, sequence numbers taken per conversation): the
    arrival order within each conversation, a chat new in the batch, and a
    group's migration to a supergroup between two of its messages."""
    group = {"id": -500, "type": "group", "title": "g"}
    supergroup = {"id": -100500, "type": "supergroup", "title": "g"}
    deliveries = [
        update_delivery(1, chat_id=7, text="a1"),  # chat 7 is known (below)
        update_delivery(2, chat_id=8, text="b1"),  # chat 8 is new
        update_delivery(3, chat_id=7, text="a2"),
        update_delivery(5, chat_id=9, text="g1", chat=group),
        update_delivery(6, chat_id=9, migrate_to_chat_id=-100500, chat=group),
        update_delivery(7, chat_id=9, text="g2", chat=supergroup),
        update_delivery(8, chat_id=8, text="b2"),
    ]
    record(runtime, account, [update_delivery(100, chat_id=7, text="a0")])
    assert run_normaliser(runtime, account.id) == "normalised 1"
    for delivery in deliveries:
        record(runtime, account, [delivery])
    assert len(deliveries) <= journal.BATCH  # one transaction
    assert run_normaliser(runtime, account.id) == f"normalised {len(deliveries)}"
    with runtime.transaction() as s:
        rows = s.execute(
            select(Message.conversation_id, Message.seq, Message.text).order_by(Message.id)
        ).all()
    by_conversation: dict[int, list[tuple[int, str]]] = {}
    for conversation, seq, text in rows:
        by_conversation.setdefault(conversation, []).append((seq, text))
    assert sorted(by_conversation.values()) == [
        [(1, "a0"), (2, "a1"), (3, "a2")],
        [(1, "b1"), (2, "b2")],
        [(1, "g1"), (2, "g2")],  # the migration re-keyed the group's conversation
    ]
    states = [state for _, state, _ in journal_rows(runtime)]
    assert states == ["normalised"] * 5 + ["ignored"] + ["normalised"] * 2
    # the migration is stored as the one ignored event of the batch
    with runtime.transaction() as s:
        assert s.scalars(select(IgnoredEventRow.event_type)).all() == ["thread_migrated"]


def test_a_crash_before_the_normalisers_commit_leaves_the_rows_new_and_stores_once(
    runtime, account, monkeypatch
):  # type: ignore[no-untyped-def]
    class Crash(Exception):
        pass

    def crash() -> None:
        raise Crash

    record(runtime, account, [update_delivery(1, text="one"), update_delivery(2, text="two")])
    monkeypatch.setattr(HOOKS, "before_normalised_commit", [crash])
    with pytest.raises(Crash):
        run_normaliser(runtime, account.id)
    assert texts(runtime) == [] and {s for _, s, _ in journal_rows(runtime)} == {"new"}
    monkeypatch.setattr(HOOKS, "before_normalised_commit", [])
    # the lease died with the crashed job's process (here: released on the way out)
    assert run_normaliser(runtime, account.id) == "normalised 2"
    assert texts(runtime) == ["one", "two"]
    with runtime.transaction() as s:
        assert [d.attempts for d in s.scalars(select(Delivery))] == [1, 1]
        assert all("late" not in m.payload for m in s.scalars(select(Message)))


def test_the_web_sides_crash_points_lose_nothing_and_duplicate_nothing(
    runtime, account, monkeypatch
):  # type: ignore[no-untyped-def]
    """Before the journal commit: nothing stored, the channel redelivers.
    After it (no 2xx went out): the redelivery is a no-op."""

    class Crash(Exception):
        pass

    def crash() -> None:
        raise Crash

    monkeypatch.setattr(HOOKS, "before_commit", [crash])
    with pytest.raises(Crash):
        record(runtime, account, [update_delivery(1, text="hello")])
    assert journal_rows(runtime) == []
    monkeypatch.setattr(HOOKS, "before_commit", [])
    monkeypatch.setattr(HOOKS, "after_commit", [crash])
    with pytest.raises(Crash):
        record(runtime, account, [update_delivery(1, text="hello")])
    monkeypatch.setattr(HOOKS, "after_commit", [])
    assert record(runtime, account, [update_delivery(1, text="hello")]) == 0  # the redelivery
    normalise_pending(runtime)
    assert texts(runtime) == ["hello"]


def test_the_chaos_harness_installs_its_crash_points_in_the_journal_seam() -> None:
    from bench.chaos_gunicorn import install

    assert journal.JournalHooks() == HOOKS  # nothing in production
    install("before_commit:1,after_commit:0")
    try:
        assert len(HOOKS.before_commit) == 1 and HOOKS.after_commit == []
    finally:
        HOOKS.before_commit.clear()


def test_one_normaliser_per_account_at_a_time(runtime, account):  # type: ignore[no-untyped-def]
    record(runtime, account, [update_delivery(1, text="a")])
    held = ConversationLock(runtime.redis, journal.lock_name(account.id), 30)
    assert held.acquire()
    try:
        assert run_normaliser(runtime, account.id) == "busy"
        assert journal_rows(runtime) == [("1", "new", None)]
    finally:
        held.release()
    assert run_normaliser(runtime, account.id) == "normalised 1"


def test_concurrent_normalisers_store_each_delivery_once_in_order(runtime, account):  # type: ignore[no-untyped-def]
    results: list[str] = []

    def worker() -> None:
        results.append(run_normaliser(runtime, account.id))

    for i in range(60):
        record(runtime, account, [update_delivery(i, text=f"m{i}")])
    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert texts(runtime) == [f"m{i}" for i in range(60)]
    assert {s for _, s, _ in journal_rows(runtime)} == {"normalised"}


# -- reparse after a parser fix -----------------------------------------------------------


class OutdatedTelegram(TelegramAdapter):
    """This bridge's parser before a fix: it fails on a shape Telegram
    started to send (here: any message carrying ``business_connection_id``)."""

    def parse(self, request: WebhookRequest) -> list[InboundEvent]:
        if b"business_connection_id" in request.body:
            raise KeyError("business_connection_id")
        return super().parse(request)


def test_a_rejected_delivery_lands_late_with_its_own_time_after_reparse(
    runtime, account, fake_crm, monkeypatch
):  # type: ignore[no-untyped-def]
    sent = dt.datetime(2026, 11, 30, 9, 15, tzinfo=dt.UTC)
    new_shape = update_delivery(
        7, text="order #12", date=int(sent.timestamp()), business_connection_id="bc-1"
    )
    monkeypatch.setitem(channel_adapters.REGISTRY, "telegram", f"{__name__}:OutdatedTelegram")
    record(runtime, account, [update_delivery(6, text="before"), new_shape])
    record(runtime, account, [update_delivery(8, text="after")])
    run_normaliser(runtime, account.id)
    assert journal_rows(runtime) == [
        ("6", "normalised", None),
        ("7", "rejected", "parser_error"),
        ("8", "normalised", None),
    ]
    with runtime.transaction() as s:
        rejected = s.scalars(select(Delivery).where(Delivery.delivery_key == "7")).one()
    assert rejected.detail == "KeyError" and rejected.body == new_shape.body  # kept, whole
    assert counts(runtime)["rejected_reasons"] == {"parser_error": 1}
    # the fix ships: the registry names the current adapter again
    monkeypatch.setitem(
        channel_adapters.REGISTRY, "telegram", "channel_adapters.telegram:TelegramAdapter"
    )
    assert reparse(runtime) == {account.id: 1}
    assert journal_rows(runtime)[1] == ("7", "normalised", None)
    assert texts(runtime) == ["before", "after", "order #12"]
    with runtime.transaction() as s:
        late = s.scalars(select(Message).where(Message.text == "order #12")).one()
    assert late.payload.get("late") is True
    assert late.sent_at.replace(tzinfo=dt.UTC) == sent
    conversation = late.conversation_id
    run_inbound(runtime, conversation)
    entries = {e["text"]: e for e in fake_crm.entries}
    assert entries["order #12"]["late"] is True and entries["before"]["late"] is False
    assert entries["order #12"]["occurred_at"] == sent  # its own time, not the reparse's
    # nothing left to reparse; a second run changes nothing
    assert reparse(runtime) == {}
    assert counts(runtime)["rejected_reasons"] == {}


def test_reparse_picks_rows_by_state_account_time_and_id(runtime, account):  # type: ignore[no-untyped-def]
    record(runtime, account, [RawDelivery("1", body({"update_id": 1, "message": []}))])
    record(runtime, account, [RawDelivery("2", body({"update_id": 2, "poll": {"id": "p"}}))])
    run_normaliser(runtime, account.id)
    with runtime.transaction() as s:
        ids = dict(s.execute(select(Delivery.delivery_key, Delivery.id)).all())
    assert reparse(runtime, account=account.id + 1) == {}
    assert reparse(runtime, since=utcnow() + dt.timedelta(hours=1)) == {}
    assert reparse(runtime, state=journal.DeliveryState.IGNORED) == {account.id: 1}
    assert reparse(runtime, delivery=ids["1"]) == {account.id: 1}  # rejected again: same parser
    assert journal_rows(runtime) == [("1", "rejected", "unparseable"), ("2", "ignored", "poll")]
    with pytest.raises(ValueError):
        reparse(runtime, state=journal.DeliveryState.NORMALISED)


# -- the sweeper's part, retention, status ------------------------------------------------


def test_a_lost_wake_up_is_made_up_by_the_sweeper(runtime, account, redis_conn):  # type: ignore[no-untyped-def]
    record(runtime, account, [update_delivery(1, text="a")])
    redis_conn.flushdb()  # Redis lost the job and the wake flag
    assert sweep_journal(runtime) == 0  # too young: its wake-up may still be on the way
    with runtime.transaction() as s:
        s.execute(update(Delivery).values(received_at=utcnow() - dt.timedelta(seconds=30)))
    assert sweep_journal(runtime) == 1
    assert sweep_journal(runtime) == 0  # its wake-up is queued now
    (job_id,) = Queue(INGEST_QUEUE, connection=redis_conn).job_ids
    assert job_id.startswith(f"normalise-{account.id}-")
    assert counts(runtime)["oldest_new_age_s"] >= 30


def test_retention_drops_old_bodies_of_done_rows_and_keeps_every_row(runtime, account):  # type: ignore[no-untyped-def]
    record(runtime, account, [update_delivery(1, text="old")])
    record(runtime, account, [RawDelivery("2", body({"update_id": 2, "message": []}))])
    record(runtime, account, [update_delivery(3, text="recent")])
    run_normaliser(runtime, account.id)
    long_ago = utcnow() - dt.timedelta(days=15)
    with runtime.transaction() as s:
        s.execute(
            update(Delivery)
            .where(Delivery.delivery_key.in_(["1", "2"]))
            .values(normalised_at=long_ago)
        )
    assert drop_old_bodies(runtime) == 1
    with runtime.transaction() as s:
        kept = {d.delivery_key: d.body is not None for d in s.scalars(select(Delivery))}
    # normalised 15 days ago: dropped; rejected: kept for reparse; recent: kept
    assert kept == {"1": False, "2": True, "3": True}
    assert drop_old_bodies(runtime) == 0


def test_status_counts_the_journal_by_state_without_personal_data(runtime, account):  # type: ignore[no-untyped-def]
    record(runtime, account, [update_delivery(1, text="secret text +79990001122")])
    record(runtime, account, [RawDelivery("2", body({"update_id": 2, "message": []}))])
    data = admin.status(runtime)
    assert data["journal"]["by_state"] == {"new": 2, "normalised": 0, "rejected": 0, "ignored": 0}
    assert data["journal"]["oldest_new_age_s"] is not None
    run_normaliser(runtime, account.id)
    data = admin.status(runtime, account.tenant_id)
    assert data["journal"] == {
        "by_state": {"new": 0, "normalised": 1, "rejected": 1, "ignored": 0},
        "oldest_new_age_s": None,
        "rejected_reasons": {"unparseable": 1},
    }
    assert "79990001122" not in repr(data)
