"""The lean worker path: jobs run in the worker process itself
(``bridge.rqworker``), on a real Redis."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import pytest
import redis
from rq import Queue, SimpleWorker
from rq.job import JobStatus

from bridge.rqworker import InProcessWorker


@pytest.fixture
def queue(redis_conn: redis.Redis) -> Iterator[Queue]:
    # RQ installs its SIGINT/SIGTERM handlers in work(): give pytest its own back
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    yield Queue("worker-path-test", connection=redis_conn)
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def test_a_job_runs_in_the_worker_process(queue: Queue) -> None:
    """No work-horse: the job's pid is the worker's, and what the process
    holds (pools, imports) is still there for the next job."""
    first = queue.enqueue(os.getpid)
    second = queue.enqueue(os.getpid)
    worker = InProcessWorker([queue], connection=queue.connection)
    assert worker.work(burst=True)
    assert first.latest_result().return_value == os.getpid()  # type: ignore[union-attr]
    assert second.latest_result().return_value == os.getpid()  # type: ignore[union-attr]


def test_a_job_past_its_timeout_is_stopped(queue: Queue) -> None:
    """The job timeout still holds without a horse to kill: RQ's death
    penalty raises inside the job, the job fails, the worker goes on."""
    slow = queue.enqueue(time.sleep, 30, job_timeout=1)
    after = queue.enqueue(os.getpid)
    worker = InProcessWorker([queue], connection=queue.connection)
    worker.work(burst=True)
    assert slow.get_status() == JobStatus.FAILED
    assert "JobTimeoutException" in (slow.latest_result().exc_string or "")  # type: ignore[union-attr]
    assert after.get_status() == JobStatus.FINISHED


@pytest.mark.parametrize("worker_class", [SimpleWorker, InProcessWorker])
def test_a_job_leaves_the_records_rq_leaves(queue: Queue, worker_class: type[SimpleWorker]) -> None:
    """Fewer round trips, the same records as RQ's own SimpleWorker: the
    job finished with its result, out of the started registry, its
    execution gone, the worker idle with its counters."""
    job = queue.enqueue(os.getpid, result_ttl=300)
    worker = worker_class([queue], connection=queue.connection)
    assert worker.work(burst=True)
    job.refresh()
    assert job.get_status() == JobStatus.FINISHED
    assert job.latest_result().return_value == os.getpid()  # type: ignore[union-attr]
    assert job.id in queue.finished_job_registry.get_job_ids()
    assert job.id not in queue.started_job_registry.get_job_ids()
    assert job.started_at is not None and job.last_heartbeat is not None
    assert job.worker_name == worker.name
    assert 0 < queue.connection.ttl(job.key) <= 300
    worker.refresh()
    assert worker.successful_job_count == 1
    assert worker.total_working_time > 0
    assert not queue.connection.keys(f"rq:execution*{job.id}*")


def test_a_suspended_worker_takes_no_job(queue: Queue) -> None:
    """``rq suspend`` still holds (read at most every second)."""
    from rq.suspension import resume, suspend

    job = queue.enqueue(os.getpid)
    suspend(queue.connection)
    try:
        worker = InProcessWorker([queue], connection=queue.connection)
        assert not worker.work(burst=True)
        assert job.get_status() == JobStatus.QUEUED
    finally:
        resume(queue.connection)


def test_bridge_worker_runs_the_in_process_worker() -> None:
    import bridge.worker

    assert bridge.worker.InProcessWorker is InProcessWorker


# -- a lone message: the normaliser's job syncs it -------------------------------------------

MAPPING = """
crm: fake
channels:
  telegram:
    object: none
    timeline: note
"""


@pytest.fixture
def account(runtime, monkeypatch):  # type: ignore[no-untyped-def]
    import crm_adapters
    from bridge import admin
    from bridge.pipeline.inbound import AccountRef
    from tests.support import fakes

    monkeypatch.setitem(crm_adapters.REGISTRY, "fake", "tests.support.fakes:FakeCrm")
    fakes.STATE = fakes.FakeCrmState()
    (runtime.settings.mappings_dir / "fake.yaml").write_text(MAPPING)
    tenant_id = admin.create_tenant(runtime, slug="acme", crm_kind="fake", mapping="fake.yaml")
    account_id = admin.add_channel_account(
        runtime,
        tenant_id,
        kind="telegram",
        credentials={"bot_token": "1:x", "secret_token": "s"},
        external_id="1",
    )
    return AccountRef(account_id, tenant_id, "telegram")


def _deliver(runtime, account, update_id: int, user: int = 5, text: str = "hi") -> None:  # type: ignore[no-untyped-def]
    """Journal one update, its wake-up taken off the queue as a worker
    dequeuing it would (the tests call the job function itself)."""
    from bridge.jobs import INGEST_QUEUE
    from bridge.model import RawDelivery
    from bridge.pipeline.inbound.journal import record
    from tests.support.harness import body, tg_update

    update = tg_update(update_id, text=text)
    update["message"]["from"]["id"] = update["message"]["chat"]["id"] = user
    record(runtime, account, [RawDelivery(str(update_id), body(update))])
    Queue(INGEST_QUEUE, connection=runtime.redis).empty()


def _state(runtime):  # type: ignore[no-untyped-def]
    from sqlalchemy import select

    from bridge.tables import Message, Outbox

    with runtime.transaction() as s:
        messages = [str(m) for m in s.scalars(select(Message.status).order_by(Message.seq))]
        outbox = [str(o) for o in s.scalars(select(Outbox.state))]
    return messages, outbox


def test_a_lone_message_is_synced_by_the_job_that_normalised_it(runtime, account, redis_conn):  # type: ignore[no-untyped-def]
    from bridge.jobs import SYNC_QUEUE, normalise_account
    from tests.support import fakes

    _deliver(runtime, account, 1)
    outcome = normalise_account(account.id)
    assert outcome.startswith("normalised 1; sync-") and outcome.endswith(": idle")
    assert [e["text"] for e in fakes.STATE.entries] == ["hi"]
    assert _state(runtime) == (["synced"], ["idle"])
    assert Queue(SYNC_QUEUE, connection=redis_conn).job_ids == []


def test_messages_for_several_conversations_are_each_their_own_job(runtime, account, redis_conn):  # type: ignore[no-untyped-def]
    from bridge.jobs import SYNC_QUEUE, normalise_account
    from tests.support import fakes

    _deliver(runtime, account, 1, user=5)
    _deliver(runtime, account, 2, user=6)
    assert normalise_account(account.id) == "normalised 2"
    assert fakes.STATE.entries == []
    assert len(Queue(SYNC_QUEUE, connection=redis_conn).job_ids) == 2


def test_work_of_a_queue_taken_first_keeps_the_sync_a_job_of_its_own(runtime, account, redis_conn):  # type: ignore[no-untyped-def]
    from bridge.jobs import DELIVER_QUEUE, SYNC_QUEUE, normalise_account
    from tests.support import fakes

    Queue(DELIVER_QUEUE, connection=redis_conn).enqueue(os.getpid)  # a reply waits
    _deliver(runtime, account, 1)
    assert normalise_account(account.id) == "normalised 1"
    assert fakes.STATE.entries == []
    (job_id,) = Queue(SYNC_QUEUE, connection=redis_conn).job_ids
    assert job_id.startswith("sync-")


def test_a_message_stored_during_the_crm_call_is_synced_by_the_same_job(runtime, account):  # type: ignore[no-untyped-def]
    """The commit that records a batch marks the conversation idle only if
    nothing arrived since it was read; otherwise the job looks again."""
    from bridge.jobs import normalise_account
    from bridge.pipeline.inbound.journal import run_normaliser
    from tests.support import fakes

    arrived = []

    def another_message(_entries: object) -> None:
        if not arrived:
            arrived.append(1)
            _deliver(runtime, account, 2, text="more")
            assert run_normaliser(runtime, account.id) == "normalised 1"

    fakes.STATE.faults["append_entries"].append(another_message)
    _deliver(runtime, account, 1)
    assert normalise_account(account.id).endswith(": idle")
    assert [e["text"] for e in fakes.STATE.entries] == ["hi", "more"]
    assert _state(runtime) == (["synced", "synced"], ["idle"])


# -- a backlog of known conversations, written together -------------------------------------

BATCH_MAPPING = """
crm: fake_batch
channels:
  telegram:
    object: deal
    pipeline: p1
    stage: s1
    task: {when: new_entity, subject: "Call {contact.name}"}
"""


@pytest.fixture
def known(runtime, monkeypatch):  # type: ignore[no-untyped-def]
    """Four customers whose conversations are open in the CRM (contact,
    deal, task, first entry), each with a second message waiting and its
    job queued; the CRM's call log starts empty."""
    import crm_adapters
    from bridge import admin
    from bridge.pipeline.inbound import accept, run_inbound
    from tests.support import fakes

    monkeypatch.setitem(crm_adapters.REGISTRY, "fake_batch", "tests.support.fakes:FakeCrmBatch")
    fakes.STATE = fakes.FakeCrmState()
    (runtime.settings.mappings_dir / "fake_batch.yaml").write_text(BATCH_MAPPING)
    tenant_id = admin.create_tenant(
        runtime, slug="batch", crm_kind="fake_batch", mapping="fake_batch.yaml"
    )
    account = admin.add_channel_account(
        runtime,
        tenant_id,
        kind="telegram",
        credentials={"bot_token": "1:x", "secret_token": "s"},
        external_id="1",
    )
    users = [100, 101, 102, 103]
    accept(runtime, account, [_message(u, 1) for u in users])
    conversations = _conversations(runtime)
    for c in conversations:
        run_inbound(runtime, c)
    accept(runtime, account, [_message(u, 2) for u in users])
    fakes.STATE.calls.clear()
    return account, conversations


def _message(user: int, n: int):  # type: ignore[no-untyped-def]
    import datetime as dt

    from bridge.model import InboundMessage, MessageKind, SenderProfile

    return InboundMessage(
        channel_kind="telegram",
        external_id=f"{user}-{n}",
        external_user_id=str(user),
        external_thread_id=str(user),
        kind=MessageKind.TEXT,
        sent_at=dt.datetime(2026, 11, 1, 12, 0, n, tzinfo=dt.UTC),
        text=f"{user} #{n}",
        sequence=n,
        provider_message_id=str(n),
        profile=SenderProfile(first_name=f"Customer{user}"),
    )


def _conversations(runtime) -> list[int]:  # type: ignore[no-untyped-def]
    from sqlalchemy import select

    from bridge.tables import Conversation

    with runtime.transaction() as s:
        return list(s.scalars(select(Conversation.id).order_by(Conversation.id)))


def _written(runtime) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """CRM entries per text (each must be 1)."""
    from collections import Counter

    from tests.support import fakes

    return dict(Counter(e["text"] for e in fakes.STATE.entries))


def test_known_conversations_waiting_together_are_written_in_one_call(runtime, known):  # type: ignore[no-untyped-def]
    from bridge.pipeline.inbound import run_inbound
    from tests.support import fakes

    _, conversations = known
    assert run_inbound(runtime, conversations[0]) == "idle"
    assert fakes.STATE.calls.count("append_entries") == 1
    assert _written(runtime) == {f"{u} #{n}": 1 for u in (100, 101, 102, 103) for n in (1, 2)}
    assert _state(runtime) == (["synced"] * 8, ["idle"] * 4)
    # the others' own jobs find nothing left
    assert [run_inbound(runtime, c) for c in conversations[1:]] == ["idle"] * 3
    assert fakes.STATE.calls.count("append_entries") == 1


def test_a_message_arriving_during_the_call_is_left_to_its_own_job(runtime, known, redis_conn):  # type: ignore[no-untyped-def]
    from bridge.jobs import SYNC_QUEUE
    from bridge.pipeline.inbound import accept, run_inbound
    from tests.support import fakes

    account, conversations = known
    sent: list[int] = []

    def another(_entries: object) -> None:
        if not sent:
            sent.append(1)
            accept(runtime, account, [_message(101, 3)])

    fakes.STATE.faults["append_entries"].append(another)
    Queue(SYNC_QUEUE, connection=redis_conn).empty()
    Queue(SYNC_QUEUE, connection=redis_conn).enqueue(os.getpid)  # a backlog
    run_inbound(runtime, conversations[0])
    # 101's conversation was not marked idle: a job is queued for it
    queued = Queue(SYNC_QUEUE, connection=redis_conn).job_ids
    assert any(j.startswith(f"sync-{conversations[1]}-together-") for j in queued)
    assert run_inbound(runtime, conversations[1]) == "idle"
    assert _written(runtime)["101 #3"] == 1
    assert _state(runtime) == (["synced"] * 9, ["idle"] * 4)


def test_a_refused_batch_goes_the_ordinary_way_one_by_one(runtime, known):  # type: ignore[no-untyped-def]
    from bridge.errors import PermanentError
    from bridge.pipeline.inbound import run_inbound
    from tests.support import fakes

    _, conversations = known
    fakes.STATE.fail_next("append_entries", PermanentError("refused"))
    for c in conversations:
        run_inbound(runtime, c)
    assert set(_written(runtime).values()) == {1} and len(_written(runtime)) == 8
    assert _state(runtime) == (["synced"] * 8, ["idle"] * 4)


def test_a_failure_that_outlives_the_retries_backs_everyone_off(runtime, known):  # type: ignore[no-untyped-def]
    import datetime as dt

    from sqlalchemy import select, update

    from bridge.errors import AmbiguousError
    from bridge.model import utcnow
    from bridge.pipeline.inbound import run_inbound
    from bridge.tables import Message, Outbox
    from tests.support import fakes

    _, conversations = known
    retries = runtime.settings.retry_attempts
    # the CRM commits, then the answer is lost, every time
    fakes.STATE.fail_next(
        "append_entries", AmbiguousError("timeout"), after_commit=True, times=retries
    )
    assert run_inbound(runtime, conversations[0]) == "backoff"
    with runtime.transaction() as s:
        assert all(s.scalars(select(Outbox.not_before)))  # each waits for the sweeper
        # the sweeper's jobs come after the backoff, the claims older than a lease
        s.execute(update(Message).values(claimed_at=utcnow() - dt.timedelta(minutes=5)))
    for c in conversations:
        run_inbound(runtime, c)
    # looked up before written again: each entry once
    assert set(_written(runtime).values()) == {1} and len(_written(runtime)) == 8
    assert _state(runtime) == (["synced"] * 8, ["idle"] * 4)
