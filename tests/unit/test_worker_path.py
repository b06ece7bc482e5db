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
