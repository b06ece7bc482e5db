"""The RQ worker the bridge runs: each job in the worker process itself.

RQ's default ``Worker`` forks a work-horse per job. For the bridge's jobs —
short, I/O-bound, holding ids only — the fork was most of the cost: the
horse of a ~180 MB interpreter pays the copy-on-write faults of everything
it touches, disposes of the pooled database and Redis connections it
inherited and opens new ones, builds new HTTP sessions, and is reaped; a
lone message (a normaliser job, then a sync job) cost ~200 ms of CPU, the
CRM write itself a few (``bench.sync_worker``, docs/benchmarks.md "Worker
path"). Here a job runs in the worker's main thread (RQ's
``SimpleWorker``), so the runtime — engines, pools, sessions, the imported
adapters — lives from one job to the next.

What the horse gave, and how it is kept:

* **Job timeouts**: RQ's death penalty (``SIGALRM`` in the main thread,
  ``UnixSignalDeathPenalty``) raises ``JobTimeoutException`` inside the job,
  as it did inside the horse; the job's transactions roll back, its
  conversation lease expires, the outbox keeps its work pending.
* **A killed worker**: a SIGKILL (OOM, the chaos soak) takes the job with
  the worker, as killing worker and horse together did. The job stays
  ``STARTED`` in RQ until its heartbeat lapses; the outbox sweeper re-drives
  the conversation once its lease expires (RELIABILITY.md 2.1: RQ is a hint,
  the outbox is the record). Nothing else changes: a SIGKILL of the horse
  alone, the one case the fork isolated, has no counterpart.
* **Warm and cold shutdown**: a first SIGTERM lets the job in hand finish; a
  second raises ``SystemExit`` in it (its work stays pending).
* **State between jobs**: jobs take ids and load what they need; what a
  process keeps between jobs (the adapters' bounded caches, the mapping
  store, connection pools) is what the web process keeps between requests.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from redis.client import Pipeline
from rq import Queue, SimpleWorker
from rq.executions import Execution
from rq.job import Job, JobStatus
from rq.rate_limit import release_slot
from rq.registry import StartedJobRegistry
from rq.utils import now, utcformat
from rq.worker import WorkerStatus

__all__ = ["InProcessWorker"]

#: RQ's INFO lines for each job: dequeued, done (kept at DEBUG here)
_PER_JOB = frozenset({"Worker %s: %s: %s", "Worker %s: %s: %s (%s)"})


class _PerJobAtDebug(logging.Filter):
    """RQ logs two INFO lines per job (its id dequeued, then "Job OK");
    they are let through only when its logger shows DEBUG. Its other lines
    (start, stop, warnings, a failed job's traceback) stay as they are."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO or record.msg not in _PER_JOB:
            return True
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


class InProcessWorker(SimpleWorker):
    """RQ's ``SimpleWorker``: dequeue, run the job here, record the result —
    with RQ's records written in fewer round trips.

    Its heartbeat TTL while a job runs is the job's timeout + 60 s (a job is
    never thought abandoned while it may still be running).

    RQ's own bookkeeping took about eleven Redis round trips a job, a
    quarter of a lone message's CPU in the worker (bench.sync_worker,
    cProfile). What the same records cost here:

    * **Heartbeats**: RQ sends one before and after each dequeue and after
      each job, each as three commands. Here they go in one round trip, and
      one asked for within :attr:`HEARTBEAT_EVERY` of the last is left out —
      it would only move the worker key's expiry (minutes away) by that
      much; one with its own TTL (a job's) always goes.
    * **The suspension flag** (``rq suspend``) is read at most every
      :attr:`SUSPENSION_EVERY` seconds, not before every job: a suspended
      worker finishes the job in hand and stops taking jobs within a second.
    * **A job's start**: the execution record, the worker's ``busy`` state,
      the job's ``started`` status and the started registry go in one
      transaction (RQ sends two).
    * **A job's success**: the job's end heartbeat, its result and expiry,
      the worker's counters and ``idle`` state and the execution's removal
      from the started registry go in one transaction (RQ sends four round
      trips: the end heartbeat, a ``WATCH`` of the job's dependents and
      their read, the transaction, the state). The bridge enqueues no job
      that depends on another (``depends_on``), so there are no dependents
      to move; a repeating job takes RQ's own path.
    * A state already recorded (``idle`` after ``idle``) is not sent again.
    * The per-job log lines are DEBUG (a failed job is still logged as
      RQ logs it); the worker's start, stop and warnings stay INFO.
    """

    #: seconds within which a repeated default heartbeat is left out
    HEARTBEAT_EVERY = 1.0
    #: seconds within which the suspension flag is not read again
    SUSPENSION_EVERY = 1.0

    #: no "result is kept for ..." line per job
    log_result_lifespan = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not any(isinstance(f, _PerJobAtDebug) for f in self.log.filters):
            self.log.addFilter(_PerJobAtDebug())
        self._beat_at = float("-inf")
        self._suspension_at = float("-inf")
        #: the start of the job in hand, sent with its preparation
        self._starting: Pipeline | None = None

    def heartbeat(self, timeout: int | None = None, pipeline: Pipeline | None = None) -> None:
        if pipeline is not None:
            super().heartbeat(timeout, pipeline=pipeline)
            return
        now_ = time.monotonic()
        if timeout is None and now_ - self._beat_at < self.HEARTBEAT_EVERY:
            return
        with self.connection.pipeline(transaction=False) as pipe:
            super().heartbeat(timeout, pipeline=pipe)
            pipe.execute()
        self._beat_at = now_

    def check_for_suspension(self, burst: bool) -> None:
        now_ = time.monotonic()
        if now_ - self._suspension_at < self.SUSPENSION_EVERY:
            return
        super().check_for_suspension(burst)
        self._suspension_at = time.monotonic()

    def set_state(self, state: str, pipeline: Pipeline | None = None) -> None:
        if pipeline is None and state == self._state:
            return
        super().set_state(state, pipeline=pipeline)

    def prepare_execution(self, job: Job) -> Execution:
        """The execution record and the ``busy`` state, held back to go with
        :meth:`prepare_job_execution`'s commands in one transaction."""
        pipeline = self.connection.pipeline()
        execution = Execution.create(
            job, self.get_heartbeat_ttl(job), pipeline=pipeline, worker_name=self.name
        )
        self.executions[execution.id] = execution
        self.set_state(WorkerStatus.BUSY, pipeline=pipeline)
        self._starting = pipeline
        return execution

    def prepare_job_execution(self, job: Job, remove_from_intermediate_queue: bool = False) -> None:
        pipeline, self._starting = self._starting, None
        if pipeline is None:
            pipeline = self.connection.pipeline()
        with pipeline:
            heartbeat_ttl = self.get_heartbeat_ttl(job)
            self.heartbeat(heartbeat_ttl, pipeline=pipeline)
            job.heartbeat(now(), heartbeat_ttl, pipeline=pipeline)
            job.prepare_for_execution(self.name, pipeline=pipeline)
            pipeline.persist(job.key)
            if remove_from_intermediate_queue:
                queue = Queue(job.origin, connection=self.connection)
                pipeline.lrem(queue.intermediate_queue_key, 1, job.id)
            pipeline.execute()
        self._beat_at = time.monotonic()
        self.procline(f"Processing {job.func_name} from {job.origin} since {time.time()}")  # type: ignore[no-untyped-call]

    def handle_execution_ended(self, job: Job, queue: Queue, heartbeat_ttl: int) -> None:
        """A failed job's end as RQ records it; a successful one's end
        heartbeat goes with :meth:`handle_job_success`'s transaction."""
        if job.get_status(refresh=False) == JobStatus.FAILED:
            super().handle_execution_ended(job, queue, heartbeat_ttl)
            return
        job.ended_at = now()

    def handle_job_success(
        self,
        job: Job,
        queue: Queue,
        started_job_registry: StartedJobRegistry,
        execution: Execution,
    ) -> None:
        if job.repeats_left is not None and job.repeats_left > 0:
            job.heartbeat(now(), job.success_callback_timeout)
            super().handle_job_success(job, queue, started_job_registry, execution)
            return
        assert job.started_at is not None and job.ended_at is not None
        with self.connection.pipeline() as pipeline:
            pipeline.hset(job.key, "last_heartbeat", utcformat(now()))
            self.increment_successful_job_count(pipeline=pipeline)
            self.increment_total_working_time(job.ended_at - job.started_at, pipeline)
            result_ttl = job.get_result_ttl(self.default_result_ttl)
            if result_ttl != 0:
                job._handle_success(
                    result_ttl,
                    pipeline=pipeline,
                    worker_name=self.name,
                    execution_id=execution.id,
                    execution_started_at=execution.created_at,
                    execution_ended_at=job.ended_at,
                )
            job.cleanup(result_ttl, pipeline=pipeline, remove_from_queue=False)
            self.cleanup_execution(job, pipeline=pipeline, execution=execution)
            self.set_state(WorkerStatus.IDLE, pipeline=pipeline)
            pipeline.execute()
        release_slot(job)
        self.log.debug(
            "Worker %s: job %s done in %s", self.name, job.id, job.ended_at - job.started_at
        )
