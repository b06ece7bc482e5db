"""The lean worker path: jobs run in the worker process itself
(``bridge.rqworker``), on a real Redis."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import pytest
import redis
from rq import Queue
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
